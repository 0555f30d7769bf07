"""The numba kernels behind :func:`aggregator.strategies.kernels.sq_norms_and_dots` and, for few rows,
:func:`aggregator.strategies.krum.gram_float32` (imported on first use, like
:mod:`aggregator.strategies.order_kernels`).

Squared norms and dots with one vector for every row, in one pass over the matrix, accumulated in float64:
a float32 product is exact in float64 and a float32 square cannot overflow or underflow there, so no row
needs a second, wider pass. ``fastmath={"reassoc"}`` lets LLVM split each sum into SIMD lanes (the
order of additions, not the precision: about 1e-16 relative per addition); no other fast-math flag is
set, so NaN and Inf still propagate into the sums, which callers use as their finiteness check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

_F = TypeVar("_F", bound=Callable[..., Any])

# Columns per chunk: the vector's chunk (256 KB) stays in the second-level cache while every row's chunk
# streams past it; measured: 4K-16K-column chunks ran 1.6-2x slower at n = 50-100, d = 1M.
CHUNK = 1 << 16


def _compiled(fn: _F) -> _F:
    """numba's ``njit`` (cached, GIL released, additions reassociable), typed as the function it wraps."""
    return cast(
        _F,
        numba.njit(cache=True, nogil=True, error_model="numpy", boundscheck=False, fastmath={"reassoc"})(fn),
    )


@_compiled
def _sq_and_dot(row: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    s = 0.0
    t = 0.0
    for j in range(row.shape[0]):  # from 0: numba then knows the index is not negative (no gather)
        x = np.float64(row[j])
        s += x * x
        t += x * np.float64(v[j])
    return s, t


@_compiled
def _sq(row: np.ndarray) -> float:
    s = 0.0
    for j in range(row.shape[0]):
        x = np.float64(row[j])
        s += x * x
    return s


@_compiled
def sq_norms_and_dots(
    X: np.ndarray, v: np.ndarray, with_dots: bool, sq: np.ndarray, dots: np.ndarray
) -> None:
    """Fill ``sq[i]`` with ||x_i||^2 and, if ``with_dots``, ``dots[i]`` with x_i . v (float64)."""
    n, d = X.shape
    for i in range(n):
        sq[i] = 0.0
        dots[i] = 0.0
    for c0 in range(0, d, CHUNK):
        c1 = min(d, c0 + CHUNK)
        if with_dots:
            u = v[c0:c1]
            for i in range(n):
                s, t = _sq_and_dot(X[i, c0:c1], u)
                sq[i] += s
                dots[i] += t
        else:
            for i in range(n):
                sq[i] += _sq(X[i, c0:c1])


@_compiled
def centred_gram(X: np.ndarray, block: int, gram: np.ndarray) -> None:
    """Add to ``gram`` (n x n float64, zeroed by the caller) the Gram matrix of the rows of float32 ``X``
    centred per block of ``block`` columns on the block's column means (float32), as
    :func:`aggregator.strategies.krum.gram_float32` defines it: each block's products summed in float32
    (SIMD lanes, in an order LLVM chooses), the block sums in float64. For few rows, where a BLAS product
    of n x block by block x n is mostly call overhead."""
    n, d = X.shape
    centred = np.empty((n, block), dtype=np.float32)
    total = np.empty(block, dtype=np.float64)
    mean = np.empty(block, dtype=np.float32)
    for c0 in range(0, d, block):
        w = min(block, d - c0)
        for j in range(w):
            total[j] = 0.0
        for i in range(n):
            row = X[i, c0 : c0 + w]
            for j in range(w):
                total[j] += np.float64(row[j])
        for j in range(w):
            mean[j] = np.float32(total[j] / n)
        for i in range(n):
            row = X[i, c0 : c0 + w]
            out = centred[i]
            for j in range(w):
                out[j] = row[j] - mean[j]
        for a in range(n):
            ra = centred[a, :w]
            b = a
            while b + 4 <= n:  # four dots per pass over row a: a quarter of its loads, four sums in flight
                s0, s1, s2, s3 = _dot32x4(
                    ra, centred[b, :w], centred[b + 1, :w], centred[b + 2, :w], centred[b + 3, :w]
                )
                _add_sym(gram, a, b, s0)
                _add_sym(gram, a, b + 1, s1)
                _add_sym(gram, a, b + 2, s2)
                _add_sym(gram, a, b + 3, s3)
                b += 4
            while b < n:
                _add_sym(gram, a, b, _dot32(ra, centred[b, :w]))
                b += 1


@_compiled
def _add_sym(gram: np.ndarray, a: int, b: int, s: float) -> None:
    gram[a, b] += s
    if b != a:
        gram[b, a] += s


@_compiled
def _dot32(x: np.ndarray, y: np.ndarray) -> float:
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += x[j] * y[j]
    return np.float64(s)


@_compiled
def _dot32x4(
    x: np.ndarray, y0: np.ndarray, y1: np.ndarray, y2: np.ndarray, y3: np.ndarray
) -> tuple[float, float, float, float]:
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for j in range(x.shape[0]):
        v = x[j]
        s0 += v * y0[j]
        s1 += v * y1[j]
        s2 += v * y2[j]
        s3 += v * y3[j]
    return np.float64(s0), np.float64(s1), np.float64(s2), np.float64(s3)
