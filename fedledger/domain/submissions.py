"""Accepting an encrypted, signed update: every check before anything is stored, then one transaction.

Order of checks (cheapest first, and nothing is decrypted for an unauthenticated or mis-addressed
request): participant registered and active (database and chain) -> envelope header -> round, model
version and sample count -> round open and before its deadline -> EIP-712 signature by the JWT subject
over the envelope's hash -> decryption with the key the header names -> payload shapes against the model.
Then: idempotent replay (same bytes, same receipt) or 409 for a different payload; blob, row and audit
entry in one transaction; the aggregator is told after the commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import Participant, ParticipantStatus, Round, RoundStatus, ServerKey, Update, UpdateStatus
from fedledger.chain.reader import ChainReader, RegistryStatus
from fedledger.crypto.eip712 import recover_update_signer
from fedledger.crypto.envelope import EnvelopeHeader, open_envelope, parse_header
from fedledger.crypto.errors import CryptoError, DecryptionFailed, UnknownKey
from fedledger.domain import audit, keys
from fedledger.domain.blobstore import BlobStore
from fedledger.domain.errors import Conflict, Forbidden, Invalid, Malformed, NotFound, Unauthenticated
from fedledger.payload import UpdateFormatError, decode_update

MAX_SAMPLES = 10**9


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    round_id: int
    participant: str
    payload_hash: str
    num_samples: int
    received_at: datetime
    replayed: bool


def receipt_id(round_id: int, participant: str, digest: str) -> str:
    return hashlib.sha256(f"{round_id}|{participant}|{digest}".encode()).hexdigest()[:32]


def _participant(session: Session, chain: ChainReader, address: str) -> Participant:
    participant = session.scalars(select(Participant).where(Participant.address == address)).first()
    if participant is None:
        raise Forbidden("not_registered", "register first: POST /v1/participants")
    enrollment = chain.enrollment(address)
    if enrollment.status == RegistryStatus.none:
        raise Forbidden("not_enrolled", "not enrolled on-chain: stake with ParticipantRegistry.enroll first")
    if enrollment.status != RegistryStatus.active:
        raise Forbidden(
            f"participant_{enrollment.status.name}",
            f"participant is {enrollment.status.name} on-chain and may not submit",
        )
    if participant.status != ParticipantStatus.active:
        raise Forbidden(
            f"participant_{participant.status.value}",
            f"participant is {participant.status.value} and may not submit",
        )
    return participant


def _check_round(round_: Round, header: EnvelopeHeader, now: datetime) -> None:
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


def submit(
    session: Session,
    *,
    chain: ChainReader,
    blobs: BlobStore,
    key_directory: Path,
    subject: str,
    round_id: int,
    envelope: bytes,
    signature: str,
) -> Receipt:
    participant = _participant(session, chain, subject)
    try:
        header = parse_header(envelope)
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
    round_ = session.get(Round, round_id)
    if round_ is None:
        raise NotFound("unknown_round", f"round {round_id} does not exist")
    digest = hashlib.sha256(envelope).hexdigest()

    existing = session.scalars(
        select(Update).where(Update.round_id == round_id, Update.participant_id == participant.id)
    ).first()
    if existing is not None:
        return _replay(existing, subject, digest)
    _check_round(round_, header, utcnow())

    try:
        signer = recover_update_signer(
            signature,
            chain_id=chain.deployments.chain_id,
            verifying_contract=chain.deployments.addresses["ContributionLedger"],
            round_id=header.round_id,
            model_version=header.model_version,
            payload_hash=bytes.fromhex(digest),
            num_samples=header.num_samples,
        )
    except CryptoError as exc:
        raise Unauthenticated("bad_signature", f"update signature is malformed: {exc}") from exc
    if signer != subject:
        raise Unauthenticated(
            "bad_signature",
            "the update signature is not the signed-in wallet's (or covers other fields)",
        )

    key = session.get(ServerKey, header.key_id)
    if key is None:
        raise Invalid("unknown_key", f"key {header.key_id} is not a server key; fetch GET /v1/keys/current")
    if key.retired_at is not None and key.retired_at < round_.opened_at:
        raise Invalid(
            "retired_key",
            f"key {header.key_id} was retired before round {round_id} opened; use the current key",
        )
    try:
        _, plaintext = open_envelope(envelope, keys.private_keys(session, key_directory))
    except UnknownKey as exc:
        raise Invalid("unknown_key", str(exc)) from exc
    except (DecryptionFailed, CryptoError) as exc:
        raise Invalid(
            "undecryptable", f"the envelope does not decrypt with key {header.key_id}: {exc}"
        ) from exc
    shapes = {name: tuple(dims) for name, dims in round_.model_version.spec.items()}
    try:
        decode_update(plaintext, shapes)
    except UpdateFormatError as exc:
        raise Invalid(
            "shape_mismatch", f"the update does not fit model version {round_.model_version_id}: {exc}"
        ) from exc

    blobs.put(envelope)
    now = utcnow()
    rid = receipt_id(round_id, subject, digest)
    update = Update(
        round_id=round_id,
        participant_id=participant.id,
        ciphertext_hash=digest,
        key_id=header.key_id,
        model_version_id=header.model_version,
        num_samples=header.num_samples,
        signature=signature,
        size_bytes=len(envelope),
        receipt_id=rid,
        status=UpdateStatus.received,
        submitted_at=now,
    )
    try:
        with session.begin_nested():
            session.add(update)
            session.flush()
    except IntegrityError:
        # A concurrent request of the same participant won the unique (round, participant) race.
        winner = session.scalars(
            select(Update).where(Update.round_id == round_id, Update.participant_id == participant.id)
        ).one()
        return _replay(winner, subject, digest)
    participant.last_seen_at = now
    audit.append(
        session,
        subject,
        "update.submit",
        f"round:{round_id}",
        {
            "receipt": rid,
            "hash": digest,
            "num_samples": header.num_samples,
            "bytes": len(envelope),
        },
    )
    return Receipt(rid, round_id, subject, "0x" + digest, header.num_samples, now, replayed=False)


def _replay(existing: Update, subject: str, digest: str) -> Receipt:
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
