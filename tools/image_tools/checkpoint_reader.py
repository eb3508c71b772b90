"""Read a PyTorch checkpoint saved in torch's legacy (pre-1.6, non-zip) format, without torch.

The legacy format is a sequence of pickles: magic number, protocol version, system info, the
object itself (tensors refer to storages through pickle "persistent ids"), the list of storage
keys, then each storage's raw bytes prefixed by its element count (int64, little-endian).
Only what a ``state_dict`` of float tensors needs is supported; anything else fails loudly.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointFormatError(ValueError):
    """The file is not a legacy torch checkpoint this reader understands."""


@dataclass
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointFormatError("tensor refers to a storage that the file does not contain")
        base = self.storage.data[self.offset :]
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base, shape=self.size, strides=tuple(s * itemsize for s in self.stride)
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored) -> _LazyTensor:
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _PlainUnpickler(pickle.Unpickler):
    """The header and trailer pickles (magic number, protocol, system info, storage keys): plain data only, so
    any class or persistent id a crafted file names is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        raise CheckpointFormatError(f"unsupported object in checkpoint header: {module}.{name}")

    def persistent_load(self, saved_id: Any) -> Any:
        raise CheckpointFormatError(f"unsupported persistent id in checkpoint header: {saved_id!r}")


def _plain_load(f: IO[bytes]) -> Any:
    return _PlainUnpickler(f, encoding="utf-8").load()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]):
        super().__init__(file, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise CheckpointFormatError(f"unsupported object in checkpoint: {module}.{name}")

    def persistent_load(self, saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or saved_id[0] != "storage":
            raise CheckpointFormatError(f"unsupported persistent id in checkpoint: {saved_id!r}")
        storage_type, key, _location, numel, view_metadata = saved_id[1:6]
        if view_metadata is not None:
            raise CheckpointFormatError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, int(numel))
        return self._storages[key]


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a legacy-format torch ``state_dict`` as ``{name: numpy array}``.

    Raises CheckpointFormatError for zip-format checkpoints (torch >= 1.6) and anything that is
    not a plain dictionary of tensors.
    """
    path = Path(path)
    with path.open("rb") as f:
        if f.read(2) == b"PK":
            raise CheckpointFormatError(f"{path} is a zip-format checkpoint, not the legacy format")
        f.seek(0)
        try:
            magic = _plain_load(f)
            protocol = _plain_load(f)
            _plain_load(f)  # system info: endianness and type sizes, always little-endian here
        except CheckpointFormatError as exc:
            raise CheckpointFormatError(f"{path}: {exc}") from None
        except Exception as exc:
            raise CheckpointFormatError(f"{path} is not a torch checkpoint: {exc}") from exc
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
            raise CheckpointFormatError(f"{path}: unexpected magic {magic!r} or protocol {protocol!r}")
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(f, storages).load()
        keys = _plain_load(f)
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != storage.numel:
                raise CheckpointFormatError(f"storage {key}: {numel} elements, expected {storage.numel}")
            raw = f.read(numel * storage.dtype.itemsize)
            if len(raw) != numel * storage.dtype.itemsize:
                raise CheckpointFormatError(f"{path} is truncated (storage {key})")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    return {name: t.materialize() for name, t in obj.items() if isinstance(t, _LazyTensor)}
