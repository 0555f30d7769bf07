"""The governed parameters a round's close uses, typed and validated once from the round's snapshot.

A round stores the parameters in force when it opened (``rounds.params``, JSON: token amounts above 2^53
as decimal strings). :meth:`RoundParams.from_snapshot` is the one place that reads that snapshot; the close
and the strategies only see typed fields. Parameters added to the chain after a round opened are absent
from its snapshot: each such field documents what an absent value means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aggregator.errors import AggregationError, InvalidRoundParams
from aggregator.scoring.reputation import ReputationConfig
from aggregator.scoring.scores import ScoringConfig
from aggregator.strategies.fedavg import WEIGHTINGS

# Rounds whose snapshot predates a parameter use the chain's genesis value of it.
# A client's claimed sample count weighs at most this many times the round's median claim.
DEFAULT_SAMPLE_WEIGHT_CAP = 3.0

DEFAULT_CENTERED_CLIP_TAU = 0.0  # 0 = adaptive radius
DEFAULT_CENTERED_CLIP_ITERATIONS = 3
DEFAULT_BUCKET_SIZE = 2
DEFAULT_SERVER_MOMENTUM = 0.0

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
    centered_clip_tau: float = DEFAULT_CENTERED_CLIP_TAU
    centered_clip_iterations: int = DEFAULT_CENTERED_CLIP_ITERATIONS
    bucket_size: int = DEFAULT_BUCKET_SIZE
    server_momentum: float = DEFAULT_SERVER_MOMENTUM

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> RoundParams:
        """Parse and validate a round's parameter snapshot; :class:`InvalidRoundParams` names the culprit."""
        s = _Snapshot(snapshot)
        dp = None
        if s.boolean("dp_enabled", default=False):
            dp = DpParams(
                clip_norm=s.real("dp_clip_norm", low=0.0, low_open=True),
                noise_multiplier=s.real("dp_noise_multiplier", low=0.0),
                delta=s.real("dp_delta", low=0.0, high=1.0, low_open=True, high_open=True),
                epsilon_budget=s.real("dp_epsilon_budget", low=0.0, low_open=True),
            )
        try:
            scoring = ScoringConfig(
                weight_quality=s.real("weight_quality", low=0.0, high=1.0),
                weight_timeliness=s.real("weight_timeliness", low=0.0, high=1.0),
                weight_honesty=s.real("weight_honesty", low=0.0, high=1.0),
                reward_tiers=s.reward_tiers(),
                reputation_multiplier_base=s.real("reputation_multiplier_base", low=0.0),
            )
            reputation = ReputationConfig(
                slash_fitness_below=s.real("slash_fitness_below", low=0.0, high=100.0),
                slash_honesty_below=s.real("slash_honesty_below", low=0.0, high=100.0),
                byzantine_threshold=s.integer("byzantine_threshold", low=0),
                slash_fraction=s.real("slash_fraction", low=0.0, high=1.0),
                min_reputation=s.real("min_reputation", low=0.0, high=100.0),
            )
        except InvalidRoundParams:
            raise
        except AggregationError as exc:
            raise InvalidRoundParams(f"round parameters: {exc}; {_FIX}") from exc
        fraction = s.optional_real("byzantine_fraction", low=0.0, high=0.5, high_open=True)
        cap = s.optional_real("sample_weight_cap", low=1.0)
        return cls(
            strategy=s.text("strategy"),
            weighting=s.choice("weighting", WEIGHTINGS),
            trim_fraction=s.real("trim_fraction", low=0.0, high=0.5, high_open=True),
            krum_f=s.integer("krum_f", low=0),
            multi_krum_m=s.integer("multi_krum_m", low=0),
            byzantine_fraction=fraction,
            reputation_influence_cap=s.real("reputation_influence_cap", low=0.0, high=1.0, low_open=True),
            sample_weight_cap=_or(cap, DEFAULT_SAMPLE_WEIGHT_CAP),
            min_reputation=reputation.min_reputation,
            min_participants=s.integer("min_participants", low=1, default=1),
            round_duration=s.integer("round_duration", low=1),
            max_round_extensions=s.integer("max_round_extensions", low=0, default=0),
            rollback_threshold=s.real("rollback_threshold", low=0.0),
            base_reward=s.integer("base_reward", low=0),
            round_reward_budget=s.integer("round_reward_budget", low=0),
            dp=dp,
            scoring=scoring,
            reputation=reputation,
            centered_clip_tau=_or(s.optional_real("centered_clip_tau", low=0.0), DEFAULT_CENTERED_CLIP_TAU),
            centered_clip_iterations=s.integer(
                "centered_clip_iterations", low=1, default=DEFAULT_CENTERED_CLIP_ITERATIONS
            ),
            bucket_size=s.integer("bucket_size", low=1, default=DEFAULT_BUCKET_SIZE),
            server_momentum=_or(
                s.optional_real("server_momentum", low=0.0, high=1.0, high_open=True), DEFAULT_SERVER_MOMENTUM
            ),
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


_MISSING: Any = object()


class _Snapshot:
    """Typed reads of one snapshot; every refusal names the parameter and the accepted range."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    def _get(self, name: str, default: Any) -> Any:
        if name in self.raw:
            return self.raw[name]
        if default is _MISSING:
            raise InvalidRoundParams(f"the round's parameter snapshot has no {name!r}; {_FIX}")
        return default

    def _bad(self, name: str, value: Any, expected: str) -> InvalidRoundParams:
        return InvalidRoundParams(f"round parameter {name!r} is {value!r}, expected {expected}; {_FIX}")

    def integer(self, name: str, low: int | None = None, default: Any = _MISSING) -> int:
        raw = self._get(name, default)
        # Token amounts beyond JSON's safe integers are stored as decimal strings.
        if isinstance(raw, str) and raw.isascii() and raw.isdecimal():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self._bad(name, raw, "an integer")
        value: int = raw
        if low is not None and value < low:
            raise self._bad(name, value, f"an integer >= {low}")
        return value

    def real(
        self,
        name: str,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> float:
        return self._real(name, self._get(name, _MISSING), low, high, low_open, high_open)

    def optional_real(
        self,
        name: str,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> float | None:
        value = self.raw.get(name)
        return None if value is None else self._real(name, value, low, high, low_open, high_open)

    def _real(
        self, name: str, value: Any, low: float | None, high: float | None, low_open: bool, high_open: bool
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._bad(name, value, "a finite number")
        x = float(value)
        too_low = low is not None and (x <= low if low_open else x < low)
        too_high = high is not None and (x >= high if high_open else x > high)
        if too_low or too_high:
            interval = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, "
            interval += f"{high if high is not None else 'inf'}{')' if high_open or high is None else ']'}"
            raise self._bad(name, value, f"a number in {interval}")
        return x

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, value, "true or false")
        return value

    def text(self, name: str) -> str:
        value = self._get(name, _MISSING)
        if not isinstance(value, str) or not value:
            raise self._bad(name, value, "a name")
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in choices:
            raise self._bad(name, value, f"one of {', '.join(choices)}")
        return value

    def reward_tiers(self) -> tuple[tuple[float, float], ...]:
        tiers = self.raw.get("reward_tiers")
        if tiers is None:
            return tuple(
                (
                    self.real(f"tier{i}_min_fitness", low=0.0, high=100.0),
                    self.real(f"tier{i}_multiplier", low=0.0),
                )
                for i in range(1, 5)
            )
        if not isinstance(tiers, (list, tuple)) or not all(
            isinstance(t, (list, tuple)) and len(t) == 2 for t in tiers
        ):
            raise self._bad("reward_tiers", tiers, "a list of [minimum fitness, multiplier] pairs")
        return tuple(
            (
                self._real("reward_tiers", minimum, 0.0, 100.0, False, False),
                self._real("reward_tiers", multiplier, 0.0, None, False, False),
            )
            for minimum, multiplier in tiers
        )
