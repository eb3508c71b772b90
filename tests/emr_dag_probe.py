"""Run ``image_classification`` with ``dag.test()`` in a process of its own; prints one JSON line: the run's
state, its task states, and each task's ``deferrable`` as the DAG built it.

    python tests/emr_dag_probe.py <dag file> <run conf JSON>

A process of its own because the Amazon provider reads Airflow's ``[operators] default_deferrable`` when its
modules are imported (as operators' default arguments): a deployment's switch is the environment this
process starts with, which the test session's own imports have long fixed. ``dag.test()`` runs each deferred
task's trigger in line, as the triggerer would.
"""

from __future__ import annotations

import json
import sys


def main(dag_file: str, run_conf: str) -> int:
    from airflow.dag_processing.dagbag import DagBag

    from dag_runs import task_states

    bag = DagBag(dag_folder=dag_file)
    if bag.import_errors:
        raise SystemExit(f"the DAG did not import: {bag.import_errors}")
    dag = bag.get_dag("image_classification")
    dag_run = dag.test(run_conf=json.loads(run_conf))
    print(json.dumps({"state": str(getattr(dag_run.state, "value", dag_run.state)), "states": task_states(dag_run),
                      "deferrable": {t.task_id: getattr(t, "deferrable", None) for t in dag.tasks}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
