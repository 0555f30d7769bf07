"""The numba kernel behind :func:`aggregator.strategies.kernels.sq_norms_and_dots` (imported on first use,
like :mod:`aggregator.strategies.order_kernels`).

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
