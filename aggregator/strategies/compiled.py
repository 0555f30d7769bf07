"""Compiled (numba) kernels for the coordinate-wise rules, with the NumPy code as their reference.

The NumPy sorting network (:mod:`aggregator.strategies.sorting_network`) runs each comparator as two ufunc
passes over a multi-megabyte block of columns: every comparator reads and writes that block through the
cache hierarchy, so the median of 100 clients cost 12-60x one ``np.sum`` over the same matrix. Here the
same comparators run on blocks of :data:`LANES` columns that stay in the first-level cache, compiled to
SIMD min/max; X is read once, in the same pass that checks it for NaN and Inf.

Results are bit-identical to the NumPy path (tests/aggregator/test_compiled.py compares them): the same
comparators in the same order with NumPy's min/max semantics (``x < y ? x : y``, ``x > y ? x : y``), the
same float32 (median, trimmed mean) or float64 (Bulyan's windows) arithmetic in the same order, no
fast-math (no reassociation, no fused multiply-add). Both paths turn a -0.0 result into +0.0, since which
zero a network leaves where -0.0 and +0.0 meet depends on its comparator order.

The kernels (:mod:`aggregator.strategies.order_kernels`) are imported on first use (numba's import costs
about a second); numba compiles them then and caches the machine code under ``__pycache__``
(``cache=True``). Where numba cannot be imported, :func:`kernels` returns None and callers take the
NumPy path (the equivalence tests run both).
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from types import ModuleType

import numpy as np

from aggregator.strategies.sorting_network import MAX_NETWORK_CLIENTS, pruned_comparators
from aggregator.strategies.validation import raise_on_non_finite_rows

# Reducers of the sorted block (``mode`` of :func:`aggregator.strategies.order_kernels.order_reduce`).
MEDIAN = 0
TRIMMED_MEAN = 1
CLOSEST_TO_MEDIAN = 2


@lru_cache(maxsize=1)
def kernels() -> ModuleType | None:
    """The compiled order-statistics kernels' module, or None where numba cannot be imported."""
    try:
        from aggregator.strategies import order_kernels
    except ImportError:  # pragma: no cover - numba is a pinned dependency
        return None
    return order_kernels


@lru_cache(maxsize=1)
def dot_kernels() -> ModuleType | None:
    """The compiled norm and dot kernel's module, or None where numba cannot be imported."""
    try:
        from aggregator.strategies import dot_kernels as module
    except ImportError:  # pragma: no cover - numba is a pinned dependency
        return None
    return module


@lru_cache(maxsize=1)
def gate_kernels() -> ModuleType | None:
    """The guarded default's compiled statistics (:mod:`aggregator.strategies.gate_kernels`), or None
    where numba cannot be imported."""
    try:
        from aggregator.strategies import gate_kernels as module
    except ImportError:  # pragma: no cover - numba is a pinned dependency
        return None
    return module


@lru_cache(maxsize=1)
def sort_in_place() -> bool:
    """Whether the order kernels sort blocks in place on this host: the best of five interleaved timings of
    both forms of ``order_reduce`` (a median through Batcher's full network of 64 rows, 16 blocks of lanes;
    a few milliseconds in all, once per process); False where numba is missing. Which form LLVM vectorizes
    depends on the target, not the data; both give the same bits, so a noisy timing can only cost speed,
    never change a result."""
    compiled = kernels()
    if compiled is None:
        return False
    n = 64
    ca, cb = _comparator_arrays(n, None)
    X = np.random.default_rng(0).standard_normal((n, 16 * compiled.LANES)).astype(np.float32)
    rows = np.arange(n, dtype=np.intp)
    out = np.empty(X.shape[1], dtype=np.float32)
    best = [math.inf, math.inf]
    for _ in range(5):
        for form in (False, True):
            start = time.perf_counter()
            compiled.order_reduce(X, rows, ca, cb, MEDIAN, 0, np.float32(1.0), out, form)
            best[form] = min(best[form], time.perf_counter() - start)
    return best[True] < best[False]


@lru_cache(maxsize=256)
def _comparator_arrays(
    n: int, needed: tuple[int, ...] | None, as_set: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.asarray(pruned_comparators(n, needed, as_set), dtype=np.intp).reshape(-1, 2)
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def network_reduce(
    X: np.ndarray,
    mode: int,
    k: int = 0,
    needed: tuple[int, ...] | None = None,
    rows: np.ndarray | None = None,
    as_set: bool = False,
) -> np.ndarray | None:
    """:func:`~aggregator.strategies.order_kernels.order_reduce` over the rows ``rows`` (None: all) of a C-contiguous float32 ``X``, through the
    comparators of :func:`pruned_comparators` for ``needed`` (and ``as_set``); None where it does not apply (numba missing,
    or more rows than :data:`MAX_NETWORK_CLIENTS`: the caller then takes the NumPy path).

    Raises :class:`InvalidUpdates` naming the clients whose updates hold NaN or Inf. For TRIMMED_MEAN,
    ``k`` is the count trimmed from each end; for CLOSEST_TO_MEDIAN, the count averaged.
    """
    selected = np.arange(X.shape[0], dtype=np.intp) if rows is None else np.asarray(rows, dtype=np.intp)
    m = selected.shape[0]
    compiled = kernels()
    if compiled is None or m > MAX_NETWORK_CLIENTS:
        return None
    ca, cb = _comparator_arrays(m, needed, as_set)
    scale = np.float32(1.0 / (m - 2 * k)) if mode == TRIMMED_MEAN else np.float32(1.0)
    out = np.empty(X.shape[1], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is the caller's to report
        bad = compiled.order_reduce(X, selected, ca, cb, mode, k, scale, out, sort_in_place())
    if bad:
        raise_on_non_finite_rows(X)
    return out
