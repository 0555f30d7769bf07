"""The secure-aggregation mode on the live stack (issue 24): a round's phases, groups and stored messages.

A round opened while the governed ``secure_group_size`` is at least 3 gets a :class:`SecAggRound`. Its
members then go through the phases, each ending when every expected member has sent its message or at the
phase's deadline (checked on every request and by the worker's beat, :func:`advance`):

1. ``join``: each organization the round waits for (its cohort, else every active one) signs ``SecAggJoin``.
   When the phase ends the chain's next block number B is recorded; once B is mined the groups are drawn from
   ``group_seed(blockhash(B), round)`` (:func:`fedledger.secagg.groups.assign_tiers`): nobody who joined
   could know that hash, so nobody picks its group-mates. The seed and B are stored so anyone recomputes it.
2. ``keys``, ``shares``, ``masked``, ``unmask``: the protocol's four messages (:mod:`fedledger.secagg.wire`),
   each checked on arrival through the group's :class:`~fedledger.secagg.protocol.GroupTranscript` rebuilt
   from what is stored (the same checks as the protocol module), and stored as sent. Expected senders of a
   step are the senders of the step before (of ``keys``: every grouped member).
3. ``closed``: the round's close (the worker) rebuilds each transcript with the masked vectors and unmasks.

Only what members send is stored: signed public keys, sealed share boxes, masked vectors (blobs) and the
shares revealed at step 4. Writes are idempotent: the same message again is a no-op, a different one from
the same member for the same step is refused (409). A masked input also gets an ``updates`` row (its blob
the masked vector, sealed to no server key) so that the close, the contributions and the dashboard find it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    Aggregation,
    Contribution,
    ModelVersion,
    Participant,
    ParticipantStatus,
    Round,
    RoundStatus,
    SecAggGroup,
    SecAggMember,
    SecAggMessage,
    SecAggPhase,
    SecAggRound,
    SecAggStep,
    Update,
)
from fedledger.chain.params import ProtocolParams
from fedledger.crypto.addresses import checksummed
from fedledger.domain import audit
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from fedledger.payload import parameter_count
from fedledger.secagg import wire
from fedledger.secagg.errors import SecAggError
from fedledger.secagg.groups import MIN_GROUP_SIZE, assign_tiers, group_seed
from fedledger.secagg.messages import Domain, check_signer
from fedledger.secagg.noise import group_range, noise_for_round
from fedledger.secagg.protocol import GroupContext, GroupTranscript, MaskedInput

ORDER = (SecAggPhase.keys, SecAggPhase.shares, SecAggPhase.masked, SecAggPhase.unmask)
_STEP_OF = {SecAggPhase(s.value): s for s in SecAggStep}
_BEFORE = {
    SecAggStep.shares: SecAggStep.keys,
    SecAggStep.masked: SecAggStep.shares,
    SecAggStep.unmask: SecAggStep.masked,
}


class Blocks(Protocol):
    """The chain's blocks, as far as the group seed needs them."""

    def latest(self) -> int:
        """The latest block's number."""
        ...

    def hash_of(self, number: int) -> bytes | None:
        """Block ``number``'s hash, None while it is not mined."""
        ...


class Web3Blocks:
    """:class:`Blocks` over a connected Web3 (the API's chain reader, the worker's gateway)."""

    def __init__(self, w3: Any) -> None:
        self.w3 = w3

    def latest(self) -> int:
        """The latest block's number."""
        return int(self.w3.eth.block_number)

    def hash_of(self, number: int) -> bytes | None:
        """Block ``number``'s hash, None while it is not mined."""
        if number > self.latest():
            return None
        return bytes(self.w3.eth.get_block(number)["hash"])


@dataclass(frozen=True)
class Timing:
    """How long each phase may last (settings ``secagg_join_seconds`` and ``secagg_step_seconds``)."""

    join_seconds: int
    step_seconds: int


@dataclass(frozen=True)
class Env:
    """What the phases need beyond the database: the signing domain, the chain's blocks and the timing."""

    domain: Domain
    blocks: Blocks
    timing: Timing


def threshold_of(size: int) -> int:
    """A group's Shamir threshold: the smallest strict majority (what GroupContext requires): the most
    dropouts a group survives while no server can collect both secrets of one member."""
    return size // 2 + 1


def group_size_of(params: ProtocolParams) -> int:
    """The governed group size (0: the clear mode); 1 and 2 are refused, as the close refuses them."""
    size = params.integer("secure_group_size") if "secure_group_size" in params else 0
    if 0 < size < MIN_GROUP_SIZE:
        raise Conflict(
            "invalid_secure_group_size",
            f"the governed secure_group_size is {size}: 0 (the clear mode) or at least {MIN_GROUP_SIZE} (a pair's "
            "sum shows each member the other's update); fix it through governance before opening a round",
        )
    return size


def start(
    session: Session, round_: Round, params: ProtocolParams, model: ModelVersion, timing: Timing
) -> SecAggRound | None:
    """In the round's opening transaction: its secure-aggregation state if the mode is on (None: clear)."""
    size = group_size_of(params)
    if size == 0:
        return None
    dimension = parameter_count(model.spec)
    clip = float(params.real("secure_clip")) if "secure_clip" in params else 1.0
    # Under DP each member adds its share of the noise before masking, so the range must hold it too; the
    # share is largest in the smallest groups (size s, the smallest threshold), which sizes it for all.
    noise = noise_for_round(params, size, threshold_of(size))
    state = SecAggRound(
        round_id=round_.id,
        group_size=size,
        clip=group_range(clip, noise, dimension),
        dimension=dimension,
        phase=SecAggPhase.joining,
        phase_deadline=round_.opened_at + timedelta(seconds=timing.join_seconds),
        left_out=[],
    )
    session.add(state)
    session.flush()
    return state


def state_of(session: Session, round_id: int, *, lock: bool = False) -> SecAggRound | None:
    """The round's secure-aggregation state (None for a clear round)."""
    return session.get(SecAggRound, round_id, with_for_update=lock)


def _locked(session: Session, round_id: int) -> SecAggRound:
    if session.get(Round, round_id) is None:
        raise NotFound("unknown_round", f"round {round_id} does not exist")
    state = state_of(session, round_id, lock=True)
    if state is None:
        raise Conflict(
            "clear_round",
            f"round {round_id} runs in the clear mode: submit a sealed update instead (the SDK's participate does)",
        )
    return state


# --- phases ------------------------------------------------------------------------------------------


def expected_joiners(session: Session, round_: Round) -> set[str]:
    """Lower-cased addresses the join phase waits for: the cohort, else every active organization seen
    since the round's ``active_since`` (the same set an early close of a clear round waits for)."""
    if round_.cohort is not None:
        return set(round_.cohort)
    query = select(Participant).where(Participant.status == ParticipantStatus.active)
    return {
        p.address.lower()
        for p in session.scalars(query)
        if round_.active_since is None or (p.last_seen_at or p.created_at) >= round_.active_since
    }


def _senders(session: Session, round_id: int, step: SecAggStep) -> set[str]:
    return {
        s.lower()
        for s in session.scalars(
            select(SecAggMessage.sender).where(SecAggMessage.round_id == round_id, SecAggMessage.step == step)
        )
    }


def _members(session: Session, round_id: int) -> list[SecAggMember]:
    return list(
        session.scalars(
            select(SecAggMember).where(SecAggMember.round_id == round_id).order_by(SecAggMember.id)
        )
    )


def _expected(session: Session, state: SecAggRound, step: SecAggStep) -> set[str]:
    if step is SecAggStep.keys:
        return {m.address.lower() for m in _members(session, state.round_id) if m.group_index is not None}
    return _senders(session, state.round_id, _BEFORE[step])


def advance(session: Session, state: SecAggRound, env: Env, now: datetime) -> bool:
    """Move the (locked) state through every phase that has ended; True if it reached ``closed`` now."""
    before = state.phase
    while state.phase is not SecAggPhase.closed:
        if state.phase is SecAggPhase.joining:
            if not _end_join(session, state, env, now):
                break
            continue
        step = _STEP_OF[state.phase]
        if not (
            _expected(session, state, step) <= _senders(session, state.round_id, step)
            or now >= state.phase_deadline
        ):
            break
        position = ORDER.index(state.phase)
        state.phase = ORDER[position + 1] if position + 1 < len(ORDER) else SecAggPhase.closed
        state.phase_deadline = now + timedelta(seconds=env.timing.step_seconds)
        audit.append(session, "system", "secagg.phase", str(state.round_id), {"phase": state.phase.value})
    return before is not SecAggPhase.closed and state.phase is SecAggPhase.closed


def _end_join(session: Session, state: SecAggRound, env: Env, now: datetime) -> bool:
    round_ = session.get(Round, state.round_id)
    assert round_ is not None
    members = _members(session, state.round_id)
    if state.seed_block is None:
        joined = {m.address.lower() for m in members}
        if not (expected_joiners(session, round_) <= joined or now >= state.phase_deadline):
            return False
        if len(members) < state.group_size:
            state.phase = SecAggPhase.closed
            state.failure_reason = (
                f"{len(members)} organizations joined, fewer than one group of {state.group_size}: the round "
                "has no group to aggregate"
            )
            audit.append(
                session, "system", "secagg.fail", str(state.round_id), {"reason": state.failure_reason}
            )
            return True
        # The next block: mined after every join on record, so no member knew its hash when it joined.
        state.seed_block = env.blocks.latest() + 1
        audit.append(session, "system", "secagg.seed_block", str(state.round_id), {"block": state.seed_block})
    block_hash = env.blocks.hash_of(state.seed_block)
    if block_hash is None:
        return False
    seed = group_seed(block_hash, state.round_id)
    floor = float(round_.params.get("min_reputation", 10.0))
    participants = {
        p.id: p
        for p in session.scalars(
            select(Participant).where(Participant.id.in_([m.participant_id for m in members]))
        )
    }
    eligible = [m.address for m in members if participants[m.participant_id].reputation >= floor]
    below = [m.address for m in members if participants[m.participant_id].reputation < floor]
    groups, left_out = assign_tiers(seed, eligible, below, state.group_size)
    index_of = {a.lower(): g for g, members_ in enumerate(groups) for a in members_}
    for m in members:
        m.group_index = index_of.get(m.address.lower())
    state.seed_block_hash = "0x" + block_hash.hex()
    state.seed = "0x" + seed.hex()
    state.left_out = list(left_out)
    for g, members_ in enumerate(groups):
        context = GroupContext(
            env.domain,
            state.round_id,
            seed,
            members_,
            threshold_of(len(members_)),
            state.dimension,
            state.clip,
        )
        session.add(
            SecAggGroup(
                round_id=state.round_id,
                group_index=g,
                members=list(context.members),
                threshold=context.threshold,
                group_id="0x" + context.group_id.hex(),
            )
        )
    state.phase = SecAggPhase.keys
    state.phase_deadline = now + timedelta(seconds=env.timing.step_seconds)
    audit.append(
        session,
        "system",
        "secagg.groups",
        str(state.round_id),
        {
            "seed_block": state.seed_block,
            "seed": state.seed,
            "groups": len(groups),
            "left_out": list(left_out),
        },
    )
    return True


def advance_all(session: Session, env: Env, now: datetime) -> list[int]:
    """The beat's half: advance every open round's protocol past its ended phases; the rounds that reached
    ``closed`` (their close is due now)."""
    open_ids = session.scalars(
        select(SecAggRound.round_id)
        .join(Round, Round.id == SecAggRound.round_id)
        .where(Round.status == RoundStatus.open, SecAggRound.phase != SecAggPhase.closed)
    ).all()
    closed = []
    for round_id in open_ids:
        state = state_of(session, round_id, lock=True)
        if state is not None and advance(session, state, env, now):
            closed.append(round_id)
    return closed


# --- members' requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """A message stored (or the same one found stored): ``closed`` means the protocol just ended, so the
    caller requests the round's close after the commit."""

    step: str
    sender: str
    replayed: bool
    closed: bool
    receipt_id: str | None = None


def _participant(session: Session, address: str) -> Participant:
    participant = session.scalars(
        select(Participant).where(Participant.address == checksummed(address))
    ).first()
    if participant is None:
        raise Forbidden("not_registered", f"{address} is not a registered organization")
    return participant


def join(session: Session, env: Env, round_id: int, address: str, signature: str, now: datetime) -> Accepted:
    """Record an organization's signed ``SecAggJoin`` (its commitment to the round before groups exist)."""
    state = _locked(session, round_id)
    closed = advance(session, state, env, now)
    round_ = session.get(Round, round_id)
    assert round_ is not None
    participant = _participant(session, address)
    existing = session.scalars(
        select(SecAggMember).where(
            SecAggMember.round_id == round_id, SecAggMember.participant_id == participant.id
        )
    ).first()
    if existing is not None:
        if existing.signature.lower() != signature.lower():
            raise Conflict(
                "already_joined",
                f"{participant.address} already joined round {round_id} with another signature",
            )
        return Accepted("join", participant.address, True, closed)
    if state.phase is not SecAggPhase.joining or state.seed_block is not None:
        raise Conflict(
            "wrong_phase",
            f"round {round_id}'s join phase is over ({state.phase.value}); take part in the next round",
        )
    if round_.status is not RoundStatus.open:
        raise Conflict("round_closed", f"round {round_id} is {round_.status.value}")
    if participant.status is not ParticipantStatus.active:
        raise Forbidden("not_active", f"{participant.address} is {participant.status.value}, not active")
    if round_.cohort is not None and participant.address.lower() not in round_.cohort:
        raise Forbidden("not_in_cohort", f"{participant.address} is not in round {round_id}'s cohort")
    try:
        check_signer(
            signature,
            participant.address,
            env.domain,
            "SecAggJoin",
            {"roundId": round_id, "modelVersion": round_.model_version_id},
        )
    except SecAggError as exc:
        raise Invalid("bad_signature", str(exc)) from exc
    session.add(
        SecAggMember(
            round_id=round_id,
            participant_id=participant.id,
            address=participant.address,
            signature=signature,
            joined_at=now,
        )
    )
    participant.last_seen_at = now
    session.flush()
    closed = advance(session, state, env, now) or closed
    return Accepted("join", participant.address, False, closed)


def context_of(state: SecAggRound, group: SecAggGroup, domain: Domain) -> GroupContext:
    """A group's :class:`GroupContext`, as its members build it from the round's view."""
    assert state.seed is not None
    return GroupContext(
        domain,
        state.round_id,
        bytes.fromhex(state.seed[2:]),
        tuple(group.members),
        group.threshold,
        state.dimension,
        state.clip,
    )


def groups_of(session: Session, round_id: int) -> list[SecAggGroup]:
    """The round's groups, in index order."""
    return list(
        session.scalars(
            select(SecAggGroup).where(SecAggGroup.round_id == round_id).order_by(SecAggGroup.group_index)
        )
    )


def messages_of(session: Session, round_id: int, group_index: int | None = None) -> list[SecAggMessage]:
    """The stored messages of a round (or one group), in arrival order."""
    query = select(SecAggMessage).where(SecAggMessage.round_id == round_id)
    if group_index is not None:
        query = query.where(SecAggMessage.group_index == group_index)
    return list(session.scalars(query.order_by(SecAggMessage.id)))


def transcript(
    context: GroupContext, messages: Sequence[SecAggMessage], vectors: Mapping[str, np.ndarray] | None = None
) -> GroupTranscript:
    """The group's transcript rebuilt from its stored messages, every message checked again in protocol order.

    ``vectors`` (masked vectors by blob hash): the worker's full rebuild; without, the masked inputs are
    recorded as their signed headers (all the API needs to check a reveal)."""
    t = GroupTranscript(context)
    by_step: dict[SecAggStep, list[SecAggMessage]] = {s: [] for s in SecAggStep}
    for m in messages:
        by_step[m.step].append(m)
    for m in by_step[SecAggStep.keys]:
        t.add_advert(wire.advert_from(m.body))
    for m in by_step[SecAggStep.shares]:
        t.add_bundle(wire.bundle_from(m.body))
    for m in by_step[SecAggStep.masked]:
        if vectors is None:
            header = wire.masked_from(m.body)
            header.verify(context, frozenset(t.bundles))
            t.masked[header.member.lower()] = header
        else:
            assert m.blob_hash is not None
            t.add_masked(wire.masked_from(m.body, vectors[m.blob_hash]))
    for m in by_step[SecAggStep.unmask]:
        t.add_reveal(wire.reveal_from(m.body))
    return t


def _body_hash(body: Mapping[str, Any], blob_hash: str | None) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + (blob_hash or "").encode()).hexdigest()


def _sender_field(step: SecAggStep) -> str:
    return "dealer" if step is SecAggStep.shares else "member"


def receive(
    session: Session,
    blobs: BlobStore,
    env: Env,
    round_id: int,
    address: str,
    step: SecAggStep,
    body: Mapping[str, Any],
    now: datetime,
    vector: bytes | None = None,
) -> Accepted:
    """Check one protocol message against the group's transcript and store it (idempotent, see the module)."""
    state = _locked(session, round_id)
    closed = advance(session, state, env, now)
    if not isinstance(body, Mapping):
        raise Invalid("invalid_message", f"a {step.value} message is a JSON object")
    sender = body.get(_sender_field(step))
    if not isinstance(sender, str) or sender.lower() != address.lower():
        raise Forbidden(
            "wrong_sender", f"a {step.value} message sent by {address} must name it as its sender"
        )
    member = session.scalars(
        select(SecAggMember).where(
            SecAggMember.round_id == round_id, SecAggMember.address == checksummed(address)
        )
    ).first()
    if member is None or member.group_index is None:
        raise Forbidden(
            "not_a_member",
            f"{address} is in no group of round {round_id} (it did not join, or no group took it)",
        )
    blob_hash = hashlib.sha256(vector).hexdigest() if vector is not None else None
    digest = _body_hash(body, blob_hash)
    existing = session.scalars(
        select(SecAggMessage).where(
            SecAggMessage.round_id == round_id,
            SecAggMessage.sender == member.address,
            SecAggMessage.step == step,
        )
    ).first()
    if existing is not None:
        if existing.body_hash != digest:
            raise Conflict(
                "message_differs",
                f"{member.address} already sent a different {step.value} message for round {round_id}; each step "
                "is sent once (a second, different one could reveal what the protocol keeps secret)",
            )
        return Accepted(step.value, member.address, True, closed, _receipt(session, round_id, member, step))
    if state.phase.value != step.value:
        raise Conflict(
            "wrong_phase",
            f"round {round_id} is in its {state.phase.value} phase; {step.value} messages are accepted only in the "
            f"{step.value} phase",
        )
    group = session.scalars(
        select(SecAggGroup).where(
            SecAggGroup.round_id == round_id, SecAggGroup.group_index == member.group_index
        )
    ).one()
    context = context_of(state, group, env.domain)
    try:
        t = transcript(context, messages_of(session, round_id, group.group_index))
        if step is SecAggStep.keys:
            t.add_advert(wire.advert_from(body))
        elif step is SecAggStep.shares:
            t.add_bundle(wire.bundle_from(body))
        elif step is SecAggStep.masked:
            if vector is None:
                raise Invalid("invalid_message", "a masked input carries its vector")
            masked = wire.masked_from(body, wire.vector_from(vector, state.dimension))
            t.add_masked(masked)
        else:
            t.add_reveal(wire.reveal_from(body))
    except SecAggError as exc:
        raise Invalid("invalid_message", f"{type(exc).__name__}: {exc}") from exc
    if vector is not None:
        blobs.put(vector, blob_hash)
    session.add(
        SecAggMessage(
            round_id=round_id,
            group_index=group.group_index,
            sender=member.address,
            step=step,
            body=dict(body),
            body_hash=digest,
            blob_hash=blob_hash,
            size_bytes=len(json.dumps(body, separators=(",", ":")).encode()) + (len(vector) if vector else 0),
            received_at=now,
        )
    )
    receipt = None
    if step is SecAggStep.masked:
        assert vector is not None and blob_hash is not None
        receipt = _record_update(session, state, member, masked, blob_hash, len(vector), now)
    participant = session.get(Participant, member.participant_id)
    assert participant is not None
    participant.last_seen_at = now
    session.flush()
    closed = advance(session, state, env, now) or closed
    return Accepted(step.value, member.address, False, closed, receipt)


def _receipt_id(round_id: int, address: str, blob_hash: str) -> str:
    return hashlib.sha256(f"secagg|{round_id}|{address}|{blob_hash}".encode()).hexdigest()[:32]


def _receipt(session: Session, round_id: int, member: SecAggMember, step: SecAggStep) -> str | None:
    if step is not SecAggStep.masked:
        return None
    return session.scalars(
        select(Update.receipt_id).where(
            Update.round_id == round_id, Update.participant_id == member.participant_id
        )
    ).first()


def _record_update(
    session: Session,
    state: SecAggRound,
    member: SecAggMember,
    masked: MaskedInput,
    blob_hash: str,
    size: int,
    now: datetime,
) -> str:
    # The round's close, the contributions and the dashboard count updates: a masked input is this member's.
    round_ = session.get(Round, state.round_id)
    assert round_ is not None
    receipt = _receipt_id(state.round_id, member.address, blob_hash)
    session.add(
        Update(
            round_id=state.round_id,
            participant_id=member.participant_id,
            ciphertext_hash=blob_hash,
            key_id=None,
            model_version_id=round_.model_version_id,
            num_samples=masked.num_samples,
            metrics={},
            signature=masked.signature,
            size_bytes=size,
            receipt_id=receipt,
            submitted_at=now,
        )
    )
    return receipt


# --- what a member reads -----------------------------------------------------------------------------


def view(session: Session, env: Env, round_id: int, address: str, now: datetime) -> dict[str, Any]:
    """The round's mode and phase and, for ``address``'s group, the messages its current step needs:
    key adverts (shares phase on), share bundles (masked phase: every box is sealed, each member opens its
    own) and the survivors' signed masked headers (unmask phase)."""
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise NotFound("unknown_round", f"round {round_id} does not exist")
    state = state_of(session, round_id, lock=True)
    if state is None:
        return {"round_id": round_id, "mode": "clear"}
    advance(session, state, env, now)
    out: dict[str, Any] = {
        "round_id": round_id,
        "mode": "secure",
        "model_version": round_.model_version_id,
        "group_size": state.group_size,
        "clip": state.clip,
        "dimension": state.dimension,
        "phase": state.phase.value,
        "phase_deadline": state.phase_deadline.isoformat(),
        "seed_block": state.seed_block,
        "seed_block_hash": state.seed_block_hash,
        "seed": state.seed,
        "failure_reason": state.failure_reason,
        "chain_id": env.domain.chain_id,
        "verifying_contract": env.domain.verifying_contract,
        "joined": False,
        "group": None,
        "adverts": [],
        "bundles": [],
        "masked": [],
        "sent": [],
    }
    member = session.scalars(
        select(SecAggMember).where(
            SecAggMember.round_id == round_id, SecAggMember.address == checksummed(address)
        )
    ).first()
    if member is None:
        return out
    out["joined"] = True
    if member.group_index is None:
        return out
    group = session.scalars(
        select(SecAggGroup).where(
            SecAggGroup.round_id == round_id, SecAggGroup.group_index == member.group_index
        )
    ).one()
    out["group"] = {
        "index": group.group_index,
        "members": list(group.members),
        "threshold": group.threshold,
        "group_id": group.group_id,
    }
    messages = messages_of(session, round_id, group.group_index)
    out["sent"] = sorted({m.step.value for m in messages if m.sender == member.address})
    phase = state.phase
    if phase in (SecAggPhase.shares, SecAggPhase.masked):
        out["adverts"] = [m.body for m in messages if m.step is SecAggStep.keys]
    if phase is SecAggPhase.masked:
        out["bundles"] = [m.body for m in messages if m.step is SecAggStep.shares]
    if phase is SecAggPhase.unmask:
        out["masked"] = [m.body for m in messages if m.step is SecAggStep.masked]
    return out


# --- upkeep ----------------------------------------------------------------------------------------

# Masked messages a sweep handles per transaction (a backlog takes several beats, each one short).
SWEEP_BATCH = 500


def sweep_vectors(
    sessions: sessionmaker[Session], blobs: BlobStore, grace_seconds: float, now: datetime
) -> list[str]:
    """Delete the masked vectors that nothing will unmask any more, closed longer than ``grace_seconds``
    ago: every one of a secure round that FAILED, and those of a closed round's groups that failed (their
    shares never reached the threshold, or their sum was left out). The beat runs it beside the sharded
    close's temporaries; the digests deleted.

    Each message keeps its signed header, whose vector hash records what was sent, and loses the blob's
    name (``blob_hash`` null) in the transaction that deletes it, so a second run finds nothing; a crash
    between the two leaves the name and the next run deletes again (idempotent). The members' ``updates``
    rows keep the hash as their record, as a failed clear round's keep their envelopes' hashes; no close
    reads them again. A vector whose bytes another row still names (another round's) is left in the store.
    An aggregated round's unmasked groups' vectors stay: with the stored reveals they let anyone check the
    sums the round was computed from (a failed round's released sums stay as their stored means)."""
    cutoff = now - timedelta(seconds=grace_seconds)
    failed_group = (
        select(SecAggGroup.id)
        .where(
            SecAggGroup.round_id == SecAggMessage.round_id,
            SecAggGroup.group_index == SecAggMessage.group_index,
            SecAggGroup.failure_reason.is_not(None),
        )
        .exists()
    )
    ended = (Round.status == RoundStatus.failed) | (
        Round.status.in_((RoundStatus.aggregated, RoundStatus.posted)) & failed_group
    )
    deleted: list[str] = []
    with sessions.begin() as session:
        stale = session.scalars(
            select(SecAggMessage)
            .join(Round, Round.id == SecAggMessage.round_id)
            .where(
                SecAggMessage.step == SecAggStep.masked,
                SecAggMessage.blob_hash.is_not(None),
                Round.closed_at.is_not(None),
                Round.closed_at <= cutoff,
                ended,
            )
            .order_by(SecAggMessage.id)
            .limit(SWEEP_BATCH)
            .with_for_update(of=SecAggMessage)
        ).all()
        for m in stale:
            digest = m.blob_hash
            assert digest is not None
            m.blob_hash = None
            if not _named_elsewhere(session, digest, m):
                blobs.delete(digest)
                deleted.append(digest)
    return deleted


def _named_elsewhere(session: Session, digest: str, message: SecAggMessage) -> bool:
    """Whether a row other than ``message`` and its round's updates still names ``digest``."""
    other_message = select(SecAggMessage.id).where(
        SecAggMessage.blob_hash == digest, SecAggMessage.id != message.id
    )
    other_update = select(Update.id).where(
        Update.ciphertext_hash == digest, Update.round_id != message.round_id
    )
    return (
        session.scalars(other_message.limit(1)).first() is not None
        or session.scalars(other_update.limit(1)).first() is not None
    )


# --- what everyone reads ---------------------------------------------------------------------------


GroupStatus = Literal["pending", "unmasked", "failed", "skipped"]


@dataclass(frozen=True)
class GroupReport:
    """One group of a secure round as the public sees it: no mean, no mean hash, no per-member amount.

    ``status``: ``pending`` (not closed yet), ``unmasked`` (its sum was computed), ``failed`` (with
    ``failure_reason``) or ``skipped`` (the round ended before unmasking it, e.g. a DP round whose budget
    check refused to unmask anything; ``failure_reason`` is the round's). ``members`` is None until the round is closed (see :func:`groups_report`);
    ``survivors`` / ``dropped`` count the members in / out of an unmasked group's sum; ``kept`` / ``flagged``
    are its scored members' (each member of a group shares them), None when no member was scored;
    ``reward_wei`` is the sum of its members' rewards (each on chain with its contribution)."""

    index: int
    size: int
    threshold: int
    status: GroupStatus
    members: tuple[str, ...] | None
    survivors: int | None
    dropped: int | None
    failure_reason: str | None
    kept: bool | None
    flagged: bool | None
    reward_wei: int


@dataclass(frozen=True)
class RoundGroups:
    """A secure round's public outcome: its phase, seed block and groups, and under DP its privacy charge
    (the accountant's epsilon after the round: its aggregation's, or a failed round's release charge)."""

    round_id: int
    round_status: str
    group_size: int
    phase: str
    seed_block: int | None
    seed_block_hash: str | None
    seed: str | None
    failure_reason: str | None
    left_out: int
    epsilon_spent: float | None
    charged_on_failure: bool
    groups: tuple[GroupReport, ...]


def groups_report(session: Session, round_id: int) -> RoundGroups:
    """The public outcome of a secure round's groups (:class:`NotFound` for no such round,
    :class:`Conflict` ``clear_round`` for a round in the clear mode).

    What it shows is public already or decided by public data: the groups are a function of a block hash and
    the members who joined; after the close a group's scored members carry the same scores, flag and evidence
    in the public contributions (and each member's reward is on chain), so the grouping of the scored members
    is readable there. It never shows a group's mean or its hash. While the round is open or closing the
    members of each group are withheld: nobody outside a group learns whom to keep offline to fail it."""
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise NotFound("unknown_round", f"round {round_id} does not exist")
    state = state_of(session, round_id)
    if state is None:
        raise Conflict(
            "clear_round",
            f"round {round_id} ran in the clear mode: it has no groups (each organization's update was sealed "
            "to the server and scored alone); read its contributions instead",
        )
    over = round_.status not in (RoundStatus.open, RoundStatus.closing)
    # Columns, not entities: a round of thousands of members is read in one pass without building rows.
    scored: dict[str, tuple[bool, bool, int]] = {
        address.lower(): (kept, byzantine, int(reward))
        for kept, byzantine, reward, address in session.execute(
            select(Contribution.kept, Contribution.byzantine, Contribution.reward_wei, Participant.address)
            .join(Participant, Participant.id == Contribution.participant_id)
            .where(Contribution.round_id == round_id)
        ).all()
    }
    reports = []
    rows = session.execute(
        select(
            SecAggGroup.group_index,
            SecAggGroup.members,
            SecAggGroup.threshold,
            SecAggGroup.survivors,
            SecAggGroup.failure_reason,
        )
        .where(SecAggGroup.round_id == round_id)
        .order_by(SecAggGroup.group_index)
    ).all()
    for index, members, threshold, survivors, failure_reason in rows:
        # The close writes survivors (and the dropped members, the rest of the group) of an unmasked group.
        unmasked = failure_reason is None and survivors is not None
        status: GroupStatus = (
            "failed"
            if failure_reason is not None
            else "unmasked"
            if unmasked
            else "skipped"
            if over
            else "pending"
        )
        in_sum: list[str] = survivors if failure_reason is None and survivors is not None else []
        outcomes = [o for o in (scored.get(a.lower()) for a in in_sum) if o is not None]
        reports.append(
            GroupReport(
                index=index,
                size=len(members),
                threshold=threshold,
                status=status,
                members=tuple(members) if over else None,
                survivors=len(in_sum) if unmasked else None,
                dropped=len(members) - len(in_sum) if unmasked else None,
                failure_reason=round_.failure_reason if status == "skipped" else failure_reason,
                kept=outcomes[0][0] if outcomes else None,
                flagged=outcomes[0][1] if outcomes else None,
                reward_wei=sum(o[2] for o in outcomes),
            )
        )
    aggregation = session.scalars(select(Aggregation).where(Aggregation.round_id == round_id)).first()
    epsilon = aggregation.epsilon_spent if aggregation is not None else state.epsilon_spent
    return RoundGroups(
        round_id=round_id,
        round_status=round_.status.value,
        group_size=state.group_size,
        phase=state.phase.value,
        seed_block=state.seed_block,
        seed_block_hash=state.seed_block_hash,
        seed=state.seed,
        failure_reason=state.failure_reason,
        left_out=len(state.left_out or []),
        epsilon_spent=epsilon,
        charged_on_failure=aggregation is None and state.epsilon_spent is not None,
        groups=tuple(reports),
    )


def decode_vector(encoded: str, limit: int) -> bytes:
    """A masked vector's bytes from its base64 form; :class:`TooLarge` past ``limit`` bytes."""
    if len(encoded) > 4 * (limit // 3 + 1):
        raise TooLarge("too_large", f"a masked vector exceeds the limit of {limit} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise Invalid("invalid_message", "the masked vector is not valid base64") from exc
