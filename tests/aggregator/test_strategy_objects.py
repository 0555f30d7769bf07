"""Strategy objects: parameters checked at construction, required clients, selection returned with the
aggregate (distances computed once), the registry the chain's strategy names map onto."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator import strategies
from aggregator.errors import InvalidParameter, TooFewClients, UnknownStrategy
from aggregator.round.params import RoundParams
from aggregator.strategies import ByzantineBudget, StrategyInputs
from aggregator.strategies.bulyan import Bulyan, bulyan
from aggregator.strategies.centered_clip import CenteredClip, bucketed_centered_clip, centered_clip
from aggregator.strategies.coordinatewise import Median, TrimmedMean, median, trimmed_mean
from aggregator.strategies.fedavg import FedAvg, fedavg
from aggregator.strategies.fltrust import FLTrust, fltrust
from aggregator.strategies.fltrust_guarded import FLTrustGuarded, hardened_fltrust
from aggregator.strategies.krum import Krum, MultiKrum, krum, multi_krum
from aggregator.strategies.reputation_weighted import ReputationWeighted, reputation_weighted_mean
from fedledger.chain.params import STRATEGY_NAMES
from tests.aggregator.roundkit import snapshot


@pytest.fixture
def X() -> np.ndarray:
    rng = np.random.default_rng(3)
    honest = rng.normal(0.0, 1.0, size=(9, 40)).astype(np.float32)
    attackers = rng.normal(0.0, 1.0, size=(2, 40)).astype(np.float32) + np.array(
        [[30.0], [-30.0]], np.float32
    )
    return np.vstack([honest, attackers])


def test_every_chain_strategy_name_has_exactly_one_strategy_class() -> None:
    assert strategies.names() == STRATEGY_NAMES
    for name in STRATEGY_NAMES:
        assert strategies.strategy_class(name).name == name
    with pytest.raises(UnknownStrategy, match="unknown strategy 'geomed'; valid: fedavg, trimmed_mean"):
        strategies.strategy_class("geomed")


def test_every_chain_strategy_builds_from_the_genesis_parameters() -> None:
    for name in STRATEGY_NAMES:
        strategy = strategies.build(
            RoundParams.from_snapshot(snapshot(strategy=name, byzantine_fraction=0.2))
        )
        assert strategy.name == name and strategy.required_clients() >= 1


def test_objects_give_the_same_aggregates_as_the_numeric_functions(X: np.ndarray) -> None:
    n = X.shape[0]
    samples = np.arange(1, n + 1, dtype=np.float64)
    reputation = np.linspace(20, 100, n)
    reference = X[:9].mean(axis=0)
    inputs = StrategyInputs(samples, reputation, reference=reference)
    cases = [
        (FedAvg("samples"), fedavg(X, samples)),
        (TrimmedMean(0.2), trimmed_mean(X, 0.2)),
        (Median(), median(X)),
        (Krum(2), krum(X, 2)),
        (MultiKrum(2, 5), multi_krum(X, 2, 5, samples)),
        (Bulyan(2), bulyan(X, 2)),
        (ReputationWeighted(0.8), reputation_weighted_mean(X, reputation, 0.8)),
        (FLTrust(), fltrust(X, reference)),
        (FLTrustGuarded(), hardened_fltrust(X, reference, samples=samples)),
        (CenteredClip(0.0, 3, 1), centered_clip(X, None, 0.0, 3)),
    ]
    linear = {"fedavg", "krum", "multi_krum", "reputation", "fltrust", "fltrust_guarded"}
    for strategy, expected in cases:
        result = strategy.aggregate(X, inputs)
        np.testing.assert_allclose(result.vector, expected, rtol=1e-6, atol=1e-6)
        # Linear rules say how much of each row is in the aggregate; zero for the rows they left out.
        assert (result.coefficients is not None) == (strategy.name in linear)
        if result.coefficients is not None:
            np.testing.assert_allclose(result.coefficients @ X, expected, rtol=1e-5, atol=1e-5)
            left_out = np.setdiff1d(np.arange(n), result.selected)
            assert not result.coefficients[left_out].any()
    bucketed = CenteredClip(0.0, 3, 2).aggregate(X, StrategyInputs.of(n, rng=np.random.default_rng(5)))
    np.testing.assert_array_equal(
        bucketed.vector, bucketed_centered_clip(X, np.random.default_rng(5), None, 0.0, 3, 2)
    )


def test_selection_comes_with_the_aggregate_and_distances_are_computed_at_most_once(
    X: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aggregator.strategies import krum as distance_module

    calls = []
    real = distance_module.pairwise_sq_distances

    def counting(M: np.ndarray) -> np.ndarray:
        calls.append(M.shape)
        return real(M)

    monkeypatch.setattr(distance_module, "pairwise_sq_distances", counting)
    inputs = StrategyInputs.of(X.shape[0])
    for strategy, count in ((Krum(2), 1), (MultiKrum(2), 9), (Bulyan(2), 7)):
        calls.clear()
        result = strategy.aggregate(X, inputs)
        # Krum and Multi-Krum need the float64 distances only where the float32 Gram cannot decide.
        assert len(calls) <= 1
        assert result.selected.size == count and not set(result.selected.tolist()) & {9, 10}
        assert result.details == {"f": 2, **({"m": 9} if strategy.name == "multi_krum" else {})}


def test_the_byzantine_fraction_gives_f_per_round_and_the_clients_it_needs() -> None:
    # f = floor(0.3 n): n = 4 -> f = 1 needs 5 (refused); from n = 5 on, n >= 2 floor(0.3 n) + 3 always holds.
    krum03 = Krum(byzantine_fraction=0.3)
    assert krum03.required_clients() == 5
    assert [krum03.budget.f_for(n) for n in (3, 4, 7, 10, 14)] == [0, 1, 2, 3, 4]
    with pytest.raises(TooFewClients, match=r"krum needs n >= 2f\+3 = 5 for f=1, got n=4"):
        krum03.aggregate(np.ones((4, 3), np.float32), StrategyInputs.of(4))
    # Bulyan: n >= 4 floor(0.2 n) + 3 fails at n = 10 (f = 2 needs 11) and holds from 11 on.
    assert Bulyan(byzantine_fraction=0.2).required_clients() == 11
    # The floor never under-counts a fraction that binary floating point cannot represent exactly.
    assert ByzantineBudget(fraction=0.29).f_for(100) == 29
    # Multi-Krum also needs n - f >= m.
    assert MultiKrum(1, 5).required_clients() == 6
    assert MultiKrum(byzantine_fraction=0.3).required_clients() == 5
    assert TrimmedMean(0.3).required_clients() == 1


def test_parameters_are_refused_at_construction_with_what_to_change() -> None:
    with pytest.raises(
        InvalidParameter, match="cannot be met by any number of clients.*lower byzantine_fraction"
    ):
        Bulyan(byzantine_fraction=0.3)
    with pytest.raises(InvalidParameter, match="krum: give either a fixed f or a byzantine fraction"):
        Krum(1, byzantine_fraction=0.3)
    with pytest.raises(InvalidParameter, match="f must be a non-negative integer"):
        Krum(-1)
    with pytest.raises(InvalidParameter, match=r"byzantine fraction must be in \[0, 0.5\)"):
        Krum(byzantine_fraction=0.5)
    with pytest.raises(InvalidParameter, match="m must be a non-negative integer"):
        MultiKrum(1, -2)
    with pytest.raises(InvalidParameter, match=r"beta must be in \[0, 0.5\)"):
        TrimmedMean(0.5)
    with pytest.raises(InvalidParameter, match="unknown weighting 'size'"):
        FedAvg("size")
    with pytest.raises(InvalidParameter, match=r"influence cap must be in \(0, 1\]"):
        ReputationWeighted(0.0)
    with pytest.raises(InvalidParameter, match="x bucket_size 2 must be below 0.5"):
        CenteredClip(0.0, 3, 2, byzantine_fraction=0.3)
    with pytest.raises(InvalidParameter, match="iterations must be an integer >= 1"):
        CenteredClip(0.0, 0, 1)


def test_fltrust_without_a_reference_says_what_it_needs(X: np.ndarray) -> None:
    with pytest.raises(InvalidParameter, match="fltrust needs the server's reference update"):
        FLTrust().aggregate(X, StrategyInputs.of(X.shape[0]))
    with pytest.raises(InvalidParameter, match="fltrust_guarded needs the server's reference update"):
        FLTrustGuarded().aggregate(X, StrategyInputs.of(X.shape[0]))


def test_multi_krum_refuses_an_m_larger_than_n_minus_f(X: np.ndarray) -> None:
    with pytest.raises(TooFewClients, match=r"at most n - f = 9"):
        MultiKrum(2, 10).aggregate(X, StrategyInputs.of(X.shape[0]))
