"""The secure close under DP decides before unmasking (pure: transient rows, no services): a round that
could not be aggregated, or would exceed the budget, unmasks no group (each unmasked sum is a release); a
round that fails after unmasking some is charged for what it released."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aggregator.round.compute import ClientMeta, CloseStatus, RoundResult
from aggregator.round.params import RoundParams
from aggregator.round.secure import SecureGroup, release_charge
from aggregator.worker import secure_close
from aggregator.worker.close_inputs import Inputs
from aggregator.worker.secure_close import GroupOutcome, SecureClose, SecureInputs, compute_secure
from db.models import ModelVersion, Round, SecAggGroup, SecAggMessage, SecAggRound, SecAggStep
from fedledger.privacy import epsilon_of
from fedledger.secagg.messages import Domain
from tests.aggregator.roundkit import DEADLINE, NOW, OPENED, snapshot

DP = {"dp_enabled": True, "dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0, "dp_epsilon_budget": 10.0}


class Untouchable:
    """A blob store the close must not read: nothing is unmasked."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the close touched the blob store ({name}) though it must unmask nothing")


def _close(masked: list[int], *, quorum: int, dp_rounds_spent: int = 0) -> SecureClose:
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
    closed = _close([2, 1], quorum=3)
    result = closed.result
    assert result.status is CloseStatus.failed and closed.outcomes == [] and closed.failed_release is None
    assert "nothing was unmasked: at most 2 updates" in (result.reason or "")


def test_a_dp_round_over_budget_unmasks_none() -> None:
    closed = _close([3, 3], quorum=3, dp_rounds_spent=50)
    result = closed.result
    assert result.status is CloseStatus.failed and closed.outcomes == [] and closed.failed_release is None
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
    closed = _close([3, 3], quorum=3, dp_rounds_spent=spent)
    assert unmasked == [2]
    # Nothing came out of this stand-in unmasking: the close's own count check fails the round after it,
    # and with no sum released there is nothing to charge.
    result = closed.result
    assert result.status is CloseStatus.failed and "0 updates were unmasked" in (result.reason or "")
    assert closed.failed_release is None


def _member(k: int) -> ClientMeta:
    return ClientMeta(k, k, "0x" + f"{k:040x}", 10, NOW, 50.0)


@pytest.mark.parametrize("spent", [0, 2])
def test_a_dp_round_that_fails_after_unmasking_a_group_is_charged_for_it(
    spent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both groups reached their threshold, so the close unmasks; only the first could be unmasked (the
    second's reveals were missing), which leaves the round short of its 6 members: it fails, charged for the
    first group's sum exactly as release_charge prices it (3 survivors at threshold 2)."""
    rng = np.random.default_rng(0)
    # What the first group's members would send under DP: noise std 1/sqrt(2) each, far above a clipped update.
    noised = rng.normal(0.0, 1.0 / np.sqrt(2), (3, 4_000)).sum(axis=0).astype(np.float32) / 3
    members = tuple(_member(k) for k in (1, 2, 3))
    unmasked = SecureGroup(members, noised, threshold=2)

    def unmask_all(secure: SecureInputs, *args: Any) -> tuple[list[Any], list[Any]]:
        return [unmasked], [
            GroupOutcome(0, tuple(m.address for m in members), tuple(m.address for m in members), (), "ab"),
            GroupOutcome(1, (), failure_reason="TooManyDropouts: only 1 members revealed"),
        ]

    monkeypatch.setattr(secure_close, "unmask_all", unmask_all)
    closed = _close([3, 3], quorum=6, dp_rounds_spent=spent)
    result, charge = closed.result, closed.failed_release
    assert result.status is CloseStatus.failed and charge is not None
    params = RoundParams.from_snapshot(snapshot(**DP))
    priced = release_charge(params, spent, [(3, 2)])
    assert priced is not None and not isinstance(priced, str)
    assert charge.accountant.epsilon_spent == pytest.approx(priced.accountant.epsilon_spent)
    assert charge.worst_multiplier == pytest.approx(np.sqrt(3 / 2))
    assert charge.accountant.epsilon_spent == pytest.approx(
        epsilon_of([(1.0, spent), (float(np.sqrt(3 / 2)), 1)], 1.0, 1e-5)
    )
    assert "3 updates were unmasked in 1 groups, fewer than the 6" in (result.reason or "")
    assert "charged to the privacy accountant" in (result.reason or "")
    assert [o.group_index for o in closed.outcomes] == [0, 1]


def test_a_dp_round_the_computation_refuses_after_unmasking_is_charged_for_the_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Enough members unmasked, but the round computation fails afterwards (e.g. it refuses a zero
    aggregate): the sums were released all the same, so the failure carries their charge."""
    rng = np.random.default_rng(1)
    groups = []
    for g in range(2):
        members = tuple(_member(3 * g + k) for k in (1, 2, 3))
        noised = rng.normal(0.0, 1.0 / np.sqrt(2), (3, 4_000)).sum(axis=0).astype(np.float32) / 3
        groups.append(SecureGroup(members, noised, threshold=2))

    def unmask_all(secure: SecureInputs, *args: Any) -> tuple[list[Any], list[Any]]:
        return groups, [
            GroupOutcome(g, tuple(m.address for m in s.members), tuple(m.address for m in s.members))
            for g, s in enumerate(groups)
        ]

    def refused(*args: Any) -> RoundResult:
        return RoundResult(CloseStatus.failed, "the aggregate is zero", rejected=((9, "bad"),))

    monkeypatch.setattr(secure_close, "unmask_all", unmask_all)
    monkeypatch.setattr(secure_close, "server_data", lambda holdout: (holdout, holdout))
    monkeypatch.setattr(secure_close, "reference_update", lambda *args: None)
    monkeypatch.setattr(secure_close, "compute_secure_round", refused)
    closed = _close([3, 3], quorum=6)
    result, charge = closed.result, closed.failed_release
    assert result.status is CloseStatus.failed and charge is not None
    assert result.reason is not None and result.reason.startswith("the aggregate is zero; the 2 group sum(s)")
    assert result.rejected == ((9, "bad"),)
    assert charge.worst_multiplier == pytest.approx(np.sqrt(3 / 2))
    assert charge.accountant.epsilon_spent == pytest.approx(
        epsilon_of([(float(np.sqrt(3 / 2)), 1)], 1.0, 1e-5)
    )
