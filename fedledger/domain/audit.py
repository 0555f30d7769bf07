"""The hash-chained audit log: every entry's hash covers its content and its predecessor's hash.

Changing, inserting or deleting any past entry breaks every later link, which :func:`verify_chain`
finds. Appends are serialized (PostgreSQL advisory lock; SQLite takes its write lock at BEGIN) and a
unique ``prev_hash`` makes a fork impossible even if that serialization were bypassed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, func, insert, select, text
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
    entry = AuditEntry(**_link(session, actor, action, subject, details))
    session.add(entry)
    session.flush()
    return entry


def write(
    session: Session, actor: str, action: str, subject: str, details: dict[str, Any] | None = None
) -> None:
    """:func:`append` as one Core INSERT, without an ORM object or a flush of the session: the same entry,
    lock and link, at a fraction of the CPU (for the request path, which needs no entry object back)."""
    session.execute(_INSERT_ENTRY, _link(session, actor, action, subject, details))


_audit_log = cast(Table, AuditEntry.__table__)
# Built once: constructing a statement costs more CPU than executing its cached compilation.
_INSERT_ENTRY = insert(_audit_log)
_LAST_HASH = select(_audit_log.c.entry_hash).order_by(_audit_log.c.id.desc()).limit(1)
_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def _link(
    session: Session, actor: str, action: str, subject: str, details: dict[str, Any] | None
) -> dict[str, Any]:
    """The next entry's columns, chained to the latest entry, under the appends' serialization."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK, {"k": _ADVISORY_LOCK_KEY})
    last = session.scalars(_LAST_HASH).first()
    prev = last or GENESIS_HASH
    details = json.loads(json.dumps(details or {}, default=str))
    created_at = utcnow()
    return {
        "created_at": created_at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
        "prev_hash": prev,
        "entry_hash": entry_hash(prev, created_at, actor, action, subject, details),
    }


def entries(session: Session, after_id: int, limit: int) -> list[AuditEntry]:
    """Up to ``limit`` entries with an id above ``after_id``, in id order (a page of the log)."""
    return list(
        session.scalars(
            select(AuditEntry).where(AuditEntry.id > after_id).order_by(AuditEntry.id).limit(limit)
        )
    )


def head(session: Session) -> tuple[str, int]:
    """(hash of the latest entry, number of entries up to it): what a posted round anchors on-chain.
    (GENESIS_HASH, 0) for an empty log. Appends are serialized, so ids grow in commit order and the
    entries up to the latest one are exactly those with a smaller or equal id."""
    last = session.execute(
        select(AuditEntry.id, AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    if last is None:
        return GENESIS_HASH, 0
    count = session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.id <= last.id))
    return last.entry_hash, int(count or 0)


class Anchor(Protocol):
    """An on-chain anchor of the log (``fedledger.chain.ledger.AuditAnchor``): entry number ``count``
    (1-based, in id order) has hash ``head``."""

    @property
    def round_id(self) -> int:
        """The round whose record anchored the head."""
        ...

    @property
    def head(self) -> str:
        """The hash of entry number ``count`` (hex, as ``AuditEntry.entry_hash``)."""
        ...

    @property
    def count(self) -> int:
        """How many entries the head covers."""
        ...


@dataclass(frozen=True)
class ChainVerification:
    """Outcome of :func:`verify_chain`: ok, entries checked, and where and why it broke."""

    ok: bool
    entries: int
    first_bad_id: int | None = None
    reason: str = ""
    anchors_checked: int = 0
    # Entries after the highest anchor the log matched: protected by the hash chain only, so anyone who can
    # write the database can forge, rewrite or delete them undetected until a later anchor covers them.
    unanchored_entries: int = 0
    first_unanchored_id: int | None = None


def verify_chain(session: Session, anchors: Sequence[Anchor] = (), batch: int = 1000) -> ChainVerification:
    """Walk the whole log in id order, recomputing every hash and link, and check it against the heads that
    posted rounds anchored on-chain: entry number ``count`` must have the anchored hash (a log rewritten with
    recomputed hashes fails this), and the log must reach the highest anchored count (a cut tail fails this).
    Entries after the latest anchor are protected by the hash chain only, until the next anchor: the result
    says how many (``unanchored_entries``, from ``first_unanchored_id``) so that nobody reads "ok" as covering
    them."""
    by_count: dict[int, Anchor] = {}
    for anchor in anchors:
        by_count.setdefault(anchor.count, anchor)
    prev = GENESIS_HASH
    count = 0
    last_id = 0
    checked = 0
    anchored_count = 0
    first_unanchored_id: int | None = None
    while True:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
        ).all()
        if not rows:
            break
        for row in rows:
            if row.prev_hash != prev:
                return ChainVerification(
                    False, count, row.id, "link to the previous entry is broken", checked
                )
            expected = entry_hash(
                row.prev_hash, row.created_at, row.actor, row.action, row.subject, row.details
            )
            if expected != row.entry_hash:
                return ChainVerification(
                    False, count, row.id, "entry content does not match its hash", checked
                )
            prev = row.entry_hash
            count += 1
            last_id = row.id
            if first_unanchored_id is None:
                first_unanchored_id = row.id
            anchored = by_count.get(count)
            if anchored is not None:
                if anchored.head.lower().removeprefix("0x") != row.entry_hash:
                    return ChainVerification(
                        False,
                        count - 1,
                        row.id,
                        f"entry {count} differs from the head round {anchored.round_id} anchored on-chain "
                        "(the log was rewritten)",
                        checked,
                    )
                checked += 1
                anchored_count = count
                first_unanchored_id = None
    missing = [a for a in anchors if a.count > count]
    if missing:
        highest = max(missing, key=lambda a: a.count)
        return ChainVerification(
            False,
            count,
            None,
            f"the log has {count} entries but round {highest.round_id} anchored {highest.count} on-chain "
            "(entries were removed)",
            checked,
        )
    return ChainVerification(
        True,
        count,
        anchors_checked=checked,
        unanchored_entries=count - anchored_count,
        first_unanchored_id=first_unanchored_id,
    )
