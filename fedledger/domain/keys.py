"""Server encryption keys: the private halves live in files under the key directory (mode 0600, never in
the database), the public halves and their lifecycle in ``server_keys``."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import ServerKey
from fedledger.crypto.keys import KeyAlgorithm, generate_server_key
from fedledger.domain import audit
from fedledger.domain.errors import Unavailable


def ensure_dir(path: Path) -> Path:
    """Create the key directory readable by this user only (0700) if missing; returns it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _write_private(directory: Path, key_id: str, pem: bytes) -> None:
    target = directory / f"{key_id}.pem"
    tmp = directory / f".{key_id}.pem.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def all_keys(session: Session) -> list[ServerKey]:
    """Every server key, current and retired, oldest first."""
    return list(session.scalars(select(ServerKey).order_by(ServerKey.created_at)))


def rotate(
    session: Session, directory: Path, actor: str, algorithm: KeyAlgorithm = KeyAlgorithm.x25519
) -> ServerKey:
    """Make a fresh key current; the previous current key is retired but still decrypts."""
    pair = generate_server_key(algorithm)
    # The private key reaches the disk before the row that announces it commits: a crash in between
    # leaves an unused file, never a published key the server cannot open.
    _write_private(directory, pair.key_id, pair.private_pem)
    now = utcnow()
    session.execute(
        update(ServerKey).where(ServerKey.is_current.is_(True)).values(is_current=False, retired_at=now)
    )
    key = ServerKey(
        kid=pair.key_id,
        algorithm=pair.algorithm.value,
        public_key_pem=pair.public_pem.decode(),
        is_current=True,
    )
    session.add(key)
    audit.append(session, actor, "key.rotate", pair.key_id, {"algorithm": pair.algorithm.value})
    session.flush()
    return key


def current(session: Session) -> ServerKey | None:
    """The key clients should encrypt to now, if any."""
    return session.scalars(select(ServerKey).where(ServerKey.is_current.is_(True))).first()


def require_current(session: Session) -> ServerKey:
    """The current key; :class:`Unavailable` until an operator (or the API's start-up) rotates one in."""
    key = current(session)
    if key is None:
        raise Unavailable(
            "no_server_key", "the server has no encryption key yet; an operator must rotate one in"
        )
    return key


_PEM_CACHE: dict[Path, bytes] = {}


def private_key(directory: Path, kid: str) -> bytes | None:
    """The private PEM of server key ``kid``, if its file exists (read from disk once per process)."""
    path = directory / f"{kid}.pem"
    pem = _PEM_CACHE.get(path)
    if pem is None and path.exists():
        pem = _PEM_CACHE[path] = path.read_bytes()
    return pem


def private_keys(session: Session, directory: Path) -> dict[str, bytes]:
    """Every key id the server can open, with its private PEM (files are immutable once written, so
    each is read from disk once per process)."""
    keys: dict[str, bytes] = {}
    for kid in session.scalars(select(ServerKey.kid)):
        pem = private_key(directory, kid)
        if pem is not None:
            keys[kid] = pem
    return keys
