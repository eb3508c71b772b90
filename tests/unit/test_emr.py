"""EMR request builders: valid for botocore's own models, with the fields that matter."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters

from image_pipeline.compute.emr.requests import (
    cluster_cost,
    emr_steps,
    job_flow_overrides,
    load_emr_settings,
    spark_defaults,
    step_log_uri,
)
from image_pipeline.compute.steps import build_steps
from image_pipeline.planning.run_plan import build_run_plan
from image_pipeline.wiring.params import DEFAULT_SPLIT_RATIOS
from image_pipeline.wiring.settings import load_settings

SETTINGS = load_settings({"IMAGE_PIPELINE_ROOT_URI": "s3://bucket/prefix", "IMAGE_PIPELINE_COMPUTE": "emr"})
ARTIFACTS = {
    "jobs_zip_uri": "s3://bucket/prefix/artifacts/abc/image_jobs.zip",
    "entry_dir_uri": "s3://bucket/prefix/artifacts/abc",
    "bootstrap_uri": "s3://bucket/prefix/artifacts/abc/install_python_deps.sh",
    "requirements_uri": "s3://bucket/prefix/artifacts/abc/requirements-emr.txt",
}


def plan() -> dict:
    params = {"images_uri": "", "labels": [], "backbone": "mobilenet_v2", "weights_uri": "", "pair_mode": "all_pairs",
              "focus_class": "", "split_ratios": list(DEFAULT_SPLIT_RATIOS), "max_per_class": 200, "iterations": 100,
              "pca_components": 128, "test_fraction": 0.2, "min_accuracy": 0.5, "batch_size": 32, "seed": 0,
              "local_workers": 1, "local_worker_cores": 2, "local_worker_memory_gb": 4}
    return build_run_plan(params, "scheduled__2026-03-01T00:00:00+00:00", datetime(2026, 3, 1, tzinfo=UTC),
                          SETTINGS, ["beagle", "pug"]).as_dict()


def emr_choices(**overrides) -> dict:
    s = load_emr_settings({})
    choices = {"release_label": s.release_label, "instance_type": s.instance_type,
               "core_instance_count": s.core_instance_count, "use_spot": s.use_spot,
               "idle_timeout_minutes": s.idle_timeout_minutes, "subnet_id": "", "job_flow_role": s.job_flow_role,
               "service_role": s.service_role, "security_configuration": ""}
    choices.update(overrides)
    return choices


def validate(operation: str, params: dict) -> None:
    model = boto3.client("emr", region_name="us-east-1").meta.service_model.operation_model(operation)
    validate_parameters(params, model.input_shape)


def test_run_job_flow_body_is_valid_and_complete():
    body = job_flow_overrides(plan(), emr_choices(), ARTIFACTS, "image_classification")
    validate("RunJobFlow", body)
    assert body["ReleaseLabel"] == "emr-7.13.0"
    assert {a["Name"] for a in body["Applications"]} == {"Spark", "Hadoop"}
    assert body["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert body["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert body["LogUri"].startswith("s3://bucket/prefix/logs")
    assert {t["Key"]: t["Value"] for t in body["Tags"]}["run_key"] == "scheduled__2026-03-01T00_00_00_00_00"
    env = body["Configurations"][0]["Configurations"][0]["Properties"]
    assert env["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    defaults = body["Configurations"][1]["Properties"]
    assert all(isinstance(v, str) for v in defaults.values())
    assert defaults["spark.sql.execution.arrow.maxRecordsPerBatch"] == "32"
    assert body["BootstrapActions"][0]["ScriptBootstrapAction"]["Path"] == ARTIFACTS["bootstrap_uri"]
    groups = {g["InstanceRole"]: g for g in body["Instances"]["InstanceGroups"]}
    assert groups["CORE"]["InstanceCount"] == 2 and groups["CORE"]["Market"] == "ON_DEMAND"
    assert "Ec2SubnetId" not in body["Instances"] and "SecurityConfiguration" not in body


def test_spot_subnet_and_security_configuration():
    body = job_flow_overrides(plan(), emr_choices(use_spot=True, subnet_id="subnet-123",
                                                  security_configuration="sec", core_instance_count=5),
                              ARTIFACTS, "image_classification")
    validate("RunJobFlow", body)
    groups = {g["InstanceRole"]: g for g in body["Instances"]["InstanceGroups"]}
    assert groups["CORE"]["Market"] == "SPOT" and groups["MASTER"]["Market"] == "ON_DEMAND"
    assert body["Instances"]["Ec2SubnetId"] == "subnet-123" and body["SecurityConfiguration"] == "sec"


def test_builders_return_fresh_dicts():
    p = plan()
    a = job_flow_overrides(p, emr_choices(), ARTIFACTS, "d")
    snapshot = copy.deepcopy(a)
    a["Instances"]["InstanceGroups"][0]["InstanceCount"] = 99
    a["Configurations"][1]["Properties"]["spark.executor.cores"] = "99"
    assert job_flow_overrides(p, emr_choices(), ARTIFACTS, "d") == snapshot


def test_steps_are_valid_and_carry_the_local_arguments():
    p = plan()
    steps = emr_steps(p, ARTIFACTS)
    validate("AddJobFlowSteps", {"JobFlowId": "j-123", "Steps": steps})
    assert [s["Name"] for s in steps] == ["extract_features", "train_models", "evaluate_models"]
    for step, spec in zip(steps, build_steps(p), strict=True):
        args = step["HadoopJarStep"]["Args"]
        assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
        assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
        assert args[args.index("--py-files") + 1] == ARTIFACTS["jobs_zip_uri"]
        entry = args.index(f"{ARTIFACTS['entry_dir_uri']}/{spec.entry_script}")
        assert tuple(args[entry + 1:]) == spec.args  # exactly the local backend's arguments
        assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"


def test_invalid_bodies_are_caught_by_botocore():
    body = job_flow_overrides(plan(), emr_choices(), ARTIFACTS, "d")
    body["Instances"]["InstanceGroups"][1]["InstanceCount"] = "two"
    with pytest.raises(ParamValidationError):
        validate("RunJobFlow", body)


def test_spark_defaults_follow_the_instance_type():
    small, big = spark_defaults("m5.xlarge", 2, 32), spark_defaults("m5.4xlarge", 2, 32)
    assert small["spark.executor.instances"] == "2" and big["spark.executor.instances"] == "8"
    assert int(small["spark.executor.memoryOverhead"][:-1]) > int(small["spark.executor.memory"][:-1])


def test_log_uri_and_cost():
    assert step_log_uri("s3://b/p/logs", "j-1", "s-2") == "s3://b/p/logs/j-1/steps/s-2/stderr.gz"
    describe = {"Cluster": {"Id": "j-1", "NormalizedInstanceHours": 24, "Status": {"Timeline": {
        "CreationDateTime": datetime(2026, 3, 1, 10, 0, tzinfo=UTC),
        "EndDateTime": datetime(2026, 3, 1, 11, 30, tzinfo=UTC)}}}}
    groups = [{"InstanceType": "m5.xlarge", "RequestedInstanceCount": 1, "RunningInstanceCount": 1},
              {"InstanceType": "m5.xlarge", "RequestedInstanceCount": 2, "RunningInstanceCount": 2}]
    cost = cluster_cost(describe, {"m5.xlarge": 0.24}, groups)
    assert cost == {"cluster_id": "j-1", "normalized_instance_hours": 24, "hours": 1.5,
                    "estimated_cost_usd": 1.08, "hourly_price_usd": 0.72}


def test_iam_policy_is_least_privilege():
    import json

    from conftest import PROJECT_ROOT

    policy = json.loads((PROJECT_ROOT / "docs" / "iam-policy.json").read_text())
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    used = {"elasticmapreduce:RunJobFlow", "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeStep",
            "elasticmapreduce:DescribeCluster", "elasticmapreduce:ListInstanceGroups",
            "elasticmapreduce:TerminateJobFlows", "iam:PassRole", "s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    assert used <= actions
    assert not [a for a in actions if a.endswith("*")]  # no wildcard actions
    pass_role = next(s for s in policy["Statement"] if s["Action"] == "iam:PassRole")
    assert len(pass_role["Resource"]) == 2 and all(":role/EMR_" in r for r in pass_role["Resource"])
    s3_resources = [r for s in policy["Statement"] if str(s["Action"]).startswith("s3:")
                    for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]
    assert all(r.startswith("arn:aws:s3:::<bucket>") for r in s3_resources)
    assert not any(r.endswith(":::<bucket>/*") for r in s3_resources)  # objects only under the prefix
