"""The update codec: exact round trips, top-k + float16 compression, and refusal of malformed payloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedledger.payload import (
    Compression,
    UpdateFormatError,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
    model_shapes,
    topk_count,
)

RNG = np.random.default_rng(7)
DELTA = {
    "dense.weight": RNG.normal(size=(8, 4)).astype(np.float32),
    "dense.bias": RNG.normal(size=4).astype(np.float32),
}
SHAPES = model_shapes(DELTA)


def test_dense_float32_round_trip_is_exact() -> None:
    out = decode_update(encode_update(DELTA), SHAPES)
    for name, array in DELTA.items():
        assert out[name].dtype == np.float32
        np.testing.assert_array_equal(out[name], array)


def test_half_precision_decodes_to_the_float16_values_exactly() -> None:
    out = decode_update(encode_update(DELTA, Compression(half=True)), SHAPES)
    for name, array in DELTA.items():
        np.testing.assert_array_equal(out[name], array.astype(np.float16).astype(np.float32))


def test_topk_keeps_the_largest_entries_and_zeroes_the_rest() -> None:
    data = encode_update(DELTA, Compression(topk_fraction=0.25))
    out = decode_update(data, SHAPES)
    for name, array in DELTA.items():
        k = topk_count(array.size, 0.25)
        kept = np.flatnonzero(out[name])
        assert kept.size == k
        threshold = np.sort(np.abs(array).ravel())[-k]
        assert np.all(np.abs(array.ravel()[kept]) >= threshold)
        np.testing.assert_array_equal(out[name].ravel()[kept], array.ravel()[kept])


def test_topk_half_shrinks_a_large_update_about_as_promised() -> None:
    big = {"w": RNG.normal(size=100_000).astype(np.float32)}
    dense = len(encode_update(big))
    sparse = len(encode_update(big, Compression(topk_fraction=0.1, half=True)))
    # 10 % of the entries at 2 + 4 bytes each against 4 bytes each: 15 % of the size, plus the header.
    assert 0.14 < sparse / dense < 0.16


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float32, st.integers(1, 300), elements=st.floats(-1e3, 1e3, width=32)),
    st.floats(0.01, 1.0),
    st.booleans(),
)
def test_topk_decompression_is_exact_for_what_was_kept(
    values: np.ndarray, fraction: float, half: bool
) -> None:
    out = decode_update(encode_update({"w": values}, Compression(topk_fraction=fraction, half=half)))["w"]
    expected = values.astype(np.float16).astype(np.float32) if half else values
    # Every entry is either the (possibly half-precision) original or an exact zero.
    assert np.all((out == expected) | (out == 0))
    assert np.count_nonzero(out != 0) <= topk_count(values.size, fraction)


def test_shape_and_name_mismatches_are_refused() -> None:
    data = encode_update(DELTA)
    with pytest.raises(UpdateFormatError, match="has shape"):
        decode_update(data, {"dense.weight": (4, 8), "dense.bias": (4,)})
    with pytest.raises(UpdateFormatError, match="missing"):
        decode_update(data, {**SHAPES, "extra": (1,)})


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "not a safetensors"),
        (b"\xff" * 64, "not a safetensors"),
        (encode_weights({"w": np.ones(3, np.float32)}), "unsupported payload format"),
    ],
)
def test_garbage_is_refused(payload: bytes, message: str) -> None:
    with pytest.raises(UpdateFormatError, match=message):
        decode_update(payload)


def test_non_finite_values_are_refused_on_both_sides() -> None:
    bad = {"w": np.array([1.0, np.nan], dtype=np.float32)}
    with pytest.raises(UpdateFormatError, match="NaN or Inf"):
        encode_update(bad)
    # A hostile client skips our encoder: the server still refuses (float16 overflow to inf included).
    forged = encode_update({"w": np.array([1.0, 2.0], dtype=np.float32)}).replace(
        np.array([2.0], np.float32).tobytes(), np.array([np.inf], np.float32).tobytes()
    )
    with pytest.raises(UpdateFormatError, match="NaN or Inf"):
        decode_update(forged)


def test_out_of_range_topk_indices_are_refused() -> None:
    data = encode_update({"w": np.arange(1, 11, dtype=np.float32)}, Compression(topk_fraction=0.2))
    # Indices of the two largest entries are 8 and 9; point one past the end.
    forged = data.replace(np.array([8, 9], np.int32).tobytes(), np.array([8, 10], np.int32).tobytes())
    with pytest.raises(UpdateFormatError, match="outside a tensor"):
        decode_update(forged)
    unsorted = data.replace(np.array([8, 9], np.int32).tobytes(), np.array([9, 8], np.int32).tobytes())
    with pytest.raises(UpdateFormatError, match="strictly increasing"):
        decode_update(unsorted)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="topk_fraction"):
        Compression(topk_fraction=0.0)
    with pytest.raises(UpdateFormatError, match="at least one tensor"):
        encode_update({})
    with pytest.raises(UpdateFormatError, match="floating point"):
        encode_update({"w": np.arange(3)})
    with pytest.raises(UpdateFormatError, match="invalid tensor name"):
        encode_update({"w::idx": np.ones(2, np.float32)})


def test_weights_round_trip_with_metadata() -> None:
    blob = encode_weights(DELTA, {"version": "3"})
    out = decode_weights(blob)
    assert model_shapes(out) == SHAPES
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    assert header["__metadata__"] == {"version": "3"}
