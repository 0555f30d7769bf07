"""Closing a round: decrypt, validate, aggregate, score, reputation, DP, holdout check, new model.

Shape of a close (each step a small function; the numeric ones live in this package's pure modules):

1. ``acquire``: one conditional UPDATE takes the round (OPEN, or CLOSING with an expired lease) and
   stamps a lease. Two workers can never both hold it.
2. ``load``: read the round, its updates, the model and the keys.
3. ``compute``: decrypt each envelope once, type the parameter snapshot once, then the pure
   :func:`aggregator.round.compute.compute_round` (everything numeric), with no database transaction open.
4. ``commit``: one transaction writes the result, only if this worker still holds the lease.
Nothing is written between 1 and 4, so a worker killed anywhere in between leaves the round exactly
as it was, and the next tick (after the lease expires) closes it from scratch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
from sqlalchemy import CompoundSelect, CursorResult, Result, func, select, union, update
from sqlalchemy.orm import Session, sessionmaker

from aggregator.errors import InvalidRoundParams
from aggregator.round.compute import (
    ClientMeta,
    CloseStatus,
    RoundResult,
    compute_round,
)
from aggregator.round.params import RoundParams
from aggregator.round.server_update import reference_update, server_data
from aggregator.scoring.budget import ScoreBudget
from aggregator.worker import secure_close
from aggregator.worker.close_inputs import Inputs, public_change
from db.base import utcnow
from db.models import (
    Aggregation,
    Contribution,
    ModelVersion,
    Participant,
    Round,
    RoundStatus,
    SecAggRound,
    Update,
    UpdateStatus,
)
from fedledger.crypto.chunked import ChunkedHeader, is_chunked, layout_hash, open_chunked
from fedledger.crypto.envelope import EnvelopeHeader, open_envelope
from fedledger.crypto.errors import CryptoError
from fedledger.domain import audit
from fedledger.domain import keys as key_service
from fedledger.domain import model_versions as model_service
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.pipeline import close_due
from fedledger.evidence import codes_of, details_of
from fedledger.payload import UpdateFormatError, decode_update, decode_weights, encode_weights, flatten
from fedledger.secagg.messages import Domain

# The sharded computation of a round (inputs, rng, now): its result, or None to compute it on this worker.
# A sharded close: the result, None (compute it here), or a string: the close goes on elsewhere (its passes
# are chords whose last callback commits it: see aggregator.worker.tasks) and this is what to report.
ShardedCompute = Callable[[Inputs, np.random.Generator, datetime], "RoundResult | str | None"]

STATUS_OF = {
    CloseStatus.aggregated: RoundStatus.aggregated,
    CloseStatus.extended: RoundStatus.open,
    CloseStatus.failed: RoundStatus.failed,
}


def _rowcount(result: Result[Any]) -> int:
    # An UPDATE's result is a CursorResult, which has rowcount; Session.execute is typed as Result.
    return cast("CursorResult[Any]", result).rowcount


def acquire(sessions: sessionmaker[Session], round_id: int, owner: str, lease_seconds: int) -> bool:
    """Take the round (OPEN, or CLOSING with an expired lease) with one conditional UPDATE and a lease."""
    now = utcnow()
    with sessions.begin() as session:
        taken = session.execute(
            update(Round)
            # Whether it is due (deadline, or every active organization submitted) is checked here, in the same
            # UPDATE that takes the round: whoever put a close on the broker, an OPEN round closes only when due.
            .where(Round.id == round_id, close_due(now))
            .values(
                status=RoundStatus.closing,
                lease_owner=owner,
                lease_until=now + timedelta(seconds=lease_seconds),
            )
            .execution_options(synchronize_session=False)
        )
        return _rowcount(taken) == 1


def renew(sessions: sessionmaker[Session], round_id: int, owner: str, lease_seconds: int) -> bool:
    """Extend ``owner``'s lease on the round it is closing (a sharded close, at each of its passes, so that
    a close longer than one lease is not taken over while it goes on); False if it holds it no more."""
    now = utcnow()
    with sessions.begin() as session:
        renewed = session.execute(
            update(Round)
            .where(Round.id == round_id, Round.status == RoundStatus.closing, Round.lease_owner == owner)
            .values(lease_until=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return _rowcount(renewed) == 1


def load(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    key_dir: Path,
    round_id: int,
    score_budget: ScoreBudget | None = None,
) -> Inputs:
    """Read the round, its updates, their participants, the model and the server keys (detached);
    ``score_budget`` (the worker's settings; None: the module's defaults) goes with them to every close."""
    with sessions() as session:
        round_ = session.get(Round, round_id)
        assert round_ is not None
        updates = list(session.scalars(select(Update).where(Update.round_id == round_id).order_by(Update.id)))
        participants = {
            p.id: p
            for p in session.scalars(
                select(Participant).where(Participant.id.in_([u.participant_id for u in updates]))
            )
        }
        model = session.get(ModelVersion, round_.model_version_id)
        assert model is not None
        parent = session.get(ModelVersion, model.parent_id) if model.parent_id is not None else None
        author = sole_kept(session, model.produced_by_round_id) if parent is not None else None
        stalled = stalled_rounds(session)
        dp_rounds = session.scalar(select(func.count()).select_from(charged_rounds().subquery()))
        private = key_service.private_keys(session, key_dir)
        session.expunge_all()
    weights = decode_weights(blobs.get(model.weights_hash))
    parent_weights = decode_weights(blobs.get(parent.weights_hash)) if parent is not None else None
    return Inputs(
        round_,
        updates,
        participants,
        weights,
        model,
        private,
        int(dp_rounds or 0),
        parent_weights,
        score_budget,
        author,
        stalled,
    )


def sole_kept(session: Session, round_id: int | None) -> int | None:
    """The participant whose contribution was the only one kept in round ``round_id`` (None: no such
    round, or not exactly one kept)."""
    if round_id is None:
        return None
    kept = list(
        session.scalars(
            select(Contribution.participant_id)
            .where(Contribution.round_id == round_id, Contribution.kept.is_(True))
            .limit(2)
        )
    )
    return kept[0] if len(kept) == 1 else None


# How far back the close looks for the latest round that kept the rule's aggregate: the second candidate
# needs rollback.FALLBACK_AFTER_STALLED stalled rounds; the count is only reported beyond that.
STALL_LOOKBACK = 64


def stalled_rounds(session: Session) -> int:
    """Rounds in a row, the latest aggregated first, whose close kept neither the rule's aggregate nor the
    server's step: refused (``rolled_back``) or kept the second candidate (``kept_by`` "fallback" in its
    recorded parameters; :attr:`aggregator.round.compute.RoundInputs.stalled_rounds`). At most
    :data:`STALL_LOOKBACK`."""
    records = session.execute(
        select(Aggregation.rolled_back, Aggregation.params)
        .order_by(Aggregation.round_id.desc())
        .limit(STALL_LOOKBACK)
    )
    stalled = 0
    for rolled_back, params in records:
        kept_by = params.get("kept_by") if isinstance(params, dict) else None
        if not (rolled_back or kept_by == "fallback"):
            break
        stalled += 1
    return stalled


def charged_rounds() -> CompoundSelect[tuple[int]]:
    """The ids of the rounds charged to the privacy accountant: every aggregated DP round (its aggregation
    row's noise), and every secure round that failed after releasing noised group sums (its
    ``secagg_rounds`` charge: unmasking was the release, whatever became of the round)."""
    return union(
        select(Aggregation.round_id).where(Aggregation.dp_noise_std.is_not(None)),
        select(SecAggRound.round_id).where(SecAggRound.epsilon_spent.is_not(None)),
    )


def decrypt_all(
    inputs: Inputs, blobs: BlobStore
) -> tuple[list[ClientMeta], np.ndarray, list[tuple[ClientMeta, str]]]:
    """Open every envelope once: the valid updates' metadata and their deltas (one float32 row each, in
    model-spec order), and the updates refused with the reason."""
    spec = shapes = inputs.spec
    clients: list[ClientMeta] = []
    rows: list[np.ndarray] = []
    rejected: list[tuple[ClientMeta, str]] = []
    for u in inputs.updates:
        participant = inputs.participants[u.participant_id]
        meta = ClientMeta(
            u.id, participant.id, participant.address, u.num_samples, u.submitted_at, participant.reputation
        )
        try:
            envelope = blobs.get(u.ciphertext_hash)
            if is_chunked(envelope):
                head, vector = open_chunked(envelope, inputs.private_keys)
                if head.header.layout != layout_hash(spec):
                    raise UpdateFormatError("the chunked update's layout is not the model's")
                header: EnvelopeHeader | ChunkedHeader = head.header
            else:
                header, plaintext = open_envelope(envelope, inputs.private_keys)
                vector = flatten(decode_update(plaintext, shapes), spec)
            if header.participant != participant.address or header.round_id != u.round_id:
                raise UpdateFormatError("envelope header does not match the recorded submission")
            rows.append(vector)
            clients.append(meta)
        except (CryptoError, UpdateFormatError, KeyError) as exc:
            rejected.append((meta, f"{type(exc).__name__}: {exc}"))
    size = sum(int(np.prod(dims)) for dims in spec.values())
    deltas = np.stack(rows) if rows else np.zeros((0, size), dtype=np.float32)
    return clients, deltas, rejected


def compute(
    inputs: Inputs,
    blobs: BlobStore,
    holdout: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    now: datetime,
) -> RoundResult:
    """Decrypt, type the parameter snapshot, train the server's reference on the root half of the holdout,
    and run the pure round computation (scores and rollback on the validation half)."""
    start = time.perf_counter()
    clients, deltas, rejected = decrypt_all(inputs, blobs)
    decrypt_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    root, validation = server_data(holdout)
    reference = reference_update(inputs.weights, list(inputs.spec), root, inputs.round.id)
    reference_ms = (time.perf_counter() - start) * 1e3
    try:
        params = RoundParams.from_snapshot(inputs.round.params)
        # The round's quorum (governed, or the operator's for this round) is the fewest updates it
        # aggregates: a round closed at its deadline with fewer is extended or failed like one short of
        # min_participants. It never closes a round early (fedledger.domain.pipeline).
        params = replace(params, min_participants=max(params.min_participants, inputs.round.quorum))
    except InvalidRoundParams as exc:
        return RoundResult(
            CloseStatus.failed, str(exc), rejected=tuple((c.update_id, reason) for c, reason in rejected)
        )
    result = compute_round(
        inputs.round_inputs(
            params,
            clients=tuple(clients),
            deltas=deltas,
            rejected=tuple(rejected),
            holdout=validation,
            reference=reference,
            public_change=public_change(inputs),
        ),
        rng,
        now,
    )
    if result.record is not None:
        result.record.durations_ms["decrypt_ms"] = decrypt_ms
        result.record.durations_ms["reference_ms"] = reference_ms
    return result


@dataclass(frozen=True)
class Signing:
    """How the worker signs the model versions it produces (EIP-712 domain of the ledger)."""

    key: str
    chain_id: int
    verifying_contract: str


def commit(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    round_id: int,
    owner: str,
    result: RoundResult,
    signing: Signing,
    also: Callable[[Session], None] | None = None,
) -> bool:
    """Write the result in one transaction, if this worker still holds the round. False if it lost it.
    ``also`` writes more in the same transaction (a secure round's group outcomes) unless it was extended."""
    now = utcnow()
    with sessions.begin() as session:
        held = session.execute(
            update(Round)
            .where(Round.id == round_id, Round.status == RoundStatus.closing, Round.lease_owner == owner)
            .values(lease_until=now + timedelta(seconds=60))
            .execution_options(synchronize_session=False)
        )
        if _rowcount(held) != 1:
            return False
        round_ = session.get(Round, round_id)
        assert round_ is not None
        round_.lease_owner, round_.lease_until = None, None
        if result.status == CloseStatus.extended:
            assert result.extend_to is not None
            round_.status, round_.deadline = RoundStatus.open, result.extend_to
            round_.extensions += 1
            # The round goes on: why it was extended is the audit entry's, not a failure of the round.
            round_.failure_reason = None
            audit.append(
                session,
                "worker",
                "round.extend",
                str(round_id),
                {"deadline": result.extend_to.isoformat(), "reason": result.reason},
            )
            return True
        for update_id, reason in result.rejected:
            u = session.get(Update, update_id)
            assert u is not None
            u.status, u.rejection_reason = UpdateStatus.rejected, reason
        if also is not None:
            also(session)
        if result.status == CloseStatus.failed:
            round_.status, round_.failure_reason, round_.closed_at = RoundStatus.failed, result.reason, now
            audit.append(session, "worker", "round.fail", str(round_id), {"reason": result.reason})
            return True
        _commit_aggregated(session, blobs, round_, result, signing)
        round_.status, round_.closed_at, round_.failure_reason = RoundStatus.aggregated, now, None
    return True


def _commit_aggregated(
    session: Session, blobs: BlobStore, round_: Round, result: RoundResult, signing: Signing
) -> None:
    """The new model version, the contributions, the participants' standing and the aggregation record."""
    record = result.record
    assert result.new_weights is not None and record is not None
    version = model_service.store_version(
        session,
        blobs,
        encode_weights(result.new_weights),
        signer_key=signing.key,
        chain_id=signing.chain_id,
        verifying_contract=signing.verifying_contract,
        parent=session.get(ModelVersion, round_.model_version_id),
        metrics={
            "holdout_loss": record.holdout_loss_after,
            "holdout_accuracy": record.holdout_accuracy,
        },
        produced_by_round_id=round_.id,
        activate=result.activate,
    )
    _write_contributions(session, round_.id, result)
    session.add(
        Aggregation(
            round_id=round_.id,
            strategy=record.strategy,
            params=record.params,
            kept=[c.address for c in result.clients if c.kept],
            excluded=[c.address for c in result.clients if not c.kept],
            rejected=[str(uid) for uid, _ in result.rejected],
            model_version_id=version.id,
            rolled_back=record.rolled_back,
            holdout_loss_before=record.holdout_loss_before,
            holdout_loss_after=record.holdout_loss_after,
            holdout_accuracy=record.holdout_accuracy,
            dp_noise_std=record.dp_noise_std,
            epsilon_spent=record.epsilon_spent,
            rewards_root=record.rewards_root,
            total_reward_wei=str(record.total_reward_wei),
            durations_ms=record.durations_ms,
        )
    )
    audit.append(
        session,
        "worker",
        "round.aggregate",
        str(round_.id),
        {
            "model_version": version.id,
            "activated": result.activate,
            "decision": record.decision,
            "kept": len(result.kept),
            "total_reward_wei": str(record.total_reward_wei),
        },
    )


def _write_contributions(session: Session, round_id: int, result: RoundResult) -> None:
    """Each client's contribution row, its update's status, and its reputation and Byzantine count."""
    for c in result.clients:
        u = session.get(Update, c.update_id)
        assert u is not None
        if u.status != UpdateStatus.rejected:
            u.status = UpdateStatus.aggregated if c.kept else UpdateStatus.excluded
            # Shown to the organization with its contribution (a rejected update keeps its own reason).
            u.rejection_reason = c.excluded_reason
        session.add(
            Contribution(
                round_id=round_id,
                participant_id=c.participant_id,
                update_id=c.update_id,
                quality=c.quality,
                timeliness=c.timeliness,
                honesty=c.honesty,
                fitness=c.fitness,
                kept=c.kept,
                byzantine=c.byzantine,
                reward_wei=str(c.reward_wei),
                merkle_proof=list(c.merkle_proof),
                reputation_after=c.reputation_after,
                reputation_before=c.reputation_before,
                evidence=codes_of(c.evidence),
                evidence_detail=details_of(c.evidence),
            )
        )
        p = session.get(Participant, c.participant_id)
        assert p is not None
        p.reputation = c.reputation_after
        if c.byzantine and c.slash_counted:
            p.byzantine_count += 1


def round_rng(round_id: int) -> np.random.Generator:
    """The close's random generator (DP noise, the strategies' draws): seeded by the round, so that every
    close of it (a retry, an auditor's recomputation) draws the same."""
    return np.random.default_rng(int.from_bytes(round_id.to_bytes(8, "big") + b"fedledger-dp", "big") % 2**63)


def close_round(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    key_dir: Path,
    round_id: int,
    owner: str,
    lease_seconds: int,
    holdout: tuple[np.ndarray, np.ndarray],
    signing: Signing,
    now: datetime | None = None,
    sharded: ShardedCompute | None = None,
    score_budget: ScoreBudget | None = None,
) -> str:
    """Close ``round_id`` if this worker can take it. Returns what happened (for logs and tests).

    ``sharded``: computes the round across workers when it should be (aggregator.worker.shards); its None
    means this round is computed here, by :func:`compute`. ``score_budget``: the per-row scores' budget
    (the worker's settings; None: the module's defaults)."""
    if not acquire(sessions, round_id, owner, lease_seconds):
        return "not-closable"
    inputs = load(sessions, blobs, key_dir, round_id, score_budget)
    rng = round_rng(round_id)
    when = now or utcnow()
    secure = secure_close.load_secure(sessions, round_id)
    if secure is not None:
        domain = Domain(signing.chain_id, signing.verifying_contract)
        closed = secure_close.compute_secure(inputs, secure, blobs, holdout, rng, when, domain)

        def also(session: Session) -> None:
            secure_close.write_outcomes(session, round_id, closed)

        return finish(sessions, blobs, round_id, owner, closed.result, signing, also)
    result = sharded(inputs, rng, when) if sharded is not None else None
    if isinstance(result, str):
        return result
    if result is None:
        result = compute(inputs, blobs, holdout, rng, when)
    return finish(sessions, blobs, round_id, owner, result, signing)


def finish(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    round_id: int,
    owner: str,
    result: RoundResult,
    signing: Signing,
    also: Callable[[Session], None] | None = None,
) -> str:
    """Commit the close's result if ``owner`` still holds the round; the round's new status, or lease-lost.
    ``also``: more to write in the same transaction (a secure round's group outcomes)."""
    if not commit(sessions, blobs, round_id, owner, result, signing, also):
        return "lease-lost"
    return STATUS_OF[result.status].value
