"""The product's IAM policies, checked statement by statement with IAM's evaluation (tests/iam_eval.py).

- the Airflow role creates only clusters tagged with its deployment's root and acts only on those: another
  deployment's cluster, or one of the account's other clusters, is out of its reach;
- no statement grants an EMR cluster action on every resource without a condition;
- the nodes may write EMRFS's ``<folder>_$folder$`` markers of the folders they write, and nothing beside;
- with a bucket KMS key configured, both roles may use that key (and no other) to read and write.
"""

from __future__ import annotations

import json

import pytest

from iam_eval import Request, allowed
from image_pipeline.compute.emr.iam import CLUSTER_ACTIONS, iam_policy, main, node_role_policy
from image_pipeline.compute.emr.requests import DEPLOYMENT_TAG, cluster_tags
from project_paths import PROJECT_ROOT

ACCOUNT, BUCKET, PREFIX = "111122223333", "bucket", "prefix"
CLUSTER = f"arn:aws:elasticmapreduce:us-east-1:{ACCOUNT}:cluster/j-1ABC"


def request_tags(tags: list[dict]) -> dict:
    """The condition context of a request carrying ``tags`` (aws:RequestTag/<key>, aws:TagKeys)."""
    return {**{f"aws:RequestTag/{t['Key']}": t["Value"] for t in tags}, "aws:TagKeys": [t["Key"] for t in tags]}


def resource_tags(tags: list[dict]) -> dict:
    return {f"elasticmapreduce:ResourceTag/{t['Key']}": t["Value"] for t in tags}


@pytest.fixture
def policy():
    return iam_policy(ACCOUNT, BUCKET, PREFIX)


@pytest.fixture
def tags():
    """The tags the DAG's RunJobFlow body gives a run's cluster (test_emr.py: the body's are these), its root
    as the deployment's root URI ends (with a slash or without)."""
    return cluster_tags("scheduled__2026-03-01T00_00_00_00_00-0a1b2c3d4e", "image_classification",
                        f"s3://{BUCKET}/{PREFIX}/")


def test_the_dags_own_requests_are_allowed(policy, tags):
    assert {"Key": DEPLOYMENT_TAG, "Value": f"s3://{BUCKET}/{PREFIX}"} in tags
    assert allowed(policy, Request("elasticmapreduce:RunJobFlow", "*", request_tags(tags)))
    # tagging at creation is AddTags on the new cluster, which carries the requested tags
    assert allowed(policy, Request("elasticmapreduce:AddTags", CLUSTER, {**request_tags(tags), **resource_tags(tags)}))
    for action in CLUSTER_ACTIONS:
        assert allowed(policy, Request(action, CLUSTER, resource_tags(tags))), action


def test_other_clusters_are_out_of_reach(policy, tags):
    others_root = [{**t, "Value": "s3://bucket/other-team"} if t["Key"] == DEPLOYMENT_TAG else t for t in tags]
    untagged = [t for t in tags if t["Key"] != DEPLOYMENT_TAG]
    for action in CLUSTER_ACTIONS:  # steps on, descriptions of, or the end of any cluster not this deployment's
        assert not allowed(policy, Request(action, CLUSTER, resource_tags(others_root))), action
        assert not allowed(policy, Request(action, CLUSTER, {})), action
    # nor can it make a cluster its own by tagging it
    assert not allowed(policy, Request("elasticmapreduce:AddTags", CLUSTER, {**request_tags(tags), **resource_tags(
        untagged)}))
    # and it creates no cluster without its tag, with another root, or with tags of other keys
    assert not allowed(policy, Request("elasticmapreduce:RunJobFlow", "*", request_tags(untagged)))
    assert not allowed(policy, Request("elasticmapreduce:RunJobFlow", "*", request_tags(others_root)))
    assert not allowed(policy, Request("elasticmapreduce:RunJobFlow", "*", request_tags(
        [*tags, {"Key": "cost-center", "Value": "x"}])))


@pytest.mark.parametrize("document", ["iam-policy.json", "node-role-policy.json", "generated"])
def test_no_statement_grants_an_emr_action_on_every_resource_without_a_condition(document):
    generated = iam_policy(ACCOUNT, BUCKET, PREFIX, kms_key_arn="arn:aws:kms:us-east-1:1:key/k")
    policy = generated if document == "generated" else json.loads((PROJECT_ROOT / "docs" / document).read_text())
    for statement in policy["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        if any(a.startswith("elasticmapreduce:") for a in actions) and "*" in resources:
            assert statement.get("Condition"), statement["Sid"]
        assert not any(a.endswith("*") for a in actions), statement["Sid"]


def test_the_nodes_may_write_the_emrfs_markers_of_their_folders_and_nothing_beside():
    policy = node_role_policy(BUCKET, PREFIX)
    objects = f"arn:aws:s3:::{BUCKET}/{PREFIX}"
    # a first extraction into a fresh features/: EMRFS marks the folder beside it, then writes under it
    for key in ("features_$folder$", "features/backbone=mobilenet_v2_$folder$", "features/part-0.parquet",
                "features/", "runs_$folder$", "logs_$folder$"):
        assert allowed(policy, Request("s3:PutObject", f"{objects}/{key}")), key
    for key in ("images_$folder$", "artifacts_$folder$", "models_$folder$", "features$folder$", "x_$folder$",
                "images/a.jpg"):
        assert not allowed(policy, Request("s3:PutObject", f"{objects}/{key}")), key


def test_a_bucket_kms_key_is_granted_to_both_roles_and_only_that_key(capsys):
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    for argv in ([], ["--nodes"]):
        main(["--bucket", BUCKET, "--prefix", PREFIX, "--kms-key-arn", key, *argv])
        policy = json.loads(capsys.readouterr().out)
        for action in ("kms:GenerateDataKey", "kms:Decrypt"):  # multipart uploads need both
            assert allowed(policy, Request(action, key)), (argv, action)
            assert not allowed(policy, Request(action, key.replace("1234abcd", "99999999"))), (argv, action)
        main(["--bucket", BUCKET, "--prefix", PREFIX, *argv])
        assert "kms:" not in capsys.readouterr().out  # no key, no KMS statement
    with pytest.raises(SystemExit):
        main(["--kms-key-arn", "alias/my-key"])
    assert "is not a KMS key ARN" in capsys.readouterr().err
