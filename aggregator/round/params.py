"""The governed parameters a round's close uses, typed and validated once from the round's snapshot.

A round stores the parameters in force when it opened (``rounds.params``, JSON: token amounts above 2^53
as decimal strings). :meth:`RoundParams.from_snapshot` is the one place that reads that snapshot; the close
and the strategies only see typed fields. Ranges and genesis values come from the parameter table
(:mod:`fedledger.chain.param_table`): a parameter added to the chain after a round opened is absent from
its snapshot and reads as its genesis value (``byzantine_fraction``: as None, see :class:`RoundParams`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aggregator.errors import AggregationError, InvalidRoundParams
from aggregator.scoring.reputation import ReputationConfig
from aggregator.scoring.scores import ScoringConfig
from fedledger.chain.param_table import Kind, ParamDef, param
from fedledger.secagg.groups import MIN_GROUP_SIZE

_FIX = "fix it through governance (ProtocolParameters) before the next round opens"


@dataclass(frozen=True)
class DpParams:
    """Differential privacy of the aggregate (present only when ``dp_enabled``)."""

    clip_norm: float
    noise_multiplier: float
    delta: float
    epsilon_budget: float


@dataclass(frozen=True)
class RoundParams:
    """Everything numeric a round's close reads from the governed parameters.

    ``byzantine_fraction``: None for rounds whose snapshot predates it; then the Krum family uses the fixed
    ``krum_f`` and trimmed mean ``trim_fraction``. ``sample_weight_cap``: multiple of the round's median
    sample claim above which a claim stops counting (a weight limit, never evidence).
    """

    strategy: str
    weighting: str
    trim_fraction: float
    krum_f: int
    multi_krum_m: int
    byzantine_fraction: float | None
    reputation_influence_cap: float
    sample_weight_cap: float
    min_reputation: float
    min_participants: int
    round_duration: int
    max_round_extensions: int
    rollback_threshold: float
    base_reward: int
    round_reward_budget: int
    dp: DpParams | None
    scoring: ScoringConfig
    reputation: ReputationConfig
    centered_clip_tau: float
    centered_clip_iterations: int
    bucket_size: int
    server_momentum: float
    # Secure aggregation (issue 24): 0 = the clear mode; else the group size s (>= 3) and the quantizer's clip.
    secure_group_size: int = 0
    secure_clip: float = 1.0

    @property
    def secure(self) -> bool:
        """The round runs in the secure-aggregation mode (the server learns only group sums)."""
        return self.secure_group_size > 0

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> RoundParams:
        """Parse and validate a round's parameter snapshot; :class:`InvalidRoundParams` names the culprit."""
        s = _Snapshot(snapshot)
        dp = None
        if s.flag("dp_enabled"):
            dp = DpParams(
                clip_norm=s.real("dp_clip_norm"),
                noise_multiplier=s.real("dp_noise_multiplier"),
                delta=s.real("dp_delta"),
                epsilon_budget=s.real("dp_epsilon_budget"),
            )
        try:
            scoring = ScoringConfig(
                weight_quality=s.real("weight_quality"),
                weight_timeliness=s.real("weight_timeliness"),
                weight_honesty=s.real("weight_honesty"),
                reward_tiers=s.reward_tiers(),
                reputation_multiplier_base=s.real("reputation_multiplier_base"),
            )
            reputation = ReputationConfig(
                byzantine_threshold=s.integer("byzantine_threshold"),
                activity_timeout=s.integer("activity_timeout"),
                slash_fraction=s.real("slash_fraction"),
                min_reputation=s.real("min_reputation"),
            )
        except InvalidRoundParams:
            raise
        except AggregationError as exc:
            raise InvalidRoundParams(f"round parameters: {exc}; {_FIX}") from exc
        return cls(
            strategy=s.choice("strategy"),
            weighting=s.choice("weighting"),
            trim_fraction=s.real("trim_fraction"),
            krum_f=s.integer("krum_f"),
            multi_krum_m=s.integer("multi_krum_m"),
            # Absent from rounds that predate it: the fixed krum_f and trim_fraction govern those.
            byzantine_fraction=s.real("byzantine_fraction") if "byzantine_fraction" in snapshot else None,
            reputation_influence_cap=s.real("reputation_influence_cap"),
            sample_weight_cap=s.real("sample_weight_cap"),
            min_reputation=reputation.min_reputation,
            min_participants=s.integer("min_participants"),
            round_duration=s.integer("round_duration"),
            max_round_extensions=s.integer("max_round_extensions"),
            rollback_threshold=s.real("rollback_threshold"),
            base_reward=s.integer("base_reward"),
            round_reward_budget=s.integer("round_reward_budget"),
            dp=dp,
            scoring=scoring,
            reputation=reputation,
            centered_clip_tau=s.real("centered_clip_tau"),
            centered_clip_iterations=s.integer("centered_clip_iterations"),
            bucket_size=s.integer("bucket_size"),
            server_momentum=s.real("server_momentum"),
            secure_group_size=s.group_size("secure_group_size"),
            secure_clip=s.real("secure_clip"),
        )


class _Snapshot:
    """Typed reads of one snapshot, each checked against the parameter table's range; every refusal names the
    parameter and the accepted range. An absent parameter reads as its genesis value."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    def _get(self, name: str, kinds: tuple[Kind, ...]) -> tuple[ParamDef, Any]:
        p = param(name)
        if p.kind not in kinds:
            raise TypeError(f"{name} is a {p.kind} parameter")
        return p, self.raw.get(name, p.default)

    def _bad(self, name: str, value: Any, expected: str) -> InvalidRoundParams:
        return InvalidRoundParams(f"round parameter {name!r} is {value!r}, expected {expected}; {_FIX}")

    def integer(self, name: str) -> int:
        p, raw = self._get(name, (Kind.TOKEN, Kind.COUNT, Kind.SECONDS))
        # Token amounts beyond JSON's safe integers are stored as decimal strings.
        if isinstance(raw, str) and raw.isascii() and raw.isdecimal():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self._bad(name, raw, "an integer")
        value: int = raw
        if value not in p.interval:
            raise self._bad(name, value, f"an integer in {p.interval}")
        return value

    def group_size(self, name: str) -> int:
        # The table's interval syntax cannot say "0 or at least 3": the chain accepts 0..128, and 1 and 2 are
        # refused here, at the close, because a group of two shows each member the other's update (its sum
        # minus its own) and a group of one is no masking at all.
        value = self.integer(name)
        if 0 < value < MIN_GROUP_SIZE:
            raise self._bad(name, value, f"0 (the clear mode) or a group size of at least {MIN_GROUP_SIZE}")
        return value

    def real(self, name: str) -> float:
        p, value = self._get(name, (Kind.REAL, Kind.SCORE))
        return self._real(p, name, value)

    def _real(self, p: ParamDef, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._bad(name, value, "a finite number")
        if float(value) not in p.interval:
            raise self._bad(name, value, f"a number in {p.interval}")
        return float(value)

    def flag(self, name: str) -> bool:
        _, value = self._get(name, (Kind.BOOL,))
        if not isinstance(value, bool):
            raise self._bad(name, value, "true or false")
        return value

    def choice(self, name: str) -> str:
        p, value = self._get(name, (Kind.ENUM,))
        if value not in p.values:
            raise self._bad(name, value, f"one of {', '.join(p.values)}")
        return str(value)

    def reward_tiers(self) -> tuple[tuple[float, float], ...]:
        tiers = self.raw.get("reward_tiers")
        if tiers is None:
            return tuple(
                (self.real(f"tier{i}_min_fitness"), self.real(f"tier{i}_multiplier")) for i in range(1, 5)
            )
        if not isinstance(tiers, (list, tuple)) or not all(
            isinstance(t, (list, tuple)) and len(t) == 2 for t in tiers
        ):
            raise self._bad("reward_tiers", tiers, "a list of [minimum fitness, multiplier] pairs")
        minimum, multiplier = param("tier1_min_fitness"), param("tier1_multiplier")
        return tuple(
            (self._real(minimum, "reward_tiers", low), self._real(multiplier, "reward_tiers", high))
            for low, high in tiers
        )
