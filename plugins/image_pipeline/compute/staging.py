"""What the Spark steps run: the jobs' library zip and entry scripts, named by their content hash.

Both backends' staging returns the same keys (``STAGED_KEYS``): the content hash, the zip's and the
entry scripts' folder's URIs, the bootstrap, requirements and wheelhouse URIs (None locally: the
local cluster runs on this machine's environment), the weights URI staging put where the cluster
reads it (None: the plan's own), and what was written now.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from image_pipeline.compute.emr.wheelhouse import MANIFEST, ensure_wheelhouse, read_manifest, requirements_hash
from image_pipeline.compute.jobs_archive import SPARK_JOBS_DIR, build_jobs_zip, content_hash
from image_pipeline.compute.steps import SCORING_STEP_NAMES, STEP_NAMES
from image_pipeline.conventions import RANDOM_WEIGHTS, ir_folder_glob
from image_pipeline.planning.layout import join
from image_pipeline.shipped import BOOTSTRAP_DIR

log = logging.getLogger(__name__)

ENTRY_SCRIPTS = tuple(f"{name}.py" for name in (*STEP_NAMES, *SCORING_STEP_NAMES))


STAGED_KEYS = ("content_hash", "jobs_zip_uri", "entry_dir_uri", "bootstrap_uri", "requirements_uri",
               "wheelhouse_uri", "weights_uri", "uploaded")


def staged(content_hash: str, entry_dir_uri: str, *, bootstrap_uri: str | None = None,
           requirements_uri: str | None = None, wheelhouse_uri: str | None = None, weights_uri: str | None = None,
           uploaded: list[str] | None = None) -> dict:
    """The staging result both backends return, with every key of ``STAGED_KEYS``."""
    return {"content_hash": content_hash, "jobs_zip_uri": join(entry_dir_uri, "image_jobs.zip"),
            "entry_dir_uri": entry_dir_uri, "bootstrap_uri": bootstrap_uri, "requirements_uri": requirements_uri,
            "wheelhouse_uri": wheelhouse_uri, "weights_uri": weights_uri, "uploaded": list(uploaded or [])}


def local_path(uri: str) -> str:
    """The local file system path of a ``file://`` URI (or of a plain path)."""
    return uri.removeprefix("file://")


def entry_script_paths(spark_jobs_dir: Path = SPARK_JOBS_DIR) -> list[Path]:
    """The entry scripts of every step (training and scoring)."""
    return [spark_jobs_dir / name for name in ENTRY_SCRIPTS]


def build_local_artifacts(work_dir: Path) -> tuple[str, list[Path]]:
    """Build the zip in ``work_dir``; return the content hash of zip + entry scripts and their files."""
    files = [build_jobs_zip(work_dir), *entry_script_paths()]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16], files


def stage_local(artifacts_uri: str) -> dict:
    """Copy the code to ``<artifacts>/<hash>/`` on the local file system (skipped when already there).

    Returns ``staged(...)``: the zip's and the entry scripts' ``file://`` URIs; the weights stay where
    the plan says (the local cluster reads them in place).
    """
    root = Path(local_path(artifacts_uri))
    uploaded: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        artifacts_hash, files = build_local_artifacts(Path(tmp))
        target = root / artifacts_hash
        if not (target / "image_jobs.zip").exists():
            # a staging folder of this process's own: two runs staging at once never share one
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{artifacts_hash}.", suffix=".partial", dir=root))
            for path in files:
                shutil.copy2(path, staging / path.name)
            try:
                staging.rename(target)  # atomic: readers see all files or none
                uploaded = [str(target / path.name) for path in files]
            except OSError:
                if not (target / "image_jobs.zip").exists():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # another run staged the same content first
    return staged(artifacts_hash, f"file://{target}", uploaded=uploaded)


BOOTSTRAP_FILES = ("install_python_deps.sh", "requirements-emr.txt")


def key_exists(s3, bucket: str, key: str) -> bool:
    """Whether ``key`` is in the bucket, from a ListObjectsV2 with the key itself as the prefix.

    Not a HeadObject: for a missing key S3 answers HeadObject with 404 only to a caller that has
    s3:ListBucket on the bucket, and with 403 otherwise
    (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html); a ListBucket grant limited by an
    ``s3:prefix`` condition (as an account may narrow the product's policy) does not count for a HeadObject,
    which sends no prefix. The listing sends the key as its prefix, which that condition allows, and needs
    s3:ListBucket only (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html). S3 lists
    keys in ascending order, so the key itself, when there, is the first one listed.
    """
    return key in (s3.list_keys(bucket_name=bucket, prefix=key, page_size=1, max_items=1) or [])


def stage_s3(artifacts_uri: str, weights_uri: str | None, conn_id: str | None) -> dict:
    """Upload code, entry scripts, bootstrap, EMR requirements, the nodes' wheelhouse and weights to ``artifacts/``.

    Each object is uploaded only when its key is missing (``key_exists``), so re-runs and retries upload
    nothing new. The wheelhouse goes to ``wheelhouse-<requirements hash>/`` and is skipped whole when its
    manifest is staged already; otherwise the local one is needed (built now when missing): when it can be
    neither found nor built, staging fails with ``WheelhouseError`` (naming ``make wheelhouse``)
    before anything is uploaded. Weights live under their own content hash (they change far less
    often than the code). Returns ``staged(...)``: the URIs the EMR requests refer to.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    s3 = S3Hook(aws_conn_id=conn_id)
    bucket, prefix = S3Hook.parse_s3_url(artifacts_uri.rstrip("/") + "/")
    bucket_uri, prefix = f"s3://{bucket}", prefix.rstrip("/")
    uploaded: list[str] = []

    def put(path: Path, key: str, replace: bool = False) -> str:
        if replace or not key_exists(s3, bucket, key):
            # replace=True: the hook's own check before an upload is a HeadObject (see key_exists); the key is
            # named by content, so a run staging the same key at the same moment writes the same bytes
            s3.load_file(str(path), key, bucket, replace=True)
            uploaded.append(key)
        return join(bucket_uri, key)

    def read(key: str) -> str | None:
        return s3.read_key(key, bucket) if key_exists(s3, bucket, key) else None

    wheelhouse_prefix = join(prefix, f"wheelhouse-{requirements_hash()}")
    wheelhouse = None if key_exists(s3, bucket, join(wheelhouse_prefix, MANIFEST)) else ensure_wheelhouse()
    with tempfile.TemporaryDirectory() as tmp:
        code_hash, files = build_local_artifacts(Path(tmp))
        files += [BOOTSTRAP_DIR / name for name in BOOTSTRAP_FILES]
        digest = hashlib.sha256(code_hash.encode())
        for path in files[-len(BOOTSTRAP_FILES):]:
            digest.update(path.read_bytes())
        artifacts_hash = digest.hexdigest()[:16]
        uris = {path.name: put(path, join(prefix, artifacts_hash, path.name)) for path in files}
    if wheelhouse is not None:
        stage_wheelhouse(wheelhouse, wheelhouse_prefix, put)
    return staged(artifacts_hash, join(bucket_uri, prefix, artifacts_hash),
                  bootstrap_uri=uris["install_python_deps.sh"], requirements_uri=uris["requirements-emr.txt"],
                  wheelhouse_uri=join(bucket_uri, wheelhouse_prefix),
                  weights_uri=stage_weights(weights_uri, prefix, put, read), uploaded=uploaded)


def stage_wheelhouse(folder: Path, key_prefix: str, put: Callable[[Path, str], str]) -> None:
    """Upload every wheel of a finished wheelhouse, then its manifest: a staged manifest means all wheels are there."""
    wheels = read_manifest(folder)["wheels"]
    log.info("staging the wheelhouse %s: %d wheels, %.0f MB, under %s/", folder, len(wheels),
             sum(w["size"] for w in wheels) / 1e6, key_prefix)
    for wheel in wheels:
        put(folder / wheel["file"], join(key_prefix, wheel["file"]))
    put(folder / MANIFEST, join(key_prefix, MANIFEST))


def stage_weights(weights_uri: str | None, prefix: str, put: Callable[..., str],
                  read: Callable[[str], str | None]) -> str | None:
    """Where the cluster reads the weights: an s3:// URI as it is, a local file uploaded under its content hash
    (with the IRs exported beside it, ``stage_ir``)."""
    if not weights_uri or weights_uri == RANDOM_WEIGHTS:
        return None
    if weights_uri.startswith("s3://"):
        return weights_uri  # already where the cluster reads it
    local = Path(local_path(weights_uri))
    if not local.exists():
        raise FileNotFoundError(f"weights file {weights_uri} does not exist")
    folder = join(prefix, f"weights-{content_hash(local)}")
    for ir in exported_irs(local):  # the nodes ship the IR from beside the weights instead of exporting it
        stage_ir(ir, join(folder, ir.name), put, read)
    return put(local, join(folder, local.name))


def stage_ir(ir: Path, key_prefix: str, put: Callable[..., str], read: Callable[[str], str | None]) -> None:
    """Upload an IR folder's files, its digests (``.sha256``) last. When the staged digests are not the local
    ones (a folder staged before digests existed, or a partial one), every file is uploaded again: the nodes
    check the IR they ship against the staged digests, and would export it again on every run otherwise."""
    digests = sorted(ir.glob("*.sha256"))
    current = all(read(join(key_prefix, digest.name)) == digest.read_text() for digest in digests)
    for part in sorted(ir.iterdir(), key=lambda part: (part.suffix == ".sha256", part.name)):
        put(part, join(key_prefix, part.name), replace=not current)


def exported_irs(weights_file: Path) -> list[Path]:
    """The complete OpenVINO IR folders beside a weights file (``make weights`` exports one; an export
    writes elsewhere and renames, so a folder there is whole): each holds one ``.xml``, its ``.bin`` and their
    digests (``.sha256``: the nodes use a staged IR only with them)."""
    return [ir for ir in sorted(weights_file.parent.glob(ir_folder_glob(weights_file.name)))
            if ir.is_dir() and all(any(ir.glob(f"*{suffix}")) for suffix in (".xml", ".bin", ".sha256"))]


def main(argv: list[str] | None = None) -> int:
    """Stage the EMR artifacts (code, bootstrap, wheelhouse, weights) from this machine, e.g. one that reaches
    PyPI when the Airflow workers do not: later runs find everything staged and upload nothing."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("artifacts_uri", help="s3://<bucket>/<prefix>/artifacts")
    parser.add_argument("--weights-uri", default=None, help="a weights file to stage too (local or s3://)")
    parser.add_argument("--aws-conn-id", default=None,
                        help="an Airflow connection id; default: boto3's own credentials")
    args = parser.parse_args(argv)
    if not args.artifacts_uri.startswith("s3://"):
        parser.error(f"artifacts_uri must be an s3:// URI, got {args.artifacts_uri!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(json.dumps(stage_s3(args.artifacts_uri, args.weights_uri, args.aws_conn_id), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
