"""Staging to S3 as a real account answers the connection's role, on moto's S3.

S3 answers a HeadObject of a missing key with 404 only to a caller with s3:ListBucket on the bucket, else 403
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html). The product's policies grant it
(docs/iam-policy.json, docs/node-role-policy.json), so Airflow's object storage and EMRFS, which ask S3
whether a key exists with a HeadObject, get their 404. An account may still narrow s3:ListBucket to the
product's prefix (an ``s3:prefix`` condition, which no HeadObject matches): staging works under that policy
too, since it tells a staged key by listing it. moto answers 404 to everyone, so the client here answers as
S3 would answer such a role, and refuses listings the condition does not allow.
"""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from fake_aws import BUCKET

PREFIX = "team/images"  # the product's prefix in the bucket, as the policy is printed for it


def condition_matches(pattern: str, value: str) -> bool:
    """IAM's StringLike: ``*`` any run of characters (``/`` included), ``?`` any one character."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), value) is not None


def list_bucket_allows(policy: dict, bucket: str, prefix: str | None) -> bool:
    """Whether the policy allows s3:ListBucket on ``bucket`` for a request with this ``s3:prefix`` (None: sent none)."""
    for statement in policy["Statement"]:
        if statement["Action"] != "s3:ListBucket" or statement["Resource"] != f"arn:aws:s3:::{bucket}":
            continue
        patterns = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if patterns is None:
            return True
        if prefix is not None and any(condition_matches(p, prefix) for p in patterns):
            return True
    return False


class AsTheRoleSeesS3:
    """The S3 hook's client, answering as S3 answers a role with the S3 statements of ``policy``."""

    def __init__(self, client, policy: dict, calls: list):
        self._client, self._policy, self.calls = client, policy, calls

    def __getattr__(self, name):
        return getattr(self._client, name)

    def head_object(self, **kwargs):
        self.calls.append(("HeadObject", kwargs["Key"]))
        try:
            return self._client.head_object(**kwargs)
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] != 404 or list_bucket_allows(
                    self._policy, kwargs["Bucket"], None):
                raise
            forbidden = {"Error": {"Code": "403", "Message": "Forbidden"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
            raise ClientError(forbidden, "HeadObject") from None

    def get_paginator(self, operation: str):
        paginator, client = self._client.get_paginator(operation), self

        class Checked:
            def paginate(self, **kwargs):
                client.calls.append((operation, kwargs.get("Prefix")))
                if operation == "list_objects_v2" and not list_bucket_allows(client._policy, kwargs["Bucket"],
                                                                             kwargs.get("Prefix")):
                    denied = {"Error": {"Code": "AccessDenied", "Message": "not authorized: s3:ListBucket"},
                              "ResponseMetadata": {"HTTPStatusCode": 403}}
                    raise ClientError(denied, "ListObjectsV2")
                return paginator.paginate(**kwargs)

        return Checked()


def prefix_only(policy: dict) -> dict:
    """The policy with its s3:ListBucket narrowed to the product's prefix, as a stricter account may set it."""
    narrowed = {"StringLike": {"s3:prefix": [PREFIX, f"{PREFIX}/*"]}}
    return {**policy, "Statement": [{**s, "Condition": narrowed} if s["Action"] == "s3:ListBucket" else s
                                    for s in policy["Statement"]]}


@pytest.fixture
def role_s3(aws, monkeypatch):
    """Every S3 hook's client answers as S3 answers a role whose listing is narrowed to the prefix; yields the
    calls staging made."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from image_pipeline.compute.emr.iam import iam_policy

    policy, calls, get_conn = prefix_only(iam_policy(bucket=BUCKET, prefix=PREFIX)), [], S3Hook.get_conn
    monkeypatch.setattr(S3Hook, "get_conn", lambda self: AsTheRoleSeesS3(get_conn(self), policy, calls))
    yield calls


@pytest.mark.parametrize("policy_of", ["iam_policy", "node_role_policy"])
def test_the_policies_list_the_bucket_so_a_missing_key_is_404_not_403(policy_of):
    from image_pipeline.compute.emr import iam

    policy = getattr(iam, policy_of)(bucket=BUCKET, prefix=PREFIX)
    assert list_bucket_allows(policy, BUCKET, None)  # what a HeadObject needs for its 404
    assert not list_bucket_allows(policy, "another-bucket", None)


def test_a_prefix_condition_allows_the_prefix_only_and_no_head_object():
    from image_pipeline.compute.emr.iam import iam_policy

    policy = prefix_only(iam_policy(bucket=BUCKET, prefix=PREFIX))
    assert list_bucket_allows(policy, BUCKET, f"{PREFIX}/artifacts/abc/image_jobs.zip")
    assert list_bucket_allows(policy, BUCKET, PREFIX)
    assert not list_bucket_allows(policy, BUCKET, "other/artifacts/abc/image_jobs.zip")
    assert not list_bucket_allows(policy, BUCKET, None)  # HeadObject sends no s3:prefix: hence the 403


def test_staging_succeeds_when_head_object_of_a_missing_key_is_403(aws, role_s3):
    from image_pipeline.compute.staging import stage_s3

    artifacts = f"s3://{BUCKET}/{PREFIX}/artifacts"
    first = stage_s3(artifacts, None, "aws_default")
    staged = {o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/artifacts/")["Contents"]}
    # the zip, 4 entry scripts, the bootstrap, its requirements, one wheel, the manifest
    assert set(first["uploaded"]) == staged and len(staged) == 9
    assert {k.rsplit("/", 1)[-1] for k in staged} >= {"image_jobs.zip", "install_python_deps.sh", "manifest.json"}
    assert first["jobs_zip_uri"] == f"{first['entry_dir_uri']}/image_jobs.zip"
    assert first["wheelhouse_uri"].startswith(f"{artifacts}/wheelhouse-")
    second = stage_s3(artifacts, None, "aws_default")
    assert second["uploaded"] == [] and {k: v for k, v in second.items() if k != "uploaded"} == \
        {k: v for k, v in first.items() if k != "uploaded"}
    assert [c for c in role_s3 if c[0] == "HeadObject"] == []  # existence comes from listings only
    listed = [prefix for operation, prefix in role_s3 if operation == "list_objects_v2"]
    assert listed and all(p.startswith(f"{PREFIX}/artifacts/") for p in listed)
    # every listing staging made is one the narrowed policy's condition allows
    from image_pipeline.compute.emr.iam import iam_policy

    assert all(list_bucket_allows(prefix_only(iam_policy(bucket=BUCKET, prefix=PREFIX)), BUCKET, p) for p in listed)
