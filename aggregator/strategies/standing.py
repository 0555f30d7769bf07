"""Standing: where every organization's reputation starts, and the weight a lower one earns.

Pure and import-free within the package, so that both the rules (:mod:`aggregator.strategies.fltrust_guarded`)
and the scores (:mod:`aggregator.scoring.reputation`) read the same line.
"""

from __future__ import annotations

import numpy as np

# The reputation every organization starts at (``db.models.Participant.reputation``'s default): the line
# between a standing kept or earned by useful work and one that a record of evidence took below where
# everyone begins (the guarded rule's standing weights; aggregator.scoring.reputation's rehabilitation).
INITIAL_REPUTATION = 50.0


def standing_grade(reputation: np.ndarray) -> np.ndarray:
    """min(1, r / INITIAL_REPUTATION) per row: full weight at or above the reputation every organization
    starts at, in proportion below it (0 at 0)."""
    r = np.asarray(reputation, dtype=np.float64)
    grade: np.ndarray = np.clip(r / INITIAL_REPUTATION, 0.0, 1.0)
    return grade
