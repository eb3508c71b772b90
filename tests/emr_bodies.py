"""What the EMR request tests share: the artifacts staging returns for a run on EMR, and botocore's own
validation of a request body against the EMR API's model."""

from __future__ import annotations

import boto3
from botocore.validate import validate_parameters

ARTIFACTS = {
    "jobs_zip_uri": "s3://bucket/prefix/artifacts/abc/image_jobs.zip",
    "entry_dir_uri": "s3://bucket/prefix/artifacts/abc",
    "bootstrap_uri": "s3://bucket/prefix/artifacts/abc/install_python_deps.sh",
    "requirements_uri": "s3://bucket/prefix/artifacts/abc/requirements-emr.txt",
    "wheelhouse_uri": "s3://bucket/prefix/artifacts/wheelhouse-123/",
}


def validate(operation: str, params: dict) -> None:
    """Raise botocore's ParamValidationError when ``params`` is not a valid body of EMR's ``operation``."""
    model = boto3.client("emr", region_name="us-east-1").meta.service_model.operation_model(operation)
    validate_parameters(params, model.input_shape)
