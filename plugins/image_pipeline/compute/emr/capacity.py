"""The EMR cluster's capacity: instance fleets (or groups), EBS volumes, and spark-defaults that fit YARN.

Every number about an instance type comes from AWS's documentation:

- vCPUs: the EC2 instance type specifications,
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/general-purpose-instances.html (m5, m5a, m5d) and
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/compute-optimized-instances.html (c5, c5d);
- the memory YARN gives containers on a node (``yarn.nodemanager.resource.memory-mb``, equal to
  ``yarn.scheduler.maximum-allocation-mb`` for these types): EMR's task configuration defaults,
  https://docs.aws.amazon.com/emr/latest/ReleaseGuide/emr-hadoop-task-config.html.

Layout: the primary and core nodes are on-demand (core nodes hold HDFS; the cluster-mode driver runs in
a YARN container on them); an optional task fleet runs on spot with the ``price-capacity-optimized``
allocation strategy over several instance types of one size (same vCPUs, same YARN memory), so losing
spot capacity costs executors, never HDFS or the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from image_pipeline.compute.contract import DRIVER_HEAP_MIB, DRIVER_MAX_RESULT_MIB

CAPACITY_MODES = ("fleets", "groups")


@dataclass(frozen=True)
class NodeType:
    """What YARN sees of one instance type: vCPUs and the MiB it hands to containers."""

    vcpus: int
    yarn_mib: int


NODE_TYPES: dict[str, NodeType] = {
    "m5.xlarge": NodeType(4, 12288), "m5.2xlarge": NodeType(8, 24576), "m5.4xlarge": NodeType(16, 57344),
    "m5a.xlarge": NodeType(4, 12288), "m5a.2xlarge": NodeType(8, 24576), "m5a.4xlarge": NodeType(16, 57344),
    "m5d.xlarge": NodeType(4, 12288), "m5d.2xlarge": NodeType(8, 24576), "m5d.4xlarge": NodeType(16, 57344),
    "c5.2xlarge": NodeType(8, 12288), "c5.4xlarge": NodeType(16, 24576),
    "c5d.2xlarge": NodeType(8, 12288), "c5d.4xlarge": NodeType(16, 24576),
}
# the types the trigger form offers, each with the types of the same size a fleet may also take
SAME_SIZE: dict[str, tuple[str, ...]] = {
    "m5.xlarge": ("m5.xlarge", "m5a.xlarge", "m5d.xlarge"),
    "m5.2xlarge": ("m5.2xlarge", "m5a.2xlarge", "m5d.2xlarge"),
    "m5.4xlarge": ("m5.4xlarge", "m5a.4xlarge", "m5d.4xlarge"),
    "c5.2xlarge": ("c5.2xlarge", "c5d.2xlarge"),
    "c5.4xlarge": ("c5.4xlarge", "c5d.4xlarge"),
}
INSTANCE_TYPES = tuple(sorted(SAME_SIZE))

# EBS, GiB (the sizes are this product's choice, not EMR defaults). EMR gives each node an EBS root device
# volume, sized for the whole cluster by EbsRootVolumeSize
# (https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-custom-ami-boot-volume-size.html): here it holds
# the OS, the installed wheelhouse (~2 GiB) and the logs. EBS volumes added per instance type are mounted
# besides the root volume and used by YARN and HDFS (on instances with EBS-only storage EMR otherwise
# attaches default gp2 or gp3 volumes, https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-plan-storage.html):
# the data volume holds Spark's shuffle and spill, the staged model and HDFS on core nodes.
ROOT_VOLUME_GIB = 32
DATA_VOLUME_GIB = 64
EBS_GIB_PER_NODE = ROOT_VOLUME_GIB + DATA_VOLUME_GIB  # gp3 both (the root volume from EMR 6.15 on)
EXECUTOR_CORES = 4  # at most: TensorFlow / the inference runtime runs one Python worker per core
DRIVER_MIB = 3072  # the cluster-mode driver's YARN container (heap + overhead) on one core node
HEAP_SHARE = 0.4  # the forward pass runs in the Python workers, outside the JVM heap: most goes to overhead
YARN_ALLOCATION_MIB = 32  # YARN rounds container requests up to multiples of its minimum allocation
# the AM container (the driver in cluster mode) may land on task nodes from EMR 6.x on unless node labels
# keep it on core nodes: https://repost.aws/knowledge-center/emr-configure-node-labeling-yarn
DRIVER_ON_CORE_NODES = {"yarn.node-labels.enabled": "true", "yarn.node-labels.am.default-node-label-expression": "CORE"}


@dataclass(frozen=True)
class ExecutorLayout:
    """How Spark's containers fill the nodes of one instance type."""

    cores: int
    per_node: int
    container_mib: int  # executor heap + overhead, a multiple of YARN's allocation unit
    heap_mib: int

    @property
    def overhead_mib(self) -> int:
        return self.container_mib - self.heap_mib


def node_type(instance_type: str) -> NodeType:
    """The documented facts of an offered type; a type without them is refused by name."""
    if instance_type not in NODE_TYPES:
        raise ValueError(f"instance type {instance_type!r} has no documented YARN memory here; "
                         f"choose one of {', '.join(INSTANCE_TYPES)}")
    return NODE_TYPES[instance_type]


def executor_layout(instance_type: str) -> ExecutorLayout:
    """Executors per node and their container size, leaving room for the driver's container on any node."""
    node = node_type(instance_type)
    cores = min(EXECUTOR_CORES, node.vcpus)
    per_node = max(1, node.vcpus // cores)
    room = (node.yarn_mib - DRIVER_MIB) // per_node
    container = room // YARN_ALLOCATION_MIB * YARN_ALLOCATION_MIB
    heap = int(container * HEAP_SHARE) // YARN_ALLOCATION_MIB * YARN_ALLOCATION_MIB
    return ExecutorLayout(cores=cores, per_node=per_node, container_mib=container, heap_mib=heap)


def spark_defaults(instance_type: str, core_count: int, task_count: int, batch_size: int) -> dict[str, str]:
    """spark-defaults for the cluster: every value a string, as EMR requires.

    One executor layout for every worker node (core and task nodes are of one size); the driver's
    container (``DRIVER_MIB``) fits next to a core node's executors.
    """
    layout = executor_layout(instance_type)
    nodes = core_count + task_count
    driver_heap = DRIVER_HEAP_MIB  # two thirds of the container; the rest is the driver's Python and JVM overhead
    return {
        "spark.executor.cores": str(layout.cores),
        "spark.executor.instances": str(layout.per_node * nodes),
        "spark.executor.memory": f"{layout.heap_mib}m",
        "spark.executor.memoryOverhead": f"{layout.overhead_mib}m",
        "spark.driver.memory": f"{driver_heap}m",
        "spark.driver.memoryOverhead": f"{DRIVER_MIB - driver_heap}m",
        "spark.driver.cores": "1",
        "spark.driver.maxResultSize": f"{DRIVER_MAX_RESULT_MIB}m",
        "spark.dynamicAllocation.enabled": "false",
        "spark.sql.shuffle.partitions": str(max(8, 2 * layout.cores * layout.per_node * nodes)),
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_size),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
    }


def container_mib(defaults: dict[str, str], role: str) -> int:
    """The YARN container a role (``executor`` or ``driver``) asks for under these spark-defaults."""
    def mib(value: str) -> int:
        return int(value.removesuffix("m"))

    return mib(defaults[f"spark.{role}.memory"]) + mib(defaults[f"spark.{role}.memoryOverhead"])


def _ebs() -> dict:
    return {"EbsBlockDeviceConfigs": [{"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": DATA_VOLUME_GIB},
                                       "VolumesPerInstance": 1}],
            "EbsOptimized": True}


def instance_fleets(instance_type: str, core_count: int, task_count: int) -> list[dict]:
    """Primary and core fleets on-demand; the task fleet (when asked for) on spot, over same-size types.

    On-demand fleets launch by priority, the chosen type first (``prioritized``: "Amazon EMR should launch
    the instances with the highest priority first", priority 0 the highest,
    https://docs.aws.amazon.com/emr/latest/APIReference/API_OnDemandProvisioningSpecification.html and
    .../API_InstanceTypeConfig.html): the others of its size only when it has no capacity. ``lowest-price``
    would launch the cheapest first (m5a, AMD without AVX-512, where the measured rates may not hold).
    """
    def configs(types: tuple[str, ...], prioritized: bool = False) -> list[dict]:
        return [{"InstanceType": t, "WeightedCapacity": 1, "EbsConfiguration": _ebs(),
                 **({"Priority": float(rank)} if prioritized else {})} for rank, t in enumerate(types)]

    on_demand = {"OnDemandSpecification": {"AllocationStrategy": "prioritized"}}
    fleets = [
        {"Name": "Primary", "InstanceFleetType": "MASTER", "TargetOnDemandCapacity": 1,
         "InstanceTypeConfigs": configs(SAME_SIZE[instance_type], True), "LaunchSpecifications": on_demand},
        {"Name": "Core", "InstanceFleetType": "CORE", "TargetOnDemandCapacity": core_count,
         "InstanceTypeConfigs": configs(SAME_SIZE[instance_type], True), "LaunchSpecifications": on_demand},
    ]
    if task_count:
        fleets.append({
            "Name": "Task (spot)", "InstanceFleetType": "TASK", "TargetSpotCapacity": task_count,
            "InstanceTypeConfigs": configs(SAME_SIZE[instance_type]),
            # spot not found within 10 minutes of the cluster's start (5 is the minimum): the rest is launched
            # on-demand (API reference, SpotProvisioningSpecification:
            # https://docs.aws.amazon.com/emr/latest/APIReference/API_SpotProvisioningSpecification.html)
            "LaunchSpecifications": {"SpotSpecification": {"TimeoutDurationMinutes": 10,
                                                           "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                                                           "AllocationStrategy": "price-capacity-optimized"}},
        })
    return fleets


def instance_groups(instance_type: str, core_count: int, task_count: int) -> list[dict]:
    """The same layout as instance groups: one type per group, the task group on spot."""
    def group(role: str, count: int, market: str) -> dict:
        return {"Name": role.title(), "InstanceRole": role, "InstanceType": instance_type, "InstanceCount": count,
                "Market": market, "EbsConfiguration": _ebs()}

    groups = [group("MASTER", 1, "ON_DEMAND"), group("CORE", core_count, "ON_DEMAND")]
    if task_count:
        groups.append(group("TASK", task_count, "SPOT"))
    return groups


def instances_capacity(mode: str, instance_type: str, core_count: int, task_count: int) -> dict:
    """The ``Instances`` capacity keys of RunJobFlow for the chosen mode."""
    if mode not in CAPACITY_MODES:
        raise ValueError(f"capacity mode {mode!r}: choose one of {', '.join(CAPACITY_MODES)}")
    if mode == "fleets":
        return {"InstanceFleets": instance_fleets(instance_type, core_count, task_count)}
    return {"InstanceGroups": instance_groups(instance_type, core_count, task_count)}
