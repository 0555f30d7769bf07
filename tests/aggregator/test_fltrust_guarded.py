"""The default rule against an attacker who knows the server's reference (issue 20): the reference as a
filter, an honest-majority gate, equal weights clipped to the median norm; and the rollback by standard
error with backtracking."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.round.rollback import backtracking_decision, significant_rise
from aggregator.scoring.reputation import norm_evidence
from aggregator.strategies.fltrust import fltrust, fltrust_coefficients
from aggregator.strategies.fltrust_guarded import (
    gate,
    hardened_coefficients,
    hardened_fltrust,
    median_peer_cosine,
)


def crowd(h: int = 7, d: int = 200, signal: float = 0.4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Honest updates: a weak shared direction under much larger private noise (late training), and a
    reference that agrees with the shared direction."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(d)
    mu[0] = 1.0
    H = signal * mu + rng.normal(0.0, 1.0 / np.sqrt(d), (h, d))
    reference = 0.2 * mu + rng.normal(0.0, 1.0 / np.sqrt(d), d)
    return H.astype(np.float32), reference.astype(np.float32)


def orthogonal_attackers(H: np.ndarray, reference: np.ndarray, f: int, c: float) -> np.ndarray:
    g = reference / np.linalg.norm(reference)
    mean = H.mean(axis=0)
    h = -mean + (mean @ g) * g
    h /= np.linalg.norm(h)
    m = float(np.median(np.linalg.norm(H, axis=1)))
    return np.repeat((m * (c * g + np.sqrt(1 - c * c) * h))[None, :], f, axis=0).astype(np.float32)


def honest_component(aggregate: np.ndarray, H: np.ndarray) -> float:
    mean = H.mean(axis=0)
    return float(aggregate @ mean / np.linalg.norm(mean))


def test_an_attacker_who_agrees_more_with_the_reference_gets_no_more_weight() -> None:
    H, reference = crowd()
    X = np.vstack([H, orthogonal_attackers(H, reference, 3, 0.3)])
    c = hardened_coefficients(X, reference)
    passed = c > 0
    # Every row that enters weighs the same (up to its clip), attackers never more than honest rows.
    assert c[7:].max() <= c[:7][passed[:7]].max() + 1e-12
    # FLTrust's own weights give the more-aligned attackers more than the honest rows.
    plain = fltrust_coefficients(X, reference)
    assert plain[7:].min() > plain[:7].max()


def test_the_honest_majority_gate_stops_the_orthogonal_attack_fltrust_lets_through() -> None:
    H, reference = crowd()
    A = orthogonal_attackers(H, reference, 3, 0.3)
    X = np.vstack([H, A])
    g = gate(X, reference)
    assert g.by_reference[7:].all()  # the reference alone lets them in
    assert not g.by_center[7:].any() and g.by_center[:7].all()
    # Without the gate (FLTrust) the aggregate goes against the honest direction; with it, along it.
    assert honest_component(fltrust(X, reference), H) < 0
    assert honest_component(hardened_fltrust(X, reference), H) > 0


def test_median_peer_cosine_is_an_honest_peers_value_while_attackers_are_a_minority() -> None:
    H, reference = crowd()
    A = orthogonal_attackers(H, reference, 3, 0.1)
    X = np.vstack([H, A])
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    peers = median_peer_cosine(X, norms)
    # Copies of the attack agree with each other (cosine 1) but not with the median peer.
    assert peers[7:].max() < peers[:7].min()
    assert peers.shape == (10,)


def test_a_boosted_row_is_clipped_to_the_median_norm() -> None:
    H, reference = crowd()
    X = H.copy()
    X[0] = X[0] * 100
    g = gate(X, reference)
    c = hardened_coefficients(X, reference)
    assert np.linalg.norm(c[0] * X[0]) <= g.clip_norm / c[c > 0].size * (1 + 1e-5)


def test_nobody_passing_leaves_the_model_unchanged() -> None:
    H, reference = crowd()
    X = np.vstack([-reference, -reference * 2]).astype(np.float32)
    assert not hardened_fltrust(X, reference).any()


def test_half_the_wallets_sending_zero_updates_cannot_make_honest_norms_conclusive() -> None:
    # Honest norms differ (a larger shard takes longer steps); half the wallets send near-zero updates:
    # the round's median is then half the smallest honest norm, and the largest honest one is "10x" it.
    honest = np.array([1.0, 1.2, 1.5, 2.0, 6.0])
    norms = np.concatenate([honest, np.full(5, 1e-6)])
    assert norm_evidence(norms)[4]
    # With the server's reference norm as the floor, no honest row is conclusive.
    assert not norm_evidence(norms, floor=1.5)[:5].any()
    assert norm_evidence(np.append(norms, 50.0), floor=1.5)[-1]


def test_a_loss_rise_within_its_standard_error_is_not_a_rollback() -> None:
    rng = np.random.default_rng(0)
    before = rng.exponential(1.0, 200)
    noise = rng.normal(0, 0.5, 200)
    noisy = before * 1.08 + noise - noise.mean()  # +8 %, but the paired differences are very noisy
    rise, change = significant_rise(before, noisy, 0.05)
    assert change > 0.05 and not rise
    assert significant_rise(before, before * 1.08, 0.05)[0]  # the same rise without noise is one
    assert significant_rise(before, np.full(200, np.inf), 0.05)[0]
    with pytest.raises(Exception, match="finite and positive"):
        significant_rise(np.zeros(3), before[:3], 0.05)


def test_backtracking_takes_a_smaller_step_instead_of_freezing() -> None:
    before = np.full(100, 1.0)

    # An overshooting step: the loss at step s is 1 - s + 1.5 s^2 (worse at 1, better at 0.5 and 0.25).
    def loss_at(step: float) -> np.ndarray:
        return np.full(100, 1.0 - step + 1.5 * step * step)

    decision = backtracking_decision(before, loss_at, 0.05)
    assert decision.activate and decision.step == 0.5
    # An ascent direction is refused at every step: a rollback.
    refused = backtracking_decision(before, lambda s: np.full(100, 1.0 + s), 0.05)
    assert not refused.activate and refused.step == 0.0 and "rose" in refused.reason
    assert backtracking_decision(before, lambda s: np.full(100, 1.0 - s / 2), 0.05).step == 1.0


def test_fltrust_is_the_papers_rule_and_the_guarded_rule_has_its_own_name() -> None:
    from aggregator import strategies
    from aggregator.strategies.base import StrategyInputs
    from fedledger.chain.params import STRATEGY_NAMES

    H, reference = crowd()
    X = np.vstack([H, orthogonal_attackers(H, reference, 3, 0.3)])
    inputs = StrategyInputs.of(X.shape[0], reference=reference)
    paper = strategies.strategy_class("fltrust")().aggregate(X, inputs)
    guarded = strategies.strategy_class("fltrust_guarded")().aggregate(X, inputs)
    np.testing.assert_allclose(paper.vector, fltrust(X, reference), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(guarded.vector, hardened_fltrust(X, reference), rtol=1e-5, atol=1e-7)
    # The chain keeps every earlier code and appends the guarded rule.
    assert STRATEGY_NAMES.index("fltrust") == 7 and STRATEGY_NAMES.index("fltrust_guarded") == 9
