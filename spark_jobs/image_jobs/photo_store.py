"""The photos' object store, from the driver and from the Python workers: listing and concurrent reads.

Spark distributes the listed photos (path, length, modification time, label), never their bytes: the
Python workers fetch each batch's bytes through pyarrow's filesystems (``file://`` and ``s3://`` alike;
pyarrow ships with every Spark Python environment, and its S3 client is the AWS SDK for C++) with a
bounded pool of concurrent reads, overlapped with decoding and inference (``prefetched``). S3 answers
a small GET in tens of milliseconds: one read at a time would leave the CPU waiting.

On EMR the nodes' instance profile gives the credentials (the SDK's default chain); an S3-compatible
server is named by ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``), read on the driver and passed to
the workers in ``StoreOptions``. Throttling (503 SlowDown) and transient errors are retried by the SDK's
standard retry strategy (exponential backoff with jitter); a read that still fails raises, so the task
fails and Spark retries it: a photo is never rejected for a failed read. A photo deleted or rewritten
since the listing gets the reason ``VANISHED`` or ``CHANGED``, as with Spark's own file sources.

Paths are in the form Spark's file sources report them (``file:/data/images/beagle/1.jpg``,
``s3://bucket/images/beagle/1.jpg``), so rows keep the keys earlier runs wrote.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from image_jobs.conventions import DEFAULT_READ_CONCURRENCY, hidden_to_spark, is_image_name

S3_SCHEMES = ("s3", "s3a", "s3n")
# AWS SDK standard retries: up to this many attempts of a request (throttled or failed transiently)
DEFAULT_MAX_ATTEMPTS = 10
# photos whose bytes may be held at once by a task's reads, beyond the batch being featurized
MAX_PREFETCH_BYTES = 256 * 1024 * 1024
VANISHED = "file disappeared between listing and reading"
CHANGED = "file changed between listing and reading (a later run reads the new version)"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class StoreError(OSError):
    """The photos' store cannot be used as given (unknown scheme, missing root); the message names the URI."""


@dataclass(frozen=True)
class StoreOptions:
    """How the workers reach the store: an S3-compatible endpoint (None: AWS itself), the region (None: the
    AWS SDK's, an EMR node's own; the bucket must be in it), reads at once per task, and attempts per request."""

    endpoint: str | None = None
    region: str | None = None
    concurrency: int = DEFAULT_READ_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @classmethod
    def from_environment(cls, concurrency: int = DEFAULT_READ_CONCURRENCY) -> StoreOptions:
        """The driver's view: the endpoint and region variables of the AWS SDKs, and ``concurrency``."""
        if concurrency < 1:
            raise ValueError(f"read concurrency must be >= 1, got {concurrency}")
        endpoint = next((os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(endpoint, region, concurrency)


class StoreLocation(NamedTuple):
    """A URI split for pyarrow: its scheme (``file`` or an S3 scheme) and the filesystem's path."""

    scheme: str
    path: str

    @classmethod
    def of(cls, uri: str) -> StoreLocation:
        """``file:/a``, ``file:///a`` and ``/a`` -> (file, /a); ``s3://bucket/key`` -> (s3, bucket/key)."""
        if "://" not in uri and uri.startswith("file:"):
            return cls("file", "/" + uri[len("file:"):].lstrip("/"))
        if "://" not in uri:
            if not uri.startswith("/"):
                raise StoreError(f"{uri!r} is neither an absolute path nor a URI")
            return cls("file", uri)
        scheme, rest = uri.split("://", 1)
        if scheme == "file":
            return cls("file", "/" + rest.lstrip("/"))
        if scheme in S3_SCHEMES:
            if not rest.split("/", 1)[0]:
                raise StoreError(f"{uri!r} names no bucket")
            return cls(scheme, rest.rstrip("/"))
        raise StoreError(f"{uri!r}: the photos' store reads file:// and s3:// only, not {scheme}://")

    def uri(self, path: str | None = None) -> str:
        """``path`` (default: this location's) in Spark's form: ``file:/a/b`` or ``s3://bucket/key``."""
        path = self.path if path is None else path
        return f"file:{path}" if self.scheme == "file" else f"{self.scheme}://{path}"


_FILESYSTEMS: dict[tuple, Any] = {}  # one client per (store, options) and process: never one per photo


def filesystem(location: StoreLocation, options: StoreOptions):
    """This process's pyarrow filesystem for ``location`` (built once, then shared by every thread)."""
    import pyarrow.fs as pafs

    key = ("file",) if location.scheme == "file" else ("s3", options.endpoint, options.region, options.max_attempts)
    if key not in _FILESYSTEMS:
        if location.scheme == "file":
            _FILESYSTEMS[key] = pafs.LocalFileSystem()
        else:
            # no region given: the AWS SDK's own (environment, config file, then the EC2 instance's metadata:
            # an EMR node's region), never a lookup through S3's global endpoint, which a private subnet
            # with only an S3 gateway endpoint cannot reach
            region = options.region or ("us-east-1" if options.endpoint else None)
            _FILESYSTEMS[key] = pafs.S3FileSystem(
                region=region, endpoint_override=options.endpoint, connect_timeout=10, request_timeout=60,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=options.max_attempts))
    return _FILESYSTEMS[key]


class ListedPhoto(NamedTuple):
    """One listed image file: its key (Spark's path, length, modification time in epoch ms) and class
    (None for a file directly under the images root)."""

    path: str
    length: int
    mtime_ms: int
    label: str | None


def epoch_ms(value: datetime) -> int:
    """A time as epoch milliseconds (the listing's and the stores' unit)."""
    return int(value.timestamp() * 1000) if value.tzinfo else int(value.replace(tzinfo=UTC).timestamp() * 1000)


def class_folders(images_uri: str, options: StoreOptions, labels: Iterable[str] = ()) -> list[str]:
    """The class folders directly under ``images_uri`` (not hidden; only ``labels`` when given), by name.

    Only the top level is listed here (on the driver); the photos in them are listed by the tasks of
    ``photo_listing.list_photos``. StoreError names the URI when it does not exist.
    """
    import pyarrow.fs as pafs

    location = StoreLocation.of(images_uri)
    fs = filesystem(location, options)
    if fs.get_file_info(location.path).type != pafs.FileType.Directory:
        raise StoreError(f"--images-uri {images_uri} does not exist or is not a folder")
    allowed = set(labels)
    return sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(location.path))
                  if info.type == pafs.FileType.Directory and not hidden_to_spark(info.base_name)
                  and (not allowed or info.base_name in allowed))


def list_folder(root_uri: str, folder: str | None, before_ms: int, options: StoreOptions) -> Iterator[ListedPhoto]:
    """The image files of one class ``folder`` under ``root_uri`` (recursive), or with ``folder`` None the
    files directly under the root (no class: label None), modified before ``before_ms``.

    Files under hidden names (``hidden_to_spark``, at any depth below the root) and files without an image
    extension are left out, as Spark's file sources leave them out. Empty files are listed (they become
    rejects, never a silent gap).
    """
    import pyarrow.fs as pafs

    root = StoreLocation.of(root_uri)
    fs = filesystem(root, options)
    base = root.path if folder is None else f"{root.path}/{folder}"
    selector = pafs.FileSelector(base, recursive=folder is not None, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not is_image_name(info.base_name):
            continue
        relative = info.path[len(base) + 1:]
        if any(hidden_to_spark(part) for part in relative.split("/")):
            continue
        mtime_ms = info.mtime_ns // 1_000_000
        if mtime_ms < before_ms:
            yield ListedPhoto(root.uri(info.path), int(info.size), mtime_ms, folder)


class Fetched(NamedTuple):
    """What reading one listed photo gave: its bytes, or the reason it has none (``VANISHED``, ``CHANGED``)."""

    content: bytes | None
    reason: str | None = None


def _s3_mtime_ms(metadata: dict) -> int | None:
    value = metadata.get(b"Last-Modified") or metadata.get("Last-Modified")
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    return epoch_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def same_version(listed_ms: int, read_ms: int | None, scheme: str) -> bool:
    """Whether the modification time read now is the listed one (S3 times have whole seconds)."""
    if read_ms is None:
        return True
    return listed_ms // 1000 == read_ms // 1000 if scheme != "file" else listed_ms == read_ms


def fetch(path: str, length: int, mtime_ms: int, options: StoreOptions) -> Fetched:
    """The bytes of one listed photo, checked against the listing (size and modification time).

    On S3 one HEAD and one GET (pyarrow opens with a HEAD, whose answer gives the size and time); locally a
    stat and a read. Raises for anything else than a missing file: the task fails and Spark retries it.
    """
    location = StoreLocation.of(path)
    fs = filesystem(location, options)
    try:
        with fs.open_input_file(location.path) as stream:
            size = stream.size()
            read_ms = _s3_mtime_ms(stream.metadata()) if location.scheme != "file" else \
                fs.get_file_info(location.path).mtime_ns // 1_000_000
            if size != length or not same_version(mtime_ms, read_ms, location.scheme):
                return Fetched(None, CHANGED)
            data = stream.read(size)
    except FileNotFoundError:
        return Fetched(None, VANISHED)
    if len(data) != length:  # rewritten while being read
        return Fetched(None, CHANGED)
    return Fetched(data)


def prefetched(batches: Iterable, fetch_rows: Callable[[Any], tuple[list[Callable[[], Fetched] | Fetched], int]],
               concurrency: int, max_bytes: int = MAX_PREFETCH_BYTES) -> Iterator[tuple[Any, list[Fetched]]]:
    """Each batch with its photos' ``Fetched``, read ``concurrency`` at a time ahead of the consumer.

    ``fetch_rows(batch)`` gives one read per row (a callable, or the ``Fetched`` of a row not to read,
    e.g. one rejected before reading) and the bytes the reads will bring. While the caller decodes and
    runs one batch, the reads of the next ones go on: two batches or ``2 * concurrency`` photos ahead,
    whichever is more, within ``max_bytes`` (always at least one batch). A read's exception is raised
    when its batch is reached, so the task fails.
    """
    source = iter(batches)
    pending: deque[tuple[Any, list[Future | Fetched], int, int]] = deque()
    ahead = {"rows": 0, "bytes": 0}

    def wanted() -> bool:  # always one batch; then two, or 2 x concurrency photos, within max_bytes
        if not pending:
            return True
        return ahead["bytes"] < max_bytes and (len(pending) < 2 or ahead["rows"] < 2 * concurrency)

    def submit_more(pool: ThreadPoolExecutor) -> None:
        while wanted():
            batch = next(source, None)
            if batch is None:
                return
            reads, nbytes = fetch_rows(batch)
            futures = [read if isinstance(read, Fetched) else pool.submit(read) for read in reads]
            rows = len(futures)
            pending.append((batch, futures, rows, nbytes))
            ahead["rows"] += rows
            ahead["bytes"] += nbytes

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="photo-read")
    try:
        submit_more(pool)
        while pending:
            batch, futures, rows, nbytes = pending.popleft()
            ahead["rows"] -= rows
            ahead["bytes"] -= nbytes
            submit_more(pool)
            yield batch, [f if isinstance(f, Fetched) else f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prefetched_photos(batches: Iterable, options: StoreOptions,
                      precheck: Callable[[str | None, int], str | None]) -> Iterator[tuple[Any, list[Fetched]]]:
    """``prefetched`` over pandas batches of listed photos (``path``, ``length``, ``mtime_ms``, and ``label``
    when the batch has one): ``precheck(label, length)`` is why a photo is rejected unread, or None."""

    def reads(pdf) -> tuple[list[Callable[[], Fetched] | Fetched], int]:
        labels = pdf["label"].to_numpy() if "label" in pdf else [None] * len(pdf)
        out: list[Callable[[], Fetched] | Fetched] = []
        nbytes = 0
        for path, length, mtime_ms, label in zip(pdf["path"], pdf["length"], pdf["mtime_ms"], labels, strict=True):
            reason = precheck(label, int(length))
            if reason:
                out.append(Fetched(None, reason))
            else:
                out.append(lambda p=path, n=int(length), t=int(mtime_ms): fetch(p, n, t, options))
                nbytes += int(length)
        return out, nbytes

    return prefetched(batches, reads, options.concurrency)
