"""The guarded default's statistics from its inner products, compiled (numba): :func:`gate_statistics`.

:func:`aggregator.strategies.fltrust_guarded.gate` turns the one-pass Gram matrix, squared norms and dots
with the reference into cosines, per-row peer medians, two robust levels and a clip norm: about forty
small NumPy calls, 0.1 ms at n = 10 and 0.2-0.3 ms once the interpreter's code has been pushed out of the
caches by other work (measured interleaved with the benchmark's NumPy reference, where the whole rule at
n = 10, d = 100K takes 0.3-0.6 ms). Here they are one call. No fast-math: every value is the NumPy path's
to the bit (the same IEEE operations in the same order, NaN passed through as ``np.clip`` passes it;
tests/aggregator/test_fltrust_guarded.py compares both), so the gate's decisions do not depend on
whether numba is installed.
"""

from __future__ import annotations

import numpy as np

from aggregator.strategies.jit import compiled

# The robust spread's factor, fltrust_guarded.SPREAD's value (not imported: the NumPy path's module loads
# this one; the equality test of the two paths fails if they part).
SPREAD = 1.4826
# fltrust_guarded.FLOOR_Z, UPPER_QUARTILE, HALF_NORMAL_SD and FLOOR_MIN_VALUES, likewise.
FLOOR_Z = 3.0
UPPER_QUARTILE = 0.6744897501960817
HALF_NORMAL_SD = 0.6028102749890869
FLOOR_MIN_VALUES = 3


# No fast-math: the NumPy path's values to the bit.
_compiled = compiled()


@_compiled
def _clip_unit(x: float) -> float:
    """``np.clip(x, -1.0, 1.0)``: NaN stays NaN."""
    if x < -1.0:
        return -1.0
    if x > 1.0:
        return 1.0
    return x


@_compiled
def _median(values: np.ndarray) -> float:
    """fltrust_guarded._median: the middle sorted value, or the mean of the two middle ones."""
    ordered = np.sort(values)
    m = ordered.shape[0]
    if m % 2:
        return float(ordered[m // 2])
    return float((ordered[m // 2 - 1] + ordered[m // 2]) / 2.0)


@_compiled
def _level(values: np.ndarray, z: float) -> float:
    """fltrust_guarded._robust_level: median - z x SPREAD x median absolute deviation of a non-empty vector."""
    center = _median(values)
    spread = SPREAD * _median(np.abs(values - center))
    return float(center - z * spread)


@_compiled
def _sample_sd(values: np.ndarray) -> float:
    """fltrust_guarded._sample_sd: the (n - 1) standard deviation, summed in order."""
    total = 0.0
    for i in range(values.shape[0]):
        total += values[i]
    mean = total / values.shape[0]
    squares = 0.0
    for i in range(values.shape[0]):
        squares += (values[i] - mean) * (values[i] - mean)
    return float(np.sqrt(squares / (values.shape[0] - 1)))


@_compiled
def _upper_half_floor(values: np.ndarray) -> float:
    """fltrust_guarded.upper_half_floor of a vector at FLOOR_Z (-inf: no floor)."""
    ordered = np.sort(values)
    top = ordered[ordered.shape[0] // 2 :]
    if top.shape[0] < FLOOR_MIN_VALUES:
        return -np.inf
    center = _median(top)
    anchor = center if center < 0.0 else 0.0  # min(0.0, center)
    return float(anchor - (UPPER_QUARTILE + FLOOR_Z) / HALF_NORMAL_SD * _sample_sd(top))


@_compiled
def gate_statistics(
    gram: np.ndarray,
    sq: np.ndarray,
    dots: np.ndarray,
    ref_norm: float,
    z: float,
    reference_z: float,
    relative: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float, float]:
    """(norms, cos_ref, cos_center, by_center, by_reference, center level, reference level, clip norm) as
    :func:`aggregator.strategies.fltrust_guarded.gate` computes them from finite ``sq``; ``relative``
    False is the fixed reference test (``reference_z`` unused)."""
    n = sq.shape[0]
    norms = np.sqrt(sq)
    cos_ref = np.empty(n)
    for i in range(n):
        cos_ref[i] = _clip_unit(dots[i] / (norms[i] * ref_norm)) if norms[i] > 0.0 else 0.0
    cos_c = np.ones(n)
    if n >= 2:
        peers = np.empty(n - 1)
        for a in range(n):
            k = 0
            for b in range(n):
                if b == a:
                    continue
                c = gram[a, b] / (norms[a] * norms[b])
                peers[k] = _clip_unit(c) if np.isfinite(c) else 0.0  # nan_to_num, then clip
                k += 1
            cos_c[a] = _median(peers)
    level = _level(cos_c, z)
    by_center = cos_c >= level
    ref_level = 0.0
    if relative and by_center.any():
        crowd = cos_ref[by_center]
        lowered = _level(crowd, reference_z)
        floor = _upper_half_floor(crowd)
        if floor > lowered:  # max(lowered, floor)
            lowered = floor
        ref_level = lowered if lowered < 0.0 else 0.0  # min(0.0, lowered): NaN gives 0
    by_reference = cos_ref > ref_level
    candidates = norms[by_reference & (norms > 0.0)]
    clip = _median(candidates) if candidates.shape[0] else 0.0
    return norms, cos_ref, cos_c, by_center, by_reference, level, ref_level, clip
