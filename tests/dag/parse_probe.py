"""Parse the DAG file as the DAG processor would, with lookups forbidden; print facts as JSON.

Usage: python parse_probe.py <dag file> <plugins folder>. Run in a subprocess by the tests so that
"which modules got imported" is measured in a fresh interpreter.
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[2])

from airflow.sdk import Connection, Variable


def _forbidden(*args, **kwargs):
    raise AssertionError("connection or variable lookup at DAG parse time")


Connection.get = staticmethod(_forbidden)
Variable.get = staticmethod(_forbidden)
before = set(sys.modules)
started = time.perf_counter()
DAG_ID = Path(sys.argv[1]).stem  # dag_id = file name = decorated function name
spec = importlib.util.spec_from_file_location(f"{DAG_ID}_probe", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seconds = time.perf_counter() - started
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before}
               & {"tensorflow", "keras", "pyspark", "sklearn", "pandas", "matplotlib", "numpy", "boto3"})

from airflow.sdk.definitions.dag import DAG  # noqa: E402

dag = next(v for v in vars(module).values() if isinstance(v, DAG)) if any(
    isinstance(v, DAG) for v in vars(module).values()) else getattr(module, DAG_ID)()


def assets(condition) -> list[dict]:
    """Every asset a schedule condition refers to (through AssetAll/AssetAny), as name and URI."""
    if condition is None:
        return []
    if hasattr(condition, "objects"):
        return [a for o in condition.objects for a in assets(o)]
    return [{"name": condition.name, "uri": condition.uri}]


print(json.dumps({
    "seconds": seconds,
    "heavy_modules": heavy,
    "dag_id": dag.dag_id,
    "doc_md": dag.doc_md,
    "schedule": str(dag.schedule),
    "timetable": type(dag.timetable).__name__,
    "schedule_assets": assets(getattr(dag.timetable, "asset_condition", None)),
    "schedule_cron": getattr(getattr(dag.timetable, "timetable", None), "expression", None),
    "max_active_runs": dag.max_active_runs,
    "catchup": dag.catchup,
    "params": {k: {"description": p.description, "schema": p.schema} for k, p in dag.params.items()},
    "tasks": {t.task_id: {
        "upstream": sorted(t.upstream_task_ids),
        "is_setup": t.is_setup,
        "is_teardown": t.is_teardown,
        "trigger_rule": getattr(t.trigger_rule, "value", str(t.trigger_rule)),
        "retries": t.retries,
        "operator": type(t).__name__,
        "deferrable": getattr(t, "deferrable", None),
        "max_attempts": getattr(t, "max_attempts", None),
        "poke_interval": getattr(t, "poke_interval", None),
        "outlets": [{"name": o.name, "uri": o.uri} for o in t.outlets if hasattr(o, "uri")],
    } for t in dag.tasks},
}))
