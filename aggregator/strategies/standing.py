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


def unearned_reputation(weight_quality: float) -> float:
    """The reputation a row reaches without quality: 100 x (1 - ``weight_quality``), its fitness when
    timeliness and honesty (the sender's to take) are full and its measured usefulness is nothing."""
    return 100.0 * (1.0 - float(weight_quality))


def earned_grade(reputation: np.ndarray, unearned: float) -> np.ndarray:
    """:func:`standing_grade`, times at most the share of the round's median reputation m above
    ``unearned`` (:func:`unearned_reputation`) that each row has earned: min(standing, clip((r - u) / (m - u),
    0, 1)). A row at or above the round's median weighs fully; one at or below what timeliness and honesty
    alone give, nothing. While m <= u (nobody has earned anything yet: the first rounds, or a federation
    whose work the validation data never resolves) :func:`standing_grade` alone.

    Why: reputation moves toward fitness, and 60 of its 100 points are the sender's to take. Attackers whose
    rows the validation data scores at quality 0 every round sat at 52 while honest organizations climbed to
    80-99, and weighed as much as they did (synthetic Dirichlet(0.5), n = 10, the subset attack; issue 20,
    docs/benchmarks.md "standing earned by useful work"). The median is an honest organization's while fewer
    than half the rows are adversarial; rows below it cannot raise it."""
    r = np.asarray(reputation, dtype=np.float64)
    grade = standing_grade(r)
    if not r.size:
        return grade
    span = float(np.median(r)) - unearned
    if not span > 0:
        return grade
    earned: np.ndarray = np.minimum(grade, np.clip((r - unearned) / span, 0.0, 1.0))
    return earned
