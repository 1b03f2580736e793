"""Blob storage: a small port with a filesystem adapter and an S3 (aioboto3) adapter."""

from convgen.blobs.port import (
    BlobNotFound,
    BlobRef,
    BlobStore,
    BlobStoreUnavailable,
    BlobWriter,
    InvalidBlobKey,
    check_key,
)

__all__ = [
    "BlobNotFound",
    "BlobRef",
    "BlobStore",
    "BlobStoreUnavailable",
    "BlobWriter",
    "InvalidBlobKey",
    "check_key",
]
