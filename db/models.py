"""The tables of fedledger (see docs/architecture.md, "Data").

Hashes are lowercase hex without 0x (SHA-256 of blob bytes) unless a column says otherwise; addresses are
EIP-55 checksummed; token amounts are decimal strings of wei (exact on every database).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, UTCDateTime, utcnow


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as their string values, with a CHECK constraint rather than a native PG enum type, so a
    # migration that adds a state is a plain ALTER on both databases.
    return Enum(
        cls,
        native_enum=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class ParticipantStatus(enum.StrEnum):
    """A participant's standing: only an active one may submit or change its registration."""

    active = "active"
    suspended = "suspended"
    slashed = "slashed"
    exited = "exited"


class RoundStatus(enum.StrEnum):
    """A round's life: open, closing (a worker holds its lease), aggregated, posted on-chain, or failed."""

    open = "OPEN"
    closing = "CLOSING"
    aggregated = "AGGREGATED"
    posted = "POSTED"
    failed = "FAILED"


class UpdateStatus(enum.StrEnum):
    """What became of a submitted update when its round closed."""

    received = "received"  # stored, waiting for the round to close
    aggregated = "aggregated"  # decrypted, valid, kept by the robust aggregator
    excluded = "excluded"  # decrypted, valid, excluded by the robust aggregator
    rejected = "rejected"  # failed validation (reason in rejection_reason)


class ModelStatus(enum.StrEnum):
    """A model version's standing; exactly one is active once the genesis model is uploaded."""

    active = "active"  # the current global model
    superseded = "superseded"  # was active, a newer version replaced it
    rejected = "rejected"  # candidate that degraded the holdout loss; never activated
    rolled_back = "rolled_back"  # was active, an operator rolled back past it


class Participant(Base):
    """An organization registered under its wallet, with its reputation and standing."""

    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(42), unique=True, index=True)
    org_name: Mapped[str] = mapped_column(String(200))
    # Identifier of the organization's own public encryption key (for results sent back to it).
    encryption_key_id: Mapped[str | None] = mapped_column(String(128), default=None)
    reputation: Mapped[float] = mapped_column(Float, default=50.0)
    trust: Mapped[float] = mapped_column(Float, default=1.0)
    status: Mapped[ParticipantStatus] = mapped_column(
        _enum(ParticipantStatus), default=ParticipantStatus.active
    )
    byzantine_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AuthNonce(Base):
    """A sign-in challenge: issued for one address, used at most once, refused after it expires."""

    __tablename__ = "auth_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The checksummed address the nonce was issued for: a login for any other address is refused. Null
    # only for nonces issued before the column existed (refused too).
    address: Mapped[str | None] = mapped_column(String(42), default=None)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Set once, atomically, when a login consumes the nonce: a second use finds it set.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    used_by: Mapped[str | None] = mapped_column(String(42), default=None)


class ServerKey(Base):
    """A server encryption key. Organizations encrypt updates for the current one; retired keys still
    decrypt updates of rounds that were open when they were current."""

    __tablename__ = "server_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(32))  # "RSA-OAEP-256" | "X25519"
    public_key_pem: Mapped[str] = mapped_column(Text)
    is_current: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ModelVersion(Base):
    """A signed global model version (weights in the blob store, by hash) and where it came from."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # the version number
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    weights_hash: Mapped[str] = mapped_column(String(64), index=True)
    # The model signer's EIP-712 ``Model(version, modelHash)`` signature (0x hex).
    signature: Mapped[str] = mapped_column(String(132))
    # Tensor names and shapes ({"name": [dims]}), so updates can be checked without loading weights.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[ModelStatus] = mapped_column(_enum(ModelStatus), default=ModelStatus.active, index=True)
    produced_by_round_id: Mapped[int | None] = mapped_column(
        ForeignKey("rounds.id", use_alter=True), default=None
    )
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # holdout loss, accuracy
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])


class Round(Base):
    """A training round: its model, window, quorum, governed-parameter snapshot and status."""

    __tablename__ = "rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # also the on-chain roundId
    status: Mapped[RoundStatus] = mapped_column(_enum(RoundStatus), default=RoundStatus.open, index=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The fewest updates a close at the deadline aggregates (with min_participants); never an early close.
    quorum: Mapped[int] = mapped_column(Integer)
    # Organizations active (status active, seen or registered) since then are the ones the round waits for:
    # it closes before its deadline only once every one of them has submitted. Null: every active one.
    active_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The organizations the operator invited (lower-cased wallets; e.g. a Flower server's sample): only
    # they may submit, and the round closes early once all of them have, instead of every active one.
    cohort: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    cohort_size: Mapped[int | None] = mapped_column(Integer, default=None)
    min_participants: Mapped[int] = mapped_column(Integer, default=1)
    strategy: Mapped[str] = mapped_column(String(32))
    # The governed parameters in force when the round opened (what the close will use).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    extensions: Mapped[int] = mapped_column(Integer, default=0)
    # A close holds the round by a lease, not a lock held by a process: a worker killed mid-close leaves
    # a lease that expires, and the next tick closes the round again (the close writes nothing until its
    # final transaction, so a second attempt starts from a clean state).
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When a close / a post of this round was last sent to the workers. The API and the beat send each
    # only when the round's state calls for it and this is unset (or older than a lease: the message was
    # lost with the broker), so one round costs one close and one post, however many submissions or ticks.
    close_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    post_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)

    model_version: Mapped[ModelVersion] = relationship(foreign_keys=[model_version_id])


class Update(Base):
    """One organization's sealed update to a round (the envelope in the blob store) and its fate."""

    __tablename__ = "updates"
    __table_args__ = (UniqueConstraint("round_id", "participant_id", name="uq_updates_round_participant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    # SHA-256 of the envelope bytes: the blob key and the EIP-712 payloadHash the participant signed.
    ciphertext_hash: Mapped[str] = mapped_column(String(64))
    # The server key it was sealed to; null for a secure-aggregation masked input (sealed to no server key:
    # the blob is the masked vector, which no key opens; see SecAggMessage).
    key_id: Mapped[str | None] = mapped_column(ForeignKey("server_keys.kid"), default=None)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    num_samples: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # self-reported
    signature: Mapped[str] = mapped_column(String(132))
    size_bytes: Mapped[int] = mapped_column(Integer)
    receipt_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[UpdateStatus] = mapped_column(_enum(UpdateStatus), default=UpdateStatus.received)
    # Why it was rejected, or excluded from the aggregate (shown to its organization with its contribution).
    rejection_reason: Mapped[str | None] = mapped_column(Text, default=None)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    participant: Mapped[Participant] = relationship()
    round: Mapped[Round] = relationship()


class Aggregation(Base):
    """What a round's close did: one row per round, written in the close's transaction."""

    __tablename__ = "aggregations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), unique=True)
    strategy: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    kept: Mapped[list[str]] = mapped_column(JSON, default=list)  # participant addresses
    excluded: Mapped[list[str]] = mapped_column(JSON, default=list)
    rejected: Mapped[list[str]] = mapped_column(JSON, default=list)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    rolled_back: Mapped[bool] = mapped_column(Boolean, default=False)
    holdout_loss_before: Mapped[float | None] = mapped_column(Float, default=None)
    holdout_loss_after: Mapped[float | None] = mapped_column(Float, default=None)
    holdout_accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    dp_noise_std: Mapped[float | None] = mapped_column(Float, default=None)
    epsilon_spent: Mapped[float | None] = mapped_column(Float, default=None)  # cumulative after this round
    rewards_root: Mapped[str | None] = mapped_column(String(66), default=None)
    total_reward_wei: Mapped[str] = mapped_column(String(80), default="0")
    tx_hashes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    durations_ms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Contribution(Base):
    """One participant's scored contribution to one round, and its reward claim (Merkle proof)."""

    __tablename__ = "contributions"
    __table_args__ = (
        UniqueConstraint("round_id", "participant_id", name="uq_contributions_round_participant"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    update_id: Mapped[int] = mapped_column(ForeignKey("updates.id"))
    quality: Mapped[float] = mapped_column(Float)
    timeliness: Mapped[float] = mapped_column(Float)
    honesty: Mapped[float] = mapped_column(Float)
    fitness: Mapped[float] = mapped_column(Float)
    kept: Mapped[bool] = mapped_column(Boolean)
    byzantine: Mapped[bool] = mapped_column(Boolean, default=False)
    reward_wei: Mapped[str] = mapped_column(String(80), default="0")
    merkle_proof: Mapped[list[str]] = mapped_column(JSON, default=list)  # 0x hex sibling hashes
    reputation_after: Mapped[float] = mapped_column(Float)
    # The reputation the close read (eligibility, the guarded rule's standing weights): with the round's
    # rows and blobs, what recomputing the round needs; NULL for rounds closed before it was recorded.
    reputation_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Why the close treated it as it did beyond the scores: evidence codes (fedledger.evidence.Evidence,
    # which this layer does not import), and what was measured for each code, by code.
    evidence: Mapped[list[str] | None] = mapped_column(JSON, default=list)
    evidence_detail: Mapped[dict[str, str] | None] = mapped_column(JSON, default=dict)

    participant: Mapped[Participant] = relationship()


class AuditEntry(Base):
    """Append-only, hash-chained: each entry's hash covers its content and the previous entry's hash."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))  # address, "system", or "worker"
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Unique: two appends that raced for the same predecessor cannot both commit (no fork in the chain).
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class TxStatus(enum.StrEnum):
    """A chain transaction the worker persisted: signed, mined or failed."""

    signed = "signed"  # persisted before broadcast; may or may not have reached the chain
    mined = "mined"
    failed = "failed"  # reverted, or superseded (its nonce went to another transaction)


class ChainTransaction(Base):
    """Every transaction the aggregator sends, persisted signed *before* it is broadcast.

    ``purpose`` is unique (e.g. ``round:7:record``, ``round:7:slash:0xabc``): a task retried after a crash
    rebroadcasts the same signed bytes (same nonce, so it can execute at most once) instead of signing a
    second transaction.
    """

    __tablename__ = "chain_transactions"
    # Two tasks that picked the same nonce cannot both persist it: the loser re-reads and picks the next.
    __table_args__ = (UniqueConstraint("sender", "nonce", name="uq_chain_transactions_sender_nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    purpose: Mapped[str] = mapped_column(String(128), unique=True)
    sender: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    raw: Mapped[str] = mapped_column(Text)
    status: Mapped[TxStatus] = mapped_column(_enum(TxStatus), default=TxStatus.signed)
    block_number: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeploymentBinding(Base):
    """The chain deployment this database belongs to (one row, written at the API's first start).

    A database kept across a chain restart (docker compose's PostgreSQL volume beside an in-memory dev node)
    would otherwise pair old rounds, rewards and stakes with new contracts; the API compares and refuses.
    """

    __tablename__ = "deployment_binding"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(Integer)
    ledger_address: Mapped[str] = mapped_column(String(42))
    deploy_block: Mapped[int] = mapped_column(Integer)
    # The chain's block 0 and deploy block hashes: a chain restarted and redeployed with the same account
    # gets the same addresses, chain id and deploy block number, never the same hashes. Null until the API
    # first reaches the node.
    genesis_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    deploy_block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SecAggPhase(enum.StrEnum):
    """Where a secure-aggregation round is (fedledger.domain.secagg): members join, groups are drawn, then the
    protocol's four steps, each ending when every expected member sent it or at its deadline."""

    joining = "join"  # members commit (signed join); then the seed block is fixed and awaited
    keys = "keys"  # step 1: key adverts
    shares = "shares"  # step 2: share bundles
    masked = "masked"  # step 3: masked inputs
    unmask = "unmask"  # step 4: share reveals
    closed = "closed"  # the protocol is over: the round's close unmasks the groups


class SecAggStep(enum.StrEnum):
    """The four kinds of message a member sends (fedledger.secagg.wire)."""

    keys = "keys"
    shares = "shares"
    masked = "masked"
    unmask = "unmask"


class SecAggRound(Base):
    """A round in the secure-aggregation mode: its snapshot of the mode, its phase, and its group seed."""

    __tablename__ = "secagg_rounds"

    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    group_size: Mapped[int] = mapped_column(Integer)
    clip: Mapped[float] = mapped_column(Float)
    dimension: Mapped[int] = mapped_column(Integer)  # coordinates of the model's update
    phase: Mapped[SecAggPhase] = mapped_column(_enum(SecAggPhase), default=SecAggPhase.joining)
    phase_deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    # The block whose hash seeds the groups: the chain's next block when the join phase ended, so nobody
    # who joined could know it; null until then. The seed is group_seed(block hash, round id), 0x hex.
    seed_block: Mapped[int | None] = mapped_column(Integer, default=None)
    seed_block_hash: Mapped[str | None] = mapped_column(String(66), default=None)
    seed: Mapped[str | None] = mapped_column(String(66), default=None)
    # Members no group took (a reputation tier smaller than one group), and why the protocol stopped early.
    left_out: Mapped[list[str]] = mapped_column(JSON, default=list)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A round that failed after some groups were unmasked under DP: what the released sums cost, written with
    # the failure (the accountant's epsilon after it, the noise on the charged group's mean, the charge's
    # figures). An aggregated round's charge is its aggregation row's; the close counts both.
    epsilon_spent: Mapped[float | None] = mapped_column(Float, default=None)
    dp_noise_std: Mapped[float | None] = mapped_column(Float, default=None)
    dp_charge: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class SecAggMember(Base):
    """An organization that joined a secure round (its signed ``SecAggJoin``) and the group it was drawn into."""

    __tablename__ = "secagg_members"
    __table_args__ = (
        UniqueConstraint("round_id", "participant_id", name="uq_secagg_members_round_participant"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"))
    address: Mapped[str] = mapped_column(String(42))
    signature: Mapped[str] = mapped_column(String(132))
    group_index: Mapped[int | None] = mapped_column(Integer, default=None)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SecAggGroup(Base):
    """One group of a secure round: its members (checksummed, sorted) and, once closed, what unmasking gave."""

    __tablename__ = "secagg_groups"
    __table_args__ = (UniqueConstraint("round_id", "group_index", name="uq_secagg_groups_round_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    group_index: Mapped[int] = mapped_column(Integer)
    members: Mapped[list[str]] = mapped_column(JSON)
    threshold: Mapped[int] = mapped_column(Integer)
    group_id: Mapped[str] = mapped_column(String(66))  # GroupContext.group_id, 0x hex
    # Written by the round's close: the survivors whose updates are in the sum, the members left out of
    # it, the sum's mean (float32 blob: what the server learns of the group), or why it failed.
    survivors: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    dropped: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    mean_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)


class SecAggMessage(Base):
    """One protocol message exactly as its member sent it (wire JSON; a masked vector as a blob by hash).
    Only what members send: never a plaintext update, never a secret the protocol keeps from the server."""

    __tablename__ = "secagg_messages"
    __table_args__ = (
        UniqueConstraint("round_id", "sender", "step", name="uq_secagg_messages_round_sender_step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    group_index: Mapped[int] = mapped_column(Integer)
    sender: Mapped[str] = mapped_column(String(42))
    step: Mapped[SecAggStep] = mapped_column(_enum(SecAggStep))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    # SHA-256 of the canonical body (and the vector's blob hash): the same message again is a no-op.
    body_hash: Mapped[str] = mapped_column(String(64))
    blob_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    size_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
