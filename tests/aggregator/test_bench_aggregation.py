"""The aggregation benchmark times the chain's default as the close builds it, against a NumPy reference
written from the rule's docstrings that must give the same aggregate (its "= peer" column)."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.strategies import fltrust_guarded as fg
from aggregator.strategies.base import StrategyInputs
from tests.aggregator.scriptkit import load_script

bench = load_script("bench_aggregation")


def rounds(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rounds of the benchmark's shape, with a correlated quarter of the rows so that the tests differ."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.choice([10, 11, 23, 50]))
        X = rng.standard_normal((n, 2_000), dtype=np.float32)
        X[: n // 4] += np.float32(0.5) * rng.standard_normal(2_000, dtype=np.float32)
        out.append((X, bench.reference_update(X, rng), bench.reputations(n, rng)))
    return out


def test_the_default_is_timed_as_the_close_builds_it() -> None:
    name = bench.DEFAULT_STRATEGY
    X, g0, rep = rounds(1)[0]
    timed = bench.ours(name, X, 0, rep, g0)
    built = bench.registry.build(bench.RoundParams.from_snapshot(bench.genesis()))
    inputs = StrategyInputs.of(X.shape[0], reputation=rep, reference=g0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(timed(), built.aggregate(X, inputs).vector)


def test_the_numpy_reference_gives_the_default_s_aggregate() -> None:
    built = bench.registry.build(bench.RoundParams.from_snapshot(bench.genesis()))
    judged = 0
    for X, g0, rep in rounds(40):
        ours = bench.ours("fltrust_guarded", X, 0, rep, g0)()
        reference = bench.numpy_call("fltrust_guarded", X, g0, rep)
        assert reference is not None
        assert bench.agrees("fltrust_guarded", ours, reference(), X) == "yes"
        inputs = StrategyInputs.of(X.shape[0], reputation=rep, reference=g0, rng=np.random.default_rng(0))
        g, standing = built.gate_and_standing(X, inputs)
        assert standing is not None
        judged += int((g.by_center != fg.gate(X, g0, among=standing >= fg.CROWD_STANDING).by_center).any())
    # The comparison covers rounds where the judges' test adds passers, not only the crowd's test.
    assert judged >= 5


def test_the_comparison_sees_the_standing_stages() -> None:
    # The reference with every reputation equal (no crowd, no judges, equal weights) is the rule without
    # its standing stages: the benchmark's comparison must tell it from the default.
    caught = 0
    for X, g0, rep in rounds(20):
        plain = bench.numpy_guarded(X, g0, np.full_like(rep, 100.0), 60.0, fg.STANDING_POWER)
        caught += (
            bench.agrees("fltrust_guarded", bench.ours("fltrust_guarded", X, 0, rep, g0)(), plain, X) == "NO"
        )
    assert caught >= 10


@pytest.mark.parametrize("rows", [[0, 1, 2], [4, 1, 3]])
def test_medians_without_self(rows: list[int]) -> None:
    rng = np.random.default_rng(3)
    cos = rng.standard_normal((6, 6))
    columns = np.array([1, 2, 3, 5])
    got = bench._medians_without_self(cos, np.array(rows), columns)
    want = [np.median([cos[i, j] for j in columns if j != i]) for i in rows]
    np.testing.assert_allclose(got, want)
