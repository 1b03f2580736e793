"""The blob store port: put, get, exists, locate, and streaming write and read. Adapters translate their errors into
the ones here."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from convgen.errors import InvalidArgument, NotFound, Unavailable

# Keys are built from validated UUIDs and fixed words only; this pattern is a second line of defence.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class BlobRef:
    """Where a blob is: bucket, key and a URI for humans."""

    bucket: str
    key: str
    uri: str


class BlobNotFound(NotFound):
    """No blob at that bucket and key."""

    default_reason = "BLOB_NOT_FOUND"


class BlobStoreUnavailable(Unavailable):
    """The blob store could not be reached or refused the operation."""

    default_reason = "BLOB_STORE_UNAVAILABLE"


class InvalidBlobKey(InvalidArgument):
    """A bucket or key that could escape its bucket or is not a plain path."""

    default_reason = "INVALID_BLOB_KEY"


def check_key(bucket: str, key: str) -> None:
    """Rejects bucket names and keys that are not plain relative paths of safe segments."""
    if not _BUCKET.match(bucket):
        raise InvalidBlobKey(f"invalid bucket name {bucket!r}")
    segments = key.split("/")
    if not key or len(key) > 1024 or any(not _SEGMENT.match(s) or s in {".", ".."} for s in segments):
        raise InvalidBlobKey(f"invalid blob key {key!r}: segments must be letters, digits, '.', '_' or '-'")


# What read_chunks hands out at most per chunk unless told otherwise.
DEFAULT_CHUNK_BYTES = 1024 * 1024


class BlobWriter(Protocol):
    """A blob being streamed: parts are appended in order; the blob appears whole when the writer closes."""

    async def write(self, data: bytes) -> None:
        """Appends bytes (adapters buffer small writes)."""
        ...


class BlobStore(Protocol):
    """Stores immutable-ish byte blobs by bucket and key."""

    async def put(self, bucket: str, key: str, data: bytes, *, content_type: str) -> BlobRef:
        """Writes (or overwrites) a blob atomically and returns where it is."""
        ...

    async def get(self, bucket: str, key: str) -> bytes:
        """Reads a whole blob; BlobNotFound if absent."""
        ...

    async def exists(self, bucket: str, key: str) -> bool:
        """True when a blob is at bucket/key."""
        ...

    def open_writer(self, bucket: str, key: str, *, content_type: str) -> AbstractAsyncContextManager[BlobWriter]:
        """Streams a blob too big to hold in memory: visible, whole, only when the block ends without error.

        An error (or a cancellation) inside the block leaves nothing at bucket/key, and an existing blob unchanged.
        """
        ...

    def read_chunks(
        self, bucket: str, key: str, *, offset: int = 0, chunk_size: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """Reads a blob from offset in chunks of at most chunk_size bytes; BlobNotFound if absent."""
        ...

    def locate(self, bucket: str, key: str) -> BlobRef:
        """The reference a blob at bucket/key has (whether or not it exists)."""
        ...

    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Makes sure the buckets exist (creating them when the adapter is allowed to)."""
        ...

    async def close(self) -> None:
        """Releases connections."""
        ...
