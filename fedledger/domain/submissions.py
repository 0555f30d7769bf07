"""Accepting an encrypted, signed update: every check before anything is stored, then one transaction.

Order of checks (cheapest first, and nothing is decrypted for an unauthenticated or mis-addressed
request): participant registered and active (database and chain) -> envelope header -> round, model
version and sample count -> round open and before its deadline -> EIP-712 signature by the JWT subject
over the envelope's hash -> decryption with the key the header names -> payload shapes against the model.
Then: idempotent replay (same bytes, same receipt) or 409 for a different payload. The checks read only
(:func:`verify`); the blob is fsynced, then row and audit entry are written in one short transaction
(:func:`record`); the aggregator is told after the commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

from sqlalchemy import Row, Table, bindparam, select
from sqlalchemy import update as sa_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import (
    ModelVersion,
    Participant,
    ParticipantStatus,
    Round,
    RoundStatus,
    SecAggRound,
    ServerKey,
    Update,
    UpdateStatus,
)
from fedledger.chain.reader import ChainReader, RegistryStatus
from fedledger.crypto.chunked import (
    ChunkedHead,
    ChunkedHeader,
    ChunkOpener,
    is_chunked,
    layout_hash,
    parse_head,
)
from fedledger.crypto.eip712 import recover_update_signer
from fedledger.crypto.envelope import EnvelopeHeader, open_parts, split_envelope
from fedledger.crypto.errors import CryptoError, DecryptionFailed, UnknownKey
from fedledger.domain import audit, keys, pipeline
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.errors import Conflict, Forbidden, Invalid, Malformed, NotFound, Unauthenticated
from fedledger.payload import UnsupportedDtype, UpdateFormatError, decode_update, parameter_count

MAX_SAMPLES = 10**9

# The request path reads and writes through Core statements on the tables (a few columns, no ORM objects, no
# unit of work): the same SQL, a fraction of the ORM's per-statement CPU.
_participants = cast(Table, Participant.__table__)
_rounds = cast(Table, Round.__table__)
_updates = cast(Table, Update.__table__)
_server_keys = cast(Table, ServerKey.__table__)
_model_versions = cast(Table, ModelVersion.__table__)
# What the checks read of a round, and of an accepted update for a replay.
_ROUND_COLUMNS = (
    _rounds.c.id,
    _rounds.c.status,
    _rounds.c.deadline,
    _rounds.c.model_version_id,
    _rounds.c.opened_at,
    _rounds.c.cohort,
)
_REPLAY_COLUMNS = (
    _updates.c.round_id,
    _updates.c.receipt_id,
    _updates.c.ciphertext_hash,
    _updates.c.num_samples,
    _updates.c.submitted_at,
)

# Built once (with bind parameters): a statement's construction costs more CPU than its cached execution.
_SELECT_PARTICIPANT = select(_participants.c.id, _participants.c.status).where(
    _participants.c.address == bindparam("b_address")
)
_SELECT_ROUND = select(*_ROUND_COLUMNS).where(_rounds.c.id == bindparam("b_round"))
_LOCK_ROUND = _SELECT_ROUND.with_for_update()
_SELECT_SECURE = select(SecAggRound.round_id).where(SecAggRound.round_id == bindparam("b_round"))
_SELECT_KEY = select(_server_keys.c.retired_at).where(_server_keys.c.kid == bindparam("b_kid"))
_SELECT_SPEC = select(_model_versions.c.spec).where(_model_versions.c.id == bindparam("b_model_version"))
_SELECT_ACCEPTED = select(*_REPLAY_COLUMNS).where(
    _updates.c.round_id == bindparam("b_round"), _updates.c.participant_id == bindparam("b_participant")
)
_TOUCH_PARTICIPANT = (
    sa_update(_participants)
    .where(_participants.c.id == bindparam("b_participant"))
    .values(last_seen_at=bindparam("b_now", type_=_participants.c.last_seen_at.type))
)
# One statement that cannot fail on the race (no savepoint, no exception): PostgreSQL waits for a concurrent
# insert of the same (round, participant) to commit, then inserts nothing. The row's values are its parameters.
_INSERT_UPDATE = {
    dialect: insert(_updates)
    .on_conflict_do_nothing(index_elements=[_updates.c.round_id, _updates.c.participant_id])
    .returning(_updates.c.id)
    for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


class _RoundState(Protocol):
    id: int
    status: RoundStatus
    deadline: datetime
    model_version_id: int


class _Accepted(Protocol):
    round_id: int
    receipt_id: str
    ciphertext_hash: str
    num_samples: int
    submitted_at: datetime


@dataclass(frozen=True)
class Receipt:
    """What the API acknowledges for an accepted (or replayed) submission."""

    receipt_id: str
    round_id: int
    participant: str
    payload_hash: str
    num_samples: int
    received_at: datetime
    replayed: bool
    # This submission was the last active organization's: the caller sends the round's one close after the
    # commit (fedledger.domain.pipeline).
    close_requested: bool = False


def receipt_id(round_id: int, participant: str, digest: str) -> str:
    """Deterministic receipt id: the same bytes from the same participant for the same round, the same id."""
    return hashlib.sha256(f"{round_id}|{participant}|{digest}".encode()).hexdigest()[:32]


def _participant(session: Session, chain: ChainReader, address: str) -> Row[Any]:
    participant = session.execute(_SELECT_PARTICIPANT, {"b_address": address}).first()
    if participant is None:
        raise Forbidden(
            "not_registered", "register the organization first (`fedledger client enroll` registers it)"
        )
    enrollment = chain.enrollment(address)
    if enrollment.status == RegistryStatus.none:
        raise Forbidden("not_enrolled", "not enrolled on-chain: stake with ParticipantRegistry.enroll first")
    if enrollment.status != RegistryStatus.active:
        raise Forbidden(
            f"participant_{enrollment.status.name}",
            f"participant is {enrollment.status.name} on-chain and may not submit",
        )
    # The chain decides standing. The database mirrors what posting saw: its "slashed" is fresher than a
    # cached "active" read (a slash the worker just posted), but lags a guardian's reinstatement until the
    # upkeep mirrors it back; so a "slashed" row is settled by a fresh read of the chain.
    if participant.status == ParticipantStatus.slashed:
        current = chain.enrollment(address, fresh=True).status
        if current != RegistryStatus.active:
            raise Forbidden(
                f"participant_{current.name}", f"participant is {current.name} on-chain and may not submit"
            )
    elif participant.status != ParticipantStatus.active:
        raise Forbidden(
            f"participant_{participant.status.value}",
            f"participant is {participant.status.value} and may not submit",
        )
    return participant


def _check_round(round_: _RoundState, header: EnvelopeHeader | ChunkedHeader, now: datetime) -> None:
    if round_.status != RoundStatus.open:
        raise Conflict(
            "round_not_open", f"round {round_.id} is {round_.status.value}; submissions are closed"
        )
    if now >= round_.deadline:
        raise Conflict(
            "round_deadline_passed",
            f"round {round_.id} deadline {round_.deadline.isoformat()} has passed; it is closing",
        )
    if header.model_version != round_.model_version_id:
        raise Invalid(
            "wrong_model_version",
            f"round {round_.id} trains model version {round_.model_version_id}, the update is for {header.model_version}",
        )
    if not 1 <= header.num_samples <= MAX_SAMPLES:
        raise Invalid("invalid_num_samples", f"num_samples must be in [1, {MAX_SAMPLES}]")


@dataclass(frozen=True)
class Verified:
    """A submission that passed every check and may be recorded (see :func:`record`)."""

    round_id: int
    participant_id: int
    subject: str
    digest: str
    header: EnvelopeHeader | ChunkedHeader
    signature: str
    size_bytes: int


def verify(
    session: Session,
    *,
    chain: ChainReader,
    key_directory: Path,
    subject: str,
    round_id: int,
    envelope: bytes,
    signature: str,
) -> Verified | Receipt:
    """Every check of a submission, reading only: the caller may use a read-only session (on SQLite it takes
    no write lock, so checks of concurrent submissions run in parallel). Returns the receipt of an
    idempotent replay, or what :func:`record` needs; raises a domain error for anything refused."""
    participant = _participant(session, chain, subject)
    head: ChunkedHead | None = None
    header: EnvelopeHeader | ChunkedHeader
    try:
        # Split once: the header read here and the bytes decrypted below (its AEAD associated data) are the same.
        if is_chunked(envelope):
            head = parse_head(envelope)
            header = head.header
        else:
            header, header_bytes, ciphertext = split_envelope(envelope)
    except CryptoError as exc:
        raise Malformed("malformed_envelope", str(exc)) from exc
    if header.round_id != round_id:
        raise Invalid(
            "wrong_round", f"the envelope is for round {header.round_id}, posted to round {round_id}"
        )
    if header.participant != subject:
        raise Forbidden(
            "wrong_participant", f"the envelope names {header.participant}, the token is {subject}"
        )
    round_ = session.execute(_SELECT_ROUND, {"b_round": round_id}).first()
    if round_ is None:
        raise NotFound("unknown_round", f"round {round_id} does not exist")
    digest = hashlib.sha256(envelope).hexdigest()

    existing = _existing(session, round_id, participant.id)
    if existing is not None:
        return _replay(existing, subject, digest)
    _check_round(round_, header, utcnow())
    if session.scalar(_SELECT_SECURE, {"b_round": round_id}) is not None:
        raise Conflict(
            "secure_round",
            f"round {round_id} runs in the secure-aggregation mode: the server must never see an update, so "
            "take part through the round's secure-aggregation steps (the SDK's participate runs them)",
        )
    if round_.cohort is not None and subject.lower() not in round_.cohort:
        raise Forbidden(
            "not_in_cohort",
            f"round {round_id} was opened for {len(round_.cohort)} invited organizations and {subject} is not "
            "one of them; take part in the next round you are invited to",
        )

    try:
        signer = recover_update_signer(
            signature,
            chain_id=chain.deployments.chain_id,
            verifying_contract=chain.deployments.addresses["ContributionLedger"],
            round_id=header.round_id,
            model_version=header.model_version,
            # A chunked envelope's signature covers its head (header and chunk table), version 1's all of it.
            payload_hash=head.payload_hash if head is not None else bytes.fromhex(digest),
            num_samples=header.num_samples,
        )
    except CryptoError as exc:
        raise Unauthenticated("bad_signature", f"update signature is malformed: {exc}") from exc
    if signer != subject:
        raise Unauthenticated(
            "bad_signature",
            "the update signature is not the signed-in wallet's (or covers other fields)",
        )

    key = session.execute(_SELECT_KEY, {"b_kid": header.key_id}).first()
    if key is None:
        raise Invalid(
            "unknown_key", f"key {header.key_id} is not a server key; seal for the server's current key"
        )
    if key.retired_at is not None and key.retired_at < round_.opened_at:
        raise Invalid(
            "retired_key",
            f"key {header.key_id} was retired before round {round_id} opened; use the current key",
        )
    shapes = _shapes(session, round_.model_version_id)
    try:
        pem = keys.private_key(key_directory, header.key_id)
        private = {header.key_id: pem} if pem is not None else {}
        if head is not None:
            _check_layout(head, shapes, round_.model_version_id)
            # A chunk at a time: the whole plaintext (larger than max_update_bytes allows) is never held.
            ChunkOpener(head, private).check(lambda offset, size: envelope[offset : offset + size])
            return Verified(round_id, participant.id, subject, digest, header, signature, len(envelope))
        assert isinstance(header, EnvelopeHeader)  # version 1: split above
        _, plaintext = open_parts(header, header_bytes, ciphertext, private)
    except UnknownKey as exc:
        raise Invalid("unknown_key", str(exc)) from exc
    except (DecryptionFailed, CryptoError) as exc:
        raise Invalid(
            "undecryptable", f"the envelope does not decrypt with key {header.key_id}: {exc}"
        ) from exc
    try:
        decode_update(plaintext, shapes)
    except UnsupportedDtype as exc:
        raise Invalid("unsupported_dtype", f"the update cannot be used: {exc}") from exc
    except UpdateFormatError as exc:
        raise Invalid(
            "shape_mismatch", f"the update does not fit model version {round_.model_version_id}: {exc}"
        ) from exc
    return Verified(round_id, participant.id, subject, digest, header, signature, len(envelope))


def _check_layout(head: ChunkedHead, shapes: dict[str, tuple[int, ...]], model_version: int) -> None:
    """A chunked update's coordinates must be the model's tensors in the model's order."""
    size = parameter_count(shapes)
    if head.header.layout != layout_hash(shapes) or head.header.size != size:
        raise Invalid(
            "shape_mismatch",
            f"the chunked update's layout ({head.header.size} coordinates) is not model version {model_version}'s "
            f"({size} coordinates): seal a delta of exactly the tensors and shapes the model version lists "
            "(its spec), flattened by tensor name",
        )


def record(sessions: sessionmaker[Session], blobs: BlobStore, checked: Verified, envelope: bytes) -> Receipt:
    """Store a verified submission durably: the ciphertext (fsynced) before the row that names it, then the
    row, the participant's activity and the audit entry in one short transaction. Returns only after the
    commit, so an acknowledged submission survives a crash of the API.

    The blob is written outside the transaction so that the fsyncs of concurrent submissions overlap instead
    of queueing behind the database's write lock. A blob whose row then loses the (round, participant) race
    to a different payload, or whose round closed in between, is removed again: nothing is left orphaned.
    Blobs are content-addressed, so a concurrent request with the same bytes shares the file: a failed one
    removes it only under the round's exclusive lock (see :func:`_remove_unless_referenced`), and a
    succeeding one makes sure the file is there before its row commits. A crash between the fsync and the
    commit leaves the file without a row: :mod:`fedledger.domain.blobsweep` removes it later, under the same
    lock (so the re-put below also covers a sweep that removed an old file this submission found).
    """
    # checked.digest is the SHA-256 verify computed of these very bytes (immutable): not hashed again.
    if not isinstance(envelope, bytes) or len(envelope) != checked.size_bytes:
        raise ValueError("record() takes the very envelope bytes that verify() checked")
    blobs.put(envelope, checked.digest)
    try:
        with sessions.begin() as session:
            receipt = _insert(session, checked)
            # A failed twin may have removed the shared file before this transaction took the round's lock
            # (no one can now, until this commits): write it again if it is gone. A stat, not a second hash.
            if not blobs.exists(checked.digest):
                blobs.put(envelope, checked.digest)
            return receipt
    except _Lost as lost:
        if isinstance(lost.outcome, Receipt):
            return lost.outcome  # the winner sent the same bytes: its blob is this one
        # Different bytes than the winner's: no row of this (round, participant) can ever name them.
        blobs.delete(checked.digest)
        raise lost.outcome from None
    except BaseException:
        _remove_unless_referenced(sessions, blobs, checked)
        raise


def _remove_unless_referenced(sessions: sessionmaker[Session], blobs: BlobStore, checked: Verified) -> None:
    """Remove a failed submission's blob unless a row names it, deciding under the round row's exclusive
    lock: every submission inserting into this round holds its share lock until it commits (SQLite: every
    writer holds the database's), so a row about to commit with the same bytes is seen, never orphaned."""
    with sessions.begin() as session:
        session.execute(select(Round.id).where(Round.id == checked.round_id).with_for_update())
        if not _referenced(session, checked.digest):
            blobs.delete(checked.digest)


class _Lost(Exception):
    """A concurrent request of the same participant won the unique (round, participant) race: the replay
    receipt (same bytes) or the conflict (different bytes), decided while the winner's row was at hand."""

    def __init__(self, outcome: Receipt | Conflict) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


def _insert(session: Session, checked: Verified) -> Receipt:
    # Lock the round row against the close (PostgreSQL: FOR UPDATE blocks the close's UPDATE until this
    # commits; SQLite: the transaction already holds the write lock), then re-check it is still open: the
    # close loads the updates only after taking the round, so no accepted row can be missed by it. The lock
    # is exclusive, not FOR SHARE, because this transaction may update the row (request_early_close):
    # two share holders upgrading would deadlock. It also makes concurrent submissions of a round complete
    # it one after another, so exactly one of them requests the close. Taken before the
    # audit's lock, in the order the close takes them.
    round_ = session.execute(_LOCK_ROUND, {"b_round": checked.round_id}).one()
    _check_round(round_, checked.header, utcnow())
    now = utcnow()
    rid = receipt_id(checked.round_id, checked.subject, checked.digest)
    values = {
        "round_id": checked.round_id,
        "participant_id": checked.participant_id,
        "ciphertext_hash": checked.digest,
        "key_id": checked.header.key_id,
        "model_version_id": checked.header.model_version,
        "num_samples": checked.header.num_samples,
        "signature": checked.signature,
        "size_bytes": checked.size_bytes,
        "receipt_id": rid,
        "status": UpdateStatus.received,
        "submitted_at": now,
    }
    dialect = "postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"
    inserted = session.scalar(_INSERT_UPDATE[dialect], values)
    if inserted is None:
        winner = _existing(session, checked.round_id, checked.participant_id)
        if winner is None:  # the conflicting row exists by construction; never seen
            raise Conflict("conflicting_update", "a concurrent submission conflicted; retry")
        try:
            outcome: Receipt | Conflict = _replay(winner, checked.subject, checked.digest)
        except Conflict as conflict:
            outcome = conflict
        raise _Lost(outcome)
    session.execute(_TOUCH_PARTICIPANT, {"b_participant": checked.participant_id, "b_now": now})
    audit.write(
        session,
        checked.subject,
        "update.submit",
        f"round:{checked.round_id}",
        {
            "receipt": rid,
            "hash": checked.digest,
            "num_samples": checked.header.num_samples,
            "bytes": checked.size_bytes,
        },
    )
    close_requested = pipeline.request_early_close(session, checked.round_id, now)
    return Receipt(
        rid,
        checked.round_id,
        checked.subject,
        "0x" + checked.digest,
        checked.header.num_samples,
        now,
        False,
        close_requested=close_requested,
    )


def _shapes(session: Session, model_version_id: int) -> dict[str, tuple[int, ...]]:
    # Only the spec column: loading the whole model-version row (and caching nothing across databases).
    spec = session.scalar(_SELECT_SPEC, {"b_model_version": model_version_id})
    return {name: tuple(dims) for name, dims in (spec or {}).items()}


def _existing(session: Session, round_id: int, participant_id: int) -> Row[Any] | None:
    return session.execute(_SELECT_ACCEPTED, {"b_round": round_id, "b_participant": participant_id}).first()


def _referenced(session: Session, digest: str) -> bool:
    return (
        session.scalar(select(_updates.c.id).where(_updates.c.ciphertext_hash == digest).limit(1)) is not None
    )


def submit(
    read_sessions: sessionmaker[Session],
    write_sessions: sessionmaker[Session],
    *,
    chain: ChainReader,
    blobs: BlobStore,
    key_directory: Path,
    subject: str,
    round_id: int,
    envelope: bytes,
    signature: str,
) -> Receipt:
    """Verify then record a submission (:func:`verify`, :func:`record`); idempotent for the same bytes."""
    with read_sessions() as session:
        checked = verify(
            session,
            chain=chain,
            key_directory=key_directory,
            subject=subject,
            round_id=round_id,
            envelope=envelope,
            signature=signature,
        )
    if isinstance(checked, Receipt):
        return checked
    return record(write_sessions, blobs, checked, envelope)


def _replay(existing: _Accepted | Row[Any], subject: str, digest: str) -> Receipt:
    if existing.ciphertext_hash != digest:
        raise Conflict(
            "conflicting_update",
            f"a different update was already accepted for round {existing.round_id} (receipt {existing.receipt_id})",
        )
    return Receipt(
        existing.receipt_id,
        existing.round_id,
        subject,
        "0x" + digest,
        existing.num_samples,
        existing.submitted_at,
        replayed=True,
    )
