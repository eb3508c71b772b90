"""Library of the Spark jobs: image decoding, CNN backbones, feature extraction, training, reports.

This package runs on the cluster (shipped as a zip with ``--py-files``); it never imports Airflow
or the DAG-side package, and its transforms never create sessions or invent paths.
"""
