"""Whether a newly aggregated model may become the active global model."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
