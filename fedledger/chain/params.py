"""Governed protocol parameters, read from ``ProtocolParameters`` in one call and given Python units.

The contract stores uint256 values (WAD fixed point for fractions and scores); this module is the one place
that converts them, and it checks the contract's own ``names()`` against the mapping it expects so a
reordered or extended enum cannot be misread silently.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from web3.contract import Contract

WAD = 10**18

# The chain's strategy and weighting codes (ProtocolParameters.Param.Strategy / Weighting), in code order. This
# is the one mapping between codes and names; the aggregator's registry is keyed by these names.
STRATEGY_NAMES = (
    "fedavg",
    "trimmed_mean",
    "median",
    "krum",
    "multi_krum",
    "bulyan",
    "reputation",
    "fltrust",
    "centered_clip",
)
WEIGHTING_NAMES = ("samples", "fitness", "hybrid")


class ParameterMismatch(RuntimeError):
    """The contract's parameter names differ from what this code was written for."""


@dataclass(frozen=True)
class ProtocolParams:
    """Every governed parameter in Python units: token wei and counts as int, WAD fractions as float.

    The fields are in the contract's ``names()`` order, which :func:`from_raw` checks.
    """

    base_reward: int  # token wei
    min_stake: int  # token wei
    min_reputation: float  # score 0..100
    slash_fraction: float
    slash_fitness_below: float
    slash_honesty_below: float
    byzantine_threshold: int
    activity_timeout: int  # seconds
    weight_quality: float
    weight_timeliness: float
    weight_honesty: float
    reputation_influence_cap: float
    strategy: str
    weighting: str
    trim_fraction: float
    krum_f: int
    multi_krum_m: int  # 0 = n - f
    dp_enabled: bool
    dp_clip_norm: float
    dp_noise_multiplier: float
    dp_epsilon_budget: float
    dp_delta: float
    round_duration: int
    quorum: int
    min_participants: int
    rollback_threshold: float
    round_reward_budget: int
    unbonding_period: int
    tier1_min_fitness: float
    tier1_multiplier: float
    tier2_min_fitness: float
    tier2_multiplier: float
    tier3_min_fitness: float
    tier3_multiplier: float
    tier4_min_fitness: float
    tier4_multiplier: float
    reputation_multiplier_base: float
    max_round_extensions: int
    byzantine_fraction: float  # expected Byzantine share (< 0.5); Krum f and trimming derive from it
    sample_weight_cap: float  # a sample weight is capped at this multiple of the round's median claim
    centered_clip_tau: float  # clipping radius of centered clipping, 0 = adaptive
    centered_clip_iterations: int
    bucket_size: int  # updates averaged per bucket before robust aggregation
    server_momentum: float  # < 1.0
    emission_cap_per_period: int  # token wei posted in rewards roots per emission period
    emission_period: int  # seconds
    dispute_window: int  # seconds between a rewards root's posting and its first claim

    @property
    def reward_tiers(self) -> tuple[tuple[float, float], ...]:
        """(minimum fitness, multiplier), highest tier first."""
        return (
            (self.tier1_min_fitness, self.tier1_multiplier),
            (self.tier2_min_fitness, self.tier2_multiplier),
            (self.tier3_min_fitness, self.tier3_multiplier),
            (self.tier4_min_fitness, self.tier4_multiplier),
        )


_FIELD_NAMES = tuple(f.name for f in fields(ProtocolParams))
_INT_FIELDS = {
    "base_reward",
    "min_stake",
    "byzantine_threshold",
    "activity_timeout",
    "krum_f",
    "multi_krum_m",
    "round_duration",
    "quorum",
    "min_participants",
    "round_reward_budget",
    "unbonding_period",
    "max_round_extensions",
    "centered_clip_iterations",
    "bucket_size",
    "emission_cap_per_period",
    "emission_period",
    "dispute_window",
}
# Parameters that are token amounts in token wei (shown with the token's symbol).
TOKEN_FIELDS = ("base_reward", "min_stake", "round_reward_budget", "emission_cap_per_period")


def from_raw(names: list[str], values: list[int]) -> ProtocolParams:
    """Convert the contract's ``names()`` and ``getAll()`` into :class:`ProtocolParams`."""
    if tuple(names) != _FIELD_NAMES:
        raise ParameterMismatch(
            f"ProtocolParameters.names() is {list(names)}, this code expects {list(_FIELD_NAMES)}; "
            "upgrade fedledger or redeploy the matching contracts"
        )
    converted: dict[str, object] = {}
    for name, value in zip(names, values, strict=True):
        if name == "strategy":
            converted[name] = STRATEGY_NAMES[value]
        elif name == "weighting":
            converted[name] = WEIGHTING_NAMES[value]
        elif name == "dp_enabled":
            converted[name] = bool(value)
        elif name in _INT_FIELDS:
            converted[name] = int(value)
        else:
            converted[name] = value / WAD
    return ProtocolParams(**converted)  # type: ignore[arg-type]


def read_params(contract: Contract) -> ProtocolParams:
    """Every governed parameter of a ``ProtocolParameters`` contract, from ``names()`` and ``getAll()``."""
    return from_raw(list(contract.functions.names().call()), list(contract.functions.getAll().call()))
