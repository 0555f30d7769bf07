"""Which blob store a deployment runs: the settings name the backend, this module opens it.

Apart from :mod:`fedledger.domain.blobstore` so that the store's contract (the protocol, its errors and
checks) does not import a backend built on it.
"""

from __future__ import annotations

from fedledger.config import Settings
from fedledger.domain.blobstore import BlobStore, FilesystemBlobStore


def open_blob_store(settings: Settings) -> BlobStore:
    """The store the settings name: ``FEDLEDGER_BLOB_BACKEND=filesystem`` (the default) or ``s3``."""
    if settings.blob_backend == "s3":
        # Imported only here: boto3 costs a few hundred milliseconds to import, and the default needs none.
        from fedledger.domain.blobstore_s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    return FilesystemBlobStore(settings.resolved_blob_dir)
