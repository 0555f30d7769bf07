"""Pay by what an update adds (issue 20): the novel part of a share and its validation value (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.errors import InvalidParameter
from aggregator.scoring.novelty import nominal_coefficients, novel_gains, residual_coefficients
from aggregator.scoring.scores import novelty_quality

D = 70  # six organizations' blocks and the server's own
BLOCK = 10


def _task(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A validation set whose loss is a quadratic with its minimum at ``target``: loss per example
    0.5 (a_j . (delta - target))^2, a_j random rows (so the loss is not separable by coordinate)."""
    target = 5.0 * rng.normal(size=D).astype(np.float32)
    A = rng.normal(size=(400, D)) / np.sqrt(D)
    return target, A


def _loss_of(target: np.ndarray, A: np.ndarray):  # type: ignore[no-untyped-def]
    def loss_of(delta: np.ndarray) -> np.ndarray:
        r = A @ (np.asarray(delta, dtype=np.float64) - target)
        return 0.5 * r * r + 1.0  # positive, like a cross-entropy

    return loss_of


def _server_part(target: np.ndarray) -> np.ndarray:
    """The server's reference: the part of the target its root data shows (the last block: no
    organization's), a direction every update is fitted against too."""
    g = np.zeros_like(target)
    g[-BLOCK:] = 0.5 * target[-BLOCK:]
    return g


def _honest_rows(target: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row i knows block i of the target (its own data) plus a little noise: every row adds something,
    and the aggregate (a mean) stays short of the target."""
    X = 0.01 * rng.normal(size=(n, D)).astype(np.float32)
    for i in range(n):
        X[i, i * BLOCK : (i + 1) * BLOCK] += target[i * BLOCK : (i + 1) * BLOCK]
    return X


def test_residuals_of_copies_vanish_and_an_independent_row_is_kept_whole() -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(4, 50))
    Z = np.vstack([Z, Z[1]])  # row 4 copies row 1
    M = residual_coefficients(Z @ Z.T)
    R = M @ Z
    assert np.linalg.norm(R[4]) < 1e-3 * np.linalg.norm(Z[4])
    assert np.linalg.norm(R[1]) < 1e-3 * np.linalg.norm(Z[1])
    # Orthogonal rows: nothing to fit, the residual is the row.
    E = np.eye(3, 50) * np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(residual_coefficients(E @ E.T) @ E, E, atol=1e-3)
    with pytest.raises(InvalidParameter):
        residual_coefficients(np.ones((2, 3)))


def test_a_copycat_of_the_mean_earns_less_than_the_rows_it_copies() -> None:
    rng = np.random.default_rng(1)
    target, A = _task(rng)
    honest = _honest_rows(target, 5, rng)
    # Two attackers send one vector near the honest mean (ALIE: the mean less z coordinate deviations).
    copy = honest.mean(axis=0, keepdims=True) - 0.5 * honest.std(axis=0, keepdims=True)
    X = np.vstack([honest, copy, copy])
    c = np.full(7, 1.0 / 7)
    value, _ = novel_gains(_loss_of(target, A), X, c, np.zeros(7), _server_part(target))
    assert (value[:5] > 0).all()
    assert max(abs(value[5]), abs(value[6])) < 0.01 * float(np.median(value[:5]))
    quality = novelty_quality(value, 1.0)
    assert (quality[:5] == 100.0).all() and (quality[5:] < 5.0).all()


def test_a_row_repeating_the_reference_adds_nothing() -> None:
    rng = np.random.default_rng(2)
    target, A = _task(rng)
    honest = _honest_rows(target, 5, rng)
    # The server's own update (here a direction of its own), sent back at twice its size.
    reference = 0.3 * rng.normal(size=D).astype(np.float32)
    X = np.vstack([honest, reference[None, :] * 2.0])
    c = np.full(6, 1.0 / 6)
    value, _ = novel_gains(_loss_of(target, A), X, c, np.zeros(6), reference)
    assert abs(value[5]) < 0.01 * float(np.median(value[:5]))


def test_a_one_sample_claim_earns_its_weights_share() -> None:
    rng = np.random.default_rng(3)
    target, A = _task(rng)
    X = _honest_rows(target, 6, rng)
    claims = np.array([300.0, 300, 300, 300, 300, 1])
    c = claims / claims.sum()
    reference = _server_part(target)
    value, _ = novel_gains(_loss_of(target, A), X, c, np.zeros(6), reference)
    # The same row at the median weight is worth about 300 times as much.
    equal, _ = novel_gains(_loss_of(target, A), X, np.full(6, 1 / 6), np.zeros(6), reference)
    assert 0 < value[5] < equal[5] / 100
    quality = novelty_quality(value, 1.0)
    assert quality[5] < 5.0 and (quality[:5] == 100.0).all()


def test_an_honest_outlier_the_rule_left_out_is_valued_by_what_it_would_have_added() -> None:
    rng = np.random.default_rng(4)
    target, A = _task(rng)
    X = _honest_rows(target, 6, rng)
    c = np.array([0.2, 0.2, 0.2, 0.2, 0.2, 0.0])  # row 5 (its own classes) left out by the gate
    norms = np.linalg.norm(X, axis=1)
    claims = np.full(6, 100.0)
    nominal = nominal_coefficients(c, norms, claims, np.ones(6, dtype=bool))
    assert nominal[:5].tolist() == [0.0] * 5 and nominal[5] > 0
    np.testing.assert_allclose(nominal[5] * norms[5], np.median(c[:5] * norms[:5]))
    value, _ = novel_gains(_loss_of(target, A), X, c, nominal, _server_part(target))
    assert value[5] > 0
    assert novelty_quality(value, 1.0)[5] == 100.0
    # A harmful row left out is worth nothing.
    X[5] = -X[5]
    value, _ = novel_gains(_loss_of(target, A), X, c, nominal, _server_part(target))
    assert value[5] < 0 and novelty_quality(value, 1.0)[5] == 0.0


def test_nominal_weights_follow_the_claim_and_skip_rows_that_may_not_be_aggregated() -> None:
    c = np.array([0.5, 0.5, 0.0, 0.0, 0.0])
    norms = np.array([1.0, 1.0, 2.0, 2.0, 0.0])
    claims = np.array([100.0, 100.0, 50.0, 1000.0, 100.0])
    eligible = np.array([True, True, True, False, True])
    k = nominal_coefficients(c, norms, claims, eligible)
    np.testing.assert_allclose(k, [0.0, 0.0, 0.5 * 0.5 / 2.0, 0.0, 0.0])


def test_novelty_quality_never_gives_full_credit_below_the_noise_level() -> None:
    q = novelty_quality(np.array([0.0, 0.0, 0.0, 5e-4, -1.0]), 1.0, floor=1e-3)
    np.testing.assert_allclose(q, [0.0, 0.0, 0.0, 50.0, 0.0])
    # The allowance: the round's typical error at most; a copy (no error) gets none.
    q = novelty_quality(
        np.array([4.0, 4.0, 4.0, 0.0, 0.5]), 1.0, stderr=np.array([1.0, 1.0, 1.0, 0.0, 9.0]), z=0.25
    )
    np.testing.assert_allclose(q, [100.0, 100.0, 100.0, 0.0, 75.0])
    q = novelty_quality(np.array([4.0, 4.0, 4.0, 0.5, np.inf]), 1.0)
    np.testing.assert_allclose(q, [100.0, 100.0, 100.0, 50.0, 100.0])
    with pytest.raises(InvalidParameter):
        novelty_quality(np.array([np.nan]), 1.0)


def test_direction_evidence_needs_harm_in_the_rounds_aggregate_too() -> None:
    """A class-biased reference points away from an honest organization holding the other classes and its
    update alone raises the balanced validation loss; adding it to the aggregate lowers it: no evidence."""
    from aggregator.scoring.reputation import direction_evidence

    cosine = np.array([0.3, 0.25, 0.35, 0.3, 0.28, -0.45, -0.5])
    solo = np.array([0.01, 0.02, 0.01, 0.015, 0.01, -0.05, -0.08])
    context = np.array([0.01, 0.01, 0.01, 0.01, 0.01, 0.004, -0.03])
    assert direction_evidence(cosine, solo, loss=1.0).tolist() == [False] * 5 + [True, True]
    flagged = direction_evidence(cosine, solo, loss=1.0, context_gain=context)
    assert flagged.tolist() == [False] * 6 + [True]
    with pytest.raises(InvalidParameter):
        direction_evidence(cosine, solo, loss=1.0, context_gain=context[:3])


def test_direction_evidences_level_is_the_counted_rows_own() -> None:
    """Three equal cosines at the round's median (slashed free riders resending one change) shrink the
    robust spread: counted, they make an honest row 0.22 below the median an outlier; left out (``among``,
    the eligible rows), the level is the honest scatter's. No row counted: every row sets the level."""
    from aggregator.scoring.reputation import direction_evidence

    cosine = np.array([0.13, 0.005, -0.01, -0.018, -0.087, -0.165, -0.22, -0.004, -0.004, -0.004])
    solo = np.full(10, -0.05)
    eligible = np.array([True] * 7 + [False] * 3)
    assert direction_evidence(cosine, solo, loss=1.0).tolist() == [False] * 6 + [True] + [False] * 3
    assert not direction_evidence(cosine, solo, loss=1.0, among=eligible).any()
    nobody = direction_evidence(cosine, solo, loss=1.0, among=np.zeros(10, dtype=bool))
    assert nobody.tolist() == direction_evidence(cosine, solo, loss=1.0).tolist()
    with pytest.raises(InvalidParameter, match="eligibility flag"):
        direction_evidence(cosine, solo, loss=1.0, among=eligible[:3])


def test_one_row_that_is_the_mean_of_the_others_erases_their_novelty_but_not_against_the_aggregate() -> None:
    from aggregator.scoring.novelty import aggregate_residual_coefficients

    rng = np.random.default_rng(1)
    honest = rng.normal(size=(7, 60))
    g = rng.normal(size=60)
    mean = honest.mean(axis=0)
    # The collapse attack: rows at the honest mean (one of them would do), jittered by 1e-3 of its norm.
    rows = np.vstack([honest, mean, mean + 1e-3 * np.linalg.norm(mean) * rng.normal(size=60) / np.sqrt(60)])
    Z = np.vstack([rows, g])
    c = np.full(9, 1.0 / 9)
    ratio = lambda M: np.linalg.norm((M @ Z)[:9], axis=1) / np.linalg.norm(rows, axis=1)  # noqa: E731
    against_rows = ratio(residual_coefficients(Z @ Z.T))
    against_aggregate = ratio(aggregate_residual_coefficients(Z @ Z.T, c))
    # Every other row and the reference: each honest row is 7 x the mean less the other six, nothing new.
    assert against_rows[:7].max() < 0.01
    # The other rows' aggregate and the reference: the honest rows keep most of themselves, the copies
    # of the round's direction almost nothing.
    assert against_aggregate[:7].min() > 0.9 and against_aggregate[7:].max() < 0.01
    # It is the least-squares residual of each row by (a_-i, g, its copies), a_-i the aggregate without the
    # row, its copies the other rows within DUPLICATE_COSINE of it once the reference's direction is taken
    # out (here the two mean rows of each other).
    M = aggregate_residual_coefficients(Z @ Z.T, c, ridge=0.0)
    off = rows - np.outer(rows @ g, g) / (g @ g)
    unit = off / np.linalg.norm(off, axis=1, keepdims=True)
    for i in range(9):
        copies = [j for j in range(9) if j != i and abs(unit[i] @ unit[j]) >= 0.9]
        assert copies == ([8] if i == 7 else [7] if i == 8 else [])
        basis = np.vstack([c @ rows - c[i] * rows[i], g, *rows[copies]])
        fit = np.linalg.lstsq(basis.T, rows[i], rcond=None)[0]
        np.testing.assert_allclose(M[i] @ Z, rows[i] - fit @ basis, atol=1e-9)
    assert not M[9].any()  # the reference's own row
    # Copies away from the round's direction (ALIE's, an orthogonal attack's): against the aggregate alone
    # each would keep its whole self, against its copies too nothing.
    alie = honest.mean(axis=0) - 2.0 * honest.std(axis=0)
    spread = np.vstack([honest, alie, alie, alie])
    Zs = np.vstack([spread, g])
    kept = np.linalg.norm((aggregate_residual_coefficients(Zs @ Zs.T, np.full(10, 0.1)) @ Zs)[:10], axis=1)
    assert (kept[7:] < 0.01 * np.linalg.norm(alie)).all()
    assert (kept[:7] > 0.9 * np.linalg.norm(honest, axis=1)).all()
    with pytest.raises(InvalidParameter, match="n coefficients"):
        aggregate_residual_coefficients(Z @ Z.T, c[:5])


def test_a_copy_shifted_along_the_reference_is_a_copy_and_a_residual_below_resolution_is_none() -> None:
    """A row that is another row plus some of the reference (an honest update with its reference part
    turned down) adds nothing that row and the reference do not: its residual is cleared, as are exact
    copies' (the fit's ridge leaves them a sliver, which was once their quality). Rows with a direction of
    their own keep it whole."""
    from aggregator.scoring.novelty import RESOLUTION, below_resolution_cleared, novelty_coefficients

    rng = np.random.default_rng(4)
    honest = rng.normal(size=(6, 80))
    g = rng.normal(size=80)
    g_unit = g / np.linalg.norm(g)
    shifted = honest[0] - 1.5 * float(honest[0] @ g_unit) * g_unit - 0.8 * np.linalg.norm(honest[0]) * g_unit
    raw_cosine = shifted @ honest[0] / np.linalg.norm(shifted) / np.linalg.norm(honest[0])
    assert raw_cosine < 0.9  # not a copy by its plain cosine
    rows = np.vstack([honest, shifted, honest[3]])  # and row 7 an exact copy of row 3
    Z = np.vstack([rows, g])
    G = Z @ Z.T
    residual = np.linalg.norm((novelty_coefficients(G, np.full(8, 0.125)) @ Z)[:8], axis=1)
    assert (residual[[0, 3, 6, 7]] == 0.0).all()
    norms = np.linalg.norm(rows, axis=1)
    assert (residual[[1, 2, 4, 5]] > 0.9 * norms[[1, 2, 4, 5]]).all()
    # The floor alone: rows whose residual energy is below RESOLUTION of their own are zeroed, others kept.
    M = np.eye(3)
    M[1] = [0.0, 0.5 * np.sqrt(RESOLUTION), 0.0]  # energy RESOLUTION / 4 of its row's
    M[2] = [0.0, 0.0, 2.0 * np.sqrt(RESOLUTION)]  # 4 x RESOLUTION
    cleared = below_resolution_cleared(M, np.eye(3))
    np.testing.assert_array_equal(cleared[[0, 2]], M[[0, 2]])
    assert not cleared[1].any()


def test_the_novelty_basis_is_read_at_each_close_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregator.scoring import novelty

    rng = np.random.default_rng(2)
    target, A = _task(rng)
    X = _honest_rows(target, 6, rng)
    X = np.vstack([X, X.mean(axis=0)])
    c = np.full(7, 1.0 / 7)
    g = _server_part(target)
    monkeypatch.setattr(novelty, "NOVELTY_BASIS", "rows")
    rows_gain, _ = novel_gains(_loss_of(target, A), X, c, np.zeros(7), g)
    monkeypatch.setattr(novelty, "NOVELTY_BASIS", "aggregate")
    aggregate_gain, _ = novel_gains(_loss_of(target, A), X, c, np.zeros(7), g)
    # Against every row the mean row erases the honest rows' novel parts; against the aggregate they count.
    assert np.abs(rows_gain[:6]).max() < 0.05 * aggregate_gain[:6].min()
    assert aggregate_gain[6] < 0.05 * aggregate_gain[:6].min()
    monkeypatch.setattr(novelty, "NOVELTY_BASIS", "other")
    with pytest.raises(InvalidParameter, match="NOVELTY_BASIS"):
        novel_gains(_loss_of(target, A), X, c, np.zeros(7), g)
