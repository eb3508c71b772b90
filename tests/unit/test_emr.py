"""EMR request builders: valid for botocore's own models, with the fields that matter."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ParamValidationError

from command_lines import option
from emr_bodies import ARTIFACTS, validate
from image_pipeline.compute.emr.capacity import (
    INSTANCE_TYPES,
    NODE_TYPES,
    SAME_SIZE,
    container_mib,
    executor_layout,
    spark_defaults,
)
from image_pipeline.compute.emr.explain import step_log_uri
from image_pipeline.compute.emr.requests import (
    cluster_cost,
    emr_steps,
    job_flow_overrides,
    load_emr_settings,
)
from image_pipeline.compute.steps import build_steps
from image_pipeline.planning.run_plan import build_run_plan
from image_pipeline.wiring.params import DEFAULT_SPLIT_RATIOS
from image_pipeline.wiring.settings import load_settings

SETTINGS = load_settings({"IMAGE_PIPELINE_ROOT_URI": "s3://bucket/prefix", "IMAGE_PIPELINE_COMPUTE": "emr"})


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
               "core_instance_count": s.core_instance_count, "spot_task_count": s.spot_task_count,
               "capacity": s.capacity,
               "idle_timeout_minutes": s.idle_timeout_minutes, "subnet_id": "", "job_flow_role": s.job_flow_role,
               "service_role": s.service_role, "security_configuration": "", "region": s.region}
    choices.update(overrides)
    return choices


def fleets(body: dict) -> dict:
    return {f["InstanceFleetType"]: f for f in body["Instances"]["InstanceFleets"]}


def test_run_job_flow_body_is_valid_and_complete():
    body = job_flow_overrides(plan(), emr_choices(), ARTIFACTS, "image_classification")
    validate("RunJobFlow", body)
    assert body["ReleaseLabel"] == "emr-7.13.0"
    assert {a["Name"] for a in body["Applications"]} == {"Spark", "Hadoop"}
    assert body["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert body["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert body["LogUri"].startswith("s3://bucket/prefix/logs")
    tags = {t["Key"]: t["Value"] for t in body["Tags"]}
    assert tags["run_key"].startswith("scheduled__2026-03-01T00_00_00_00_00-")
    assert tags["for-use-with-amazon-emr-managed-policies"] == "true"  # AmazonEMRServicePolicy_v2 needs it
    assert body["ServiceRole"] == "EMR_DefaultRole_V2" and body["JobFlowRole"] == "EMR_EC2_DefaultRole"
    assert "VisibleToAllUsers" not in body  # no longer supported by EMR
    env = body["Configurations"][0]["Configurations"][0]["Properties"]
    assert env["PYSPARK_PYTHON"] == "/usr/bin/python3.11"
    defaults = body["Configurations"][1]["Properties"]
    assert all(isinstance(v, str) for v in defaults.values())
    assert defaults["spark.sql.execution.arrow.maxRecordsPerBatch"] == "32"
    # the driver's S3 client (the photos' reads) is told the cluster's region, not left to look it up
    assert defaults["spark.yarn.appMasterEnv.AWS_REGION"] == load_emr_settings({}).region == "us-east-1"
    # the driver's heap and results are set, not left to Spark's defaults: both bounded by design
    assert (defaults["spark.driver.memory"], defaults["spark.driver.maxResultSize"]) == ("2048m", "1536m")
    assert len(body["Configurations"]) == 2  # no task nodes: no node labels
    bootstrap = body["BootstrapActions"][0]["ScriptBootstrapAction"]
    assert bootstrap["Path"] == ARTIFACTS["bootstrap_uri"] and ARTIFACTS["wheelhouse_uri"] in bootstrap["Args"]
    by_type = fleets(body)
    assert set(by_type) == {"MASTER", "CORE"}
    assert by_type["MASTER"]["TargetOnDemandCapacity"] == 1 and by_type["CORE"]["TargetOnDemandCapacity"] == 2
    assert "TargetSpotCapacity" not in by_type["CORE"]
    assert [c["InstanceType"] for c in by_type["CORE"]["InstanceTypeConfigs"]] == list(SAME_SIZE["m5.xlarge"])
    assert body["EbsRootVolumeSize"] >= 30
    volume = by_type["CORE"]["InstanceTypeConfigs"][0]["EbsConfiguration"]["EbsBlockDeviceConfigs"][0]
    assert volume["VolumeSpecification"]["SizeInGB"] >= 64
    assert "Ec2SubnetIds" not in body["Instances"] and "SecurityConfiguration" not in body


def test_spot_task_fleet_subnet_and_security_configuration():
    body = job_flow_overrides(plan(), emr_choices(spot_task_count=4, subnet_id="subnet-123",
                                                  security_configuration="sec", core_instance_count=5),
                              ARTIFACTS, "image_classification")
    validate("RunJobFlow", body)
    by_type = fleets(body)
    task = by_type["TASK"]
    assert task["TargetSpotCapacity"] == 4 and "TargetOnDemandCapacity" not in task
    assert task["LaunchSpecifications"]["SpotSpecification"]["AllocationStrategy"] == "price-capacity-optimized"
    types = [c["InstanceType"] for c in task["InstanceTypeConfigs"]]
    assert len(types) >= 2 and len({NODE_TYPES[t] for t in types}) == 1  # several types, one size
    assert "TargetSpotCapacity" not in by_type["CORE"] and "TargetSpotCapacity" not in by_type["MASTER"]
    yarn = next(c for c in body["Configurations"] if c["Classification"] == "yarn-site")["Properties"]
    assert yarn["yarn.node-labels.am.default-node-label-expression"] == "CORE"  # the driver stays off spot
    defaults = body["Configurations"][1]["Properties"]
    assert defaults["spark.executor.instances"] == str(executor_layout("m5.xlarge").per_node * 9)
    assert body["Instances"]["Ec2SubnetIds"] == ["subnet-123"] and body["SecurityConfiguration"] == "sec"


def test_instance_groups_remain_an_option_and_the_v1_role_still_works():
    body = job_flow_overrides(plan(), emr_choices(capacity="groups", spot_task_count=2, subnet_id="subnet-9",
                                                  service_role="EMR_DefaultRole"), ARTIFACTS, "d")
    validate("RunJobFlow", body)
    groups = {g["InstanceRole"]: g for g in body["Instances"]["InstanceGroups"]}
    assert groups["MASTER"]["Market"] == "ON_DEMAND" and groups["CORE"]["Market"] == "ON_DEMAND"
    assert groups["TASK"]["Market"] == "SPOT" and groups["TASK"]["InstanceCount"] == 2
    assert body["Instances"]["Ec2SubnetId"] == "subnet-9" and body["ServiceRole"] == "EMR_DefaultRole"


def test_settings_refuse_the_old_spot_switch_and_unknown_capacity():
    with pytest.raises(ValueError, match="IMAGE_PIPELINE_EMR_SPOT_TASK_COUNT"):
        load_emr_settings({"IMAGE_PIPELINE_EMR_SPOT": "true"})
    with pytest.raises(ValueError, match="IMAGE_PIPELINE_EMR_CAPACITY='pools'"):
        load_emr_settings({"IMAGE_PIPELINE_EMR_CAPACITY": "pools"})
    assert load_emr_settings({}).capacity == "fleets" and load_emr_settings({}).spot_task_count == 0


def test_builders_return_fresh_dicts():
    p = plan()
    a = job_flow_overrides(p, emr_choices(), ARTIFACTS, "d")
    snapshot = copy.deepcopy(a)
    a["Instances"]["InstanceFleets"][0]["TargetOnDemandCapacity"] = 99
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
        assert option(args, "--py-files") == ARTIFACTS["jobs_zip_uri"]
        entry = args.index(f"{ARTIFACTS['entry_dir_uri']}/{spec.entry_script}")
        assert tuple(args[entry + 1:]) == spec.args  # exactly the local backend's arguments
        assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"


def test_a_thousand_long_class_names_travel_in_a_file_within_emrs_step_size_limit():
    """1,000 classes of 60-character names: the steps carry the labels file's URI and stay far under
    AddJobFlowSteps' 10,240 characters per HadoopJarStep (moto accepts them); the same list as an argument (a
    plan from before the labels file) is refused naming the step, before any cluster starts."""
    from moto import mock_aws

    from image_pipeline.compute.emr.requests import HADOOP_JAR_STEP_MAX_CHARACTERS, hadoop_jar_step_characters

    params = {"labels": [], "pair_mode": "one_vs_rest", "focus_class": "class_0000_" + "x" * 49}
    classes = {f"class_{i:04d}_" + "x" * 49: 20 for i in range(1000)}
    p = build_run_plan(params, "scheduled__2026-03-01T00:00:00+00:00", datetime(2026, 3, 1, tzinfo=UTC), SETTINGS,
                       classes).as_dict()
    steps = emr_steps(p, ARTIFACTS)
    assert max(hadoop_jar_step_characters(step) for step in steps) < HADOOP_JAR_STEP_MAX_CHARACTERS // 4
    with mock_aws():
        emr = boto3.client("emr", region_name="us-east-1")
        cluster = emr.run_job_flow(Name="c", ReleaseLabel="emr-7.13.0", JobFlowRole="r", ServiceRole="s",
                                   Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1})["JobFlowId"]
        added = emr.add_job_flow_steps(JobFlowId=cluster, Steps=steps)["StepIds"]
        assert len(added) == 3
        args = emr.describe_step(ClusterId=cluster, StepId=added[0])["Step"]["Config"]["Args"]
        assert option(args, "--labels-uri") == p["labels_uri"]
    old = {key: value for key, value in p.items() if key != "labels_uri"}
    with pytest.raises(ValueError, match=r"EMR step extract_features: its arguments hold \d+ characters, over "
                                         r"AddJobFlowSteps' limit of 10240"):
        emr_steps(old, ARTIFACTS)


def test_invalid_bodies_are_caught_by_botocore():
    body = job_flow_overrides(plan(), emr_choices(), ARTIFACTS, "d")
    body["Instances"]["InstanceFleets"][1]["TargetOnDemandCapacity"] = "two"
    with pytest.raises(ParamValidationError):
        validate("RunJobFlow", body)


def test_spark_defaults_follow_the_instance_type():
    small, big = spark_defaults("m5.xlarge", 2, 0, 32), spark_defaults("m5.4xlarge", 2, 0, 32)
    assert small["spark.executor.instances"] == "2" and big["spark.executor.instances"] == "8"
    assert int(small["spark.executor.memoryOverhead"][:-1]) > int(small["spark.executor.memory"][:-1])


@pytest.mark.parametrize("instance_type", INSTANCE_TYPES)
def test_driver_and_executors_fit_in_yarn_on_every_offered_type(instance_type):
    """YARN's default resource calculator allocates by memory: a core node holds its executors and the driver."""
    for core, task in ((1, 0), (2, 0), (3, 4), (20, 10)):
        defaults = spark_defaults(instance_type, core, task, 32)
        layout = executor_layout(instance_type)
        executor, driver = container_mib(defaults, "executor"), container_mib(defaults, "driver")
        for node_type in SAME_SIZE[instance_type]:  # any type a fleet may launch
            node = NODE_TYPES[node_type]
            assert layout.per_node * executor + driver <= node.yarn_mib, (node_type, defaults)
            assert layout.per_node * int(defaults["spark.executor.cores"]) <= node.vcpus
        assert int(defaults["spark.executor.instances"]) == layout.per_node * (core + task)
        assert executor % 32 == 0 and int(defaults["spark.executor.memory"][:-1]) >= 1024
        # and little is left idle: the driver's room and YARN's rounding
        assert NODE_TYPES[instance_type].yarn_mib - driver - layout.per_node * executor < 32 * layout.per_node


def test_log_uri_and_cost():
    assert step_log_uri("s3://b/p/logs", "j-1", "s-2") == "s3://b/p/logs/j-1/steps/s-2/stderr.gz"
    start, end = datetime(2026, 3, 1, 10, 0, tzinfo=UTC), datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    describe = {"Cluster": {"Id": "j-1", "NormalizedInstanceHours": 24, "Status": {"Timeline": {
        "CreationDateTime": start, "EndDateTime": end}}}}
    def instance(kind, market, begin=None, until=None):
        return {"InstanceType": kind, "Market": market,
                "Status": {"Timeline": {"CreationDateTime": begin or start, "EndDateTime": until or end}}}
    instances = [instance("m5.xlarge", "ON_DEMAND"), instance("m5.xlarge", "ON_DEMAND"),
                 instance("m5a.xlarge", "ON_DEMAND"),  # a fleet's other type, not in the price table
                 instance("m5.xlarge", "SPOT", start, datetime(2026, 3, 1, 10, 0, 10, tzinfo=UTC))]  # 10 s: 1 min
    cost = cluster_cost(describe, {"m5.xlarge": 0.24}, instances, ebs_gib_month_usd=0.08)
    # every node's 32 GiB root and 64 GiB data volume, gp3 at $0.08 per GiB-month (730 h), for its hours:
    # the unpriced m5a's too (its hours are the ones missing)
    ebs_hourly = 96 * 0.08 / 730
    assert cost == {"cluster_id": "j-1", "normalized_instance_hours": 24, "hours": 1.5,
                    "estimated_cost_usd": round(0.24 * 1.5 * 2 + 0.24 / 60 + ebs_hourly * (3 * 1.5 + 1 / 60), 2),
                    "hourly_price_usd": round(0.72 + 4 * ebs_hourly, 3),
                    "instances": {"m5.xlarge on-demand": 2, "m5.xlarge spot": 1, "m5a.xlarge on-demand": 1},
                    "unpriced_instances": {"m5a.xlarge": 1}}
    assert cost["estimated_cost_usd"] == 0.77  # 0.72 of instances, 0.048 of EBS, 0.004 the spot's minute


@pytest.mark.parametrize("instance_type", INSTANCE_TYPES)
def test_fleets_launch_the_chosen_type_first_and_it_is_priced(instance_type):
    from image_pipeline.compute.emr.capacity import SAME_SIZE, instance_fleets
    from image_pipeline.compute.emr.requests import DEFAULT_PRICES

    fleets = {f["InstanceFleetType"]: f for f in instance_fleets(instance_type, 2, 1)}
    for role in ("MASTER", "CORE"):
        assert fleets[role]["LaunchSpecifications"]["OnDemandSpecification"]["AllocationStrategy"] == "prioritized"
        priorities = {c["InstanceType"]: c["Priority"] for c in fleets[role]["InstanceTypeConfigs"]}
        assert min(priorities, key=priorities.get) == instance_type and len(set(priorities.values())) == len(priorities)
    launchable = {c["InstanceType"] for f in fleets.values() for c in f["InstanceTypeConfigs"]}
    assert launchable == set(SAME_SIZE[instance_type])
    # the chosen type, launched first, has an example price; another launches only without its capacity,
    # and the teardown's cost line names it when it has none
    assert instance_type in DEFAULT_PRICES


def test_iam_policy_is_least_privilege():
    import json

    from image_pipeline.compute.emr.iam import iam_policy
    from project_paths import PROJECT_ROOT

    policy = json.loads((PROJECT_ROOT / "docs" / "iam-policy.json").read_text())
    assert policy == iam_policy()  # the documented policy is the generator's for the default roles
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    used = {"elasticmapreduce:RunJobFlow", "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:DescribeStep",
            "elasticmapreduce:DescribeCluster", "elasticmapreduce:ListInstances", "elasticmapreduce:AddTags",
            "elasticmapreduce:TerminateJobFlows", "iam:PassRole", "s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    assert used <= actions
    assert not [a for a in actions if a.endswith("*")]  # no wildcard actions
    passed = {s["Resource"]: s["Condition"]["StringEquals"]["iam:PassedToService"]
              for s in policy["Statement"] if s["Action"] == "iam:PassRole"}
    assert passed == {"arn:aws:iam::<account-id>:role/EMR_DefaultRole_V2": "elasticmapreduce.amazonaws.com",
                      "arn:aws:iam::<account-id>:role/EMR_EC2_DefaultRole": "ec2.amazonaws.com"}
    s3_resources = [r for s in policy["Statement"] if str(s["Action"]).startswith("s3:")
                    for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])]
    assert all(r.startswith("arn:aws:s3:::<bucket>") for r in s3_resources)
    assert not any(r.endswith(":::<bucket>/*") for r in s3_resources)  # objects only under the prefix


def test_iam_policy_passes_exactly_the_configured_roles(capsys):
    import json

    from image_pipeline.compute.emr.iam import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGE_PIPELINE_EMR_SERVICE_ROLE", "TeamEmrService")
        mp.setenv("IMAGE_PIPELINE_EMR_JOB_FLOW_ROLE", "TeamEmrNodes")
        main(["--account-id", "111122223333", "--bucket", "b", "--prefix", "/team/images/"])
    policy = json.loads(capsys.readouterr().out)
    passed = sorted(s["Resource"] for s in policy["Statement"] if s["Action"] == "iam:PassRole")
    assert passed == ["arn:aws:iam::111122223333:role/TeamEmrNodes", "arn:aws:iam::111122223333:role/TeamEmrService"]
    assert "arn:aws:s3:::b/team/images/artifacts/*" in policy["Statement"][-1]["Resource"]


def test_the_nodes_role_reads_the_prefix_and_writes_only_the_jobs_outputs():
    import json

    from image_pipeline.compute.emr.iam import NODE_WRITES, node_role_policy
    from project_paths import PROJECT_ROOT

    policy = json.loads((PROJECT_ROOT / "docs" / "node-role-policy.json").read_text())
    assert policy == node_role_policy()
    writes = next(s for s in policy["Statement"] if "s3:PutObject" in s["Action"])["Resource"]
    assert writes == [f"arn:aws:s3:::<bucket>/<prefix>/{f}/*" for f in NODE_WRITES]
    assert not any("/artifacts/" in r or "/models/" in r or "/images/" in r for r in writes)  # never the inputs
    assert not [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str)
                                                        else s["Action"]) if a.endswith("*")]


def test_unknown_emr_params_are_refused_by_name():
    from image_pipeline.planning.run_plan import PlanError
    from image_pipeline.planning.run_plan import emr_choices as run_emr_choices

    with pytest.raises(PlanError, match="emr_use_spot"):  # the old switch: spot now runs task nodes only
        run_emr_choices({"emr_use_spot": True}, load_emr_settings({}))
    choices = run_emr_choices({"emr_spot_task_count": 3}, load_emr_settings({"IMAGE_PIPELINE_EMR_CAPACITY": "groups"}))
    assert choices["spot_task_count"] == 3 and choices["capacity"] == "groups"
    with pytest.raises(PlanError, match="emr_spot_task_count"):
        run_emr_choices({"emr_spot_task_count": -1}, load_emr_settings({}))


def test_the_run_job_flow_body_is_its_named_parts():
    """RunJobFlow's body is built from named parts (the length rule itself: tests/unit/test_house_rules.py)."""
    from image_pipeline.compute.emr import requests

    choices, p = emr_choices(spot_task_count=2, subnet_id="subnet-1"), plan()
    body = job_flow_overrides(p, choices, ARTIFACTS, "d")
    assert body["Instances"] == requests.cluster_instances(choices)
    assert body["BootstrapActions"] == requests.bootstrap_actions(ARTIFACTS)
    assert body["Configurations"] == requests.cluster_configurations(choices, p["batch_size"])
    assert body["Tags"] == requests.cluster_tags(p["run_key"], "d", p["root_uri"])


def test_staged_uris_are_joined_with_single_slashes():
    from image_pipeline.compute.staging import staged

    assert staged("h", "s3://b/p/artifacts/h/")["jobs_zip_uri"] == "s3://b/p/artifacts/h/image_jobs.zip"
    assert staged("h", "file:///tmp/artifacts/h")["jobs_zip_uri"] == "file:///tmp/artifacts/h/image_jobs.zip"


def test_the_local_driver_gets_the_emr_drivers_heap_and_result_limit():
    """Both backends size the jobs' driver alike: a 2 GiB heap and a 1.5 GiB result limit, set explicitly."""
    from image_pipeline.compute.local.cluster import ClusterInfo
    from image_pipeline.compute.local.submit import spark_submit_argv

    argv = spark_submit_argv(ClusterInfo("/tmp/c", "spark://127.0.0.1:7077", workers=1, cores_per_worker=2,
                                         memory_gb_per_worker=4), "train_models.py", ["--x"], "jobs.zip", "python",
                             "train_models r")
    confs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
    defaults = spark_defaults("m5.xlarge", 2, 0, 32)
    assert confs["spark.driver.memory"] == defaults["spark.driver.memory"] == "2048m"
    assert confs["spark.driver.maxResultSize"] == defaults["spark.driver.maxResultSize"] == "1536m"
    assert confs["spark.executor.memory"] == "3g"
