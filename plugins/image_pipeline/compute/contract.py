"""What both backends hand back to the DAGs, in one shape, so neither DAG branches on the backend.

- staging returns ``staging.staged(...)`` (keys ``staging.STAGED_KEYS``);
- the teardown returns ``cluster_summary(...)``: the cluster's id, the backend, hours up, EMR's
  normalized instance hours and estimated cost (0 for the local cluster), the console link (EMR), the
  stopped process ids (local) and the instances that ran, per type and market (EMR).
"""

from __future__ import annotations

# The jobs' driver on both backends: a 2 GiB heap (what the EMR backend gives it in its 3 GiB container on every
# instance type, ``emr.capacity.DRIVER_MIB``) and results of at most 1.5 GiB. Nothing the driver receives grows
# with the photos: the largest result is the model selection's sample (at most --cv-max-rows rows: 20,000 x
# (1,280 + 128) float32, about 110 MB), then the sweep's per-class samples and the moments' partial sums
# (d x d float64: 13 MB for 1,280-d features, 134 MB for VGG16's 4,096).
DRIVER_HEAP_MIB = 2048
DRIVER_MAX_RESULT_MIB = 1536

CLUSTER_SUMMARY_KEYS = ("cluster_id", "backend", "hours", "normalized_instance_hours", "estimated_cost_usd",
                        "hourly_price_usd", "console_link", "process_ids", "instances", "unpriced_instances")


def cluster_summary(cluster_id: str, backend: str, hours: float, *, normalized_instance_hours: int = 0,
                    estimated_cost_usd: float = 0.0, hourly_price_usd: float = 0.0, console_link: str = "",
                    process_ids: list[int] | None = None, instances: dict[str, int] | None = None,
                    unpriced_instances: dict[str, int] | None = None) -> dict:
    """The teardown's summary of a terminated cluster, with every key of ``CLUSTER_SUMMARY_KEYS``;
    ``unpriced_instances``: instances, per type, that ran without a price (not in the estimate)."""
    return {"cluster_id": cluster_id, "backend": backend, "hours": round(hours, 3),
            "normalized_instance_hours": normalized_instance_hours, "estimated_cost_usd": estimated_cost_usd,
            "hourly_price_usd": hourly_price_usd, "console_link": console_link,
            "process_ids": list(process_ids or []), "instances": dict(instances or {}),
            "unpriced_instances": dict(unpriced_instances or {})}


def cluster_summary_line(summary: dict) -> str:
    """One log line on the terminated cluster: id, backend, hours, normalized instance hours, cost, link."""
    ran = ", ".join(f"{n} x {kind}" for kind, n in summary["instances"].items())
    unpriced = ", ".join(f"{n} x {kind}" for kind, n in summary["unpriced_instances"].items())
    line = (f"cluster {summary['cluster_id']}: {summary['backend']}, {summary['hours']:.3f} h"
            f"{f' on {ran}' if ran else ''}, {summary['normalized_instance_hours']} normalized instance hours, "
            f"about ${summary['estimated_cost_usd']:.2f}"
            f"{f' WITHOUT {unpriced} (no price: the estimate is too low)' if unpriced else ''}")
    return line + (f" ({summary['console_link']})" if summary["console_link"] else "")
