"""The Training page's aggregation mode (issue 24): clear or secure with its group size, and under secure
aggregation the members' outcomes and every group's outcome, rendered by Streamlit's AppTest against a real
API and the dev chain."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, select

from db.base import utcnow
from db.models import (
    Aggregation,
    Contribution,
    Participant,
    Round,
    RoundStatus,
    SecAggGroup,
    SecAggMember,
    SecAggPhase,
    SecAggRound,
)
from db.session import session_factory
from fedledger.chain.params import WAD
from fedledger.config import Settings
from fedledger.evidence import Evidence
from tests.middleware.conftest import ORGS, World, address_of
from tests.visualization.conftest import ApiServer, close_round_as_the_worker_would
from tests.visualization.test_pages import assert_readable, http_login, run_page, texts
from visualization.secure import RoundMode, group_outcome, members_frame

pytestmark = pytest.mark.chain


def test_a_clear_round_says_so(world: World, dashboard_env: ApiServer) -> None:
    closed = close_round_as_the_worker_would(world, dashboard_env.settings)
    at = run_page("Training")
    assert f"Round {closed.round_id}: **clear**" in texts(at)
    assert "sealed to the server" in texts(at)
    # No members' table: the rounds table is the only one.
    assert len(at.dataframe) == 1


def test_a_secure_round_shows_its_group_size_and_each_members_outcome(
    world: World, dashboard_env: ApiServer
) -> None:
    settings = dashboard_env.settings
    closed = close_round_as_the_worker_would(world, settings)
    flagged = closed.excluded[0]
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:  # the round opened in the mode and its close wrote group outcomes
        round_ = session.get(Round, closed.round_id)
        assert round_ is not None
        round_.params = {**round_.params, "secure_group_size": 3, "secure_clip": 8.0, "dp_enabled": True}
        participant = session.scalars(select(Participant).where(Participant.address == flagged)).one()
        contribution = session.scalars(
            select(Contribution).where(
                Contribution.round_id == closed.round_id, Contribution.participant_id == participant.id
            )
        ).one()
        contribution.evidence = [Evidence.group_flagged.value]
        contribution.evidence_detail = {Evidence.group_flagged.value: "group of 3: direction_outlier"}
    at = run_page("Training")
    shown = texts(at)
    assert f"Round {closed.round_id}: **secure aggregation, groups of 3 + DP**" in shown
    assert "only the sum of each group of at least 3 members" in shown
    assert "noise before masking" in shown
    assert "ε spent after this round: 1.25" in shown
    figures = {m.label: m.value for m in at.metric}
    assert figures["Members in a group sum"] == "3"
    assert figures["Kept"] == "2"
    assert figures["Flagged (with their group)"] == "1"
    assert figures["Rewards (DALLA)"] == f"{sum(closed.reward_wei.values()) / WAD:,.2f}"
    members = at.dataframe[1].value
    assert sorted(members["Flagged"]) == ["no", "no", "yes"]
    row = members[members["Flagged"] == "yes"].iloc[0]
    assert "secure-aggregation group's sum was flagged" in row["Evidence or reason"]
    assert "group of 3: direction_outlier" in row["Evidence or reason"]
    assert row["Kept"] == "no" and row["Reward (DALLA)"] == "0"
    kept = members[members["Kept"] == "yes"]
    assert sorted(kept["Reward (DALLA)"]) == ["150", "75"]


def test_the_mode_reads_old_snapshots_as_clear_and_a_members_own_group_joins_the_scores() -> None:
    assert RoundMode.of({}) == RoundMode(0, None, False)
    assert RoundMode.of({"secure_group_size": 0, "secure_clip": 1.0}).label() == "clear"
    mode = RoundMode.of({"secure_group_size": 5, "secure_clip": 2.5, "dp_enabled": False})
    assert (mode.secure, mode.clip, mode.label()) == (True, 2.5, "secure aggregation, groups of 5")
    scored = members_frame([], {}, 1)
    assert scored.empty
    outcome = group_outcome(["0xA", "0xB", "0xC"], 2, scored.assign(), {"0xa": "org a"})
    assert (outcome.in_sum, outcome.left_out, outcome.reward_wei) == (0, 3, 0)
    assert list(outcome.members["organization"]) == ["org a", "0xB", "0xC"]


def test_a_signed_in_member_sees_its_own_group_its_sum_and_its_reward_split(
    world: World, dashboard_env: ApiServer
) -> None:
    settings = dashboard_env.settings
    closed = close_round_as_the_worker_would(world, settings)
    # ORGS[3] was drawn into the group with the three scored organizations and dropped out.
    group = sorted([*closed.kept, *closed.excluded, address_of(ORGS[3])], key=str.lower)
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:  # the rows a closed secure round has (fedledger.domain.secagg)
        round_ = session.get(Round, closed.round_id)
        assert round_ is not None
        round_.params = {**round_.params, "secure_group_size": 3}
        session.add(
            SecAggRound(
                round_id=closed.round_id,
                group_size=3,
                clip=1.0,
                dimension=650,
                phase=SecAggPhase.closed,
                phase_deadline=utcnow(),
                seed_block=1,
                seed_block_hash="0x" + "11" * 32,
                seed="0x" + "22" * 32,
                left_out=[],
            )
        )
        for address in group:
            participant = session.scalars(select(Participant).where(Participant.address == address)).one()
            session.add(
                SecAggMember(
                    round_id=closed.round_id,
                    participant_id=participant.id,
                    address=address,
                    signature="0x",
                    group_index=0,
                )
            )
        session.add(
            SecAggGroup(
                round_id=closed.round_id,
                group_index=0,
                members=group,
                threshold=3,
                group_id="0x" + "33" * 32,
            )
        )
    signed_out = run_page("Training")
    assert "Sign in with your organization's wallet to see your own group." in texts(signed_out)

    at = run_page("Training", auth=http_login(dashboard_env, ORGS[0]))
    assert "**Your group**: 4 members, threshold 3" in texts(at)
    figures = {m.label: m.value for m in at.metric}
    assert figures["In the group's sum"] == "3"
    assert figures["Not in the sum"] == "1"
    assert figures["Group reward (DALLA)"] == f"{sum(closed.reward_wei.values()) / WAD:,.2f}"
    own = at.dataframe[3].value
    assert list(own["In the sum"]) == ["no" if a == address_of(ORGS[3]) else "yes" for a in group]
    dropped = own[own["In the sum"] == "no"].iloc[0]
    assert (dropped["Reward (DALLA)"], dropped["Evidence or reason"]) == ("0", "no update in the group's sum")

    outsider = run_page("Training", auth=http_login(dashboard_env, ORGS[4]))
    assert "Your organization was in no group of this round." in texts(outsider)


def _secure_rows(
    settings: Settings, round_id: int, groups: list[tuple[list[str], dict[str, Any]]], **state: Any
) -> None:
    """The rows a closed secure round has (fedledger.domain.secagg, the close's write_outcomes): its state
    and, per group, its members and outcome."""
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:
        round_ = session.get(Round, round_id)
        assert round_ is not None
        round_.params = {**round_.params, "secure_group_size": 3}
        session.add(
            SecAggRound(
                round_id=round_id,
                group_size=3,
                clip=1.0,
                dimension=650,
                phase=SecAggPhase.closed,
                phase_deadline=utcnow(),
                seed_block=7,
                seed_block_hash="0x" + "11" * 32,
                seed="0x" + "22" * 32,
                left_out=[],
                **state,
            )
        )
        for index, (members, outcome) in enumerate(groups):
            for address in members:  # each registered member's join, drawn into this group
                participant = session.scalars(
                    select(Participant).where(Participant.address == address)
                ).first()
                if participant is not None:
                    session.add(
                        SecAggMember(
                            round_id=round_id,
                            participant_id=participant.id,
                            address=address,
                            signature="0x",
                            group_index=index,
                        )
                    )
            session.add(
                SecAggGroup(
                    round_id=round_id,
                    group_index=index,
                    members=members,
                    threshold=2,
                    group_id="0x" + f"{index:064x}",
                    **outcome,
                )
            )


def test_everyone_sees_each_groups_outcome_and_no_groups_mean(world: World, dashboard_env: ApiServer) -> None:
    settings = dashboard_env.settings
    closed = close_round_as_the_worker_would(world, settings)
    # Group 0: the two kept organizations in its sum, ORGS[3] dropped out; group 1 (the third scored one with
    # the two others) could not be unmasked.
    first = sorted([*closed.kept, address_of(ORGS[3])], key=str.lower)
    second = sorted([closed.excluded[0], address_of(ORGS[4]), "0x" + "0" * 38 + "a1"], key=str.lower)
    reason = "TooManyDropouts: only 1 members revealed, fewer than the threshold 2"
    _secure_rows(
        settings,
        closed.round_id,
        [
            (first, {"survivors": closed.kept, "dropped": [address_of(ORGS[3])], "mean_hash": "ab" * 32}),
            (second, {"failure_reason": reason}),
        ],
    )
    at = run_page("Training")  # signed out: the groups are for everyone
    shown = texts(at)
    assert "**Groups**: 2 drawn" in shown and "Drawn from the hash of block 7." in shown
    assert "Sign in with your organization's wallet to see your own group." in shown
    table = at.dataframe[2].value
    assert_readable(table)
    assert list(table["Group"]) == [0, 1]
    assert list(table["Threshold"]) == ["2 of 3", "2 of 3"]
    assert list(table["In the sum"]) == ["2", "—"] and list(table["Dropped"]) == ["1", "—"]
    assert list(table["Outcome"]) == ["unmasked", f"failed: {reason}"]
    assert list(table["Kept"]) == ["yes", "—"] and list(table["Flagged"]) == ["no", "—"]
    assert list(table["Reward (DALLA)"]) == ["225", "0"]
    names = {address_of(i).lower(): f"org {i}" for i in ORGS}
    assert table["Members"][0] == ", ".join(names.get(a.lower(), a) for a in first)
    assert "ab" * 32 not in table.to_string() and "mean" not in " ".join(table.columns).lower()


def test_a_failed_dp_round_shows_its_charge_and_an_open_round_withholds_members(
    world: World, dashboard_env: ApiServer
) -> None:
    settings = dashboard_env.settings
    closed = close_round_as_the_worker_would(world, settings)
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:  # the round failed after unmasking: no aggregation, its charge kept
        round_ = session.get(Round, closed.round_id)
        assert round_ is not None
        round_.status, round_.failure_reason = RoundStatus.failed, "3 updates were unmasked in 1 groups"
        round_.params = {**round_.params, "dp_enabled": True}
        session.execute(delete(Aggregation).where(Aggregation.round_id == closed.round_id))
        session.execute(delete(Contribution).where(Contribution.round_id == closed.round_id))
    group = sorted([*closed.kept, closed.excluded[0]], key=str.lower)
    _secure_rows(
        settings,
        closed.round_id,
        [(group, {"survivors": group, "dropped": []})],
        epsilon_spent=0.84,
        dp_noise_std=0.4,
        dp_charge={"dp_effective_noise_multiplier": 1.22},
    )
    at = run_page("Training")
    shown = texts(at)
    assert "that release is charged to the privacy budget (ε spent after this round: 0.84)" in shown
    # The round history counts the charge as spent, though the round has no aggregation.
    assert "ε spent after this round: 0.84 (the accountant's total so far)" in shown
    # A member's own group: unmasked, its three members in the sum, none scored or paid.
    own = run_page("Training", auth=http_login(dashboard_env, ORGS[0]))
    assert "What became of it: unmasked." in texts(own)
    figures = {m.label: m.value for m in own.metric}
    assert (figures["In the group's sum"], figures["Not in the sum"]) == ("3", "0")
    mine = own.dataframe[-1].value
    assert set(mine["In the sum"]) == {"—"} and set(mine["Reward (DALLA)"]) == {"0"}
    assert set(mine["Evidence or reason"]) == {
        "not scored or paid: the round failed after its group's sum was unmasked"
    }
    assert list(at.dataframe[0].value["ε spent"]) == ["0.84"]

    with sessions.begin() as session:  # the same rows while the round is still open
        round_ = session.get(Round, closed.round_id)
        assert round_ is not None
        round_.status = RoundStatus.open
    at = run_page("Training")
    table = at.dataframe[-1].value
    assert list(table["Members"]) == ["shown once the round is closed"]


def test_groups_of_a_round_that_ended_before_unmasking_read_as_skipped(
    world: World, dashboard_env: ApiServer
) -> None:
    settings = dashboard_env.settings
    closed = close_round_as_the_worker_would(world, settings)
    reason = "nothing was unmasked: round 1 would bring epsilon to 10.2, over the governed budget 10"
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:  # a DP round whose budget check refused to unmask any group
        round_ = session.get(Round, closed.round_id)
        assert round_ is not None
        round_.status, round_.failure_reason = RoundStatus.failed, reason
        session.execute(delete(Aggregation).where(Aggregation.round_id == closed.round_id))
        session.execute(delete(Contribution).where(Contribution.round_id == closed.round_id))
    group = sorted([*closed.kept, closed.excluded[0]], key=str.lower)
    _secure_rows(settings, closed.round_id, [(group, {})])
    table = run_page("Training").dataframe[-1].value
    assert list(table["Outcome"]) == [f"not unmasked, the round ended first: {reason}"]
    assert (list(table["In the sum"]), list(table["Kept"])) == (["—"], ["—"])
    assert len(table["Members"][0].split(", ")) == 3  # the round is over: its members are shown
