"""Our strategies against Flower's published aggregation functions, where both define the same thing."""

from __future__ import annotations

import flwr.server.strategy.aggregate as flower
import numpy as np
import pytest
from flwr.common import parameters_to_ndarrays

from aggregator.strategies.functions import (
    bulyan,
    fedavg,
    krum,
    median,
    multi_krum,
    pairwise_sq_distances,
    trimmed_mean,
)


def cases():
    for seed, (n, d) in enumerate([(5, 7), (7, 100), (11, 64), (15, 1000), (23, 300), (31, 50)]):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((n, d)).astype(np.float32)
        X[: n // 5] *= 30  # a few outliers, so robust rules have something to reject
        # Flower breaks Krum ties by list position, we by centrality (sum of distances): list the clients
        # most central first so that both rules agree where Bulyan's late rounds tie.
        order = np.argsort(pairwise_sq_distances(X).sum(axis=1), kind="stable")
        X = X[order]
        samples = rng.integers(10, 1000, size=n)
        yield pytest.param(X, samples, id=f"n{n}-d{d}")


def as_results(X: np.ndarray, samples: np.ndarray):
    # Flower works on lists of layers; split the vector into two layers to exercise that too.
    cut = X.shape[1] // 2
    return [([row[:cut], row[cut:]], int(s)) for row, s in zip(X, samples, strict=True)]


def flat(layers) -> np.ndarray:
    return np.concatenate([np.ravel(layer) for layer in layers]).astype(np.float32)


@pytest.mark.parametrize("X, samples", list(cases()))
def test_median_equals_flower(X, samples) -> None:
    np.testing.assert_array_equal(median(X), flat(flower.aggregate_median(as_results(X, samples))))


@pytest.mark.parametrize("X, samples", list(cases()))
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.3, 0.45])
def test_trimmed_mean_equals_flower(X, samples, beta) -> None:
    ours = trimmed_mean(X, beta)
    np.testing.assert_allclose(
        ours, flat(flower.aggregate_trimmed_avg(as_results(X, samples), beta)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("X, samples", list(cases()))
def test_fedavg_equals_flower(X, samples) -> None:
    np.testing.assert_allclose(
        fedavg(X, samples), flat(flower.aggregate(as_results(X, samples))), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("X, samples", list(cases()))
def test_krum_and_multi_krum_equal_flower(X, samples) -> None:
    n = X.shape[0]
    for f in range(0, (n - 3) // 2 + 1):
        np.testing.assert_array_equal(krum(X, f), flat(flower.aggregate_krum(as_results(X, samples), f, 0)))
        m = n - f
        theirs = flat(flower.aggregate_krum(as_results(X, samples), f, m))
        np.testing.assert_allclose(multi_krum(X, f, m, weights=samples), theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("X, samples", list(cases()))
def test_bulyan_equals_flower(X, samples) -> None:
    n = X.shape[0]
    for f in range(0, (n - 3) // 4 + 1):
        theirs = flat(flower.aggregate_bulyan(as_results(X, samples), f, flower.aggregate_krum, to_keep=0))
        np.testing.assert_allclose(bulyan(X, f), theirs, rtol=1e-5, atol=1e-5)


def test_server_momentum_equals_flower_fedavgm_over_rounds() -> None:
    """Flower has no FLTrust or centered clipping; it has FedAvgM, whose buffer is our server momentum."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.server.strategy import FedAvgM

    from aggregator.strategies.centered_clip import server_momentum

    rng = np.random.default_rng(5)
    d, n, beta = 50, 6, 0.9
    weights = rng.standard_normal(d).astype(np.float32)
    theirs = FedAvgM(initial_parameters=ndarrays_to_parameters([weights]), server_momentum=beta)
    ours, buffer = weights.copy(), None
    for server_round in range(1, 5):
        deltas = (rng.standard_normal((n, d)) * 0.1).astype(np.float32)
        samples = rng.integers(10, 100, size=n)
        results = [
            (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([ours + delta]), int(s), {}))
            for delta, s in zip(deltas, samples, strict=True)
        ]
        aggregated, _ = theirs.aggregate_fit(server_round, results, [])  # type: ignore[arg-type]
        buffer = server_momentum(buffer, fedavg(deltas, samples), beta)
        ours = ours + buffer
        np.testing.assert_allclose(ours, flat(parameters_to_ndarrays(aggregated)), rtol=1e-4, atol=1e-5)
