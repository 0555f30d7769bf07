"""Orphan blobs: sealed updates that no row names, left by a crash between a submission's fsync and its commit.

A submission writes its envelope to the blob store (fsynced) outside the database transaction, then commits
the row that names it (:func:`fedledger.domain.submissions.record`); a submission that fails cleans up after
itself, but a crash of the API between the two leaves a file that no row will ever name.
:func:`sweep_orphans` removes such files; the API runs it at start-up and ``fedledger blobs sweep`` on demand.

What makes it safe to run beside live submissions:

- only sealed updates (the envelope framing, whose header names a round) are removed; model weights and any
  other file the store holds are left alone, as are the blobs a model version names;
- a file younger than the grace period is kept: it may be a submission's that has not committed yet;
- each removal is decided under the lock of the round the envelope's header names, the lock every
  submission inserting into that round holds until it commits (as a failed submission's own cleanup,
  ``submissions._remove_unless_referenced``). A submission of the same bytes, which finds the old file and
  writes nothing, is therefore either seen committed (the file is kept) or takes the lock after the sweep
  and writes the file again before its row commits (the re-put in ``submissions.record``).

Temporary files of writes a crash cut short are removed too, once older than the grace period.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import ModelVersion, Round, Update
from fedledger.crypto.chunked import is_chunked
from fedledger.crypto.chunked import parse_header as parse_chunked_header
from fedledger.crypto.envelope import MAX_HEADER_BYTES, TAG_BYTES, parse_header
from fedledger.crypto.errors import CryptoError
from fedledger.domain.blobstore import BlobNotFound, BlobStore

# Enough of a file to read an envelope's framing and its largest header: magic, length, header, tag.
_HEAD_BYTES = 8 + MAX_HEADER_BYTES + TAG_BYTES
# Digests per IN (...) query: well under every driver's limit on bound parameters.
_CHUNK = 500


@dataclass(frozen=True)
class SweepReport:
    """What a sweep removed (or, in a dry run, would remove) and what it kept, by reason."""

    dry_run: bool
    grace_seconds: float
    removed: tuple[str, ...] = ()  # digests of the orphaned updates
    removed_bytes: int = 0
    temporary_removed: int = 0  # files of writes a crash cut short
    referenced: int = 0  # blobs past the grace period that a row names
    recent: int = 0  # blobs within the grace period, kept whatever they are
    not_updates: int = 0  # unreferenced blobs that are not sealed updates (never removed here)
    errors: tuple[str, ...] = field(default=())  # files that could not be read or removed, with why

    def summary(self) -> str:
        """One line for a log or a terminal."""
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{verb} {len(self.removed)} orphaned update blob(s) ({self.removed_bytes} bytes) and "
            f"{self.temporary_removed} stale temporary file(s); kept {self.referenced} referenced, "
            f"{self.recent} younger than {self.grace_seconds:g} s, {self.not_updates} not sealed updates"
            + (f"; {len(self.errors)} error(s)" if self.errors else "")
        )


def sweep_orphans(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    *,
    grace_seconds: float,
    dry_run: bool = False,
    now: float | None = None,
    read_sessions: sessionmaker[Session] | None = None,
) -> SweepReport:
    """Remove sealed-update blobs that no update row names and that are older than ``grace_seconds``
    (by modification time), and temporary files as old; ``dry_run`` only reports. Idempotent.

    ``sessions`` write (on SQLite their transactions take the write lock, which is the round's lock there);
    ``read_sessions``, if given, do the first, unlocked look-up of which files rows name (a dry run decides
    on it alone). See the module's documentation for why this is safe beside live submissions."""
    if grace_seconds < 0:
        raise ValueError(f"the grace period must be 0 s or more, not {grace_seconds}")
    cutoff = (time.time() if now is None else now) - grace_seconds
    old: dict[str, int] = {}
    recent = 0
    for blob in blobs.stored():
        if blob.mtime > cutoff:
            recent += 1
        else:
            old[blob.digest] = blob.size

    named: set[str] = set()
    if old:
        with (read_sessions or sessions)() as session:
            named = _named(session, old)
    by_round: dict[int, list[str]] = defaultdict(list)
    not_updates = 0
    errors: list[str] = []
    for digest in sorted(old.keys() - named):
        try:
            round_id = _envelope_round(blobs.head(digest, _HEAD_BYTES))
        except BlobNotFound:
            continue  # removed meanwhile (a failed submission's cleanup, another sweep)
        except OSError as exc:
            errors.append(f"{digest}: {exc}")
            continue
        if round_id is None:
            not_updates += 1
        else:
            by_round[round_id].append(digest)

    removed: list[str] = []
    referenced = len(named)
    for round_id, digests in sorted(by_round.items()):
        if dry_run:
            removed.extend(digests)
            continue
        # The round's lock, as a submission inserting into it takes it (SQLite: the write lock, at BEGIN).
        with sessions.begin() as session:
            session.execute(select(Round.id).where(Round.id == round_id).with_for_update())
            now_named = _named(session, digests)
            for digest in digests:
                if digest in now_named:
                    referenced += 1
                    continue
                try:
                    blobs.delete(digest)
                except OSError as exc:
                    errors.append(f"{digest}: {exc}")
                    continue
                removed.append(digest)

    temporary = 0
    for path, mtime in blobs.temporary_files():
        if mtime > cutoff:
            continue
        if not dry_run:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                errors.append(f"{path.name}: {exc}")
                continue
        temporary += 1

    return SweepReport(
        dry_run=dry_run,
        grace_seconds=grace_seconds,
        removed=tuple(removed),
        removed_bytes=sum(old[d] for d in removed),
        temporary_removed=temporary,
        referenced=referenced,
        recent=recent,
        not_updates=not_updates,
        errors=tuple(errors),
    )


def _named(session: Session, digests: Iterable[str]) -> set[str]:
    """Which of ``digests`` an update row or a model version names."""
    wanted = list(digests)
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found.update(session.scalars(select(Update.ciphertext_hash).where(Update.ciphertext_hash.in_(chunk))))
        found.update(
            session.scalars(select(ModelVersion.weights_hash).where(ModelVersion.weights_hash.in_(chunk)))
        )
    return found


def _envelope_round(head: bytes) -> int | None:
    """The round a sealed update's header names, or None when the bytes are not a sealed update."""
    try:
        if is_chunked(head):
            return parse_chunked_header(head)[0].round_id
        return parse_header(head).round_id
    except (CryptoError, ValueError):  # any framing or header the envelope parser refuses
        return None
