"""Helpers of the secure-aggregation tests on the live stack: governance of the mode, a member's view,
stepping members through the protocol."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from client.secure import SecureRound, SecureRoundError
from fedledger.chain import governance
from fedledger.devkeys import dev_private_key
from fedledger.secagg.messages import Domain
from fedledger.secagg.protocol import GroupContext
from tests.worker.conftest import ORGS, Platform, login


def mine(platform: Platform, blocks: int = 1) -> None:
    for _ in range(blocks):
        platform.w3.provider.make_request("evm_mine", [])


def govern(platform: Platform, name: str, raw: int) -> None:
    """Pass a governance proposal setting ``name`` to ``raw`` (propose, vote, queue, execute)."""
    w3, deployments = platform.w3, platform.deployments
    proposal = governance.parameter_change(w3, deployments, name, raw, f"Set {name} to {raw}")
    proposer = dev_private_key(ORGS[0])
    pid = governance.propose(w3, deployments, proposer, proposal)
    mine(platform, 2)
    for index in ORGS[:5]:
        governance.vote(w3, deployments, dev_private_key(index), pid, governance.VoteType.For)
    mine(platform, 21)
    governance.queue(w3, deployments, proposer, proposal)
    w3.provider.make_request("evm_increaseTime", [11])
    mine(platform, 1)
    governance.execute(w3, deployments, proposer, proposal)
    assert governance.state(w3, deployments, pid) == governance.ProposalState.Executed


class Members:
    """Signed-in organizations of one secure round, reading and posting through the API."""

    def __init__(self, platform: Platform, round_id: int, indices: tuple[int, ...]) -> None:
        self.platform, self.round_id = platform, round_id
        self.headers = {i: login(platform.client, i) for i in indices}

    def view(self, index: int) -> dict[str, Any]:
        response = self.platform.client.get(f"/v1/rounds/{self.round_id}/secagg", headers=self.headers[index])
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post(self, index: int, step: str, body: dict[str, Any]) -> Any:
        return self.platform.client.post(
            f"/v1/rounds/{self.round_id}/secagg/{step}", json=body, headers=self.headers[index]
        )


def context_of(view: dict[str, Any]) -> GroupContext:
    """The group context a member builds from its view of the round."""
    group = view["group"]
    return GroupContext(
        Domain(view["chain_id"], view["verifying_contract"]),
        view["round_id"],
        bytes.fromhex(view["seed"][2:]),
        tuple(group["members"]),
        group["threshold"],
        view["dimension"],
        view["clip"],
    )


def small_update(dimension: int, seed: int, scale: float = 0.01) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(dimension) * scale).astype(np.float32)


class _DroppedOut(Exception):
    """The member's view shows a phase it no longer takes part in: it stops before sending anything."""


def _stopping_at(member: SecureRound, phases: set[str]) -> None:
    # The dropout is decided on the very view the member's step acts on: a check on an earlier read would
    # race with a phase that ends (at its deadline) between that read and the step's own.
    read = member.api.secagg

    def view(round_id: int) -> Any:
        seen = read(round_id)
        if seen.phase not in phases:
            raise _DroppedOut(seen.phase)
        return seen

    member.api.secagg = view  # type: ignore[method-assign]  # undone when the drive ends


def drive(members: dict[int, SecureRound], stops: dict[int, set[str]]) -> dict[int, Exception]:
    """Step every member until each is done, dropped out (``stops``: the phases it still takes part in)
    or refused by its own checks (returned with the error)."""
    for i, phases in stops.items():
        _stopping_at(members[i], phases)
    active: set[int] = set(members)
    refused: dict[int, Exception] = {}
    deadline = time.monotonic() + 240
    try:
        while any(not members[i].done for i in active):
            assert time.monotonic() < deadline, {
                i: members[i].last.phase if members[i].last else None for i in active
            }
            for i in sorted(active):
                try:
                    members[i].step()
                except _DroppedOut:
                    active.discard(i)  # dropped out: it never sends again
                except SecureRoundError as exc:
                    refused[i] = exc
                    active.discard(i)
            time.sleep(0.5)
    finally:
        for i in stops:
            del members[i].api.secagg  # the instance's wrapper: the class's method again
    return refused


def groups_of(members: dict[int, SecureRound]) -> dict[int, list[int]]:
    """Members by group index, once the groups are drawn (after the seed block is mined)."""
    groups: dict[int, list[int]] = {}
    for i, m in members.items():
        view = m.api.secagg(m.round_id)
        assert view.phase == "keys" and view.group is not None
        groups.setdefault(view.group.index, []).append(i)
    return groups
