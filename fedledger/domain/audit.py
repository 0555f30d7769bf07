"""The hash-chained audit log: every entry's hash covers its content and its predecessor's hash.

Changing, inserting or deleting any past entry breaks every later link, which :func:`verify_chain`
finds. Appends are serialized (PostgreSQL advisory lock; SQLite takes its write lock at BEGIN) and a
unique ``prev_hash`` makes a fork impossible even if that serialization were bypassed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import AuditEntry

GENESIS_HASH = "0" * 64
_ADVISORY_LOCK_KEY = 0x66656461756474  # "fedaudt"


def entry_hash(
    prev_hash: str, created_at: datetime, actor: str, action: str, subject: str, details: dict[str, Any]
) -> str:
    """SHA-256 of an entry's canonical JSON, which includes its predecessor's hash (the chain link)."""
    body = json.dumps(
        {
            "prev": prev_hash,
            "at": created_at.isoformat(),
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def append(
    session: Session, actor: str, action: str, subject: str, details: dict[str, Any] | None = None
) -> AuditEntry:
    """Append an entry in the caller's transaction (it commits or rolls back with the change it records)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
    last = session.scalars(select(AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    prev = last or GENESIS_HASH
    details = json.loads(json.dumps(details or {}, default=str))
    created_at = utcnow()
    entry = AuditEntry(
        created_at=created_at,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
        prev_hash=prev,
        entry_hash=entry_hash(prev, created_at, actor, action, subject, details),
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainVerification:
    """Outcome of :func:`verify_chain`: ok, entries checked, and where and why it broke."""

    ok: bool
    entries: int
    first_bad_id: int | None = None
    reason: str = ""


def verify_chain(session: Session, batch: int = 1000) -> ChainVerification:
    """Walk the whole log in id order, recomputing every hash and link."""
    prev = GENESIS_HASH
    count = 0
    last_id = 0
    while True:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
        ).all()
        if not rows:
            return ChainVerification(True, count)
        for row in rows:
            if row.prev_hash != prev:
                return ChainVerification(False, count, row.id, "link to the previous entry is broken")
            expected = entry_hash(
                row.prev_hash, row.created_at, row.actor, row.action, row.subject, row.details
            )
            if expected != row.entry_hash:
                return ChainVerification(False, count, row.id, "entry content does not match its hash")
            prev = row.entry_hash
            count += 1
            last_id = row.id
