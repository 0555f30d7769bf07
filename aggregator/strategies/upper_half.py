"""The normal calibration of a level read from a crowd's upper half (issue 20).

For a normal crowd the values above its median are its median plus a half-normal: their median lies
UPPER_QUARTILE standard deviations above the crowd's, and their standard deviation is HALF_NORMAL_SD of the
crowd's. Both the guarded rule's reference floor (:func:`aggregator.strategies.fltrust_guarded.upper_half_floor`)
and the direction evidence's held level (:func:`aggregator.scoring.reputation.upper_half_level`) read a level
from the upper half this way: attackers below the median (or at it) cannot narrow it. Kept apart from both so
that the scoring reads it without importing the rule (which imports the round's parameters, which import the
scoring's reputation settings).
"""

from __future__ import annotations

UPPER_QUARTILE = 0.6744897501960817  # Phi^-1(0.75)
HALF_NORMAL_SD = 0.6028102749890869  # sqrt(1 - 2 / pi)
# Fewer values in the upper half than this: no level (a spread of two values is no estimate).
FLOOR_MIN_VALUES = 3
