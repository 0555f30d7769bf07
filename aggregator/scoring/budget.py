"""How many validation examples a close's per-row scores use (issue 25 item 2, the close's time).

The per-row scores (quality's novel gains, the leave-one-out marginals, the solo gains, the context gains of
the direction evidence) need every update's first-layer response on every validation example they use:
n x m x d multiply-adds for n updates of d parameters and m examples. The aggregation reads the updates a
few times (the guarded default: one Gram pass), so at a few hundred examples the scores alone cost several
aggregations (measured at n = 100, d = 1M and 10M, 200 examples: the close 17.9-29.0x its aggregation).

The rule: while n x m x d is at most ``max(examples x n x d, floor)`` multiply-adds (:class:`ScoreBudget`)
the scores use every example, exactly as before. Above it they use a subsample of ``examples`` of them
(more when ``floor`` allows more), drawn without replacement by :func:`score_sample` from a seed of the
round (its id and its updates' ids and arrival times: the same in the single-worker and the sharded close,
and unknown to an organization when it submits). The subsample's mean of a per-example difference is an
unbiased estimate of the whole validation set's, and the standard error the scores already carry (the
spread of the per-example differences over the square root of the examples used) grows as the subsample
shrinks: quality's allowance for what the validation set cannot resolve (``novelty_quality``) widens with
it, so a smaller sample never turns noise into a conclusive difference. The close's decision (line search,
rollback, the descent floor) is not a per-row score and keeps every example.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from aggregator.errors import InvalidParameter
from fedledger.config import Settings

# The defaults of FEDLEDGER_SCORE_EXAMPLES and FEDLEDGER_SCORE_WORK_FLOOR (a worker's own settings reach its
# closes through :func:`settings_budget`).
# K: the per-row scores may spend K x n x d multiply-adds (K validation examples' worth of first-layer
# responses of every update), about what the guarded default's aggregation costs at n = 100 (measured:
# docs/benchmarks.md, issue 25 item 2, "A bounded score budget").
SCORE_EXAMPLES = 32
# Multiply-adds the scores may always spend (a fraction of a second on one core): rounds this small keep
# every example whatever K says, so the evaluation tasks (d of 650-3,274, n of 10-30) score exactly as before.
SCORE_WORK_FLOOR = 2e9


@dataclass(frozen=True)
class ScoreBudget:
    """The per-row scores' budget: at most ``max(examples x n x d, floor)`` multiply-adds of first-layer
    responses (see the module docstring)."""

    examples: int = SCORE_EXAMPLES
    floor: float = SCORE_WORK_FLOOR

    def __post_init__(self) -> None:
        # Two examples at least: one gives no spread, hence no standard error.
        if self.examples < 2 or not (np.isfinite(self.floor) and self.floor >= 0):
            raise InvalidParameter(
                f"a score budget needs at least 2 examples and a finite floor >= 0, got {self.examples}, "
                f"{self.floor}"
            )

    def size(self, rows: int, parameters: int, examples: int) -> int:
        """How many of ``examples`` validation examples the scores of ``rows`` updates of ``parameters``
        each may use: all of them within the budget, else ``max(self.examples, floor / (rows x parameters))``."""
        if rows < 0 or parameters < 0 or examples < 0:
            raise InvalidParameter(
                f"cannot budget {rows} rows x {parameters} parameters x {examples} examples"
            )
        per_example = max(rows, 1) * max(parameters, 1)
        if examples * per_example <= max(self.examples * per_example, self.floor):
            return examples
        return min(examples, max(self.examples, int(self.floor // per_example)))


def default_budget() -> ScoreBudget:
    """The budget of a close that names none: :data:`SCORE_EXAMPLES` and :data:`SCORE_WORK_FLOOR`, read
    when called."""
    return ScoreBudget(SCORE_EXAMPLES, SCORE_WORK_FLOOR)


def settings_budget(settings: Settings) -> ScoreBudget:
    """A worker's budget: its settings' ``FEDLEDGER_SCORE_EXAMPLES`` and ``FEDLEDGER_SCORE_WORK_FLOOR``
    (the close carries it with the round's inputs; nothing is set on the process)."""
    return ScoreBudget(settings.score_examples, settings.score_work_floor)


def round_seed(round_id: int, updates: Sequence[tuple[int, datetime]]) -> bytes:
    """The subsample's seed: the round's id and its updates' (id, arrival time), in the order given. Both
    closes of a round see the same updates; an organization submitting does not know the others' arrival
    times, so it cannot know which examples will score it (it knows the validation data: Kerckhoffs)."""
    text = f"fedledger/score-sample/{round_id}:" + ",".join(f"{u}@{t.isoformat()}" for u, t in updates)
    return hashlib.sha256(text.encode()).digest()


def score_sample(seed: bytes, examples: int, size: int) -> np.ndarray | None:
    """``size`` distinct indices of ``examples`` (sorted), drawn uniformly without replacement from ``seed``;
    None when ``size`` covers them all (the scores use every example)."""
    if examples < 0 or size < 0:
        raise InvalidParameter(f"cannot draw {size} of {examples} examples")
    if size >= examples:
        return None
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32))
    drawn: np.ndarray = np.sort(rng.choice(examples, size, replace=False)).astype(np.int64)
    return drawn
