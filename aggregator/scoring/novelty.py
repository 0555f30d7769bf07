"""What a client's update adds that the round does not already have: the novel part of its share, and its
value on the validation data (issue 20: pay by contribution to the accepted step).

Why not the plain leave-one-out of the share (:func:`aggregator.scoring.contribution.leave_one_out`):
copies add nothing. Three attackers sending one vector (ALIE: the honest mean less a little), an update
that is the honest mean, or one that repeats the server's own reference update (an attacker who knows the
root data), each has a leave-one-out gain as large as an honest row's: removing one copy leaves the others
(and the line search rescales the aggregate anyway). Here a row's share is reduced to its *novel part*,
r_i: the row less its least-squares fit by the reference, the other rows' aggregate and its own copies
(:func:`aggregate_residual_coefficients`; :data:`NOVELTY_BASIS`), a residual below the fit's resolution
counted as none (:data:`RESOLUTION`), and the row is worth what k_i r_i does to the validation loss (k_i
its coefficient):

- a row in the aggregate: v_i = loss(a - k_i r_i) - loss(a);
- a row the strategy left out: v_i = loss(a) - loss(a + k_i r_i), k_i the share it would have had
  (:func:`nominal_coefficients`), so an honest organization the robust rule leaves out because its data
  is unlike its peers' is valued by what it would have added, not by its absence.

The residuals come from the Gram matrix of the rows and the reference (n + 1 square, the inner products
the guarded rule's peer test already takes) and are built a chunk of rows at a time (r = M Z, chunk x d
float32): no (n, d) temporary.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from aggregator.errors import InvalidParameter
from aggregator.scoring.contribution import LossOfDelta, _difference, aggregate_of
from fedledger.models import ValidationBatch

# The ridge on the Gram matrix, relative to its mean diagonal: small enough that an honest row's own
# direction is kept whole (rows of a round are far from collinear), large enough that exact copies
# (a singular Gram matrix) have a residual of about 1e-4 of their norm instead of a division by zero.
RIDGE = 1e-4
# Bytes at most of one chunk of residual rows (float32, d each), and at most this share of the updates' bytes.
_CHUNK_BYTES = 1 << 25
_CHUNK_SHARE = 16
# What a row's novel part is measured against: "aggregate", the default, the reference, the aggregate of
# the other rows and the row's copies (:func:`aggregate_residual_coefficients`); "rows", every other row and
# the reference (:func:`residual_coefficients`, the default until issue 20's pay trace). Why not every
# other row: one row that is the honest rows' mean (the collapse attack) puts every honest row in the span
# of the others (x_i = n x the mean less the rest), so against every other row no honest row adds
# anything: quality about 0 for every row of every round, every honest organization's pay cut 5-10x, and
# pay follows only who the gate lets in (the consensus rows always: up to 1.37x the median honest
# organization). Measured on the 12-cell grid (docs/benchmarks.md, "why consensus rows out-earn the median
# honest organization" and "the aggregate novelty basis made the default"). What it gives up: a copy
# (modulo the reference) of an honest update takes that update's novelty with its own, as against every row.
NOVELTY_BASIS = "aggregate"


def residual_coefficients(gram: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """M (m, m) with r_i = sum_j M_ij z_j the residual of row i of Z after its ridge least-squares fit by
    the other rows (``gram`` = Z Z^T): M = diag(P)^-1 P, P = (G + lambda I)^-1, the leave-one-out identity
    of least squares. A zero row has a zero residual."""
    G = np.asarray(gram, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1] or not np.isfinite(G).all():
        raise InvalidParameter(f"need a finite square Gram matrix, got shape {G.shape}")
    m = G.shape[0]
    if m == 0:
        return np.zeros((0, 0))
    diag = np.diag(G).copy()
    lam = ridge * max(float(diag.mean()), 1e-300)
    P = np.linalg.inv(G + lam * np.eye(m))
    M: np.ndarray = P / np.diag(P)[:, None]
    M[diag <= 0.0] = 0.0
    return M


# Rows this close to another in direction (|cosine|) are its copies for :func:`aggregate_residual_coefficients`:
# they stay in its fit beside the other rows' aggregate. Copies are what several wallets send when they
# are one sender (ALIE, the collapse, identical orthogonal rows: cosine 1 to each other up to a jitter);
# honest rows of a round are far from that (the guarded rule's peer test reads their cosines at 0-0.6).
DUPLICATE_COSINE = 0.9


def aggregate_residual_coefficients(
    gram: np.ndarray, coefficients: np.ndarray, ridge: float = RIDGE, duplicate: float = DUPLICATE_COSINE
) -> np.ndarray:
    """M (n + 1 square) with r_i = sum_j M_ij z_j the residual of row i after its ridge least-squares fit by
    the reference g (Z's last row), the aggregate of the other rows, a_-i = sum_{j != i} c_j x_j, and the
    other rows within ``duplicate`` of it in |cosine| of their parts orthogonal to g (its copies)
    (``gram`` = Z Z^T, Z the n rows and g; ``coefficients`` c, one per row): a row that repeats the
    direction the round takes without it, the reference or another row adds about nothing, and no single
    row can put every other row in that span (a row at the mean of the others does against every other
    row: :func:`residual_coefficients`). The reference's own row of M is zero, as is a zero row's."""
    G = np.asarray(gram, dtype=np.float64)
    c = np.asarray(coefficients, dtype=np.float64)
    m = G.shape[0]
    if G.ndim != 2 or G.shape[1] != m or not np.isfinite(G).all() or c.shape != (m - 1,):
        raise InvalidParameter(
            f"need a finite square Gram matrix of n + 1 rows and n coefficients, got {G.shape} and {c.shape}"
        )
    n = m - 1
    M = np.zeros((m, m))
    lam = ridge * max(float(np.diag(G)[:n].mean()) if n else 0.0, 1e-300)
    # Copies are judged on the parts orthogonal to the reference, which the fit holds anyway: a row that is
    # another row plus some of the reference adds nothing that pair does not.
    gg = float(G[n, n])
    perp = G[:n, :n] - (np.outer(G[:n, n], G[:n, n]) / gg if gg > 0.0 else 0.0)
    perp_norms = np.sqrt(np.maximum(np.diag(perp), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.nan_to_num(perp / np.outer(perp_norms, perp_norms))
    # G's products with the whole aggregate, once: a_-i's are these less row i's part (O(n m) per row, not
    # the O(m^2) of a product with G: 0.45 s of a 1,000-row close).
    Gc = G[:, :n] @ c
    for i in range(n):
        if G[i, i] <= 0.0:
            continue
        # The basis as coefficient rows over Z: a_-i, g, then row i's copies.
        others = np.flatnonzero((np.abs(cos[i]) >= duplicate) & (np.arange(n) != i) & (perp_norms > 0))
        W = np.zeros((2 + others.size, m))
        W[0, :n] = c
        W[0, i] = 0.0
        W[1, n] = 1.0
        W[2 + np.arange(others.size), others] = 1.0
        # G W^T column by column (G is symmetric, so its row i is W G's column i).
        GW = np.column_stack([Gc - c[i] * G[:, i], G[:, n], G[:, others]])
        beta = np.linalg.solve(W @ GW + lam * np.eye(W.shape[0]), GW[i])
        M[i] = -beta @ W
        M[i, i] += 1.0
    return M


def novelty_coefficients(gram: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """The residual coefficients of :data:`NOVELTY_BASIS`: against every other row and the reference, or
    against the reference and the other rows' aggregate."""
    if NOVELTY_BASIS == "aggregate":
        M = aggregate_residual_coefficients(gram, coefficients)
    elif NOVELTY_BASIS == "rows":
        M = residual_coefficients(gram)
    else:
        raise InvalidParameter(f"NOVELTY_BASIS must be 'rows' or 'aggregate', got {NOVELTY_BASIS!r}")
    return below_resolution_cleared(M, gram)


# A residual whose energy is below this share of its row's (its norm under 1 % of the row's) is the fit's
# ridge and float32 rounding, not a direction: a copy's residual is 1e-8-1e-5 of its row's energy, an
# honest row's 0.15 and above (median 0.93-0.99 attack-free; 0.002 where a test's rows are nearly
# collinear). Without the floor a copy's value is the sign of that remainder, and half the copies of a
# round earn a sliver of quality (1-4 points), which makes them payable.
RESOLUTION = 1e-4


def below_resolution_cleared(M: np.ndarray, gram: np.ndarray, resolution: float = RESOLUTION) -> np.ndarray:
    """``M`` with the rows whose residual energy (M G M^T)_ii is below ``resolution`` x G_ii set to zero."""
    G = np.asarray(gram, dtype=np.float64)
    energy = np.einsum("ij,ij->i", M @ G, M)  # one product with G: a three-operand einsum is O(m^3) loops
    cleared = M.copy()
    cleared[energy < resolution * np.diag(G)] = 0.0
    return cleared


def nominal_coefficients(
    coefficients: np.ndarray, norms: np.ndarray, claims: np.ndarray, eligible: np.ndarray
) -> np.ndarray:
    """The share a row outside the aggregate would have had, as a coefficient on the row: the median share
    norm |c_j| ||x_j|| of the rows inside it, times the row's claim relative to their median claim (at most
    1: a large claim buys no more than the median's weight, as every weighting caps it), over its norm.
    0 for rows inside, rows not eligible and zero rows."""
    c = np.asarray(coefficients, dtype=np.float64)
    r = np.asarray(norms, dtype=np.float64)
    w = np.asarray(claims, dtype=np.float64)
    ok = np.asarray(eligible, dtype=bool)
    if not (r.shape == w.shape == ok.shape == c.shape):
        raise InvalidParameter("one norm, claim and eligibility flag per coefficient is needed")
    nominal = np.zeros(c.shape[0])
    inside = c != 0.0
    if not inside.any():
        return nominal
    share_norm = float(np.median(np.abs(c[inside]) * r[inside]))
    median_claim = float(np.median(w[inside]))
    if not (share_norm > 0 and median_claim > 0):
        return nominal
    outside = ~inside & ok & (r > 0.0) & np.isfinite(r)
    weight = np.minimum(1.0, np.maximum(w[outside], 0.0) / median_claim)
    nominal[outside] = weight * share_norm / r[outside]
    return nominal


def _gram_with_reference(X: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The (n + 1)-square Gram matrix of the rows and the reference (last), float64, from float32 products
    (X X^T, X g, g . g) without stacking them into a new matrix."""
    n = X.shape[0]
    G = np.empty((n + 1, n + 1))
    G[:n, :n] = (X @ X.T).astype(np.float64)
    xg = (X @ g).astype(np.float64)
    G[:n, n] = G[n, :n] = xg
    g64 = g.astype(np.float64)
    G[n, n] = float(g64 @ g64)
    return G


def _residual_chunks(
    X: np.ndarray, g: np.ndarray, M: np.ndarray | None, rows: np.ndarray, row_bytes: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(row indices, their residuals as float32 (k, d)), a chunk at a time: k rows of d floats and of
    ``row_bytes`` more each (what the caller derives from a residual) within :data:`_CHUNK_BYTES` and a
    16th of the updates' bytes. ``M`` None: the rows themselves (no copy)."""
    n, d = X.shape
    budget = min(_CHUNK_BYTES, max(X.nbytes // _CHUNK_SHARE, 1))
    chunk = max(1, budget // (4 * max(d, 1) + max(row_bytes, 0)))
    for j0 in range(0, rows.size, chunk):
        idx = rows[j0 : j0 + chunk]
        if M is None:
            for i in idx.tolist():
                yield np.array([i]), X[i : i + 1]
            continue
        coef = M[idx]
        res: np.ndarray = coef[:, :n].astype(np.float32) @ X
        for j in range(idx.size):
            # In place, one d-vector at a time: the chunk is the only (k, d) array.
            res[j] += np.float32(coef[j, n]) * g
        yield idx, res


def _prepare(
    X: np.ndarray, coefficients: np.ndarray, nominal: np.ndarray, reference: np.ndarray, residual: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    c = np.asarray(coefficients, dtype=np.float64)
    k_out = np.asarray(nominal, dtype=np.float64)
    g = np.asarray(reference, dtype=np.float32).reshape(-1)
    if c.shape != (n,) or k_out.shape != (n,) or g.shape != (d,):
        raise InvalidParameter("one coefficient and nominal weight per row and a reference of the rows' size")
    if not (np.isfinite(c).all() and np.isfinite(k_out).all() and (k_out >= 0).all()):
        raise InvalidParameter("coefficients must be finite and nominal weights finite and non-negative")
    k = np.where(c != 0.0, c, k_out)
    # Without the residual each row stands for itself (M None).
    M = novelty_coefficients(_gram_with_reference(X, g), c) if residual else None
    return X, g, c, k, M, np.flatnonzero(k != 0.0)


def novel_gains(
    loss_of: LossOfDelta,
    X: np.ndarray,
    coefficients: np.ndarray,
    nominal: np.ndarray,
    reference: np.ndarray,
    residual: bool = True,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(v_i, its standard error over the validation examples) for every row; see the module docstring.
    ``nominal``: coefficients of the rows with no coefficient (:func:`nominal_coefficients`).
    ``residual`` False: the whole share instead of its novel part (what the row does in the round's
    context: the evidence test of :func:`aggregator.scoring.reputation.direction_evidence`). ``offset``: a
    part of the aggregate a that is nobody's share (:func:`aggregator.scoring.contribution.aggregate_of`)."""
    X, g, c, k, M, rows = _prepare(X, coefficients, nominal, reference, residual)
    a = aggregate_of(X, c, offset)
    full = loss_of(a)
    value, stderr = np.zeros(X.shape[0]), np.zeros(X.shape[0])
    for idx, res in _residual_chunks(X, g, M, rows):
        for r, i in zip(res, idx.tolist(), strict=True):
            part = np.float32(k[i]) * r
            if c[i] != 0.0:
                value[i], stderr[i] = _difference(loss_of(a - part), full)
            else:
                value[i], stderr[i] = _difference(full, loss_of(a + part))
    return value, stderr


def batched_novel_gains(
    batch: ValidationBatch,
    X: np.ndarray,
    coefficients: np.ndarray,
    nominal: np.ndarray,
    reference: np.ndarray,
    residual: bool = True,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`novel_gains` of a built-in model: a candidate's first-layer response is the aggregate's
    plus or minus the residual's (:class:`fedledger.models.ValidationBatch`), a chunk of residuals at a
    time. Equal to :func:`novel_gains` up to float32 rounding of the logits."""
    X, g, c, k, M, rows = _prepare(X, coefficients, nominal, reference, residual)
    a = aggregate_of(X, c, offset)
    ra, ha = batch.responses(a[None, :])[0], batch.heads(a[None, :])[0]
    full = batch.losses(ra, ha)
    value, stderr = np.zeros(X.shape[0]), np.zeros(X.shape[0])
    for idx, res in _residual_chunks(X, g, M, rows, 8 * ra.size):
        responses, heads = batch.responses(res), batch.heads(res)
        for j, i in enumerate(idx.tolist()):
            ki = np.float32(k[i])
            rq, hq = ki * responses[j], ki * heads[j]
            if c[i] != 0.0:
                value[i], stderr[i] = _difference(batch.losses(ra - rq, ha - hq), full)
            else:
                value[i], stderr[i] = _difference(full, batch.losses(ra + rq, ha + hq))
    return value, stderr
