"""The image listing: which photos each class folder holds, as Spark's file sources will see them.

One recursive listing through Airflow's object storage (file://, s3://) counts image files per class
folder, with the files no class gets (loose files under the root, names Spark treats as hidden). A
modification-time cut-off keeps a backfill of a past interval to the photos that had arrived by then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from image_pipeline.conventions import IMAGE_SUFFIXES, hidden_to_spark
from image_pipeline.planning import PlanError


def info_mtime(info: dict) -> datetime | None:
    """Modification time from an fsspec info dict (local: 'mtime' seconds; S3: 'LastModified')."""
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


EXAMPLES = 100  # files of each kind left out that a scan names (it counts them all)


@dataclass
class ImageScan:
    """What one listing of the images URI found: images per class, and the files no class gets (counted,
    with up to ``EXAMPLES`` of each named)."""

    counts: dict[str, int]  # class folder -> image files (nested sub-folders included)
    loose: list[str] = field(default_factory=list)  # image files directly under the root: rejected later
    hidden: list[str] = field(default_factory=list)  # image files under names Spark skips ('.', '_')
    n_loose: int = 0
    n_hidden: int = 0

    def add(self, relative: str) -> None:
        """Count one image file, by its path relative to the images URI."""
        if is_hidden(relative):
            self.n_hidden += 1
            if len(self.hidden) < EXAMPLES:
                self.hidden.append(relative)
        elif "/" not in relative:
            self.n_loose += 1
            if len(self.loose) < EXAMPLES:
                self.loose.append(relative)
        else:
            label = relative.split("/", 1)[0]
            self.counts[label] = self.counts.get(label, 0) + 1

    def warnings(self, limit: int = 10) -> list[str]:
        """Plain sentences for the plan's log about the files the run leaves out."""
        out = []
        if self.n_loose:
            out.append(f"{self.n_loose} image file(s) directly under the images URI belong to no class "
                       f"folder; extraction records them as rejects: {sorted(self.loose)[:limit]}")
        if self.n_hidden:
            out.append(f"{self.n_hidden} image file(s) under names starting with '.' or '_' are skipped "
                       f"(Spark's file sources treat them as hidden); rename them to include them: "
                       f"{sorted(self.hidden)[:limit]}")
        return out


def walk_images(root, modified_before: datetime | None = None) -> Iterator[tuple[str, dict]]:
    """(path relative to ``root``, fsspec info) of every image file under the ``ObjectStoragePath`` ``root``,
    modified before ``modified_before``, hidden names included (callers tell them apart with ``hidden_to_spark``).

    Walks folder by folder: the caller holds one folder's listing at a time, never the whole collection.
    """
    top = root.path.rstrip("/")
    for folder, _, files in root.fs.walk(top, detail=True, on_error="raise"):
        relative_folder = folder.rstrip("/")[len(top) + 1:] if folder.rstrip("/") != top else ""
        for name, info in files.items():
            mtime = info_mtime(info)
            if not name.lower().endswith(IMAGE_SUFFIXES) or (
                    modified_before is not None and mtime is not None and mtime >= modified_before):
                continue
            yield (f"{relative_folder}/{name}" if relative_folder else name), info
        root.fs.invalidate_cache(folder)  # s3fs would keep every folder's listing otherwise


def is_hidden(relative: str) -> bool:
    """Whether Spark's file sources and the jobs' listing skip a file, by its path below the root they list."""
    return any(hidden_to_spark(part) for part in relative.split("/"))


def scan_images(images_uri: str, conn_id: str | None = None, modified_before: datetime | None = None) -> ImageScan:
    """Image files per class folder under ``images_uri``, modified before ``modified_before``.

    Goes through Airflow's object storage (file://, s3://) folder by folder (``walk_images``), so a backfill
    of a past interval does not pick up classes whose photos arrived later. A class is the first folder under
    the root, with its nested sub-folders; an empty folder is no class. Files and folders Spark's file sources
    skip (``hidden_to_spark``) are left out the same way and reported in ``hidden``. Raises PlanError naming
    the images URI when it does not exist or cannot be read.
    """
    from image_pipeline.planning.objects import object_path

    root = object_path(images_uri, conn_id)
    try:
        if not root.exists() or not root.is_dir():
            raise PlanError(f"param 'images_uri': {images_uri} does not exist or is not a folder")
        scan = ImageScan({})
        for relative, _ in walk_images(root, modified_before):
            scan.add(relative)
        scan.counts = dict(sorted(scan.counts.items()))
        return scan
    except PlanError:
        raise
    except (OSError, PermissionError) as exc:
        raise PlanError(f"param 'images_uri': {images_uri} cannot be read: {exc}") from exc


def discover_labels(images_uri: str, conn_id: str | None = None, modified_before: datetime | None = None) -> list[str]:
    """Class folders under ``images_uri`` holding at least one image modified before ``modified_before``.

    See ``scan_images``; raises PlanError naming the images URI when it does not exist or cannot be read.
    """
    return sorted(scan_images(images_uri, conn_id, modified_before).counts)
