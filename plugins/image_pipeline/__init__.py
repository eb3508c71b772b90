"""Airflow-side package of the image classification pipeline, in sub-packages by role.

- ``wiring``: parse-time settings, params and assets (imported by the DAG files);
- ``planning``: run and scoring plans, storage layout, image listing, object-store paths;
- ``compute``: backend-neutral steps, staging, job archive, failure diagnosis; ``local`` and ``emr``;
- ``publishing``: the report, the quality gate, the latest model, which model a prediction uses;
- ``predict_photos``: the prediction command.

Nothing here imports TensorFlow or pyspark at module import: the DAG must parse fast and offline.
"""
