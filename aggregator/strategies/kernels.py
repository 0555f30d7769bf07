"""Row norms and dot products of an update matrix at memory speed, accumulated in float64.

Compiled path (:mod:`aggregator.strategies.dot_kernels`, numba): one pass over the matrix for norms and
dots together, every product and sum in float64 (about 1e-13 relative at d = 1M). NumPy path, where numba
cannot be imported (and the reference the tests hold the compiled path to, within 1e-7 relative):

Squares are summed by BLAS in float32 over blocks of a row (SIMD, no cast of the matrix) and the block
sums are added in float64: a float32 sum over a whole 1M-entry row loses about 1e-4 relative (measured:
6e-5 at d = 1M; blocked: 3e-8), and an einsum with ``dtype=float64`` casts every element and runs about
three times slower than one pass. Dots with one vector are a single float32 matrix-vector product (BLAS
blocks it so the vector is read once per block of rows, not once per row). A row whose float32 block
sum overflows is redone in float64; a row holding NaN or Inf comes out NaN/Inf, so a caller can use the
squared norms as its finiteness check instead of another pass.
"""

from __future__ import annotations

import numpy as np

from aggregator.strategies import compiled as _compiled
from aggregator.strategies.blas import single_threaded

# Entries per block of a row: long enough that the call overhead (~1 us) is small against the block's
# bandwidth time, short enough that float32 rounding inside a block stays near one ulp.
_BLOCK = 1 << 15
# Below this sum of squares some squares may be float32 subnormals (< 1.2e-38) that lost digits.
_TINY = 1e-20
# The compiled kernel's vector argument when there is none (one compiled signature for both uses).
_NO_VECTOR = np.empty(0, dtype=np.float32)


def sq_norms_and_dots(X: np.ndarray, v: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(||x_i||^2, x_i . v) for the rows of float32 ``X`` (n, d) and float32 ``v`` (d,), both float64.

    ``v`` None returns only the squared norms (dots None). Compiled: float64 throughout, so entries of
    any float32 magnitude, subnormal to 3e38, need nothing more; a row holding NaN or Inf comes out
    non-finite. The NumPy path (:func:`numpy_sq_norms_and_dots`) agrees to about 1e-7 relative.
    """
    n, d = X.shape
    compiled = _compiled.dot_kernels()
    if (
        compiled is not None
        and X.dtype == np.float32
        and X.flags.c_contiguous
        and (v is None or (v.dtype == np.float32 and v.flags.c_contiguous and v.shape == (d,)))
    ):
        sq = np.empty(n)
        dots_out = np.empty(n)
        compiled.sq_norms_and_dots(X, _NO_VECTOR if v is None else v, v is not None, sq, dots_out)
        return sq, None if v is None else dots_out
    return numpy_sq_norms_and_dots(X, v)


def numpy_sq_norms_and_dots(
    X: np.ndarray, v: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`sq_norms_and_dots` in NumPy: float32 BLAS dots over row blocks summed in float64, dots from
    one float32 matrix-vector product (see the module docstring). Rows whose float32 arithmetic
    overflows (entries beyond ~1e17) or underflows (squares below 1e-20) are recomputed in float64; so
    are their dots."""
    n, d = X.shape
    sq = np.zeros(n)
    dot = np.dot
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(n):
            row = X[i]
            total = 0.0
            for start in range(0, d, _BLOCK):
                block = row[start : start + _BLOCK]
                total += float(dot(block, block))
            sq[i] = total
        dots = None if v is None else (X @ v).astype(np.float64)
    # Overflowed rows, and rows so small that their float32 squares fall into subnormals (or to 0).
    suspect = ~(np.isfinite(sq) & (sq > _TINY))
    if dots is not None:
        suspect |= ~np.isfinite(dots)
    for bad in np.flatnonzero(suspect):
        wide = X[bad].astype(np.float64)
        if not np.isfinite(wide).all():
            continue  # NaN/Inf in the row: left non-finite for the caller to refuse
        sq[bad] = float(np.dot(wide, wide))
        if dots is not None and v is not None:
            dots[bad] = float(np.dot(wide, v.astype(np.float64)))
    return sq, dots


def row_norms(X: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row of ``X`` (float64), one blocked pass (see the module docstring)."""
    if X.dtype != np.float32:
        norms64: np.ndarray = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
        return norms64
    sq, _ = sq_norms_and_dots(X)
    norms: np.ndarray = np.sqrt(sq)
    return norms


# Columns per block of the compiled Gram: n x 1,024 float32 (400 KB at n = 100) stays in the second-level
# cache, and each float32 sum runs over at most this many products (measured: 512 and 2,048 slower); for
# at most 16 rows, 8,192 (per-block costs weigh more where each block holds few products).
GRAM_BLOCK = 1 << 10
FEW_ROWS, FEW_ROWS_GRAM_BLOCK = 16, 1 << 13


def gram_sq_and_dots(X: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Gram matrix x_a . x_b, ||x_i||^2, x_i . v) of the rows of float32 ``X`` (n, d) and float32 ``v``
    (d,), all float64, from one pass over ``X``.

    Compiled path: every entry, the squared norms and the dots included, float32 products summed in
    float32 within blocks of columns and in float64 across them (a relative error of about 1e-6 of
    |x_a| |x_b|, as a float32 BLAS Gram's; the norms within about 1e-7 relative, as the NumPy path's), rows
    whose float32 sums overflow or underflow redone in float64. NumPy path: the diagonal and the dots
    from :func:`numpy_sq_norms_and_dots`, the rest one float32 BLAS product. A row holding NaN or Inf has
    a non-finite squared norm (the caller's finiteness check).
    """
    n, d = X.shape
    compiled = _compiled.dot_kernels()
    if not (
        compiled is not None
        and X.dtype == np.float32
        and X.flags.c_contiguous
        and v.dtype == np.float32
        and v.flags.c_contiguous
        and v.shape == (d,)
    ):
        sq, dots = numpy_sq_norms_and_dots(X, v)
        assert dots is not None
        with np.errstate(over="ignore", invalid="ignore"), single_threaded():
            gram = (X @ X.T).astype(np.float64)
        np.fill_diagonal(gram, sq)
        return gram, sq, dots
    gram = np.empty((n, n))
    sq = np.empty(n)
    dots = np.empty(n)
    # The tiling that fits the vector registers numba compiles for; both give the same bits.
    kernel = compiled.gram_sq_and_dots if compiled.WIDE_VECTOR_REGISTERS else compiled.gram_sq_and_dots_narrow
    with np.errstate(over="ignore", invalid="ignore"):
        kernel(X, v, FEW_ROWS_GRAM_BLOCK if n <= FEW_ROWS else GRAM_BLOCK, gram, sq, dots)
    return gram, sq, dots
