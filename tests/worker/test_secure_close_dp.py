"""The secure close under DP decides before unmasking (pure: transient rows, no services): a round that
could not be aggregated, or would exceed the budget, unmasks no group (each unmasked sum is a release)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aggregator.round.compute import CloseStatus
from aggregator.worker import secure_close
from aggregator.worker.close_inputs import Inputs
from aggregator.worker.secure_close import SecureInputs, compute_secure
from db.models import ModelVersion, Round, SecAggGroup, SecAggMessage, SecAggRound, SecAggStep
from fedledger.secagg.messages import Domain
from tests.aggregator.roundkit import DEADLINE, NOW, OPENED, snapshot

DP = {"dp_enabled": True, "dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0, "dp_epsilon_budget": 10.0}


class Untouchable:
    """A blob store the close must not read: nothing is unmasked."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the close touched the blob store ({name}) though it must unmask nothing")


def _close(masked: list[int], *, quorum: int, dp_rounds_spent: int = 0) -> tuple[Any, list[Any]]:
    round_ = Round(
        id=7, opened_at=OPENED, deadline=DEADLINE, quorum=quorum, extensions=0, params=snapshot(**DP)
    )
    groups = [
        SecAggGroup(round_id=7, group_index=k, members=[], threshold=2, group_id="0x")
        for k in range(len(masked))
    ]
    messages = {
        k: [SecAggMessage(round_id=7, group_index=k, step=SecAggStep.masked) for _ in range(count)]
        for k, count in enumerate(masked)
    }
    state = SecAggRound(round_id=7, group_size=3, clip=8.0, dimension=15, failure_reason=None)
    inputs = Inputs(round_, [], {}, {}, ModelVersion(id=1, spec={}), {}, dp_rounds_spent)
    return compute_secure(
        inputs,
        SecureInputs(state, groups, messages),
        Untouchable(),  # type: ignore[arg-type]
        (np.zeros((0, 4)), np.zeros(0)),
        np.random.default_rng(0),
        NOW,
        Domain(31337, "0x" + "00" * 20),
    )


def test_a_dp_round_short_of_members_even_if_all_were_unmasked_unmasks_none() -> None:
    # One group reached its threshold with 2 masked inputs; the other has 1 (it releases nothing).
    result, outcomes = _close([2, 1], quorum=3)
    assert result.status is CloseStatus.failed and outcomes == []
    assert "nothing was unmasked: at most 2 updates" in (result.reason or "")


def test_a_dp_round_over_budget_unmasks_none() -> None:
    result, outcomes = _close([3, 3], quorum=3, dp_rounds_spent=50)
    assert result.status is CloseStatus.failed and outcomes == []
    assert "nothing was unmasked" in (result.reason or "") and "over the governed budget" in (
        result.reason or ""
    )


@pytest.mark.parametrize("spent", [0, 2])
def test_within_budget_and_members_the_close_goes_on_to_unmask(
    spent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    unmasked: list[int] = []

    def unmask_all(secure: SecureInputs, *args: Any) -> tuple[list[Any], list[Any]]:
        unmasked.append(len(secure.groups))
        return [], []

    monkeypatch.setattr(secure_close, "unmask_all", unmask_all)
    result, _ = _close([3, 3], quorum=3, dp_rounds_spent=spent)
    assert unmasked == [2]
    # Nothing came out of this stand-in unmasking: the close's own count check fails the round after it.
    assert result.status is CloseStatus.failed and "0 updates were unmasked" in (result.reason or "")
