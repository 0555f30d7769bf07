"""The numba kernels behind :mod:`aggregator.strategies.compiled` (imported only when first needed: numba's
import costs about a second, which processes that never aggregate should not pay).

Every kernel repeats the arithmetic of its NumPy reference in the same order and precision, with no
fast-math (no reassociation, no fused multiply-add), so their results are bit-identical.
"""

from __future__ import annotations

import numpy as np

from aggregator.strategies.jit import compiled

# IEEE arithmetic in the source's order: bit-identical to the NumPy reference.
_compiled = compiled()


# Columns per block: n x 128 float32 (51 KB at n = 100) stays near the first-level cache, and each
# comparator's loop of 128 lanes is long enough to hide its loop overhead (measured: 64 and 256 slower).
LANES = 128

# Reducers of the sorted block (``mode`` of :func:`order_reduce`; aggregator.strategies.compiled names them).
MEDIAN = 0
TRIMMED_MEAN = 1
CLOSEST_TO_MEDIAN = 2


@_compiled
def _sort_block(buf: np.ndarray, ca: np.ndarray, cb: np.ndarray, scratch: np.ndarray) -> None:
    # A constant trip count (all LANES, also in a ragged last block) compiles to a loop with no remainder
    # code: measured 5-15 % faster than a loop over the block's width.
    # Row a goes through ``scratch`` first, at the cost of one more load and store per lane: swapping the
    # two rows in place (each store into a row a later load may read) ran at 1.1 ns per comparator lane
    # on a znver3 host (n = 50, 403 comparators), through the scratch row at 0.3 ns (vminps/vmaxps on
    # whole vectors); median and trimmed mean at n = 50, d = 100K fell from 28-34 ms to 8-9 ms.
    for c in range(ca.shape[0]):
        ra = buf[ca[c]]
        rb = buf[cb[c]]
        for j in range(LANES):
            scratch[j] = ra[j]
        for j in range(LANES):
            x = scratch[j]
            y = rb[j]
            ra[j] = x if x < y else y
            rb[j] = x if x > y else y


@_compiled
def _sort_block_in_place(buf: np.ndarray, ca: np.ndarray, cb: np.ndarray) -> None:
    # The same comparators without the scratch row: one load and one store fewer per lane where LLVM
    # vectorizes the swap (it did for a znver5 host: 0.063 against 0.089 ns per comparator lane, n = 100),
    # 3.7x slower where it does not (znver3). ``compiled.sort_in_place`` times both, once per process.
    for c in range(ca.shape[0]):
        ra = buf[ca[c]]
        rb = buf[cb[c]]
        for j in range(LANES):
            x = ra[j]
            y = rb[j]
            ra[j] = x if x < y else y
            rb[j] = x if x > y else y


@_compiled
def order_reduce(
    X: np.ndarray,
    rows: np.ndarray,
    ca: np.ndarray,
    cb: np.ndarray,
    mode: int,
    k: int,
    scale: np.float32,
    out: np.ndarray,
    in_place: bool,
) -> bool:
    """Sort every column of ``X[rows]`` by the comparators (``ca[c]``, ``cb[c]``) and reduce it into ``out``.

    ``mode`` MEDIAN: the middle value (the float32 mean of the two middle values for an even count);
    TRIMMED_MEAN: the float32 sum of positions k .. m - k - 1 in position order, times ``scale`` (a
    network pruned ``as_set`` leaves the middle values there unsorted);
    CLOSEST_TO_MEDIAN: the mean of the ``k`` values closest to the median (Bulyan), from float64 window
    sums as :func:`aggregator.strategies.bulyan.closest_to_median_mean` computes them. Returns True if
    any value read is NaN or Inf (``out`` is then meaningless). ``in_place``: sort the blocks with
    :func:`_sort_block_in_place` (the same comparators, bit for bit; ``compiled.sort_in_place`` picks one).
    """
    m = rows.shape[0]
    d = X.shape[1]
    buf = np.empty((m, LANES), dtype=np.float32)
    check = np.zeros(LANES, dtype=np.float32)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    h = m // 2
    window = np.empty(LANES, dtype=np.float64)
    best_sum = np.empty(LANES, dtype=np.float64)
    best_cost = np.empty(LANES, dtype=np.float32)
    med = np.empty(LANES, dtype=np.float32)
    scratch = np.empty(LANES, dtype=np.float32)  # _sort_block's
    for j0 in range(0, d, LANES):
        w = min(LANES, d - j0)
        for r in range(m):
            src = X[rows[r], j0 : j0 + w]
            dst = buf[r]
            for j in range(w):
                x = src[j]
                dst[j] = x
                check[j] += x * zero  # NaN once any x is NaN or Inf
            for j in range(w, LANES):
                dst[j] = zero  # lanes past a ragged end: sorted too, never read
        if in_place:
            _sort_block_in_place(buf, ca, cb)
        else:
            _sort_block(buf, ca, cb, scratch)
        o = out[j0 : j0 + w]
        if mode == MEDIAN:
            if m % 2:
                mid = buf[h]
                for j in range(w):
                    o[j] = mid[j] + zero
            else:
                lo = buf[h - 1]
                hi = buf[h]
                for j in range(w):
                    o[j] = (lo[j] + hi[j]) * half + zero
        elif mode == TRIMMED_MEAN:
            # Row by row, so the loop over lanes vectorizes; each lane still adds in sorted order.
            total = med  # a float32 scratch row
            first = buf[k]
            for j in range(w):
                total[j] = first[j]
            for r in range(k + 1, m - k):
                row = buf[r]
                for j in range(w):
                    total[j] += row[j]
            for j in range(w):
                o[j] = total[j] * scale + zero
        else:
            _closest_to_median(buf, m, k, w, window, best_sum, best_cost, med)
            for j in range(w):
                o[j] = np.float32(best_sum[j] / k) + zero
    bad = False
    for j in range(LANES):
        if check[j] != zero:
            bad = True
    return bad


@_compiled
def _closest_to_median(
    buf: np.ndarray,
    m: int,
    beta: int,
    w: int,
    window: np.ndarray,
    best_sum: np.ndarray,
    best_cost: np.ndarray,
    med: np.ndarray,
) -> None:
    """Bulyan's window search on one sorted block, in the order and precision of the NumPy reducer."""
    h = m // 2
    half = np.float32(0.5)
    for j in range(w):
        med[j] = buf[h, j] if m % 2 else (buf[h - 1, j] + buf[h, j]) * half
        window[j] = 0.0
    for r in range(beta):
        for j in range(w):
            window[j] += np.float64(buf[r, j])
    for j in range(w):
        a = med[j] - buf[0, j]
        b = buf[beta - 1, j] - med[j]
        best_cost[j] = a if a > b else b
        best_sum[j] = window[j]
    for start in range(1, m - beta + 1):
        for j in range(w):
            window[j] += np.float64(buf[start + beta - 1, j])
            window[j] -= np.float64(buf[start - 1, j])
            a = med[j] - buf[start, j]
            b = buf[start + beta - 1, j] - med[j]
            cost = a if a > b else b
            if cost < best_cost[j]:
                best_cost[j] = cost
                best_sum[j] = window[j]
