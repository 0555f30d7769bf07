"""The round's parameter snapshot typed once, with errors that name the parameter."""

from __future__ import annotations

import json

import pytest

from aggregator.errors import InvalidRoundParams
from aggregator.round.params import RoundParams
from fedledger.chain import param_table
from fedledger.chain.params import STRATEGY_NAMES, WAD, from_raw
from tests.aggregator.roundkit import snapshot


def test_the_chains_parameters_round_trip_through_a_rounds_snapshot() -> None:
    """Chain values (WAD) -> ProtocolParams (the chain reader) -> JSON snapshot (as open_round stores it)."""
    raw = {p.name: p.raw_default for p in param_table.table()}
    raw.update(strategy=STRATEGY_NAMES.index("trimmed_mean"), sample_weight_cap=3 * WAD, bucket_size=2)
    params = from_raw(list(raw), list(raw.values()))
    stored: dict[str, object] = dict(params)
    stored["reward_tiers"] = [list(t) for t in params.reward_tiers]
    stored = {k: str(v) if type(v) is int and v > 2**53 else v for k, v in stored.items()}

    typed = RoundParams.from_snapshot(json.loads(json.dumps(stored)))
    assert typed.base_reward == 100 * WAD and typed.round_reward_budget == 10_000 * WAD
    assert typed.strategy == "trimmed_mean" and typed.weighting == "samples"
    assert typed.byzantine_fraction == 0.3 and typed.sample_weight_cap == 3.0
    assert typed.scoring.reward_tiers == ((90.0, 2.0), (80.0, 1.5), (70.0, 1.0), (60.0, 0.5))
    assert typed.reputation.min_reputation == typed.min_reputation == 10.0
    assert typed.reputation.activity_timeout == 7 * 86400
    assert typed.dp is None and typed.bucket_size == 2


def test_parameters_added_after_a_round_opened_take_their_genesis_values() -> None:
    """One genesis value per parameter: the table's (the drifted copies said 3 and 2)."""
    typed = RoundParams.from_snapshot(snapshot())
    assert typed.byzantine_fraction is None  # legacy krum_f / trim_fraction then govern
    assert typed.sample_weight_cap == param_table.param("sample_weight_cap").default == 10.0
    assert (typed.bucket_size, typed.centered_clip_iterations, typed.centered_clip_tau) == (1, 3, 0.0)
    older = snapshot()
    del older["rollback_threshold"]
    assert RoundParams.from_snapshot(older).rollback_threshold == 0.0


def test_every_range_is_the_tables() -> None:
    """Each bound of the table is enforced on the snapshot, open or closed as the table says."""
    assert (
        RoundParams.from_snapshot(snapshot(trim_fraction=0.0, reputation_influence_cap=1.0)).trim_fraction
        == 0
    )
    for name, value in [("reputation_influence_cap", 0.0), ("bucket_size", 11), ("dp_delta", 0.0)]:
        with pytest.raises(InvalidRoundParams, match=name):
            RoundParams.from_snapshot(snapshot(dp_enabled=True, **{name: value}))


def test_dp_parameters_are_read_only_when_enabled() -> None:
    typed = RoundParams.from_snapshot(snapshot(dp_enabled=True, dp_clip_norm=2.0))
    assert typed.dp is not None and typed.dp.clip_norm == 2.0
    with pytest.raises(InvalidRoundParams, match=r"'dp_delta' is 1.0, expected a number in \(0, 1\)"):
        RoundParams.from_snapshot(snapshot(dp_enabled=True, dp_delta=1.0))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"krum_f": "two"}, "'krum_f' is 'two', expected an integer"),
        ({"krum_f": True}, "'krum_f' is True, expected an integer"),
        ({"krum_f": -1}, r"'krum_f' is -1, expected an integer in \[0, inf\)"),
        ({"trim_fraction": 0.5}, r"'trim_fraction' is 0.5, expected a number in \[0, 0.5\)"),
        ({"byzantine_fraction": 0.5}, r"'byzantine_fraction' is 0.5, expected a number in \[0, 0.5\)"),
        ({"sample_weight_cap": 0.5}, r"'sample_weight_cap' is 0.5, expected a number in \[1, inf\)"),
        ({"weighting": "size"}, "'weighting' is 'size', expected one of samples, fitness, hybrid"),
        ({"min_reputation": float("nan")}, "'min_reputation' is nan, expected a finite number"),
        ({"base_reward": "1e20"}, "'base_reward' is '1e20', expected an integer"),
        ({"weight_quality": 0.5}, "fitness weights must sum to 1"),
        ({"reward_tiers": [[60, 0.5], [90, 2.0]]}, "reward tiers must be ordered"),
        ({"reward_tiers": [1, 2]}, "expected a list of \\[minimum fitness, multiplier\\] pairs"),
    ],
)
def test_invalid_values_are_refused_with_the_parameter_and_the_fix(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRoundParams, match=message) as caught:
        RoundParams.from_snapshot(snapshot(**change))
    assert "through governance" in str(caught.value)


def test_secure_group_size_is_zero_or_at_least_three() -> None:
    """The table's range (0..128) cannot say "0 or >= 3": a group of one or two is refused here, by name."""
    assert RoundParams.from_snapshot(snapshot()).secure is False
    typed = RoundParams.from_snapshot(snapshot(secure_group_size=3, secure_clip=0.5))
    assert typed.secure and (typed.secure_group_size, typed.secure_clip) == (3, 0.5)
    for size in (1, 2):
        with pytest.raises(InvalidRoundParams, match=r"'secure_group_size' is \d, expected 0 \(the clear"):
            RoundParams.from_snapshot(snapshot(secure_group_size=size))
    for name, value in [("secure_group_size", 129), ("secure_clip", 0.0)]:
        with pytest.raises(InvalidRoundParams, match=name):
            RoundParams.from_snapshot(snapshot(**{name: value}))
