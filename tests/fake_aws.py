"""The AWS account the EMR tests play against (moto on 127.0.0.1, tests/dag/conftest.py): its bucket, the
deployment's prefix, region, account id, and credentials moto accepts, distinctive enough to be searched for
in every output of a run."""

from __future__ import annotations

BUCKET, PREFIX, REGION, ACCOUNT = "pipeline", "prod", "us-east-1", "123456789012"
FAKE_KEY_ID, FAKE_SECRET = "AKIAIMAGEPIPELINE7XQ", "fake/Secret+Key-9f3b2c0d1e"
