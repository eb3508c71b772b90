"""The IAM policy the Airflow connection's role needs for the EMR backend, for the roles configured.

``python -m image_pipeline.compute.emr.iam --account-id 123456789012 --bucket my-bucket --prefix pipeline``
prints it for the deployment's settings (``IMAGE_PIPELINE_EMR_SERVICE_ROLE`` and ``..._JOB_FLOW_ROLE``);
``docs/iam-policy.json`` is its output for the default roles with placeholders, and a test keeps the two equal.
``--nodes`` prints the policy of the nodes' role (the EC2 instance profile) instead: ``docs/node-role-policy.json``.

- the EMR actions the DAGs call, each scoped to the deployment's own clusters: a cluster is created only
  carrying the tag ``image-pipeline-root`` = the deployment's root URI and only the product's tag keys
  (``aws:RequestTag``, ``aws:TagKeys``: RunJobFlow has no resource), and every other cluster action (AddTags,
  which RunJobFlow needs to tag the cluster at creation, AddJobFlowSteps, Describe*, List*, TerminateJobFlows)
  acts only on a cluster carrying that tag (``elasticmapreduce:ResourceTag``). The condition keys per action
  are the service authorization reference's
  (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticmapreduce.html), the
  pattern is AWS's tag-based access example
  (https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-fine-grained-cluster-access.html). The
  reference maps the RunJobFlow operation to exactly RunJobFlow, AddTags and iam:PassRole: the
  AutoTerminationPolicy it carries needs no PutAutoTerminationPolicy, which is not granted;
- ``iam:PassRole`` for exactly the two configured roles, each only to the service that uses it;
- S3 on the product's prefix only: read under it, write only ``artifacts/``, ``runs/``, ``models/latest.json``
  (by conditional PUT: If-Match needs s3:GetObject and s3:PutObject, If-None-Match s3:PutObject,
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html) and ``models/published/``
  (the gated models, named by their digest);
  and s3:ListBucket on the bucket, with no ``s3:prefix`` condition. A HeadObject of a missing key answers 404
  only to a caller with s3:ListBucket on the bucket, 403 to others
  (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html), and a HeadObject carries no prefix
  for such a condition to match: Airflow's object storage (s3fs's ``exists``: is there a ``models/latest.json``
  yet, an ``inbox/``?) and EMRFS on the nodes ask S3 that way, and would get 403s they take for denials.
  AWS's own least-privilege EMRFS statement grants s3:ListBucket on the bucket the same way
  (https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-iam-role-for-ec2.html). The roles can then list
  the bucket's key names, not read them: give the product a bucket of its own where that matters. Staging
  checks a key by listing it (``staging.key_exists``), which works under a prefix condition too; the rest of
  the pipeline needs the bucket-wide grant.
"""

from __future__ import annotations

import argparse
import json
import os

from image_pipeline.compute.emr.requests import (
    CLUSTER_TAG_KEYS,
    DEFAULT_JOB_FLOW_ROLE,
    DEFAULT_SERVICE_ROLE,
    DEPLOYMENT_TAG,
)

# the actions on an existing cluster (resource type cluster*): each only on the deployment's own
CLUSTER_ACTIONS = (
    "elasticmapreduce:AddJobFlowSteps",
    "elasticmapreduce:DescribeCluster",
    "elasticmapreduce:DescribeStep",
    "elasticmapreduce:ListSteps",
    "elasticmapreduce:ListInstances",
    "elasticmapreduce:TerminateJobFlows",
)
EMR_ACTIONS = ("elasticmapreduce:RunJobFlow", "elasticmapreduce:AddTags", *CLUSTER_ACTIONS)


def emr_statements(account_id: str, root_uri: str) -> list[dict]:
    """Create clusters tagged with the deployment's root only; act only on clusters carrying that tag."""
    clusters = f"arn:aws:elasticmapreduce:*:{account_id}:cluster/*"
    own_cluster = {"StringEquals": {f"elasticmapreduce:ResourceTag/{DEPLOYMENT_TAG}": root_uri}}
    own_tags = {"StringEquals": {f"aws:RequestTag/{DEPLOYMENT_TAG}": root_uri},
                "ForAllValues:StringEquals": {"aws:TagKeys": list(CLUSTER_TAG_KEYS)}}
    return [
        {"Sid": "CreateClustersTaggedForThisDeployment", "Effect": "Allow", "Action": "elasticmapreduce:RunJobFlow",
         "Resource": "*", "Condition": own_tags},
        {"Sid": "TagOnlyThisDeploymentsClusters", "Effect": "Allow", "Action": "elasticmapreduce:AddTags",
         "Resource": clusters, "Condition": {**own_tags, "StringEquals": {**own_tags["StringEquals"],
                                                                           **own_cluster["StringEquals"]}}},
        {"Sid": "RunStepsOnAndEndOnlyThisDeploymentsClusters", "Effect": "Allow", "Action": list(CLUSTER_ACTIONS),
         "Resource": clusters, "Condition": own_cluster},
    ]


def list_the_bucket(bucket: str) -> dict:
    """s3:ListBucket on the bucket, unconditioned: S3 then answers 404, not 403, for a missing key (see above)."""
    return {"Sid": "ListTheBucketSoMissingKeysAre404", "Effect": "Allow", "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}"}


def kms_statements(kms_key_arn: str | None) -> list[dict]:
    """Reading and writing objects of a bucket whose default encryption is SSE-KMS with this key: uploads
    (multipart ones too) need kms:GenerateDataKey and kms:Decrypt, downloads kms:Decrypt
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html); none without a key."""
    if not kms_key_arn:
        return []
    return [{"Sid": "ReadAndWriteObjectsEncryptedWithTheBucketsKey", "Effect": "Allow",
             "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": kms_key_arn}]


def iam_policy(account_id: str = "<account-id>", bucket: str = "<bucket>", prefix: str = "<prefix>",
               service_role: str = DEFAULT_SERVICE_ROLE, job_flow_role: str = DEFAULT_JOB_FLOW_ROLE,
               kms_key_arn: str | None = None) -> dict:
    """The policy document (a fresh dict)."""
    def role_arn(name: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{name}"

    def pass_role(sid: str, role: str, service: str) -> dict:
        return {"Sid": sid, "Effect": "Allow", "Action": "iam:PassRole", "Resource": role_arn(role),
                "Condition": {"StringEquals": {"iam:PassedToService": service}}}

    objects = f"arn:aws:s3:::{bucket}/{prefix}"
    return {"Version": "2012-10-17", "Statement": [
        *emr_statements(account_id, f"s3://{bucket}/{prefix}".rstrip("/")),
        pass_role("PassTheEmrServiceRole", service_role, "elasticmapreduce.amazonaws.com"),
        pass_role("PassTheNodesRole", job_flow_role, "ec2.amazonaws.com"),
        list_the_bucket(bucket),
        {"Sid": "ReadImagesReportsLogsAndArtifacts", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"{objects}/*"},
        {"Sid": "WriteArtifactsReportPagesAndTheLatestModel", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": [f"{objects}/artifacts/*", f"{objects}/runs/*", f"{objects}/models/latest.json",
                      f"{objects}/models/published/*"]},
        *kms_statements(kms_key_arn),
    ]}


# what the cluster writes under the product's prefix (the job outputs, and the logs EMR archives to LogUri)
NODE_WRITES = ("features", "rejects", "runs", "predictions", "scoring", "logs")
FOLDER_MARKER = "_$folder$"  # EMRFS's empty object marking a folder it created


def node_role_policy(bucket: str = "<bucket>", prefix: str = "<prefix>", kms_key_arn: str | None = None) -> dict:
    """The nodes' instance profile policy: EMRFS reads and writes on the product's prefix only.

    AmazonElasticMapReduceforEC2Role is on the path to deprecation; these statements are AWS's least-
    privilege examples (EMRFS reads and writes, log archiving) scoped to the prefix:
    https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-iam-role-for-ec2.html

    EMRFS (``s3://`` up to EMR 7.9; from 7.10 S3A is the default connector, and a deployment may switch back)
    marks a folder it creates with an empty ``<folder>_$folder$`` object
    (https://repost.aws/knowledge-center/emr-s3-empty-files): beside the folder, not under it, so the first
    job writing a fresh ``features/`` would be denied by ``features/*`` alone. Exactly those keys are allowed
    (the prefix itself exists before any node writes: staging put ``artifacts/`` there). S3A's markers are
    ``<folder>/`` keys, under ``<folder>/*`` already.
    """
    objects = f"arn:aws:s3:::{bucket}/{prefix}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadUnderTheProductPrefix", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{objects}/*"},
        {"Sid": "WriteTheJobsOutputsAndLogs", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": [f"{objects}/{folder}/*" for folder in NODE_WRITES]},
        {"Sid": "EmrfsFolderMarkersOfThoseFolders", "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
         "Resource": [f"{objects}/{folder}{FOLDER_MARKER}" for folder in NODE_WRITES]},
        list_the_bucket(bucket),
        {"Sid": "MultipartUploadsOfTheBucket", "Effect": "Allow", "Action": "s3:ListBucketMultipartUploads",
         "Resource": f"arn:aws:s3:::{bucket}"},
        {"Sid": "EmrfsMetricsAndBucketChecks", "Effect": "Allow",
         "Action": ["cloudwatch:PutMetricData", "s3:HeadBucket"], "Resource": "*"},
        *kms_statements(kms_key_arn),
    ]}


def main(argv: list[str] | None = None) -> None:
    from image_pipeline.compute.emr.requests import load_emr_settings

    parser = argparse.ArgumentParser(description="Print the IAM policy of the EMR backend for the configured roles.")
    parser.add_argument("--account-id", default="<account-id>")
    parser.add_argument("--bucket", default="<bucket>")
    parser.add_argument("--prefix", default="<prefix>", help="the product's prefix in the bucket (no slashes around)")
    parser.add_argument("--nodes", action="store_true", help="the policy of the nodes' role (EC2 instance profile)")
    parser.add_argument("--kms-key-arn", default=os.environ.get("IMAGE_PIPELINE_S3_KMS_KEY_ARN") or None,
                        help="the KMS key of the bucket's default encryption (SSE-KMS), if it has one; "
                             "default: IMAGE_PIPELINE_S3_KMS_KEY_ARN")
    args = parser.parse_args(argv)
    if args.kms_key_arn and not args.kms_key_arn.startswith("arn:aws:kms:"):
        parser.error(f"--kms-key-arn {args.kms_key_arn!r} is not a KMS key ARN "
                     "(arn:aws:kms:<region>:<account>:key/...)")
    if args.nodes:
        print(json.dumps(node_role_policy(args.bucket, args.prefix.strip("/"), args.kms_key_arn), indent=2))
        return
    settings = load_emr_settings()
    policy = iam_policy(args.account_id, args.bucket, args.prefix.strip("/"), settings.service_role,
                        settings.job_flow_role, args.kms_key_arn)
    print(json.dumps(policy, indent=2))


if __name__ == "__main__":
    main()
