"""The blob store's promises, the same for both backends: the filesystem and a real S3-compatible server
(moto's standalone server, started on a free port of this machine for the session)."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from fedledger.config import Settings
from fedledger.domain.blob_backends import open_blob_store
from fedledger.domain.blobstore import (
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    FilesystemBlobStore,
)
from fedledger.domain.blobstore_s3 import S3BlobStore
from fedledger.domain.blobsweep import sweep_orphans


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_settings(endpoint: str, tmp_path: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "blob_backend": "s3",
        "s3_endpoint_url": endpoint,
        "s3_bucket": f"fl-{uuid.uuid4().hex[:12]}",
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "filesystem":
        return open_blob_store(Settings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_blob_store(s3_settings(endpoint, tmp_path, s3_prefix="deployment-a/"))


def test_the_settings_pick_the_backend(tmp_path: Path, s3_endpoint: str) -> None:
    assert isinstance(open_blob_store(Settings(_env_file=None, data_dir=tmp_path)), FilesystemBlobStore)  # type: ignore[call-arg]
    settings = s3_settings(s3_endpoint, tmp_path)
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert store.location == f"s3://{settings.s3_bucket}/"
    # The bucket did not exist: the store created it, and a second store on it opens it as it is.
    digest = store.put(b"model")
    assert open_blob_store(settings).get(digest) == b"model"


def test_put_addresses_by_sha256_and_get_returns_the_bytes(store: BlobStore) -> None:
    data = b"sealed update " * 1000
    digest = store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.exists(digest)
    assert store.get(digest) == data
    # A caller that has just hashed the bytes passes the digest: the same key.
    assert store.put(data, digest) == digest


def test_writing_the_same_bytes_twice_stores_them_once(store: BlobStore) -> None:
    digest = store.put(b"one")
    assert store.put(b"one") == digest
    assert [b.digest for b in store.stored()] == [digest]
    assert [b.size for b in store.stored()] == [3]


def test_concurrent_writes_of_the_same_bytes_all_succeed_and_store_one_blob(store: BlobStore) -> None:
    data = b"x" * 100_000
    results: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            results.append(store.put(data))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert set(results) == {hashlib.sha256(data).hexdigest()}
    assert len(list(store.stored())) == 1
    assert store.get(results[0]) == data


def test_a_missing_blob_is_blob_not_found(store: BlobStore) -> None:
    missing = "ab" * 32
    assert not store.exists(missing)
    with pytest.raises(BlobNotFound):
        store.get(missing)
    with pytest.raises(BlobNotFound):
        store.get_range(missing, 0, 10)
    with pytest.raises(BlobNotFound):
        store.head(missing, 10)


def test_ranges_read_only_the_bytes_asked_for(store: BlobStore) -> None:
    data = bytes(range(256)) * 4
    digest = store.put(data)
    assert store.get_range(digest, 10, 20) == data[10:30]
    assert store.get_range(digest, 1000, 100) == data[1000:]  # fewer at the end
    assert store.get_range(digest, 5000, 10) == b""  # past the end
    assert store.get_range(digest, 3, 0) == b""
    assert store.head(digest, 8) == data[:8]
    assert store.head(digest, 10**6) == data
    with pytest.raises(ValueError, match="non-negative"):
        store.get_range(digest, -1, 3)


def test_delete_is_idempotent(store: BlobStore) -> None:
    digest = store.put(b"to remove")
    store.delete(digest)
    store.delete(digest)
    assert not store.exists(digest)
    assert list(store.stored()) == []


def test_keys_must_be_sha256_hex_digests(store: BlobStore) -> None:
    for bad in ("../etc/passwd", "AB" * 32, "ab" * 31, ""):
        with pytest.raises(ValueError, match="SHA-256"):
            store.get(bad)
        with pytest.raises(ValueError, match="SHA-256"):
            store.put(b"x", bad)


def test_the_listing_has_sizes_and_times_and_skips_foreign_objects(store: BlobStore) -> None:
    a, b = store.put(b"a" * 10), store.put(b"b" * 20)
    if isinstance(store, S3BlobStore):
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + "notes.txt", Body=b"not a blob")
        store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}zz/{a}", Body=b"misfiled")
        store.client.put_object(Bucket=store.bucket, Key=f"other-deployment/{a[:2]}/{a}", Body=b"a" * 10)
    else:
        assert isinstance(store, FilesystemBlobStore)
        (store.root / "notes.txt").write_bytes(b"not a blob")
    listed = {blob.digest: blob for blob in store.stored()}
    assert set(listed) == {a, b}
    assert (listed[a].size, listed[b].size) == (10, 20)
    assert all(blob.mtime > 0 for blob in listed.values())


def test_an_unreachable_object_store_is_an_os_error_that_says_what_to_check(tmp_path: Path) -> None:
    from fedledger.chain.devnode import free_port

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(BlobStoreUnavailable, match="FEDLEDGER_S3_ENDPOINT_URL") as raised:
        S3BlobStore(client, "fedledger")
    assert isinstance(raised.value, OSError)
    store = S3BlobStore(client, "fedledger", create_bucket=False)
    with pytest.raises(OSError, match="cannot read blob"):
        store.get("ab" * 32)


def test_the_orphan_sweep_runs_on_the_object_store(tmp_path: Path, s3_endpoint: str) -> None:
    """Nothing names these blobs and they are not sealed updates: the sweep lists them, reads their heads
    with ranged reads, keeps them (never removes what is not an update) and finds no temporary files."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from db.base import Base

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    Base.metadata.create_all(engine)
    store = open_blob_store(s3_settings(s3_endpoint, tmp_path))
    store.put(b"weights, not an envelope")
    report = sweep_orphans(sessionmaker(engine), store, grace_seconds=0, now=10**10)
    assert (report.not_updates, report.removed, report.temporary_removed, report.errors) == (1, (), 0, ())
