"""The local cluster's shared secret: only processes that hold it can talk to its master and workers.

Spark's standalone master listens on 127.0.0.1, so without authentication any local user could submit an
application that runs as the Airflow user. ``start_cluster`` makes a secret per cluster and writes it, with
``spark.authenticate``, into the cluster's own Spark configuration folder (``<cluster>/conf``: the project's
``conf/`` files plus those two lines), readable by the cluster's user only. Every process of the cluster
(master, workers, spark-submit, the executors it starts) reads it from there through ``SPARK_CONF_DIR``,
as Spark's security guide asks of standalone deployments ("spark.authenticate.secret must be configured on
each of the nodes"): it is in no command line, log, XCom or ``cluster.json``. Deleted with the cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

CONF_FOLDER = "conf"


def conf_dir(cluster_dir: str | Path) -> Path:
    """The cluster's own Spark configuration folder."""
    return Path(cluster_dir) / CONF_FOLDER


def write_conf(cluster_dir: str | Path, project_conf: Path) -> Path:
    """Create the cluster's configuration folder: the project's files, and a new secret in spark-defaults.conf
    (folder 0700, file 0600); returns the folder."""
    folder = conf_dir(cluster_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for source in project_conf.iterdir():
        if source.is_file() and source.name != "spark-defaults.conf":
            shutil.copy(source, folder / source.name)
    source = project_conf / "spark-defaults.conf"
    defaults = source.read_text() if source.exists() else ""
    descriptor = os.open(folder / "spark-defaults.conf", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(defaults.rstrip("\n") + "\n# this cluster's shared secret (compute.local.auth)\n"
                     f"spark.authenticate              true\nspark.authenticate.secret       {secrets.token_hex(32)}\n")
    return folder


def remove_conf(cluster_dir: str | Path) -> None:
    """Delete the cluster's configuration folder (its secret with it)."""
    shutil.rmtree(conf_dir(cluster_dir), ignore_errors=True)
