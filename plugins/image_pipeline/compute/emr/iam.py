"""The IAM policy the Airflow connection's role needs for the EMR backend, for the roles configured.

``python -m image_pipeline.compute.emr.iam --account-id 123456789012 --bucket my-bucket --prefix pipeline``
prints it for the deployment's settings (``IMAGE_PIPELINE_EMR_SERVICE_ROLE`` and ``..._JOB_FLOW_ROLE``);
``docs/iam-policy.json`` is its output for the default roles with placeholders, and a test keeps the two equal.
``--nodes`` prints the policy of the nodes' role (the EC2 instance profile) instead: ``docs/node-role-policy.json``.

- the EMR actions the DAGs call (RunJobFlow needs AddTags to tag the cluster at creation);
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

from image_pipeline.compute.emr.requests import DEFAULT_JOB_FLOW_ROLE, DEFAULT_SERVICE_ROLE

EMR_ACTIONS = (
    "elasticmapreduce:RunJobFlow",
    "elasticmapreduce:AddTags",
    "elasticmapreduce:AddJobFlowSteps",
    "elasticmapreduce:DescribeCluster",
    "elasticmapreduce:DescribeStep",
    "elasticmapreduce:ListSteps",
    "elasticmapreduce:ListInstances",
    "elasticmapreduce:TerminateJobFlows",
)


def list_the_bucket(bucket: str) -> dict:
    """s3:ListBucket on the bucket, unconditioned: S3 then answers 404, not 403, for a missing key (see above)."""
    return {"Sid": "ListTheBucketSoMissingKeysAre404", "Effect": "Allow", "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}"}


def iam_policy(account_id: str = "<account-id>", bucket: str = "<bucket>", prefix: str = "<prefix>",
               service_role: str = DEFAULT_SERVICE_ROLE, job_flow_role: str = DEFAULT_JOB_FLOW_ROLE) -> dict:
    """The policy document (a fresh dict)."""
    def role_arn(name: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{name}"

    def pass_role(sid: str, role: str, service: str) -> dict:
        return {"Sid": sid, "Effect": "Allow", "Action": "iam:PassRole", "Resource": role_arn(role),
                "Condition": {"StringEquals": {"iam:PassedToService": service}}}

    objects = f"arn:aws:s3:::{bucket}/{prefix}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "TransientEmrClusters", "Effect": "Allow", "Action": list(EMR_ACTIONS), "Resource": "*"},
        pass_role("PassTheEmrServiceRole", service_role, "elasticmapreduce.amazonaws.com"),
        pass_role("PassTheNodesRole", job_flow_role, "ec2.amazonaws.com"),
        list_the_bucket(bucket),
        {"Sid": "ReadImagesReportsLogsAndArtifacts", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"{objects}/*"},
        {"Sid": "WriteArtifactsReportPagesAndTheLatestModel", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": [f"{objects}/artifacts/*", f"{objects}/runs/*", f"{objects}/models/latest.json",
                      f"{objects}/models/published/*"]},
    ]}


# what the cluster writes under the product's prefix (the job outputs, and the logs EMR archives to LogUri)
NODE_WRITES = ("features", "rejects", "runs", "predictions", "scoring", "logs")


def node_role_policy(bucket: str = "<bucket>", prefix: str = "<prefix>") -> dict:
    """The nodes' instance profile policy: EMRFS reads and writes on the product's prefix only.

    AmazonElasticMapReduceforEC2Role is on the path to deprecation; these statements are AWS's least-
    privilege examples (EMRFS reads and writes, log archiving) scoped to the prefix:
    https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-iam-role-for-ec2.html
    """
    objects = f"arn:aws:s3:::{bucket}/{prefix}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadUnderTheProductPrefix", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{objects}/*"},
        {"Sid": "WriteTheJobsOutputsAndLogs", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": [f"{objects}/{folder}/*" for folder in NODE_WRITES]},
        list_the_bucket(bucket),
        {"Sid": "MultipartUploadsOfTheBucket", "Effect": "Allow", "Action": "s3:ListBucketMultipartUploads",
         "Resource": f"arn:aws:s3:::{bucket}"},
        {"Sid": "EmrfsMetricsAndBucketChecks", "Effect": "Allow",
         "Action": ["cloudwatch:PutMetricData", "s3:HeadBucket"], "Resource": "*"},
    ]}


def main(argv: list[str] | None = None) -> None:
    from image_pipeline.compute.emr.requests import load_emr_settings

    parser = argparse.ArgumentParser(description="Print the IAM policy of the EMR backend for the configured roles.")
    parser.add_argument("--account-id", default="<account-id>")
    parser.add_argument("--bucket", default="<bucket>")
    parser.add_argument("--prefix", default="<prefix>", help="the product's prefix in the bucket (no slashes around)")
    parser.add_argument("--nodes", action="store_true", help="the policy of the nodes' role (EC2 instance profile)")
    args = parser.parse_args(argv)
    if args.nodes:
        print(json.dumps(node_role_policy(args.bucket, args.prefix.strip("/")), indent=2))
        return
    settings = load_emr_settings()
    policy = iam_policy(args.account_id, args.bucket, args.prefix.strip("/"), settings.service_role,
                        settings.job_flow_role)
    print(json.dumps(policy, indent=2))


if __name__ == "__main__":
    main()
