"""Airflow-side package of the image classification pipeline.

Run plans, storage layout, Spark step specs, the local and EMR cluster backends, report publishing,
and the project's tools (sample images, offline weights, Java, packaging of the Spark jobs).
Nothing here imports TensorFlow or pyspark at module import: the DAG must parse fast and offline.
"""
