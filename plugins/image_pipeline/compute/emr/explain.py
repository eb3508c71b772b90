"""Why an EMR step or cluster failed, in words: EMR's own reasons plus the logs under the cluster's LogUri.

Where EMR puts the logs (https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-manage-view-web-log-files.html):

- ``<LogUri>/<cluster>/steps/<step>/stderr.gz``: the step's output, here spark-submit's;
- ``<LogUri>/<cluster>/containers/<application>/<container>/stderr.gz``: the YARN containers' logs. In
  cluster mode the driver, and so the job's Python traceback, runs in the application's first container;
- ``<LogUri>/<cluster>/node/<instance>/bootstrap-actions/<n>/stderr.gz``: each node's bootstrap output.

EMR uploads the logs every five minutes (same page), so a failure is often explained before its logs
are there: the paths are always named, the tails added when they can be read. Nothing here raises: an
API or S3 error while explaining becomes a line of the explanation.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass

from image_pipeline.compute.diagnosis import diagnose_text
from image_pipeline.planning.layout import join

LOG_TAIL_LINES = 40
TERMINAL_CLUSTER_STATES = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")
APPLICATION_ID = re.compile(r"\bapplication_\d+_\d+\b")
NOT_SHIPPED = "not readable yet (EMR uploads logs every five minutes; look again later)"


@dataclass(frozen=True)
class LogStore:
    """Reads the cluster's logs: ``read(uri) -> bytes`` and ``keys(prefix_uri) -> [uri]`` (both may raise)."""

    read: Callable[[str], bytes]
    keys: Callable[[str], list[str]]


def s3_log_store(aws_conn_id: str | None) -> LogStore:
    """A LogStore on S3 through the Amazon provider's S3Hook."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    s3 = S3Hook(aws_conn_id=aws_conn_id)

    def read(uri: str) -> bytes:
        bucket, key = S3Hook.parse_s3_url(uri)
        return s3.get_key(key, bucket).get()["Body"].read()

    def keys(prefix_uri: str) -> list[str]:
        bucket, prefix = S3Hook.parse_s3_url(prefix_uri)
        return [f"s3://{bucket}/{key}" for key in s3.list_keys(bucket, prefix=prefix) or []]

    return LogStore(read=read, keys=keys)


def _text(data: bytes, uri: str) -> str:
    return (gzip.decompress(data) if uri.endswith(".gz") else data).decode(errors="replace")


def _attempt(lines: list[str], what: str, action: Callable[[], object]):
    """Run one look-up; on any error, say what could not be read and go on."""
    try:
        return action()
    except Exception as exc:
        lines.append(f"{what}: could not be read ({type(exc).__name__}: {exc})")
        return None


def step_log_uri(logs_uri: str, cluster_id: str, step_id: str, stream: str = "stderr.gz") -> str:
    """Where EMR puts a step's log under the cluster's LogUri."""
    return join(logs_uri, cluster_id, "steps", step_id, stream)


def containers_uri(logs_uri: str, cluster_id: str, application_id: str) -> str:
    """The folder of a YARN application's container logs under the cluster's LogUri."""
    return join(logs_uri, cluster_id, "containers", application_id) + "/"


def bootstrap_logs_uri(logs_uri: str, cluster_id: str, instance_id: str = "") -> str:
    """A node's bootstrap action logs (all nodes' when no instance is given)."""
    if not instance_id:
        return join(logs_uri, cluster_id, "node") + "/"
    return join(logs_uri, cluster_id, "node", instance_id, "bootstrap-actions") + "/"


def cluster_line(describe: dict) -> str | None:
    """``cluster j-X TERMINATED_WITH_ERRORS: BOOTSTRAP_FAILURE: <message>`` when it ended; None while it runs."""
    cluster = describe["Cluster"]
    status = cluster["Status"]
    if status["State"] not in TERMINAL_CLUSTER_STATES:
        return None
    reason = status.get("StateChangeReason") or {}
    return (f"cluster {cluster['Id']} {status['State']}: {reason.get('Code') or 'no code given'}: "
            f"{reason.get('Message') or 'no message given'}")


def _tail(text: str, uri: str) -> list[str]:
    tail = text.splitlines()[-LOG_TAIL_LINES:]
    return [f"last {len(tail)} lines of {uri}:", *tail]


def _bootstrap_lines(emr, store: LogStore, logs_uri: str, cluster_id: str) -> list[str]:
    """The bootstrap logs' paths (the primary node's first), with the tail of the first one found."""
    lines: list[str] = []
    listed = _attempt(lines, "instances", lambda: emr.list_instances(ClusterId=cluster_id)["Instances"]) or []
    instance_ids = [i["Ec2InstanceId"] for i in listed if i.get("Ec2InstanceId")]
    folders = [bootstrap_logs_uri(logs_uri, cluster_id, i) for i in instance_ids[:3]] or \
        [bootstrap_logs_uri(logs_uri, cluster_id)]
    lines.append(f"bootstrap logs: {', '.join(folders)}")
    found = _attempt(lines, "bootstrap logs", lambda: [
        uri for uri in store.keys(bootstrap_logs_uri(logs_uri, cluster_id))
        if "/bootstrap-actions/" in uri and uri.endswith("stderr.gz")])
    if found:
        text = _attempt(lines, found[0], lambda: _text(store.read(found[0]), found[0]))
        if text is not None:
            lines += _tail(text, found[0])
    elif found is not None:
        lines.append(f"bootstrap stderr {NOT_SHIPPED}")
    return lines


def _driver_lines(store: LogStore, logs_uri: str, cluster_id: str, step_stderr: str) -> tuple[list[str], str]:
    """The driver's container log (cluster mode): its path and tail when there, and its text ('' if none)."""
    match = APPLICATION_ID.search(step_stderr)
    if not match:
        return [], ""
    folder = containers_uri(logs_uri, cluster_id, match.group(0))
    lines = [f"driver and executor logs of {match.group(0)}: {folder}"]
    found = _attempt(lines, "container logs", lambda: sorted(
        uri for uri in store.keys(folder) if uri.endswith("/stderr.gz")))
    if not found:
        if found is not None:
            lines.append(f"container logs {NOT_SHIPPED}")
        return lines, ""
    driver = found[0]  # the application master's container: the driver in cluster mode
    text = _attempt(lines, driver, lambda: _text(store.read(driver), driver))
    return (lines + _tail(text, driver), text) if text is not None else (lines, "")


def explain_step(emr, store: LogStore, logs_uri: str, cluster_id: str, step_id: str) -> str:
    """Everything known about why step ``step_id`` did not complete, most telling first."""
    lines: list[str] = []
    step = _attempt(lines, f"step {step_id}", lambda: emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"])
    stderr_uri = step_log_uri(logs_uri, cluster_id, step_id)
    if step:
        details = step["Status"].get("FailureDetails", {})
        lines.append(f"step {step.get('Name')} ({step_id}) {step['Status']['State']}: "
                     f"{details.get('Reason', 'no reason given')}; {details.get('Message', '')}".rstrip("; "))
        stderr_uri = details.get("LogFile") or stderr_uri
    lines.append(f"step log: {stderr_uri}")
    describe = _attempt(lines, f"cluster {cluster_id}", lambda: emr.describe_cluster(ClusterId=cluster_id))
    ended = cluster_line(describe) if describe else None
    if ended:
        lines.insert(0, ended)
        if "BOOTSTRAP" in ended or (step and step["Status"]["State"] in ("PENDING", "CANCELLED")):
            lines += _bootstrap_lines(emr, store, logs_uri, cluster_id)
    stderr = _attempt(lines, stderr_uri, lambda: _text(store.read(stderr_uri), stderr_uri))
    if stderr is None:
        lines.append(f"step stderr {NOT_SHIPPED}")
        return "\n".join(lines)
    driver_lines, driver_text = _driver_lines(store, logs_uri, cluster_id, stderr)
    # the driver's traceback says more than spark-submit's output: its words come first
    if diagnosis := diagnose_text(f"{driver_text}\n{stderr}"):
        lines.insert(1 if ended else 0, diagnosis)
    return "\n".join([*lines, *driver_lines, *_tail(stderr, stderr_uri)])
