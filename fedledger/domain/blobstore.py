"""Content-addressed blob stores: the key of a blob is the SHA-256 of its bytes.

:class:`BlobStore` is what the API and the workers use; two backends keep its promises:

- :class:`FilesystemBlobStore`: files under one directory, the embedded default (one machine);
- :class:`fedledger.domain.blobstore_s3.S3BlobStore`: an S3-compatible object store (MinIO, AWS S3...), so
  API processes and workers on different machines share one store.

The promises, whatever the backend: a blob appears under its key whole or not at all (a reader never sees
a partial write), writing the same bytes twice stores them once, reading a key that holds nothing raises
:class:`BlobNotFound`, and a failure of the store itself is an :class:`OSError` (so callers that already
handle a disk's errors handle an object store's). :func:`fedledger.domain.blob_backends.open_blob_store` picks the backend
from the settings.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_HASH = re.compile(r"^[0-9a-f]{64}$")
_TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StoredBlob:
    """A file of the store: its digest, size and last modification (unix seconds)."""

    digest: str
    size: int
    mtime: float


class BlobNotFound(KeyError):
    """No blob is stored under that digest."""

    pass


class BlobStoreUnavailable(OSError):
    """The store could not be reached or refused the request (an object store's error, with what to check)."""


class BlobStore(Protocol):
    """A content-addressed store (see the module docstring for the promises every backend keeps)."""

    @property
    def location(self) -> str:
        """Where the blobs are, for logs and messages (a directory, or ``s3://bucket/prefix``)."""
        ...

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` (durable before it appears under its key); returns its SHA-256 hex digest.
        ``digest``: the SHA-256 hex digest of exactly these bytes when the caller has just computed it."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; :class:`BlobNotFound` if there are none."""
        ...

    def get_range(self, digest: str, start: int, size: int) -> bytes:
        """``size`` bytes from offset ``start`` (fewer at the end of the blob); :class:`BlobNotFound` if
        there is no blob. What a worker reads of an update it handles only part of."""
        ...

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest``."""
        ...

    def delete(self, digest: str) -> None:
        """Remove a blob (idempotent): only for one that nothing references."""
        ...

    def head(self, digest: str, size: int) -> bytes:
        """The first ``size`` bytes of a blob (all of it if shorter); :class:`BlobNotFound` if there is none."""
        ...

    def stored(self) -> Iterator[StoredBlob]:
        """Every blob in the store, in no set order (one removed while the listing runs is skipped)."""
        ...

    def temporary_files(self) -> Iterator[tuple[Path, float]]:
        """Local files of writes under way or cut short by a crash (path, last modification); a backend whose
        writes are atomic on the server (an object store) has none."""
        ...


def check_digest(digest: str) -> str:
    """``digest`` if it is a lowercase SHA-256 hex digest; ValueError otherwise (no path or key tricks)."""
    if not isinstance(digest, str) or not _HASH.match(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return digest


def check_range(start: int, size: int) -> None:
    """A byte range's offset and length must be non-negative integers."""
    if start < 0 or size < 0:
        raise ValueError(f"a byte range needs a non-negative offset and size, got {start} and {size}")


class FilesystemBlobStore:
    """Writes are atomic (temporary file, fsync, rename) and idempotent (same bytes, same key, one file),
    so a crash never leaves a partial blob under a valid key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def location(self) -> str:
        """The store's directory."""
        return str(self.root)

    def path(self, digest: str) -> Path:
        """Where the blob of ``digest`` lives (refuses anything but a SHA-256 hex digest: no path tricks)."""
        return self.root / check_digest(digest)[:2] / digest

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` durably (fsynced before it appears under its key); returns its SHA-256 hex digest.

        ``digest``: the SHA-256 hex digest of exactly these bytes when the caller has just computed it (a
        submission hashed its envelope for the signature check): not computed a second time."""
        if digest is None:
            digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; :class:`BlobNotFound` if there are none."""
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def get_range(self, digest: str, start: int, size: int) -> bytes:
        """``size`` bytes from offset ``start`` (fewer at the end); :class:`BlobNotFound` if there is none."""
        check_range(start, size)
        try:
            with self.path(digest).open("rb") as handle:
                handle.seek(start)
                return handle.read(size)
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest``."""
        return self.path(digest).exists()

    def delete(self, digest: str) -> None:
        """Remove a blob (idempotent): only for one that nothing references, e.g. a submission that lost."""
        self.path(digest).unlink(missing_ok=True)

    def head(self, digest: str, size: int) -> bytes:
        """The first ``size`` bytes of a blob (all of it if shorter); :class:`BlobNotFound` if there is none."""
        try:
            with self.path(digest).open("rb") as handle:
                return handle.read(size)
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc

    def stored(self) -> Iterator[StoredBlob]:
        """Every blob in the store (files named by a digest, in their digest's directory), in no set order.

        A blob removed while the listing runs is skipped, not an error."""
        for directory in self._directories():
            for entry in _scan(directory):
                if entry.name[:2] != directory.name or not _HASH.match(entry.name):
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield StoredBlob(entry.name, stat.st_size, stat.st_mtime)

    def temporary_files(self) -> Iterator[tuple[Path, float]]:
        """Temporary files of writes (path, last modification): a write that is under way, or one a crash cut
        short (never renamed to its key, never read by anyone)."""
        for directory in self._directories():
            for entry in _scan(directory):
                if not entry.name.startswith(_TEMP_PREFIX):
                    continue
                try:
                    yield Path(entry.path), entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue

    def _directories(self) -> Iterator[Path]:
        for entry in _scan(self.root):
            if len(entry.name) == 2 and entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError:
        return []
