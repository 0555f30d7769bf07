"""Closing a round in the secure-aggregation mode (issue 24): unmask each group, then the round over groups.

The close of :mod:`aggregator.worker.close` with another ``compute``: the worker rebuilds each group's
:class:`~fedledger.secagg.protocol.GroupTranscript` from the stored messages (every signature, commitment and
vector hash checked again, as on arrival), unmasks it (the survivors' sum, never one update), and runs
:func:`aggregator.round.secure.compute_secure_round` over the group means. A group that cannot be unmasked
(too many dropouts, a forged share) is left out of the round, which is no evidence against its members.
The commit, the contributions and the on-chain post are the clear mode's; each group's outcome (survivors,
dropped members, its mean as a float32 blob, or why it failed) is written in the same transaction.

Under differential privacy unmasking is the release: a round that fails after some group's noised sum was
unmasked is still charged to the privacy accountant (:func:`aggregator.round.secure.released_charge`), on
its ``secagg_rounds`` row in the failure's transaction, and the next close's ``dp_rounds_spent`` counts it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from aggregator.errors import InvalidRoundParams
from aggregator.round.compute import ClientMeta, CloseStatus, RoundResult
from aggregator.round.params import RoundParams
from aggregator.round.secure import (
    PrivacyCharge,
    SecureGroup,
    compute_secure_round,
    release_charge,
    released_charge,
    split_noiseless,
)
from aggregator.round.server_update import reference_update, server_data
from aggregator.worker.close_inputs import Inputs, public_change
from db.models import Participant, SecAggGroup, SecAggMessage, SecAggRound, SecAggStep, Update, UpdateStatus
from fedledger.domain import audit, secagg
from fedledger.domain.blobstore import BlobStore
from fedledger.secagg import wire
from fedledger.secagg.errors import SecAggError
from fedledger.secagg.messages import Domain


@dataclass
class SecureInputs:
    """A secure round's protocol state as stored (detached rows)."""

    state: SecAggRound
    groups: list[SecAggGroup]
    messages: dict[int, list[SecAggMessage]]


@dataclass(frozen=True)
class GroupOutcome:
    """What the close learned of one group: its survivors and its mean (by blob hash), or why it failed."""

    group_index: int
    members: tuple[str, ...]
    survivors: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    mean_hash: str | None = None
    failure_reason: str | None = None


@dataclass(frozen=True)
class SecureClose:
    """What a secure round's close computed: the round's result, each group's outcome, and under DP the
    charge for the sums unmasked when the round failed after unmasking some (an aggregated round's charge
    is its aggregation row's; None also when nothing was unmasked)."""

    result: RoundResult
    outcomes: list[GroupOutcome]
    failed_release: PrivacyCharge | None = None


def load_secure(sessions: sessionmaker[Session], round_id: int) -> SecureInputs | None:
    """The round's secure-aggregation state, groups and messages (None for a clear round)."""
    with sessions() as session:
        state = secagg.state_of(session, round_id)
        if state is None:
            return None
        groups = secagg.groups_of(session, round_id)
        messages: dict[int, list[SecAggMessage]] = {g.group_index: [] for g in groups}
        for m in secagg.messages_of(session, round_id):
            messages.setdefault(m.group_index, []).append(m)
        session.expunge_all()
    return SecureInputs(state, groups, messages)


def unmask_all(
    secure: SecureInputs, blobs: BlobStore, domain: Domain, members: dict[str, ClientMeta]
) -> tuple[list[SecureGroup], list[GroupOutcome]]:
    """Each group rebuilt from its messages and unmasked; a group's mean is stored as a blob (what the server
    learns of it), a failure is recorded with its reason."""
    state = secure.state
    unmasked: list[SecureGroup] = []
    outcomes: list[GroupOutcome] = []
    for group in secure.groups:
        stored = secure.messages.get(group.group_index, [])
        members_ = tuple(group.members)
        try:
            vectors = {
                m.blob_hash: wire.vector_from(blobs.get(m.blob_hash), state.dimension)
                for m in stored
                if m.step is SecAggStep.masked and m.blob_hash is not None
            }
            context = secagg.context_of(state, group, domain)
            result = secagg.transcript(context, stored, vectors).unmask()
        except (SecAggError, KeyError) as exc:
            outcomes.append(
                GroupOutcome(group.group_index, members_, failure_reason=f"{type(exc).__name__}: {exc}")
            )
            continue
        missing = [a for a in result.survivors if a.lower() not in members]
        if missing:
            reason = f"no update row for surviving members {missing}"
            outcomes.append(GroupOutcome(group.group_index, members_, failure_reason=reason))
            continue
        mean = result.mean
        mean_hash = blobs.put(np.ascontiguousarray(mean, dtype="<f4").tobytes())
        unmasked.append(
            SecureGroup(tuple(members[a.lower()] for a in result.survivors), mean, context.threshold)
        )
        outcomes.append(
            GroupOutcome(group.group_index, members_, result.survivors, result.dropped, mean_hash)
        )
    return unmasked, outcomes


def compute_secure(
    inputs: Inputs,
    secure: SecureInputs,
    blobs: BlobStore,
    holdout: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    now: datetime,
    domain: Domain,
) -> SecureClose:
    """Unmask the groups and compute the round over their means (see the module)."""
    if secure.state.failure_reason is not None:
        return SecureClose(RoundResult(CloseStatus.failed, secure.state.failure_reason), [])
    try:
        params = RoundParams.from_snapshot(inputs.round.params)
    except InvalidRoundParams as exc:
        return SecureClose(RoundResult(CloseStatus.failed, str(exc)), [])
    members = {
        inputs.participants[u.participant_id].address.lower(): ClientMeta(
            u.id,
            u.participant_id,
            inputs.participants[u.participant_id].address,
            u.num_samples,
            u.submitted_at,
            inputs.participants[u.participant_id].reputation,
        )
        for u in inputs.updates
    }
    needed = max(params.min_participants, inputs.round.quorum)
    if params.dp is not None:
        # Unmasking releases each group's noised sum to the server: the budget is checked before it, and a
        # round that could not be aggregated even if every group were unmasked unmasks none.
        counts = [
            (
                sum(1 for m in secure.messages.get(g.group_index, []) if m.step is SecAggStep.masked),
                g.threshold,
            )
            for g in secure.groups
        ]
        possible = sum(m for m, t in counts if m >= t)
        if possible < needed:
            reason = (
                f"nothing was unmasked: at most {possible} updates could be, in groups that reached their "
                f"threshold, fewer than the {needed} the round needs (under DP each unmasked sum is a release)"
            )
            return SecureClose(RoundResult(CloseStatus.failed, reason), [])
        charge = release_charge(params, inputs.dp_rounds_spent, counts)
        if isinstance(charge, str):
            return SecureClose(RoundResult(CloseStatus.failed, f"nothing was unmasked: {charge}"), [])
    start = time.perf_counter()
    groups, outcomes = unmask_all(secure, blobs, domain, members)
    unmask_ms = (time.perf_counter() - start) * 1e3
    if params.dp is not None:
        groups, outcomes = _leave_out_noiseless(inputs, params, groups, outcomes)
    counted = sum(len(g.members) for g in groups)
    if counted < needed:
        failed = [o for o in outcomes if o.failure_reason]
        why = "; ".join(f"group {o.group_index}: {o.failure_reason}" for o in failed)
        reason = (
            f"{counted} updates were unmasked in {len(groups)} groups, fewer than the {needed} the round needs"
            + (f" ({why})" if why else "")
        )
        return _failed_after_unmasking(inputs, params, reason, outcomes, groups)
    start = time.perf_counter()
    root, validation = server_data(holdout)
    reference = reference_update(inputs.weights, list(inputs.spec), root, inputs.round.id)
    reference_ms = (time.perf_counter() - start) * 1e3
    size = sum(int(np.prod(dims)) for dims in inputs.spec.values())
    # The count check above is over members; the protocol cannot run twice, so a short round fails rather
    # than waiting for an extension.
    computed = replace(params, min_participants=1, max_round_extensions=inputs.round.extensions)
    result = compute_secure_round(
        inputs.round_inputs(
            computed,
            deltas=np.zeros((0, size), dtype=np.float32),
            holdout=validation,
            reference=reference,
            public_change=public_change(inputs),
        ),
        groups,
        rng,
        now,
    )
    if result.record is not None:
        result.record.durations_ms["unmask_ms"] = unmask_ms
        result.record.durations_ms["reference_ms"] = reference_ms
    if result.status is CloseStatus.failed:
        # E.g. a zero aggregate refused by the round's rules: the sums were unmasked all the same.
        reason = result.reason or "the round computation failed"
        return _failed_after_unmasking(inputs, params, reason, outcomes, groups, result)
    return SecureClose(result, outcomes)


def _failed_after_unmasking(
    inputs: Inputs,
    params: RoundParams,
    reason: str,
    outcomes: list[GroupOutcome],
    released: list[SecureGroup],
    result: RoundResult | None = None,
) -> SecureClose:
    """A round that fails once groups were unmasked: under DP their sums were released to the server, so
    the round is charged for them (the groups whose sums carry their members' noise, as an aggregated round
    is) and the failure says so."""
    charge = released_charge(params, inputs.dp_rounds_spent, released)
    if charge is not None:
        reason += (
            f"; the {len(released)} group sum(s) unmasked were released, so the round is charged to the "
            f"privacy accountant: epsilon {charge.accountant.epsilon_spent:.4g} spent after it"
        )
    failed = RoundResult(CloseStatus.failed, reason) if result is None else replace(result, reason=reason)
    return SecureClose(failed, outcomes, charge)


def _leave_out_noiseless(
    inputs: Inputs, params: RoundParams, groups: list[SecureGroup], outcomes: list[GroupOutcome]
) -> tuple[list[SecureGroup], list[GroupOutcome]]:
    """Under DP, the groups whose sums carry no member's noise left out, as failed groups with the reason."""
    probe = inputs.round_inputs(params, deltas=np.zeros((0, 0), dtype=np.float32), holdout=None)
    kept, noiseless = split_noiseless(probe, groups)
    reasons = {frozenset(a.lower() for a in f.members): f.reason for f in noiseless}
    marked = []
    for o in outcomes:
        reason = reasons.get(frozenset(a.lower() for a in o.survivors)) if o.failure_reason is None else None
        marked.append(o if reason is None else replace(o, failure_reason=reason, mean_hash=None))
    return kept, marked


def write_outcomes(session: Session, round_id: int, closed: SecureClose) -> None:
    """In the close's transaction: each group's outcome; a failed group's masked inputs are excluded with
    the reason (their members are scored on nothing: no contribution, no evidence); and a failed round's
    charge for the sums it released, which the next close's ``dp_rounds_spent`` counts."""
    charge = closed.failed_release
    if charge is not None:
        state = session.get(SecAggRound, round_id)
        assert state is not None
        state.epsilon_spent = charge.accountant.epsilon_spent
        state.dp_noise_std = charge.mean_noise_std
        state.dp_charge = dict(charge.details())
        audit.append(
            session,
            "worker",
            "secagg.released_charge",
            str(round_id),
            {"epsilon_spent": state.epsilon_spent, **state.dp_charge},
        )
    for o in closed.outcomes:
        session.execute(
            update(SecAggGroup)
            .where(SecAggGroup.round_id == round_id, SecAggGroup.group_index == o.group_index)
            .values(
                survivors=list(o.survivors) if o.failure_reason is None else None,
                dropped=list(o.dropped) if o.failure_reason is None else None,
                mean_hash=o.mean_hash,
                failure_reason=o.failure_reason,
            )
            .execution_options(synchronize_session=False)
        )
        if o.failure_reason is None:
            continue
        for u in session.scalars(
            select(Update)
            .join(Participant, Participant.id == Update.participant_id)
            .where(
                Update.round_id == round_id,
                Update.status == UpdateStatus.received,
                Participant.address.in_(list(o.members)),
            )
        ):
            u.status = UpdateStatus.excluded
            u.rejection_reason = f"your secure-aggregation group of {len(o.members)} was left out of the round: {o.failure_reason}"
