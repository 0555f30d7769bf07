"""A reward's status from the round's on-chain record (pure: the order the contract checks things in)."""

from __future__ import annotations

from fedledger.chain.reader import RewardStatus, RoundRewards, reward_status

ROOT = b"\x11" * 32
AT = 1_800_000_000


def record(*, cancelled: bool = False, root: bytes = ROOT, claimable_at: int = AT) -> RoundRewards:
    return RoundRewards(root, total=10, claimed=0, claimable_at=claimable_at, cancelled=cancelled)


def test_the_window_decides_until_the_reward_is_claimed_or_cancelled() -> None:
    assert reward_status(record(), claimed=False, now=AT - 1) is RewardStatus.in_dispute_window
    assert reward_status(record(), claimed=False, now=AT) is RewardStatus.claimable  # block.timestamp >= at
    assert reward_status(record(), claimed=True, now=AT + 5) is RewardStatus.claimed
    assert reward_status(record(claimable_at=0), claimed=False, now=0) is RewardStatus.claimable


def test_a_cancelled_round_is_cancelled_inside_its_window_and_after_it() -> None:
    for now in (AT - 1, AT, AT + 86_400):
        assert reward_status(record(cancelled=True), claimed=False, now=now) is RewardStatus.cancelled


def test_a_round_the_chain_does_not_record_has_no_status() -> None:
    assert reward_status(record(root=b"\x00" * 32, claimable_at=0), claimed=False, now=AT) is None


def test_statuses_are_the_wire_strings() -> None:
    assert [s.value for s in RewardStatus] == ["claimable", "in_dispute_window", "cancelled", "claimed"]
