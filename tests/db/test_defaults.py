"""Column defaults that another layer's rules read as constants."""

from __future__ import annotations

from aggregator.strategies.standing import INITIAL_REPUTATION
from db.models import Participant


def test_a_new_participant_starts_at_the_reputation_the_rules_call_initial() -> None:
    # The guarded rule's standing weights and the reputation's rehabilitation treat INITIAL_REPUTATION
    # as where every organization starts; the database's default is what actually starts it.
    column = Participant.__table__.c.reputation
    assert column.default is not None and column.default.arg == INITIAL_REPUTATION
