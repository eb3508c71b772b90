"""Airflow Assets of the product, defined once: both DAGs build them from the same settings.

``image_classifier_model:<root>`` is the latest successful model (``<root>/models/latest.json``): the
training DAG's ``publish_report`` declares it as an outlet, so a run that passes its quality gate
emits an asset event, and the ``image_scoring`` DAG is scheduled on it. The storage root is part of
the name: Airflow wants an asset's name and URI unique, so a deployment that moves to another root
(or two deployments sharing one metadata database) gets a new asset instead of an inactive one.
"""

from __future__ import annotations

MODEL_ASSET_NAME = "image_classifier_model"


def model_asset(root_uri: str):
    """The latest-successful-model Asset of a storage root (file:// or s3://)."""
    from airflow.sdk import Asset

    from image_pipeline.publishing.latest_model import latest_uri

    return Asset(name=model_asset_name(root_uri), uri=latest_uri(root_uri), group="model")


def model_asset_name(root_uri: str) -> str:
    """``image_classifier_model:<root>``: one model asset per storage root."""
    return f"{MODEL_ASSET_NAME}:{root_uri.rstrip('/')}"


def scoring_schedule(root_uri: str, cron: str | None):
    """image_scoring's schedule: every new model (the Asset), and, with ``cron``, the inbox polled on it."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    asset = model_asset(root_uri)
    if cron is None:
        return [asset]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=[asset])
