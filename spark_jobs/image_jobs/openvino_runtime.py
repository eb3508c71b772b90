"""The CNN forward pass on OpenVINO: a Keras feature model exported once to OpenVINO IR, run without TensorFlow.

Keras stays the source of every backbone (``backbones.build_feature_model``). ``export_ir`` converts the
feature model of one (backbone, weights file) to OpenVINO's IR (``.xml`` graph + ``.bin`` weights, fp32
as exported) into a folder next to the weights file, named by a content hash of the weights file, the
backbone name and the OpenVINO version: a second export finds it and does nothing, and new weights or a
new OpenVINO get their own IR. Only the export imports TensorFlow; ``OpenVinoForwardPass`` loads the IR
with OpenVINO alone, so the Python workers and the prediction command never import TensorFlow.

Command (``make weights`` runs it after converting the weights)::

    python -m image_jobs.openvino_runtime --backbone mobilenet_v2 --weights data/weights/mobilenet_v2_imagenet.keras
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from image_jobs.conventions import IMAGENET_WEIGHTS, IR_FOLDER_SUFFIX, PRECISIONS, RANDOM_WEIGHTS, RUNTIMES
from image_jobs.ir_digests import digests_file, ir_problem, parse_digests, read_digests, write_digests

log = logging.getLogger("image_jobs.openvino_runtime")

# OpenVINO's names of the precisions (INFERENCE_PRECISION_HINT) and of the CPU's BF16 capability
_HINTS = {"fp32": "f32", "bf16": "bf16"}
BF16_CAPABILITY = "BF16"

# Images per inference request. A batch is run in requests of this many images (the model compiled for it),
# not in one request: a small request's activations stay in the core's cache. Measured with one single-threaded
# process per core (docs/decisions/2026-12-07-openvino-requests-of-two-images.md), images/s per core against
# one request of 32: MobileNetV2 fp32 x1.37, bf16 x1.24; EfficientNet-Lite2 fp32 x1.17, bf16 x1.25.
REQUEST_IMAGES = 2


class InferenceRuntimeError(RuntimeError):
    """The runtime or precision asked for cannot run here; the message says what to choose instead."""


def check_choice(runtime: str, precision: str) -> None:
    """Fail naming the bad value when ``runtime``/``precision`` are unknown or do not go together."""
    if runtime not in RUNTIMES:
        raise InferenceRuntimeError(f"unknown inference runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise InferenceRuntimeError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if runtime == "tensorflow" and precision != "fp32":
        raise InferenceRuntimeError(
            f"precision {precision!r} needs runtime 'openvino'; runtime 'tensorflow' runs fp32 only")


def openvino_version() -> str:
    """The installed OpenVINO's version, e.g. ``2026.4.1`` (from the package metadata: no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        raise InferenceRuntimeError(
            "runtime 'openvino' needs the openvino package (pinned in pyproject.toml's model extra, and so in "
            "every environment's lock); it is not installed in this Python") from None


def ir_key(backbone_name: str, weights_file: Path, ov_version: str | None = None) -> str:
    """16 hex digits naming the IR of (weights file content, backbone, OpenVINO version)."""
    from image_jobs.feature_identity import weights_digest

    content = weights_digest(weights_file).removeprefix("sha256:")
    named = hashlib.sha256(f"{content}\0{backbone_name}\0{ov_version or openvino_version()}".encode())
    return named.hexdigest()[:16]


def ir_path(backbone_name: str, weights_file: str | Path, ov_version: str | None = None) -> Path:
    """Where the IR graph (``.xml``) of this (backbone, weights file) is, exported or not.

    ``<weights folder>/<weights stem>.openvino-<key>/<backbone>-<key>.xml`` (and ``.bin``): the file
    names carry the key too, so both ship flat with ``SparkContext.addFile`` without clashing.
    """
    weights_file = Path(weights_file)
    key = ir_key(backbone_name, weights_file, ov_version)
    stem = weights_file.name.split(".", 1)[0]
    return weights_file.parent / f"{stem}{IR_FOLDER_SUFFIX}{key}" / f"{backbone_name}-{key}.xml"


def export_ir(backbone_name: str, weights_file: str | Path, target: Path | None = None) -> Path:
    """The IR of (backbone, weights file), exported now unless it already is; returns its ``.xml``.
    ``target``: its ``ir_path`` when the caller has it already (the weights' hash is not computed again).

    Written to a temporary folder beside the final one, then renamed into place: a reader never sees
    half an IR, and two exports racing both end with the same complete one. An IR found there is checked
    against its digests (``ir_digests``); a damaged one is exported again, saying what was wrong.
    """
    if not Path(weights_file).is_file():
        raise FileNotFoundError(f"weights file {weights_file} does not exist: nothing to export to OpenVINO IR")
    target = target or ir_path(backbone_name, weights_file)
    if target.parent.exists():
        problem = _checked(target)
        if problem is None:
            log.info("OpenVINO IR already exported: %s", target)
            return target
        log.warning("%s: exporting it again", problem)
        if _checked(target) is not None:  # still damaged: not one a racing export has just put in place
            _discard(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.parent.name}.", dir=target.parent.parent))
    try:
        _convert(backbone_name, Path(weights_file), staging / target.name)
        try:
            staging.rename(target.parent)
        except OSError:  # another export finished first (the folder exists): keep its IR
            if not target.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s with weights %s to OpenVINO IR %s", backbone_name, weights_file, target)
    return target


def _checked(xml: Path) -> str | None:
    """What is wrong with the IR at ``xml`` (None: it is whole); a digests file that is not one, or files that
    vanish while checked (a racing export moved a damaged folder aside), count as damaged."""
    try:
        return ir_problem(xml, read_digests(xml))
    except (ValueError, OSError) as exc:
        return str(exc)


def _discard(folder: Path) -> None:
    """Move a damaged IR folder out of the way, then delete it (a racing export may have moved it first)."""
    aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        folder.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _convert(backbone_name: str, weights_file: Path, xml: Path) -> None:
    """Keras feature model -> OpenVINO model (fp32, open batch dimension) -> ``xml`` + ``.bin``."""
    import openvino as ov
    import tensorflow as tf

    from image_jobs.backbones import build_feature_model, get_backbone

    model = build_feature_model(get_backbone(backbone_name), str(weights_file), str(weights_file))
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="rgb_0_255")
    forward = tf.function(lambda batch: model(batch, training=False), input_signature=[spec])
    converted = ov.convert_model(forward.get_concrete_function())
    # fp16 compression would round the weights; reduced precision is a choice made at compile time
    ov.save_model(converted, str(xml), compress_to_fp16=False)
    write_digests(xml)


def choose_precision(precision: str, capabilities: list[str]) -> str:
    """``fp32`` or ``bf16``: what to run for the ``precision`` setting on a CPU offering ``capabilities``."""
    check_choice("openvino", precision)
    has_bf16 = BF16_CAPABILITY in capabilities
    if precision == "auto":
        return "bf16" if has_bf16 else "fp32"
    if precision == "bf16" and not has_bf16:
        raise InferenceRuntimeError(
            f"precision 'bf16' asked for, but this CPU offers {', '.join(capabilities)} to OpenVINO (no BF16): "
            f"choose precision 'fp32', or 'auto' (bf16 only where the CPU has it)")
    return precision


def resolve_precision(runtime: str, precision: str) -> str:
    """What a job runs for the ``precision`` setting: ``auto`` resolved once, on this (the driver's) CPU, so
    every worker runs the same precision and the run's features have one identity. ``bf16`` stays bf16: a
    worker whose CPU lacks it fails naming the choice (``choose_precision``)."""
    check_choice(runtime, precision)
    if runtime == "tensorflow" or precision != "auto":
        return "fp32" if runtime == "tensorflow" else precision
    import openvino as ov

    return choose_precision(precision, list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))


def _log_to_stderr_where_unconfigured() -> None:
    """Spark's Python workers configure no logging: there, this module's lines get a stderr handler (the
    executor's log), so what the CPU offered and what was chosen is on record for every worker."""
    if not log.hasHandlers():  # none on it, its parents or the root
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class OpenVinoForwardPass:
    """An exported IR compiled for this CPU: ``predict_on_batch`` as ``featurize.ForwardPass`` has it.

    ``threads`` is the task's cores (OpenVINO's own pool, ``INFERENCE_NUM_THREADS``). The precision is
    always set explicitly: on CPUs with BF16 OpenVINO would otherwise choose bf16 by itself.
    Threads are not pinned to cores: an executor's Python workers share the cores with each other and
    with the JVM, and measured here (two single-threaded processes at once, MobileNetV2, batch 32)
    pinning made no difference beyond the machine's noise (fp32 88-91 images/s pinned, 76-104 not;
    bf16 141-157 pinned, 138-225 not), so the operating system stays free to place them.
    """

    def __init__(self, xml: str | Path, threads: int, precision: str = "fp32",
                 digests: dict[str, str] | None = None):
        import openvino as ov

        if digests is not None and (problem := ir_problem(xml, digests)):
            raise InferenceRuntimeError(problem)
        core = ov.Core()
        capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.precision = choose_precision(precision, capabilities)
        _log_to_stderr_where_unconfigured()
        log.info("OpenVINO %s on CPU: the CPU offers %s; precision %s asked for, %s chosen; %d thread(s)",
                 ov.get_version(), capabilities, precision, self.precision, threads)
        config = {"INFERENCE_NUM_THREADS": max(1, threads), "INFERENCE_PRECISION_HINT": _HINTS[self.precision],
                  "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        try:
            model = core.read_model(str(xml))
            model.reshape([REQUEST_IMAGES, *model.input(0).get_partial_shape()[1:]])
            self._compiled = core.compile_model(model, "CPU", config)
            self._request = self._compiled.create_infer_request()
        except RuntimeError as exc:
            raise openvino_failure(exc, f"compile the IR {xml}") from exc
        self._output = self._compiled.output(0)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        """Features of a batch of RGB pixels in [0, 255], ``(n, size, size, 3)`` float32, in requests of
        ``REQUEST_IMAGES``; a last, partial request is padded with black images whose features are dropped."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = len(batch)
        out = np.empty((n, *self._output.get_shape()[1:]), dtype=np.float32)
        for start in range(0, n, REQUEST_IMAGES):
            chunk = batch[start : start + REQUEST_IMAGES]
            if len(chunk) < REQUEST_IMAGES:
                chunk = np.concatenate([chunk, np.zeros((REQUEST_IMAGES - len(chunk), *chunk.shape[1:]), np.float32)])
            try:
                result = self._request.infer([chunk])
            except RuntimeError as exc:
                raise openvino_failure(exc, f"run a batch of {n} photos") from exc
            out[start : start + REQUEST_IMAGES] = result[self._output][: n - start]  # a copy: the next request reuses
        return out


# what OpenVINO says when an allocation (memory, or a thread's stack) is refused
_REFUSED_ALLOCATION = ("Resource temporarily unavailable", "bad_alloc", "Cannot allocate memory", "out of memory")


def openvino_failure(exc: RuntimeError, doing: str) -> Exception:
    """OpenVINO's error, named: its last line (what it could not do) without its stack of C++ locations.

    Refused allocations under a capped address space (Spark's ``spark.executor.pyspark.memory`` sets one
    on every Python worker) are a ``MemoryError`` naming the cap, so a step's diagnosis says out of memory.
    """
    said = ([line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__])[-1][:300]
    cap = address_space_cap_mib()
    if cap is not None and any(sign in said for sign in _REFUSED_ALLOCATION):
        return MemoryError(f"OpenVINO could not {doing} within this Python worker's {cap} MiB address-space cap "
                           f"(spark.executor.pyspark.memory): {said}; give the Python workers more memory")
    return InferenceRuntimeError(f"OpenVINO could not {doing}: {said}")


def address_space_cap_mib() -> int | None:
    """This process's address-space limit (MiB), None when it has none."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft // (1 << 20)


def driver_weights_file(backbone_name: str, weights: str) -> Path:
    """The weights file on the driver's disk: Keras' cache for ``imagenet``, the path of a ``file://`` URI,
    else the copy ``SparkContext.addFile`` fetched (call it after ``addFile``)."""
    from image_jobs.backbones import get_backbone

    if weights == RANDOM_WEIGHTS:
        raise InferenceRuntimeError(
            "runtime 'openvino' runs exported weights: give --weights-uri (or the imagenet weights in Keras' "
            "cache); random weights are for timing runs with runtime 'tensorflow'")
    if weights == IMAGENET_WEIGHTS:
        backbone = get_backbone(backbone_name)
        backbone.check_imagenet_cached()
        return Path(backbone.imagenet_cache_path())
    if weights.startswith("file://") or "://" not in weights:
        return Path(weights.removeprefix("file://"))
    from pyspark import SparkFiles

    return Path(SparkFiles.get(weights.rstrip("/").rsplit("/", 1)[-1]))


def stored_ir_uri(weights_uri: str, xml: Path) -> str:
    """Where the IR named ``xml`` (``ir_path`` of the weights' local copy) is stored beside a weights URI:
    the same relative place as next to a local weights file (staging uploads it there)."""
    return f"{weights_uri.rsplit('/', 1)[0]}/{xml.parent.name}/{xml.name}"


def stored_ir_files(xml_uri: str) -> list[str]:
    """The URIs of a stored IR's files: its graph, its weights, its digests."""
    base = xml_uri.removesuffix(".xml")
    return [xml_uri, f"{base}.bin", f"{base}{digests_file(xml_uri).suffix}"]


def stored_ir_exists(spark, xml_uri: str) -> bool:
    """Whether every file of a stored IR (``.xml``, ``.bin``, digests) is at ``xml_uri``, read through Hadoop's
    filesystem (s3:// on EMR, hdfs://, file://): the nodes may read the artifacts, not write them."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for uri in stored_ir_files(xml_uri):
        path = jvm.org.apache.hadoop.fs.Path(uri)
        if not path.getFileSystem(conf).exists(path):
            return False
    return True


def stored_digests(spark, xml_uri: str) -> dict[str, str]:
    """The digests stored beside the IR at ``xml_uri`` (a few lines, read through Spark's text source)."""
    uri = stored_ir_files(xml_uri)[2]
    return parse_digests("\n".join(row.value for row in spark.read.text(uri).collect()), uri)


def usable_stored_ir(spark, xml_uri: str) -> dict[str, str] | None:
    """The digests of the stored IR at ``xml_uri`` when all its files are there and match them, else None (said
    in the log). Its two files are read once on the driver (Spark's binaryFile source: tens of MB): a staged IR
    whose files disagree with its digests (one staged before digests existed, then digests of another export
    added beside it) would otherwise fail every task of every run."""
    if not stored_ir_exists(spark, xml_uri):
        return None
    digests = stored_digests(spark, xml_uri)
    for row in spark.read.format("binaryFile").load(stored_ir_files(xml_uri)[:2]).select("path", "content").collect():
        name = row["path"].rstrip("/").rsplit("/", 1)[-1]
        if hashlib.sha256(row["content"]).hexdigest() != digests.get(name):
            log.warning("the stored OpenVINO IR file %s does not match its digest (damaged, or staged from another "
                        "export): not used; stage the weights again after 'make weights' to replace it",
                        row["path"])
            return None
    return digests


def ship_ir(spark, backbone_name: str, weights: str, precision: str):
    """The IR of (backbone, weights) shipped to the executors; returns the ``featurize.InferenceChoice``
    the Python workers load it with (they import no TensorFlow).

    Weights in an object store (s3://, staged by ``stage_artifacts``) come with their IR beside them when
    it was exported where they were staged from (``make weights``): it is shipped from there. Otherwise
    the driver exports it (TensorFlow on the driver, a few seconds) next to its local weights file.
    """
    from image_jobs.featurize import InferenceChoice

    check_choice("openvino", precision)
    local_weights = driver_weights_file(backbone_name, weights)
    xml = ir_path(backbone_name, local_weights)
    # a copy (s3:// weights fetched by addFile): their IR, if staged, is beside the original
    remote = weights != IMAGENET_WEIGHTS and local_weights.resolve() != Path(weights.removeprefix("file://")).resolve()
    stored = stored_ir_uri(weights, xml) if remote and not xml.exists() else None
    if stored and (digests := usable_stored_ir(spark, stored)) is not None:
        log.info("OpenVINO IR found beside the weights: %s", stored)
        parts = stored_ir_files(stored)[:2]
    else:
        if remote:
            log.info("no usable OpenVINO IR beside the weights %s (%s): exporting it on the driver for this run; "
                     "'make weights' before staging stores it there for every run",
                     weights, stored_ir_uri(weights, xml))
        xml = export_ir(backbone_name, local_weights, xml)
        parts, digests = [str(xml), str(xml.with_suffix(".bin"))], read_digests(xml)
    for part in parts:
        spark.sparkContext.addFile(part)  # flat next to each other in every node's SparkFiles folder
    # every worker checks its copies against the digests before compiling them
    return InferenceChoice("openvino", precision, parts[0], tuple(sorted(digests.items())))


def main(argv: list[str] | None = None) -> int:
    """Export (backbone, weights file) to OpenVINO IR next to the weights; prints the ``.xml`` path."""
    parser = argparse.ArgumentParser(description="Export a backbone's Keras feature model to OpenVINO IR.")
    parser.add_argument("--backbone", required=True, help="backbone name, e.g. mobilenet_v2")
    parser.add_argument("--weights", type=Path, required=True, help="the weights file (.keras or .h5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    print(export_ir(args.backbone, args.weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
