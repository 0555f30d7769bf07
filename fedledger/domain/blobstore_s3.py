"""The blob store on an S3-compatible object store (MinIO, AWS S3, Ceph RGW...): one store shared by API
processes and workers on several machines.

Keys are ``<prefix><first two hex digits>/<digest>``, as the filesystem store lays out its files. How the
store's promises (:mod:`fedledger.domain.blobstore`) hold here:

- atomic for readers: an object store publishes a PUT whole when it completes, never a part of it;
- idempotent: a PUT carries ``If-None-Match: *``, so a second write of a key that exists is refused by the
  server (412) and taken as done: the bytes under a content-addressed key are the same by construction;
- integrity: each PUT carries the SHA-256 of its body (``x-amz-checksum-sha256``); AWS S3 and MinIO check
  it and refuse bytes damaged in transit (moto, the test server, stores it unchecked);
- a missing key raises :class:`BlobNotFound`; any other error of the store :class:`BlobStoreUnavailable` (an
  ``OSError``) that names the bucket and what to check.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fedledger.domain.blobstore import (
    BlobNotFound,
    BlobStoreUnavailable,
    StoredBlob,
    check_digest,
    check_range,
)

if TYPE_CHECKING:
    from fedledger.config import Settings

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_EXISTS = frozenset({"PreconditionFailed", "412"})


class S3BlobStore:
    """Content-addressed blobs in ``bucket`` under ``prefix`` (see the module docstring)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, create_bucket: bool = True) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        if create_bucket:
            self._ensure_bucket()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        """A store on the settings' endpoint, bucket and credentials (``FEDLEDGER_S3_*``)."""
        secret = settings.s3_secret_access_key.get_secret_value()
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=secret or None,
            # Path-style addressing: MinIO and most self-hosted stores serve no per-bucket host names.
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
        )
        return cls(client, settings.s3_bucket, settings.s3_prefix)

    @property
    def location(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, digest: str) -> str:
        """The object key of ``digest`` (refuses anything but a SHA-256 hex digest)."""
        return f"{self.prefix}{check_digest(digest)[:2]}/{digest}"

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` under its SHA-256 (the server checks the checksum); a key that exists is left as it is."""
        raw = hashlib.sha256(data).digest() if digest is None else bytes.fromhex(check_digest(digest))
        digest = raw.hex()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(digest),
                Body=data,
                IfNoneMatch="*",
                ChecksumSHA256=base64.b64encode(raw).decode("ascii"),
            )
        except ClientError as exc:
            if _code(exc) not in _EXISTS:
                raise self._unavailable("write", digest, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("write", digest, exc) from exc
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; :class:`BlobNotFound` if there are none."""
        return self._read(digest, None)

    def get_range(self, digest: str, start: int, size: int) -> bytes:
        """``size`` bytes from offset ``start`` (fewer at the end): one ranged GET, the rest never leaves the store."""
        check_range(start, size)
        if size == 0:
            if not self.exists(digest):
                raise BlobNotFound(digest)
            return b""
        return self._read(digest, f"bytes={start}-{start + size - 1}")

    def head(self, digest: str, size: int) -> bytes:
        """The first ``size`` bytes of a blob (all of it if shorter)."""
        return self.get_range(digest, 0, size)

    def exists(self, digest: str) -> bool:
        """Whether a blob is stored under ``digest`` (one HEAD request)."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise self._unavailable("look up", digest, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("look up", digest, exc) from exc
        return True

    def delete(self, digest: str) -> None:
        """Remove a blob (idempotent: S3 answers a delete of a missing key with success)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("delete", digest, exc) from exc

    def stored(self) -> Iterator[StoredBlob]:
        """Every blob under the prefix (objects named like the store's keys; anything else is skipped)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", ()):
                    name = item["Key"][len(self.prefix) :]
                    directory, _, digest = name.partition("/")
                    try:
                        check_digest(digest)
                    except ValueError:
                        continue
                    if directory != digest[:2]:
                        continue
                    yield StoredBlob(digest, int(item["Size"]), item["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("list", None, exc) from exc

    def temporary_files(self) -> Iterator[tuple[Path, float]]:
        """None: an object store publishes a write whole, leaving nothing behind when a writer dies."""
        return iter(())

    def _read(self, digest: str, byte_range: str | None) -> bytes:
        arguments: dict[str, str] = {"Bucket": self.bucket, "Key": self.key(digest)}
        if byte_range is not None:
            arguments["Range"] = byte_range
        try:
            body: bytes = self.client.get_object(**arguments)["Body"].read()
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING:
                raise BlobNotFound(digest) from exc
            if code == "InvalidRange":  # a range starting at or past the end of the blob: nothing there
                return b""
            raise self._unavailable("read", digest, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("read", digest, exc) from exc
        return body

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _MISSING and _code(exc) != "NoSuchBucket":
                raise self._unavailable("open the bucket of", None, exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable("open the bucket of", None, exc) from exc
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            # Another process created it between the two calls: what was wanted.
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._unavailable("create the bucket of", None, exc) from exc

    def _unavailable(self, action: str, digest: str | None, exc: Exception) -> BlobStoreUnavailable:
        what = f"blob {digest}" if digest else "the blob store"
        return BlobStoreUnavailable(
            f"cannot {action} {what} in {self.location} ({type(exc).__name__}: {exc}); check "
            "FEDLEDGER_S3_ENDPOINT_URL, FEDLEDGER_S3_BUCKET and the S3 credentials, and that the store is up"
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
