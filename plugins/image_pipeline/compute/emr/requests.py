"""AWS EMR backend: request bodies for RunJobFlow and AddJobFlowSteps, built from the run plan.

Pure functions returning fresh dicts (never shared module-level structures), validated in the tests
by botocore's own parameter validation. Nothing account-specific is hard-coded: roles, subnet,
bucket and prices come from deployment settings and the trigger form.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from image_pipeline.compute.steps import steps_for
from image_pipeline.planning.layout import join

DEFAULT_RELEASE = "emr-7.13.0"  # Spark 3.5.6, Python 3.11 on the nodes
NODE_PYTHON = "/usr/bin/python3.11"
# vCPUs and memory (GiB) of the instance types offered in the trigger form
INSTANCE_SPECS: dict[str, tuple[int, int]] = {
    "m5.xlarge": (4, 16), "m5.2xlarge": (8, 32), "m5.4xlarge": (16, 64),
    "m6i.xlarge": (4, 16), "m6i.2xlarge": (8, 32), "m6i.4xlarge": (16, 64),
    "c5.2xlarge": (8, 16), "c5.4xlarge": (16, 32), "r5.xlarge": (4, 32), "r5.2xlarge": (8, 64),
}
# On-demand EC2 + EMR price per instance-hour, USD, us-east-1 (override: IMAGE_PIPELINE_EMR_PRICES_JSON)
DEFAULT_PRICES: dict[str, float] = {
    "m5.xlarge": 0.192 + 0.048, "m5.2xlarge": 0.384 + 0.096, "m5.4xlarge": 0.768 + 0.192,
    "m6i.xlarge": 0.192 + 0.048, "m6i.2xlarge": 0.384 + 0.096, "m6i.4xlarge": 0.768 + 0.192,
    "c5.2xlarge": 0.34 + 0.085, "c5.4xlarge": 0.68 + 0.17, "r5.xlarge": 0.252 + 0.063, "r5.2xlarge": 0.504 + 0.126,
}


@dataclass(frozen=True)
class EmrSettings:
    """Deployment settings of the EMR backend (environment, read without I/O)."""

    release_label: str
    instance_type: str
    core_instance_count: int
    use_spot: bool
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


def load_emr_settings(environ: dict[str, str] | None = None) -> EmrSettings:
    """Read IMAGE_PIPELINE_EMR_* settings; defaults suit a first run in a default VPC."""
    env = os.environ if environ is None else environ
    prices = dict(DEFAULT_PRICES)
    prices.update({k: float(v) for k, v in json.loads(env.get("IMAGE_PIPELINE_EMR_PRICES_JSON", "{}")).items()})
    return EmrSettings(
        release_label=env.get("IMAGE_PIPELINE_EMR_RELEASE", DEFAULT_RELEASE),
        instance_type=env.get("IMAGE_PIPELINE_EMR_INSTANCE_TYPE", "m5.xlarge"),
        core_instance_count=int(env.get("IMAGE_PIPELINE_EMR_CORE_COUNT", "2")),
        use_spot=env.get("IMAGE_PIPELINE_EMR_SPOT", "false").lower() in ("1", "true", "yes"),
        idle_timeout_minutes=int(env.get("IMAGE_PIPELINE_EMR_IDLE_TIMEOUT_MINUTES", "60")),
        subnet_id=env.get("IMAGE_PIPELINE_EMR_SUBNET_ID", ""),
        job_flow_role=env.get("IMAGE_PIPELINE_EMR_JOB_FLOW_ROLE", "EMR_EC2_DefaultRole"),
        service_role=env.get("IMAGE_PIPELINE_EMR_SERVICE_ROLE", "EMR_DefaultRole"),
        security_configuration=env.get("IMAGE_PIPELINE_EMR_SECURITY_CONFIGURATION", ""),
        deferrable=env.get("IMAGE_PIPELINE_EMR_DEFERRABLE", "true").lower() in ("1", "true", "yes"),
        poke_seconds=int(env.get("IMAGE_PIPELINE_EMR_POKE_SECONDS", "60")),
        step_timeout_hours=float(env.get("IMAGE_PIPELINE_EMR_STEP_TIMEOUT_HOURS", "6")),
        prices=prices,
        region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def spark_defaults(instance_type: str, core_count: int, batch_size: int) -> dict[str, str]:
    """spark-defaults sized for the core nodes; every value a string, as EMR requires.

    TensorFlow runs in the Python workers, outside the JVM heap, so most of each executor's share
    of YARN memory goes to ``memoryOverhead`` rather than to the heap.
    """
    vcpus, memory_gib = INSTANCE_SPECS.get(instance_type, (4, 16))
    cores = min(4, vcpus)
    executors_per_node = max(1, vcpus // cores)
    per_executor_mib = int(memory_gib * 1024 * 0.75 / executors_per_node)  # YARN keeps ~25% for the OS
    heap_mib = int(per_executor_mib * 0.4)
    return {
        "spark.executor.cores": str(cores),
        "spark.executor.instances": str(executors_per_node * core_count),
        "spark.executor.memory": f"{heap_mib}m",
        "spark.executor.memoryOverhead": f"{per_executor_mib - heap_mib}m",
        "spark.dynamicAllocation.enabled": "false",
        "spark.sql.shuffle.partitions": str(max(8, 2 * cores * executors_per_node * core_count)),
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_size),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
    }


def _instance_group(role: str, instance_type: str, count: int, spot: bool) -> dict:
    group = {"Name": role.title(), "InstanceRole": role, "InstanceType": instance_type, "InstanceCount": count,
             "Market": "SPOT" if spot else "ON_DEMAND"}
    return group


def job_flow_overrides(plan: dict, emr: dict, artifacts: dict, dag_id: str) -> dict:
    """The RunJobFlow request body of the run's cluster (a fresh dict every call).

    ``emr`` holds the run's EMR choices (release_label, instance_type, core_instance_count, use_spot,
    idle_timeout_minutes, subnet_id, job_flow_role, service_role, security_configuration);
    ``artifacts`` the staged URIs (bootstrap_uri, requirements_uri).
    """
    instances = {
        "InstanceGroups": [
            # the primary node only coordinates: on-demand even when the core nodes are spot
            _instance_group("MASTER", emr["instance_type"], 1, False),
            _instance_group("CORE", emr["instance_type"], emr["core_instance_count"], emr["use_spot"]),
        ],
        "KeepJobFlowAliveWhenNoSteps": True,  # the teardown terminates it, also after a failed step
        "TerminationProtected": False,
    }
    if emr.get("subnet_id"):
        instances["Ec2SubnetId"] = emr["subnet_id"]
    body = {
        "Name": f"{dag_id} {plan['run_key']}"[:256],
        "ReleaseLabel": emr["release_label"],
        "Applications": [{"Name": "Spark"}, {"Name": "Hadoop"}],
        "LogUri": join(plan["logs_uri"], ""),
        "Instances": instances,
        "BootstrapActions": [{
            "Name": "Install the Spark jobs' Python dependencies",
            "ScriptBootstrapAction": {"Path": artifacts["bootstrap_uri"], "Args": [artifacts["requirements_uri"]]},
        }],
        "Configurations": [
            {"Classification": "spark-env", "Configurations": [
                {"Classification": "export", "Properties": {"PYSPARK_PYTHON": NODE_PYTHON,
                                                            "PYSPARK_DRIVER_PYTHON": NODE_PYTHON}},
            ], "Properties": {}},
            {"Classification": "spark-defaults",
             "Properties": spark_defaults(emr["instance_type"], emr["core_instance_count"], plan["batch_size"])},
        ],
        "AutoTerminationPolicy": {"IdleTimeout": int(emr["idle_timeout_minutes"]) * 60},
        "JobFlowRole": emr["job_flow_role"],
        "ServiceRole": emr["service_role"],
        "VisibleToAllUsers": True,
        "Tags": [
            {"Key": "run_key", "Value": plan["run_key"]},
            {"Key": "dag_id", "Value": dag_id},
            {"Key": "app", "Value": "image-classification"},
        ],
        "StepConcurrencyLevel": 1,
    }
    if emr.get("security_configuration"):
        body["SecurityConfiguration"] = emr["security_configuration"]
    return body


def emr_steps(plan: dict, artifacts: dict) -> list[dict]:
    """The AddJobFlowSteps ``Steps``: spark-submit in cluster mode with exactly the local arguments.

    ``ActionOnFailure=CANCEL_AND_WAIT``: a failed step cancels the later ones while the cluster
    stays up for the teardown (and for its logs).
    """
    steps = []
    for spec in steps_for(plan, artifacts.get("weights_uri")):
        steps.append({
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
        })
    return steps


def step_log_uri(logs_uri: str, cluster_id: str, step_id: str, stream: str = "stderr.gz") -> str:
    """Where EMR puts a step's log under the cluster's LogUri."""
    return join(logs_uri, cluster_id, "steps", step_id, stream)


def console_link(region: str, cluster_id: str) -> str:
    """The cluster's page in the AWS console."""
    return f"https://console.aws.amazon.com/emr/home?region={region}#/clusterDetails/{cluster_id}"


def cluster_cost(describe: dict, prices: dict[str, float], instance_groups: list[dict],
                 now: datetime | None = None) -> dict:
    """Cluster id, normalized instance hours and an estimated cost from DescribeCluster + ListInstanceGroups."""
    cluster = describe["Cluster"]
    timeline = cluster["Status"].get("Timeline", {})
    start = timeline.get("CreationDateTime")
    end = timeline.get("EndDateTime") or now or datetime.now(UTC)
    hours = max(0.0, (end - start).total_seconds() / 3600) if start else 0.0
    hourly = sum(prices.get(g["InstanceType"], 0.0) * g.get("RunningInstanceCount", g.get("RequestedInstanceCount", 0))
                 for g in instance_groups)
    billed_hours = math.ceil(hours * 60) / 60  # EMR bills per second with a 1-minute minimum; round up to minutes
    return {
        "cluster_id": cluster["Id"],
        "normalized_instance_hours": cluster.get("NormalizedInstanceHours", 0),
        "hours": round(hours, 3),
        "estimated_cost_usd": round(billed_hours * hourly, 2),
        "hourly_price_usd": round(hourly, 3),
    }
