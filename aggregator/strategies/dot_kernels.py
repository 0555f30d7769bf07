"""The numba kernels behind :func:`aggregator.strategies.kernels.sq_norms_and_dots` and, for few rows,
:func:`aggregator.strategies.krum.gram_float32` (imported on first use, like
:mod:`aggregator.strategies.order_kernels`).

Squared norms and dots with one vector for every row, in one pass over the matrix, accumulated in float64:
a float32 product is exact in float64 and a float32 square cannot overflow or underflow there, so no row
needs a second, wider pass. ``fastmath={"reassoc"}`` lets LLVM split each sum into SIMD lanes (the
order of additions, not the precision: about 1e-16 relative per addition); no other fast-math flag is
set, so NaN and Inf still propagate into the sums, which callers use as their finiteness check.

:func:`gram_sq_and_dots` (the guarded default's one pass) is the exception: its Gram, norms and dots are
float32 within a block of columns and float64 across blocks, rows whose float32 sums cannot be trusted
redone in float64 (see its docstring).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding

from aggregator.strategies.jit import compiled

# Columns per chunk: the vector's chunk (256 KB) stays in the second-level cache while every row's chunk
# streams past it; measured: 4K-16K-column chunks ran 1.6-2x slower at n = 50-100, d = 1M.
CHUNK = 1 << 16


def _wide_vector_registers() -> bool:
    """Whether numba compiles for AVX-512's 32 vector registers (``NUMBA_CPU_FEATURES`` if set, else the
    host's): :func:`gram_sq_and_dots`'s 6 x 4 tiles fit them; with 16 (AVX2) their sums spill and
    :func:`gram_sq_and_dots_narrow` is faster."""
    features = getattr(numba.config, "CPU_FEATURES", None)
    if features is None:
        try:
            features = binding.get_host_cpu_features().flatten()
        except RuntimeError:  # llvmlite cannot read this host's features
            return False
    return "+avx512f" in features.split(",")


WIDE_VECTOR_REGISTERS = _wide_vector_registers()

# Additions reassociable (the dot products' sums carry a tolerance).
_compiled = compiled(fastmath=frozenset({"reassoc"}))
# Also a multiply and an add fused (one rounding instead of two): for the Gram's float32 tiles, whose sums
# carry a stated tolerance, not a bit-exact contract.
_fused = compiled(fastmath=frozenset({"reassoc", "contract"}))


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


# Below this float32-summed square a row (or the vector) may hold float32 subnormals that lost digits:
# :func:`gram_sq_and_dots` then redoes its norm and dot in float64, as it does for a non-finite sum.
TINY = 1e-20


@_compiled
def gram_sq_and_dots(
    X: np.ndarray, v: np.ndarray, block: int, gram: np.ndarray, sq: np.ndarray, dots: np.ndarray
) -> None:
    """One pass over float32 ``X``: into ``gram`` (n x n float64) the inner products x_a . x_b, into ``sq``
    its diagonal ||x_i||^2 and into ``dots`` x_i . v, each block of ``block`` columns summed in float32
    (SIMD lanes, multiply-adds fused), the block sums in float64.

    A block of every row (n x ``block`` float32) stays in the second-level cache while the dots with v and
    every product read it: X is read from memory once. The products run in tiles of 6 x 4 rows (24 sums in
    registers per pass over 10 rows' blocks), the last ones padded with a repeated row whose products are
    dropped (the last 6 rows meet only the last 4-row tiles: a few padded products), so no row takes a
    slower path. The norms come
    from the tiles' diagonal and the dots from one pass of v against every row per block (measured,
    n = 50, d = 100K: the float64 norm and dot pass this replaces cost a quarter of the Gram).
    A row whose float32 sums overflow, hold NaN/Inf or are so small (below :data:`TINY`) that subnormal
    squares may have lost digits has its norm and dot redone in float64, so a finite row's ``sq`` is
    finite and a NaN/Inf row's is not (the callers' finiteness check); so are all dots when v is that
    small."""
    n, d = X.shape
    last = n - 1
    rows = n + (-n) % 4  # padded to whole 4-row tiles; rows past the last repeat it
    acc = np.zeros((n + (-n) % 6, rows))  # and to whole 6-row tiles down the side
    vdots = np.zeros(rows)
    v_sq = 0.0
    for c0 in range(0, d, block):
        c1 = min(d, c0 + block)
        u = v[c0:c1]
        v_sq += _dot32(u, u)
        _add_vdots(X, u, c0, c1, vdots)
        for a in range(0, n, 6):
            a0 = X[min(a, last), c0:c1]
            a1 = X[min(a + 1, last), c0:c1]
            a2 = X[min(a + 2, last), c0:c1]
            a3 = X[min(a + 3, last), c0:c1]
            a4 = X[min(a + 4, last), c0:c1]
            a5 = X[min(a + 5, last), c0:c1]
            # From the 4-row tile holding row a: every pair (r <= c) is in exactly one tile.
            for b in range(a - a % 4, rows, 4):
                t = _tile64(
                    a0,
                    a1,
                    a2,
                    a3,
                    a4,
                    a5,
                    X[b, c0:c1],
                    X[min(b + 1, last), c0:c1],
                    X[min(b + 2, last), c0:c1],
                    X[min(b + 3, last), c0:c1],
                )
                for p in range(6):
                    for q in range(4):
                        if b + q >= a + p:
                            acc[a + p, b + q] += np.float64(t[4 * p + q])
    _finish(X, v, acc, vdots, v_sq, gram, sq, dots)


@_fused
def _row_times4(
    x: np.float32,
    y0: np.float32,
    y1: np.float32,
    y2: np.float32,
    y3: np.float32,
    s0: np.float32,
    s1: np.float32,
    s2: np.float32,
    s3: np.float32,
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """One row's four multiply-adds of a tile step (inlined by LLVM: the sums stay in registers)."""
    return s0 + x * y0, s1 + x * y1, s2 + x * y2, s3 + x * y3


@_fused
def _tile64(
    a0: np.ndarray,
    a1: np.ndarray,
    a2: np.ndarray,
    a3: np.ndarray,
    a4: np.ndarray,
    a5: np.ndarray,
    b0: np.ndarray,
    b1: np.ndarray,
    b2: np.ndarray,
    b3: np.ndarray,
) -> tuple[np.float32, ...]:
    # 24 sums, 10 loads per step: 29 of AVX-512's 32 vector registers, no spills (measured 5-10 % faster
    # than 4 x 4 at n = 50-100).
    z = np.float32(0.0)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = s22 = s23 = z
    s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = s50 = s51 = s52 = s53 = z
    for j in range(a0.shape[0]):
        y0 = b0[j]
        y1 = b1[j]
        y2 = b2[j]
        y3 = b3[j]
        s00, s01, s02, s03 = _row_times4(a0[j], y0, y1, y2, y3, s00, s01, s02, s03)
        s10, s11, s12, s13 = _row_times4(a1[j], y0, y1, y2, y3, s10, s11, s12, s13)
        s20, s21, s22, s23 = _row_times4(a2[j], y0, y1, y2, y3, s20, s21, s22, s23)
        s30, s31, s32, s33 = _row_times4(a3[j], y0, y1, y2, y3, s30, s31, s32, s33)
        s40, s41, s42, s43 = _row_times4(a4[j], y0, y1, y2, y3, s40, s41, s42, s43)
        s50, s51, s52, s53 = _row_times4(a5[j], y0, y1, y2, y3, s50, s51, s52, s53)
    return (
        s00,
        s01,
        s02,
        s03,
        s10,
        s11,
        s12,
        s13,
        s20,
        s21,
        s22,
        s23,
        s30,
        s31,
        s32,
        s33,
        s40,
        s41,
        s42,
        s43,
        s50,
        s51,
        s52,
        s53,
    )


@_compiled
def _add_vdots(X: np.ndarray, u: np.ndarray, c0: int, c1: int, vdots: np.ndarray) -> None:
    """Add to ``vdots`` every row's float32 dot with ``u`` over columns c0..c1, four rows per pass
    (``vdots`` padded to whole 4-row groups; rows past the last repeat it)."""
    last = X.shape[0] - 1
    for b in range(0, vdots.shape[0], 4):
        s0, s1, s2, s3 = _dot32x4(
            u,
            X[b, c0:c1],
            X[min(b + 1, last), c0:c1],
            X[min(b + 2, last), c0:c1],
            X[min(b + 3, last), c0:c1],
        )
        vdots[b] += s0
        vdots[b + 1] += s1
        vdots[b + 2] += s2
        vdots[b + 3] += s3


@_compiled
def _finish(
    X: np.ndarray,
    v: np.ndarray,
    acc: np.ndarray,
    vdots: np.ndarray,
    v_sq: float,
    gram: np.ndarray,
    sq: np.ndarray,
    dots: np.ndarray,
) -> None:
    """The tiles' upper triangle ``acc`` and the dots into ``gram``, ``sq`` and ``dots``, a row whose
    float32 sums cannot be trusted redone in float64 (see :func:`gram_sq_and_dots`)."""
    tiny_v = not v_sq > TINY  # NaN cannot occur: the caller checked v
    for i in range(X.shape[0]):
        norm2 = acc[i, i]
        dot = vdots[i]
        if tiny_v or not (np.isfinite(norm2) and norm2 > TINY and np.isfinite(dot)):
            norm2, dot = _sq_and_dot(X[i], v)
        sq[i] = norm2
        dots[i] = dot
        for j in range(i):
            gram[i, j] = acc[j, i]
            gram[j, i] = acc[j, i]
        gram[i, i] = norm2


@_compiled
def gram_sq_and_dots_narrow(
    X: np.ndarray, v: np.ndarray, block: int, gram: np.ndarray, sq: np.ndarray, dots: np.ndarray
) -> None:
    """:func:`gram_sq_and_dots` in tiles of 4 x 3 rows (12 sums in registers), for hosts with 16 vector
    registers (AVX2), where its 6 x 4 tiles' 24 sums spill. Every product is summed in the same order, so
    the two agree bit for bit (tested); measured on a znver3 host (AVX2): n = 50, d = 100K 10.4 -> 6.7 ms,
    n = 100, d = 1M 318 -> 184 ms."""
    n, d = X.shape
    last = n - 1
    cols = n + (-n) % 3  # padded to whole 3-row tiles; rows past the last repeat it
    acc = np.zeros((n + (-n) % 4, cols))  # and to whole 4-row tiles down the side
    vrows = n + (-n) % 4
    vdots = np.zeros(vrows)
    v_sq = 0.0
    for c0 in range(0, d, block):
        c1 = min(d, c0 + block)
        u = v[c0:c1]
        v_sq += _dot32(u, u)
        _add_vdots(X, u, c0, c1, vdots)
        for a in range(0, n, 4):
            a0 = X[a, c0:c1]
            a1 = X[min(a + 1, last), c0:c1]
            a2 = X[min(a + 2, last), c0:c1]
            a3 = X[min(a + 3, last), c0:c1]
            # From the 3-row tile holding row a: every pair (r <= c) is in exactly one tile.
            for b in range(a - a % 3, cols, 3):
                t = _tile43(
                    a0,
                    a1,
                    a2,
                    a3,
                    X[min(b, last), c0:c1],
                    X[min(b + 1, last), c0:c1],
                    X[min(b + 2, last), c0:c1],
                )
                for p in range(4):
                    for q in range(3):
                        if b + q >= a + p:
                            acc[a + p, b + q] += np.float64(t[3 * p + q])
    _finish(X, v, acc, vdots, v_sq, gram, sq, dots)


@_fused
def _row_times3(
    x: np.float32,
    y0: np.float32,
    y1: np.float32,
    y2: np.float32,
    s0: np.float32,
    s1: np.float32,
    s2: np.float32,
) -> tuple[np.float32, np.float32, np.float32]:
    """One row's three multiply-adds of a 4 x 3 tile step."""
    return s0 + x * y0, s1 + x * y1, s2 + x * y2


@_fused
def _tile43(
    a0: np.ndarray,
    a1: np.ndarray,
    a2: np.ndarray,
    a3: np.ndarray,
    b0: np.ndarray,
    b1: np.ndarray,
    b2: np.ndarray,
) -> tuple[np.float32, ...]:
    # 12 sums and 3 loads held per step, one more load in flight: AVX2's 16 vector registers.
    z = np.float32(0.0)
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = z
    for j in range(a0.shape[0]):
        y0 = b0[j]
        y1 = b1[j]
        y2 = b2[j]
        s00, s01, s02 = _row_times3(a0[j], y0, y1, y2, s00, s01, s02)
        s10, s11, s12 = _row_times3(a1[j], y0, y1, y2, s10, s11, s12)
        s20, s21, s22 = _row_times3(a2[j], y0, y1, y2, s20, s21, s22)
        s30, s31, s32 = _row_times3(a3[j], y0, y1, y2, s30, s31, s32)
    return (s00, s01, s02, s10, s11, s12, s20, s21, s22, s30, s31, s32)


@_compiled
def fltrust_coefficients(X: np.ndarray, v: np.ndarray, ref_norm: float, c: np.ndarray) -> bool:
    """FLTrust's coefficients into ``c`` (float64, one per row of float32 ``X``): the norms and dots of
    :func:`sq_norms_and_dots`, then c_i = max(cos_i, 0) (||v|| / ||x_i||) / sum_j max(cos_j, 0), all zero
    when no cosine is positive, as ``fltrust._coefficients_of`` computes them (the sum of the trusts added
    in row order instead of NumPy's pairwise order: equal up to float64 rounding). Returns False, ``c``
    incomplete, if a row's squared norm is not finite (NaN or Inf in it): the caller names the rows."""
    n = X.shape[0]
    sq = np.empty(n)
    dots = np.empty(n)
    sq_norms_and_dots(X, v, True, sq, dots)
    total = 0.0
    for i in range(n):
        if not np.isfinite(sq[i]):
            return False
        norm = np.sqrt(sq[i])
        trust = 0.0
        scale = 0.0
        if norm > 0.0:
            cos = dots[i] / (norm * ref_norm)
            # np.clip and np.maximum pass NaN through (a norm product that underflows): so does this.
            trust = cos if cos != cos else min(max(cos, 0.0), 1.0)
            scale = ref_norm / norm
        c[i] = trust * scale
        total += trust
    if total <= 0.0:
        for i in range(n):
            c[i] = 0.0
        return True
    for i in range(n):
        c[i] = c[i] / total
    return True


@_compiled
def fltrust_rows(
    X: np.ndarray, v: np.ndarray, ref_norm: float, out: np.ndarray, sq: np.ndarray, dots: np.ndarray
) -> bool:
    """FLTrust in one pass over the rows of float32 ``X``: each row's ||x_i||^2 and x_i . v (float64, into
    ``sq`` and ``dots``), then, while the row is still in cache, ``out += float32(w_i) x_i`` (float32) with
    FLTrust's unnormalized weight w_i = max(cos(x_i, v), 0) ||v|| / ||x_i||; the caller divides by the sum
    of the trusts. Returns False (``out`` then incomplete) if some w_i is 1e30 or more (a row of subnormal
    entries): the caller then weighs the rows in float64. ``sq`` and ``dots`` are complete either way:
    the caller's finiteness check and coefficients read every row's (they once stopped at that row,
    leaving the later rows' entries as whatever memory held)."""
    n, d = X.shape
    for j in range(d):
        out[j] = 0.0
    complete = True
    for i in range(n):
        row = X[i]
        s, t = _sq_and_dot(row, v)
        sq[i] = s
        dots[i] = t
        norm = np.sqrt(s)
        if not (complete and norm > 0.0):
            continue
        cos = min(max(t / (norm * ref_norm), -1.0), 1.0)
        if not cos > 0.0:
            continue
        w = cos * (ref_norm / norm)
        if not w < 1e30:
            complete = False
            continue
        f = np.float32(w)
        for j in range(d):
            out[j] += f * row[j]
    return complete
