"""AWS EMR backend: request bodies for RunJobFlow and AddJobFlowSteps, built from the run plan.

Pure functions returning fresh dicts (never shared module-level structures), validated in the tests
by botocore's own parameter validation. Nothing account-specific is hard-coded: roles, subnet,
bucket and prices come from deployment settings and the trigger form.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from image_pipeline.compute.emr.capacity import (
    CAPACITY_MODES,
    DRIVER_ON_CORE_NODES,
    ROOT_VOLUME_GIB,
    instances_capacity,
    spark_defaults,
)
from image_pipeline.compute.steps import steps_for
from image_pipeline.planning.layout import join

# emr-7.13.0 runs Spark 3.5.6-amzn-2 (https://docs.aws.amazon.com/emr/latest/ReleaseGuide/Spark-release-history.html)
# and offers Python 3.9 and 3.11 (https://docs.aws.amazon.com/emr/latest/ReleaseGuide/emr-7130-release.html):
# the Spark jobs run on 3.11, the interpreter the bootstrap installs the wheelhouse into
DEFAULT_RELEASE = "emr-7.13.0"
NODE_PYTHON = "/usr/bin/python3.11"
# The current default roles (https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-iam-role.html and
# .../emr-iam-role-for-ec2.html). EMR_DefaultRole_V2's policy, AmazonEMRServicePolicy_v2, acts only on
# resources tagged for-use-with-amazon-emr-managed-policies=true: the cluster carries the tag (EMR
# propagates it); the subnet, security groups not created by EMR, and the VPC when EMR creates its managed
# security groups in it must carry it too (docs/aws.md;
# https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-managed-iam-policies.html#manually-tagged-resources).
DEFAULT_SERVICE_ROLE = "EMR_DefaultRole_V2"
DEFAULT_JOB_FLOW_ROLE = "EMR_EC2_DefaultRole"
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
# every cluster carries its deployment's root URI under this key; the Airflow role's policy scopes every
# cluster action to it (docs/aws.md, "The Airflow connection and its policy")
DEPLOYMENT_TAG = "image-pipeline-root"
CLUSTER_TAG_KEYS = ("run_key", "dag_id", "app", DEPLOYMENT_TAG, MANAGED_POLICY_TAG["Key"])
# EXAMPLE prices per instance-hour (EC2 + EMR, USD), not taken from AWS's price list: set the deployment's own
# with IMAGE_PIPELINE_EMR_PRICES_JSON from the Amazon EMR pricing page (https://aws.amazon.com/emr/pricing/,
# EC2 and EMR price per type and Region). A type a fleet launched that has no price is named in the cost
# line, not counted.
DEFAULT_PRICES: dict[str, float] = {
    "m5.xlarge": 0.192 + 0.048, "m5.2xlarge": 0.384 + 0.096, "m5.4xlarge": 0.768 + 0.192,
    "c5.2xlarge": 0.34 + 0.085, "c5.4xlarge": 0.68 + 0.17,
}
# gp3 storage, USD per GiB-month in US East (N. Virginia), from EMR's gp2/gp3 comparison
# (https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-plan-storage-compare-volume-types.html: "$0.08/GiB-
# month"); the volumes' baseline IOPS and throughput are free. Set IMAGE_PIPELINE_EMR_EBS_GIB_MONTH_USD for
# another Region. A month is taken as 730 hours.
DEFAULT_EBS_GIB_MONTH_USD = 0.08
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class EmrSettings:
    """Deployment settings of the EMR backend (environment, read without I/O)."""

    release_label: str
    instance_type: str
    core_instance_count: int
    spot_task_count: int
    capacity: str
    idle_timeout_minutes: int
    subnet_id: str
    job_flow_role: str
    service_role: str
    security_configuration: str
    deferrable: bool
    poke_seconds: int
    step_timeout_hours: float
    prices: dict[str, float]
    region: str
    ebs_gib_month_usd: float = DEFAULT_EBS_GIB_MONTH_USD


def load_emr_settings(environ: dict[str, str] | None = None) -> EmrSettings:
    """Read IMAGE_PIPELINE_EMR_* settings; defaults suit a first run in a default VPC."""
    env = os.environ if environ is None else environ
    if "IMAGE_PIPELINE_EMR_SPOT" in env:
        raise ValueError("IMAGE_PIPELINE_EMR_SPOT is no longer read: spot capacity runs task nodes only (never HDFS "
                         "or the driver); set IMAGE_PIPELINE_EMR_SPOT_TASK_COUNT to the number of spot task nodes")
    capacity = env.get("IMAGE_PIPELINE_EMR_CAPACITY", "fleets").strip().lower()
    if capacity not in CAPACITY_MODES:
        raise ValueError(f"IMAGE_PIPELINE_EMR_CAPACITY={capacity!r}: choose one of {', '.join(CAPACITY_MODES)}")
    prices = dict(DEFAULT_PRICES)
    prices.update({k: float(v) for k, v in json.loads(env.get("IMAGE_PIPELINE_EMR_PRICES_JSON", "{}")).items()})
    return EmrSettings(
        release_label=env.get("IMAGE_PIPELINE_EMR_RELEASE", DEFAULT_RELEASE),
        instance_type=env.get("IMAGE_PIPELINE_EMR_INSTANCE_TYPE", "m5.xlarge"),
        core_instance_count=int(env.get("IMAGE_PIPELINE_EMR_CORE_COUNT", "2")),
        spot_task_count=int(env.get("IMAGE_PIPELINE_EMR_SPOT_TASK_COUNT", "0")),
        capacity=capacity,
        idle_timeout_minutes=int(env.get("IMAGE_PIPELINE_EMR_IDLE_TIMEOUT_MINUTES", "60")),
        subnet_id=env.get("IMAGE_PIPELINE_EMR_SUBNET_ID", ""),
        job_flow_role=env.get("IMAGE_PIPELINE_EMR_JOB_FLOW_ROLE", DEFAULT_JOB_FLOW_ROLE),
        service_role=env.get("IMAGE_PIPELINE_EMR_SERVICE_ROLE", DEFAULT_SERVICE_ROLE),
        security_configuration=env.get("IMAGE_PIPELINE_EMR_SECURITY_CONFIGURATION", ""),
        deferrable=env.get("IMAGE_PIPELINE_EMR_DEFERRABLE", "true").lower() in ("1", "true", "yes"),
        poke_seconds=int(env.get("IMAGE_PIPELINE_EMR_POKE_SECONDS", "60")),
        step_timeout_hours=float(env.get("IMAGE_PIPELINE_EMR_STEP_TIMEOUT_HOURS", "6")),
        prices=prices,
        region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        ebs_gib_month_usd=float(env.get("IMAGE_PIPELINE_EMR_EBS_GIB_MONTH_USD", DEFAULT_EBS_GIB_MONTH_USD)),
    )


def job_flow_overrides(plan: dict, emr: dict, artifacts: dict, dag_id: str) -> dict:
    """The RunJobFlow request body of the run's cluster (a fresh dict every call).

    ``emr`` holds the run's EMR choices (release_label, instance_type, core_instance_count, spot_task_count,
    capacity, idle_timeout_minutes, subnet_id, job_flow_role, service_role, security_configuration);
    ``artifacts`` the staged URIs (bootstrap_uri, wheelhouse_uri, requirements_uri).
    """
    body = {
        "Name": f"{dag_id} {plan['run_key']}"[:256],
        "ReleaseLabel": emr["release_label"],
        "Applications": [{"Name": "Spark"}, {"Name": "Hadoop"}],
        "LogUri": join(plan["logs_uri"], ""),
        "EbsRootVolumeSize": ROOT_VOLUME_GIB,
        "Instances": cluster_instances(emr),
        "BootstrapActions": bootstrap_actions(artifacts),
        "Configurations": cluster_configurations(emr, plan["batch_size"]),
        "AutoTerminationPolicy": {"IdleTimeout": int(emr["idle_timeout_minutes"]) * 60},
        "JobFlowRole": emr["job_flow_role"],
        "ServiceRole": emr["service_role"],
        "Tags": cluster_tags(plan["run_key"], dag_id, plan["root_uri"]),
        "StepConcurrencyLevel": 1,
    }
    if emr.get("security_configuration"):
        body["SecurityConfiguration"] = emr["security_configuration"]
    return body


def cluster_instances(emr: dict) -> dict:
    """``Instances``: the fleets or groups, kept alive for the teardown, in the run's subnet when one is set."""
    instances = {
        **instances_capacity(emr["capacity"], emr["instance_type"], emr["core_instance_count"],
                             emr["spot_task_count"]),
        "KeepJobFlowAliveWhenNoSteps": True,  # the teardown terminates it, also after a failed step
        "TerminationProtected": False,
    }
    if emr.get("subnet_id"):  # fleets take a list of subnets, groups one
        if emr["capacity"] == "fleets":
            instances["Ec2SubnetIds"] = [emr["subnet_id"]]
        else:
            instances["Ec2SubnetId"] = emr["subnet_id"]
    return instances


def bootstrap_actions(artifacts: dict) -> list[dict]:
    """``BootstrapActions``: the staged script installs the jobs' packages from the staged wheelhouse."""
    return [{
        "Name": "Install the Spark jobs' Python dependencies",
        # the nodes install from the staged wheelhouse, so private subnets without NAT need no PyPI
        "ScriptBootstrapAction": {"Path": artifacts["bootstrap_uri"],
                                  "Args": [artifacts["wheelhouse_uri"], artifacts["requirements_uri"]]},
    }]


def cluster_configurations(emr: dict, batch_size: int) -> list[dict]:
    """``Configurations``: the nodes' Python for PySpark, spark-defaults that fit YARN, node labels with task nodes.

    The driver (YARN cluster mode: the application master's container) gets ``AWS_REGION``: the jobs read the
    photos with their own S3 client (``image_jobs.photo_store``), which looks up no bucket's region.
    """
    defaults = spark_defaults(emr["instance_type"], emr["core_instance_count"], emr["spot_task_count"], batch_size)
    if emr.get("region"):  # plans made before the region was recorded leave it to the SDK's default chain
        defaults["spark.yarn.appMasterEnv.AWS_REGION"] = emr["region"]
    return [
        {"Classification": "spark-env", "Configurations": [
            {"Classification": "export", "Properties": {"PYSPARK_PYTHON": NODE_PYTHON,
                                                        "PYSPARK_DRIVER_PYTHON": NODE_PYTHON}},
        ], "Properties": {}},
        {"Classification": "spark-defaults", "Properties": defaults},
        *([{"Classification": "yarn-site", "Properties": dict(DRIVER_ON_CORE_NODES)}]
          if emr["spot_task_count"] else []),
    ]


def cluster_tags(run_key: str, dag_id: str, root_uri: str) -> list[dict]:
    """``Tags``: the run's; the deployment's root (``DEPLOYMENT_TAG``: the Airflow role may act only on clusters
    carrying its own, ``iam.iam_policy``); and the tag AmazonEMRServicePolicy_v2 requires (EMR propagates it)."""
    return [
        {"Key": "run_key", "Value": run_key},
        {"Key": "dag_id", "Value": dag_id},
        {"Key": "app", "Value": "image-classification"},
        {"Key": DEPLOYMENT_TAG, "Value": root_uri.rstrip("/")},
        dict(MANAGED_POLICY_TAG),
    ]


def emr_steps(plan: dict, artifacts: dict) -> list[dict]:
    """The AddJobFlowSteps ``Steps``: spark-submit in cluster mode with exactly the local arguments.

    ``ActionOnFailure=CANCEL_AND_WAIT``: a failed step cancels the later ones while the cluster
    stays up for the teardown (and for its logs).
    """
    steps = []
    for spec in steps_for(plan, artifacts.get("weights_uri")):
        step = {
            "Name": spec.name,
            "ActionOnFailure": "CANCEL_AND_WAIT",
            "HadoopJarStep": {
                "Jar": "command-runner.jar",
                "Args": [
                    "spark-submit", "--deploy-mode", "cluster", "--name", f"{spec.name} {plan['run_key']}",
                    "--py-files", artifacts["jobs_zip_uri"],
                    join(artifacts["entry_dir_uri"], spec.entry_script),
                    *spec.args,
                ],
            },
        }
        check_step_size(step)
        steps.append(step)
    return steps


# AWS's AddJobFlowSteps API reference: "The string values passed into HadoopJarStep object cannot exceed a total
# of 10240 characters." (https://docs.aws.amazon.com/emr/latest/APIReference/API_AddJobFlowSteps.html)
HADOOP_JAR_STEP_MAX_CHARACTERS = 10240


def hadoop_jar_step_characters(step: dict) -> int:
    """The characters of a step's HadoopJarStep strings (Jar, MainClass, Args, Properties' keys and values)."""
    jar_step = step["HadoopJarStep"]
    strings = [jar_step.get("Jar", ""), jar_step.get("MainClass", ""), *jar_step.get("Args", []),
               *[part for prop in jar_step.get("Properties", []) for part in (prop["Key"], prop["Value"])]]
    return sum(len(s) for s in strings)


def check_step_size(step: dict) -> None:
    """Refuse, before any cluster starts, a step EMR would refuse for the size of its arguments."""
    size = hadoop_jar_step_characters(step)
    if size > HADOOP_JAR_STEP_MAX_CHARACTERS:
        raise ValueError(f"EMR step {step['Name']}: its arguments hold {size} characters, over AddJobFlowSteps' "
                         f"limit of {HADOOP_JAR_STEP_MAX_CHARACTERS} (long values belong in a file the job reads)")


def console_link(region: str, cluster_id: str) -> str:
    """The cluster's page in the AWS console."""
    return f"https://console.aws.amazon.com/emr/home?region={region}#/clusterDetails/{cluster_id}"


def _seconds(start: datetime | None, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds()) if start else 0.0


def cluster_cost(describe: dict, prices: dict[str, float], instances: list[dict],
                 now: datetime | None = None, ebs_gib_month_usd: float = DEFAULT_EBS_GIB_MONTH_USD) -> dict:
    """What a cluster cost, from DescribeCluster and the instances that actually ran (ListInstances).

    Each instance counts from its creation to its end (the cluster's end when it has none), per second
    with a one-minute minimum per instance, as EC2 bills Linux instances and EMR bills its clusters
    (https://aws.amazon.com/about-aws/whats-new/2017/10/announcing-amazon-ec2-per-second-billing/ and, for
    EMR, https://aws.amazon.com/blogs/aws/new-per-second-billing-for-ec2-instances-and-ebs-volumes/), at the
    on-demand price of its type: spot instances are counted at that price too, so the estimate is an upper
    bound. Its EBS volumes (the root volume and the data volume every node gets, ``capacity.EBS_GIB_PER_NODE``)
    count for the same time at ``ebs_gib_month_usd``. Instances of a type without a price are counted in
    ``unpriced_instances`` (per type), their EBS still in the estimate, their hours not.
    """
    from image_pipeline.compute.emr.capacity import EBS_GIB_PER_NODE

    cluster = describe["Cluster"]
    timeline = cluster["Status"].get("Timeline", {})
    start = timeline.get("CreationDateTime")
    end = timeline.get("EndDateTime") or now or datetime.now(UTC)
    cost, unpriced, counts = 0.0, Counter(), Counter()
    for instance in instances:
        kind = instance["InstanceType"]
        counts[f"{kind} {instance.get('Market', 'ON_DEMAND').lower().replace('_', '-')}"] += 1
        span = instance.get("Status", {}).get("Timeline", {})
        hours = max(60.0, _seconds(span.get("CreationDateTime") or start, span.get("EndDateTime") or end)) / 3600
        cost += EBS_GIB_PER_NODE * ebs_gib_month_usd * hours / HOURS_PER_MONTH
        if kind in prices:
            cost += prices[kind] * hours
        else:
            unpriced[kind] += 1
    ebs_hourly = EBS_GIB_PER_NODE * ebs_gib_month_usd / HOURS_PER_MONTH
    return {
        "cluster_id": cluster["Id"],
        "normalized_instance_hours": cluster.get("NormalizedInstanceHours", 0),
        "hours": round(_seconds(start, end) / 3600, 3),
        "estimated_cost_usd": round(cost, 2),
        "hourly_price_usd": round(sum(prices.get(i["InstanceType"], 0.0) + ebs_hourly for i in instances), 3),
        "instances": dict(sorted(counts.items())),
        "unpriced_instances": dict(sorted(unpriced.items())),
    }
