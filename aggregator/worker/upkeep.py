"""The beat's chain upkeep between rounds: queued slashes executed once due, reinstatements mirrored, the
audit head anchored.

Slashes above the prompt allowance wait ``slashDelay`` on-chain (a guardian may cancel them meanwhile), and
anyone may execute them after it; nobody else has a reason to, so the aggregator does. The candidates are the
organizations the worker ever slashed (its mined ``round:N:slash:ADDR`` transactions): at most one view call
each per run, and the registry's pending record says what is due. A cancelled or already executed slash
reads as nothing pending, so a second run sends nothing.

A guardian may reinstate an organization a slash (perhaps by a stolen slasher key) took out; the database
keeps the standing posting mirrored from the chain, and only the chain can end a slash, so the same run
mirrors reinstatements back (otherwise the organization would stay "slashed" in every count and listing
that reads the database, however often it submits again).

The audit log's head is anchored by every round record; entries written between rounds (enrollments, the
post's own entry) were protected by the hash chain only until the next round, however long that took. The
timer anchors the head when the log grew past the last anchor, a round's or its own.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from aggregator.worker.gateway import ChainGateway
from db.models import AuditEntry, ChainTransaction, Participant, ParticipantStatus, TxStatus
from fedledger.chain.reader import RegistryStatus
from fedledger.domain import audit

SLASH_PURPOSE = "round:%:slash:%"
ANCHOR_PREFIX = "audit:anchor:"


def slashed_addresses(sessions: sessionmaker[Session]) -> list[str]:
    """Every organization a mined slash of the worker's named, once each, in the order first slashed."""
    with sessions() as session:
        purposes = session.scalars(
            select(ChainTransaction.purpose)
            .where(ChainTransaction.purpose.like(SLASH_PURPOSE), ChainTransaction.status == TxStatus.mined)
            .order_by(ChainTransaction.id)
        )
        return list(dict.fromkeys(purpose.rsplit(":", 1)[1] for purpose in purposes))


def execute_due_slashes(sessions: sessionmaker[Session], gateway: ChainGateway) -> dict[str, str]:
    """Execute every queued slash whose delay is over; {address: tx hash} of those this run sent."""
    now = gateway.chain_time()
    sent_hashes: dict[str, str] = {}
    for address in slashed_addresses(sessions):
        amount, executable_at = gateway.pending_slash(address)
        # Nothing pending (never queued, executed, or cancelled by a guardian) or still in its window.
        if amount == 0 or executable_at > now:
            continue
        sent = gateway.execute_slash(address, executable_at)
        if sent is not None and not sent.reused:
            sent_hashes[address] = sent.tx_hash
    return sent_hashes


def mirror_reinstatements(sessions: sessionmaker[Session], gateway: ChainGateway) -> list[str]:
    """Mark active again every organization the database holds as slashed whom the chain has reinstated
    (a guardian's ``reinstate``), with an audit entry each; the addresses it changed. One view call per
    slashed organization; a second run changes nothing."""
    with sessions.begin() as session:
        slashed = session.scalars(
            select(Participant)
            .where(Participant.status == ParticipantStatus.slashed)
            .order_by(Participant.id)
        ).all()
        changed = []
        for participant in slashed:
            if gateway.participant(participant.address).status != RegistryStatus.active:
                continue
            participant.status = ParticipantStatus.active
            audit.append(
                session,
                "system",
                "participant.reinstated",
                participant.address,
                {"from": ParticipantStatus.slashed.value, "chain_status": RegistryStatus.active.name},
            )
            changed.append(participant.address)
        return changed


def last_anchored_count(session: Session) -> int:
    """The highest audit entry count anchored on-chain so far: by the latest posted round or by the timer."""
    counts = []
    # The log only grows, so the latest anchor the timer sent has the highest count.
    latest = session.scalars(
        select(ChainTransaction.purpose)
        .where(ChainTransaction.purpose.like(f"{ANCHOR_PREFIX}%"), ChainTransaction.status == TxStatus.mined)
        .order_by(ChainTransaction.id.desc())
        .limit(1)
    ).first()
    if latest is not None:
        counts.append(int(latest.removeprefix(ANCHOR_PREFIX)))
    post = session.scalars(
        select(AuditEntry.details)
        .where(AuditEntry.action == "round.post")
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).first()
    if post is not None:
        counts.append(int(post.get("audit_anchor", {}).get("count", 0)))
    return max(counts, default=0)


def anchor_audit_head(sessions: sessionmaker[Session], gateway: ChainGateway) -> tuple[str, int] | None:
    """Anchor the audit head if entries were appended since the last anchor; (tx hash, count) if sent."""
    with sessions() as session:
        head_hash, count = audit.head(session)
        if count == 0 or count <= last_anchored_count(session):
            return None
    sent = gateway.anchor_audit(bytes.fromhex(head_hash), count)
    return (sent.tx_hash, count) if sent is not None else None
