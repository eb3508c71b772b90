"""Airflow Assets of the product, defined once: both DAGs build them from the same settings.

``image_classifier_model`` is the latest successful model (``<root>/models/latest.json``): the
training DAG's ``publish_report`` declares it as an outlet, so a run that passes its quality gate
emits an asset event, and the ``image_scoring`` DAG is scheduled on it.
"""

from __future__ import annotations

MODEL_ASSET_NAME = "image_classifier_model"


def model_asset(root_uri: str):
    """The latest-successful-model Asset of a storage root (file:// or s3://)."""
    from airflow.sdk import Asset

    from image_pipeline.latest import latest_uri

    return Asset(name=MODEL_ASSET_NAME, uri=latest_uri(root_uri), group="model")
