"""Issue 13 item 9, the remaining window: a failed submission removes its ciphertext only when no
concurrent submission of the same bytes is about to commit a row that names it.

Two requests carry the same bytes (a client's retry while the first is in flight: one content-addressed
file for both). One is inserting its row; the other fails after writing the file (here: a header the round
refuses). Removing the file as soon as no *committed* row names it would leave the first one's accepted
row without its ciphertext. The cleanup waits for the round lock that every inserting submission holds.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from fedledger.domain import submissions
from fedledger.domain.errors import DomainError
from tests.middleware.conftest import ORGS, World, make_update, verified


def test_a_failed_twin_does_not_remove_the_ciphertext_of_a_row_being_committed(world: World) -> None:
    state = world.client.app.state.fl
    index = ORGS[1]
    envelope, signature = make_update(world, index)
    checked = verified(world, index, envelope, signature)
    # The twin: same bytes (same file), but a header the round refuses once it records.
    refused_twin = dataclasses.replace(
        checked, header=dataclasses.replace(checked.header, model_version=checked.header.model_version + 7)
    )

    state.blobs.put(envelope)
    winner = state.sessions()
    winner.begin()
    receipt = submissions._insert(winner, checked)  # inserted, holding the round's lock, not committed
    outcome: list[BaseException | None] = []

    def twin() -> None:
        try:
            submissions.record(state.sessions, state.blobs, refused_twin, envelope)
        except BaseException as exc:  # noqa: BLE001 - the outcome is asserted below
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=twin)
    thread.start()
    try:
        time.sleep(1.0)  # the twin has failed and is cleaning up (or waiting to)
        assert state.blobs.exists(checked.digest), "the twin removed a ciphertext a pending row names"
    finally:
        winner.commit()
        winner.close()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert isinstance(outcome[0], DomainError) and outcome[0].code == "wrong_model_version", outcome
    assert not receipt.replayed
    # The accepted row's ciphertext is there, and it is the only file the two left.
    assert state.blobs.get(checked.digest) == envelope
