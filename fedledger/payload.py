"""The plaintext of a model update on the wire: named tensors in ``safetensors`` (never pickle).

An organization sends a *delta* (its locally trained weights minus the global model it pulled). Before
encryption the delta is encoded here, optionally compressed:

- ``dense``: every tensor as float32 (or float16 with ``half=True``);
- ``topk``: per tensor, the ``k`` entries of largest magnitude (``k = ceil(fraction * size)``, at least 1)
  as flat int32 indices plus float16 or float32 values; all other entries are zero.

Decoding is exact: float16 values widen to float32 losslessly, and the server rebuilds the dense tensor
from indices and values. :func:`decode_update` is also the validator for untrusted input: names, shapes,
dtypes, index ranges and finiteness are checked and any violation raises :class:`UpdateFormatError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

FORMAT_VERSION = "1"
_META_VERSION = "fedledger.format"
_META_ENCODING = "fedledger.encoding"
_META_SHAPES = "fedledger.shapes"
_IDX = "::idx"
# safetensors dtype names an update may use; which tensor may use which is checked after loading.
_UPDATE_DTYPES = frozenset({"F16", "F32", "I32"})
_WEIGHT_DTYPES = frozenset({"F16", "F32", "F64"})
_VAL = "::val"

Shapes = Mapping[str, tuple[int, ...]]


class UpdateFormatError(ValueError):
    """An update payload is malformed or does not fit the model it claims to update."""


class UnsupportedDtype(UpdateFormatError):
    """A tensor's element type is not one an update may carry (bfloat16, float8, float64, integers...)."""


@dataclass(frozen=True)
class Compression:
    """How to encode a delta. ``topk_fraction=None`` sends every entry."""

    topk_fraction: float | None = None
    half: bool = False

    def __post_init__(self) -> None:
        if self.topk_fraction is not None and not (0.0 < self.topk_fraction <= 1.0):
            raise ValueError(f"topk_fraction must be in (0, 1], got {self.topk_fraction}")

    @property
    def encoding(self) -> str:
        """The name recorded in the payload's metadata, which tells the decoder how to rebuild the delta."""
        return "dense" if self.topk_fraction is None else "topk"


NO_COMPRESSION = Compression()


def topk_count(size: int, fraction: float) -> int:
    """Entries kept of a tensor of ``size`` entries: ``ceil(fraction * size)``, at least one, at most all."""
    return max(1, min(size, math.ceil(fraction * size)))


def encode_update(delta: Mapping[str, np.ndarray], compression: Compression = NO_COMPRESSION) -> bytes:
    """Serialize a named delta, compressed as asked. Raises :class:`UpdateFormatError` on bad input."""
    if not delta:
        raise UpdateFormatError("an update needs at least one tensor")
    value_dtype = np.float16 if compression.half else np.float32
    tensors: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    for name, array in delta.items():
        _check_name(name)
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating):
            raise UpdateFormatError(f"tensor {name!r} has dtype {array.dtype}; updates are floating point")
        if not np.isfinite(array).all():
            raise UpdateFormatError(f"tensor {name!r} contains NaN or Inf")
        shapes[name] = list(array.shape)
        if compression.topk_fraction is None:
            tensors[name] = np.ascontiguousarray(array, dtype=value_dtype)
            continue
        flat = array.reshape(-1)
        k = topk_count(flat.size, compression.topk_fraction)
        if k == flat.size:
            idx = np.arange(flat.size, dtype=np.int64)
        else:
            idx = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]
            idx.sort()
        tensors[name + _IDX] = idx.astype(np.int32)
        tensors[name + _VAL] = flat[idx].astype(value_dtype)
    metadata = {
        _META_VERSION: FORMAT_VERSION,
        _META_ENCODING: compression.encoding,
        _META_SHAPES: json.dumps(shapes, separators=(",", ":"), sort_keys=True),
    }
    return st_save(tensors, metadata=metadata)


def decode_update(data: bytes, expected_shapes: Shapes | None = None) -> dict[str, np.ndarray]:
    """Parse and validate an update payload into dense float32 tensors.

    ``expected_shapes`` are the model's tensor shapes: when given, the update must name exactly those
    tensors with exactly those shapes.
    """
    try:
        header = _read_header(data)
    except (ValueError, json.JSONDecodeError) as exc:
        raise UpdateFormatError(f"not a safetensors update payload: {exc}") from exc
    # Before loading: safetensors' NumPy loader fails with a bare KeyError on dtypes NumPy lacks (bfloat16,
    # float8), and no other dtype belongs in an update anyway.
    _check_dtypes(header, _UPDATE_DTYPES, "updates carry float16 or float32 values (and int32 top-k indices)")
    try:
        tensors = st_load(data)
        metadata = _metadata_of(header)
    except (SafetensorError, ValueError) as exc:
        raise UpdateFormatError(f"not a safetensors update payload: {exc}") from exc
    if metadata.get(_META_VERSION) != FORMAT_VERSION:
        raise UpdateFormatError(f"unsupported payload format {metadata.get(_META_VERSION)!r}")
    try:
        raw_shapes = json.loads(metadata[_META_SHAPES])
        shapes = {str(k): tuple(int(d) for d in v) for k, v in raw_shapes.items()}
    except (KeyError, TypeError, ValueError, AttributeError, json.JSONDecodeError) as exc:
        raise UpdateFormatError("payload metadata lacks valid tensor shapes") from exc
    if any(d < 0 for shape in shapes.values() for d in shape):
        raise UpdateFormatError("negative dimension in payload shapes")
    if expected_shapes is not None:
        _check_against_model(shapes, expected_shapes)
    encoding = metadata.get(_META_ENCODING)
    if encoding == "dense":
        out = _decode_dense(tensors, shapes)
    elif encoding == "topk":
        out = _decode_topk(tensors, shapes)
    else:
        raise UpdateFormatError(f"unknown payload encoding {encoding!r}")
    for name, array in out.items():
        if not np.isfinite(array).all():
            raise UpdateFormatError(f"tensor {name!r} contains NaN or Inf")
    return out


def _decode_dense(
    tensors: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    if set(tensors) != set(shapes):
        raise UpdateFormatError("dense payload tensors do not match its declared shapes")
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        array = tensors[name]
        if array.dtype not in (np.float16, np.float32):
            raise UnsupportedDtype(f"tensor {name!r} has dtype {array.dtype}; expected float16 or float32")
        if array.shape != shape:
            raise UpdateFormatError(f"tensor {name!r} has shape {array.shape}, declared {shape}")
        out[name] = array.astype(np.float32, copy=False)
    return out


def _decode_topk(tensors: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    expected_keys = {name + suffix for name in shapes for suffix in (_IDX, _VAL)}
    if set(tensors) != expected_keys:
        raise UpdateFormatError("top-k payload tensors do not match its declared shapes")
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        idx, val = tensors[name + _IDX], tensors[name + _VAL]
        size = math.prod(shape)
        if idx.dtype != np.int32 or idx.ndim != 1:
            raise UpdateFormatError(f"indices of {name!r} must be a 1-D int32 array")
        if val.dtype not in (np.float16, np.float32) or val.shape != idx.shape:
            raise UpdateFormatError(f"values of {name!r} must be float16/float32 matching the indices")
        if idx.size > size or (idx.size and (idx[0] < 0 or idx[-1] >= size)):
            raise UpdateFormatError(f"indices of {name!r} fall outside a tensor of {size} entries")
        if idx.size > 1 and not (np.diff(idx) > 0).all():
            raise UpdateFormatError(f"indices of {name!r} must be strictly increasing")
        dense = np.zeros(size, dtype=np.float32)
        dense[idx] = val
        out[name] = dense.reshape(shape)
    return out


def _check_against_model(shapes: Mapping[str, tuple[int, ...]], expected: Shapes) -> None:
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise UpdateFormatError(
            f"update tensors do not match the model: missing {missing}, unexpected {extra}"
        )
    for name, shape in expected.items():
        if tuple(shapes[name]) != tuple(shape):
            raise UpdateFormatError(
                f"tensor {name!r} has shape {tuple(shapes[name])}, the model has {tuple(shape)}"
            )


def _check_name(name: str) -> None:
    if not name or _IDX in name or _VAL in name:
        raise UpdateFormatError(f"invalid tensor name {name!r}")


def _read_header(data: bytes) -> dict[str, object]:
    if len(data) < 8:
        raise ValueError("payload too short")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise ValueError("header length exceeds payload")
    header = json.loads(data[8 : 8 + header_len])
    if not isinstance(header, dict):
        raise ValueError("header is not a mapping")
    return header


def _check_dtypes(header: Mapping[str, object], accepted: frozenset[str], rule: str) -> None:
    """Refuse any tensor whose declared safetensors dtype is not ``accepted`` (malformed entries are left
    to the safetensors parser, which refuses them)."""
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        dtype = info.get("dtype")
        if isinstance(dtype, str) and dtype not in accepted:
            raise UnsupportedDtype(
                f"tensor {name!r} has dtype {dtype}; {rule}: convert it (e.g. bfloat16 to float32) first"
            )


def _metadata_of(header: Mapping[str, object]) -> dict[str, str]:
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a mapping")
    return metadata


def model_shapes(weights: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape: the ``expected_shapes`` an update to these weights must match."""
    return {name: tuple(array.shape) for name, array in weights.items()}


def parameter_count(shapes: Mapping[str, Sequence[int]]) -> int:
    """Entries of a model whose tensors have ``shapes``: the length of its :func:`flatten` vector."""
    return sum(math.prod(int(v) for v in shape) for shape in shapes.values())


def flatten(tensors: Mapping[str, np.ndarray], names: Iterable[str]) -> np.ndarray:
    """The tensors ``names`` (a list, or a mapping of names to shapes) as one float32 vector, in that order:
    how the aggregation sees an update."""
    return np.concatenate([np.asarray(tensors[name], dtype=np.float32).reshape(-1) for name in names])


def unflatten(vector: np.ndarray, shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Named float32 tensors of ``shapes`` from one vector (the inverse of :func:`flatten`)."""
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = vector[offset : offset + size].reshape(tuple(shape)).astype(np.float32, copy=False)
        offset += size
    return out


def encode_weights(weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialize full model weights (float32, dense). Model versions are stored in this form."""
    return st_save(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
        metadata=dict(metadata or {}),
    )


def decode_weights(data: bytes) -> dict[str, np.ndarray]:
    """Parse model weights stored by :func:`encode_weights`; :class:`UpdateFormatError` on anything else."""
    try:
        header = _read_header(data)
    except (ValueError, json.JSONDecodeError) as exc:
        raise UpdateFormatError(f"not a safetensors weights file: {exc}") from exc
    _check_dtypes(header, _WEIGHT_DTYPES, "model weights are floating point (float32, float16 or float64)")
    try:
        return dict(st_load(data))
    except (SafetensorError, ValueError) as exc:
        raise UpdateFormatError(f"not a safetensors weights file: {exc}") from exc
