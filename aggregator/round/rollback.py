"""Whether a newly aggregated model may become the active global model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aggregator.errors import InvalidParameter


@dataclass(frozen=True)
class ActivationDecision:
    """Whether a round's model becomes the active one, its relative holdout-loss change, and why."""

    activate: bool
    relative_change: float
    reason: str


def activation_decision(previous_loss: float, new_loss: float, threshold: float) -> ActivationDecision:
    """Refuse a model whose holdout loss is worse than the active one's by more than ``threshold``
    (relative, e.g. 0.05 = 5 %), or not finite. The previous model then stays active (rollback)."""
    if not (math.isfinite(previous_loss) and previous_loss > 0):
        raise InvalidParameter(f"previous holdout loss must be finite and positive, got {previous_loss}")
    if threshold < 0:
        raise InvalidParameter(f"rollback threshold must be >= 0, got {threshold}")
    if not math.isfinite(new_loss):
        return ActivationDecision(False, math.inf, "new model's holdout loss is not finite")
    change = (new_loss - previous_loss) / previous_loss
    if change > threshold:
        return ActivationDecision(
            False, change, f"holdout loss rose {change:.2%}, beyond the {threshold:.2%} rollback threshold"
        )
    return ActivationDecision(True, change, f"holdout loss changed {change:+.2%}")


# Steps tried, largest first, when the full aggregate's loss rises too much: a shrunken step of a descent
# direction lowers the loss, so a federation whose aggregates overshoot (non-IID clients) still moves.
BACKTRACK_STEPS = (1.0, 0.5, 0.25)
# One-sided allowance, in standard errors of the paired per-example loss difference, before a rise counts.
ROLLBACK_Z = 2.0


@dataclass(frozen=True)
class StepDecision:
    """Which fraction of the aggregate the model takes (0: rolled back), its relative loss change, why."""

    step: float
    relative_change: float
    reason: str

    @property
    def activate(self) -> bool:
        """Whether the round's model (base + step x aggregate) replaces the active one."""
        return self.step > 0.0


def significant_rise(
    before: float | np.ndarray, after: float | np.ndarray, threshold: float, z: float = ROLLBACK_Z
) -> tuple[bool, float]:
    """(the loss rose by more than ``threshold`` of it plus ``z`` standard errors, the relative change).

    ``before`` and ``after`` are per-example validation losses of the two models (or only their means; then
    no standard error). The standard error is that of the paired differences: a validation set of a few
    hundred examples cannot resolve a smaller change, and refusing a model for one would refuse honest
    rounds for the validation set's noise.
    """
    a = np.asarray(before, dtype=np.float64)
    b = np.asarray(after, dtype=np.float64)
    loss_before = float(a.mean())
    if not (math.isfinite(loss_before) and loss_before > 0):
        raise InvalidParameter(f"previous holdout loss must be finite and positive, got {loss_before}")
    if threshold < 0 or z < 0:
        raise InvalidParameter(f"rollback threshold and z must be >= 0, got {threshold}, {z}")
    loss_after = float(b.mean())
    if not math.isfinite(loss_after):
        return True, math.inf
    change = (loss_after - loss_before) / loss_before
    se = 0.0
    if a.ndim == 1 and a.shape == b.shape and a.size > 1:
        se = float((b - a).std(ddof=1) / math.sqrt(a.size))
    return loss_after - loss_before > threshold * loss_before + z * se, change


def backtracking_decision(
    before: float | np.ndarray,
    loss_at: Callable[[float], float | np.ndarray],
    threshold: float,
    z: float = ROLLBACK_Z,
    steps: tuple[float, ...] = BACKTRACK_STEPS,
) -> StepDecision:
    """The largest of ``steps`` whose model (``loss_at(step)``: per-example validation losses of base +
    step x aggregate) does not raise the loss significantly (:func:`significant_rise`); step 0 (rollback)
    when none. Never a freeze for honest learning: an aggregate that points downhill passes at a small
    enough step, whatever the earlier rounds did; only one that raises the loss at every step is refused.
    """
    change = math.inf
    for step in steps:
        rise, change = significant_rise(before, loss_at(step), threshold, z)
        if not rise:
            label = "" if step == 1.0 else f" at step {step:g} of the aggregate"
            return StepDecision(step, change, f"holdout loss changed {change:+.2%}{label}")
    return StepDecision(
        0.0,
        change,
        f"holdout loss rose {change:.2%} even at step {steps[-1]:g}, beyond the {threshold:.2%} rollback "
        f"threshold plus {z:g} standard errors",
    )
