"""Streaming write and read, on every BlobStore adapter: the filesystem store and the S3 store against moto."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import pytest

from convgen.blobs.port import BlobNotFound, InvalidBlobKey
from convgen.blobs.s3 import DEFAULT_PART_BYTES, MIN_PART_BYTES, S3BlobStore
from tests.blobs.conftest import BUCKET, StoreHarness, open_s3_store
from tests.support.moto_s3 import MotoS3Server

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

MIB = 1024 * 1024


class Boom(Exception):
    """Raised inside a writer block."""


async def _write_then_fail(harness: StoreHarness, key: str, size: int) -> None:
    """Streams size bytes to key, then raises Boom inside the writer block."""
    async with harness.store.open_writer(BUCKET, key, content_type="application/octet-stream") as writer:
        await writer.write(os.urandom(size))
        raise Boom


async def _read_all(harness: StoreHarness, key: str, *, offset: int = 0, chunk_size: int = MIB) -> list[bytes]:
    return [chunk async for chunk in harness.store.read_chunks(BUCKET, key, offset=offset, chunk_size=chunk_size)]


async def test_streamed_blob_round_trips_across_several_parts(harness: StoreHarness) -> None:
    # 17 MiB in uneven writes: three S3 parts (8 + 8 + 1 MiB), many small appends to the temp file.
    pieces = [os.urandom(size) for size in (1, 3 * MIB, 100_000, 5 * MIB + 7, 9 * MIB)]
    data = b"".join(pieces)
    async with harness.store.open_writer(BUCKET, "exports/x/train.jsonl", content_type="application/jsonl") as writer:
        for piece in pieces:
            await writer.write(piece)
    assert await harness.store.get(BUCKET, "exports/x/train.jsonl") == data
    chunks = await _read_all(harness, "exports/x/train.jsonl")
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= MIB
    assert len(data) > 2 * DEFAULT_PART_BYTES


async def test_streamed_small_blob_and_empty_blob(harness: StoreHarness) -> None:
    async with harness.store.open_writer(BUCKET, "small.txt", content_type="text/plain") as writer:
        await writer.write(b"hello ")
        await writer.write(b"world")
    assert await harness.store.get(BUCKET, "small.txt") == b"hello world"
    async with harness.store.open_writer(BUCKET, "empty.txt", content_type="text/plain"):
        pass
    assert await harness.store.get(BUCKET, "empty.txt") == b""
    assert await _read_all(harness, "empty.txt") == []


async def test_nothing_is_visible_until_the_writer_closes(harness: StoreHarness) -> None:
    async with harness.store.open_writer(BUCKET, "late.bin", content_type="application/octet-stream") as writer:
        await writer.write(os.urandom(DEFAULT_PART_BYTES + 10))
        assert not await harness.store.exists(BUCKET, "late.bin")
    assert await harness.store.exists(BUCKET, "late.bin")


async def test_an_error_inside_the_writer_leaves_nothing_and_keeps_the_old_blob(harness: StoreHarness) -> None:
    await harness.store.put(BUCKET, "kept.txt", b"old", content_type="text/plain")
    before = await harness.everything()
    for size in (10, DEFAULT_PART_BYTES + 10):
        with pytest.raises(Boom):
            await _write_then_fail(harness, "kept.txt", size)
        with pytest.raises(Boom):
            await _write_then_fail(harness, "new/never.txt", size)
    assert await harness.store.get(BUCKET, "kept.txt") == b"old"
    assert not await harness.store.exists(BUCKET, "new/never.txt")
    # No temp file (filesystem) and no object (S3) anywhere the store could write; the directory made for the
    # file store's temp file may stay.
    assert await harness.everything() - before <= {"blobs/conversation-files/new"}


async def test_streamed_write_replaces_an_existing_blob(harness: StoreHarness) -> None:
    await harness.store.put(BUCKET, "k.json", b"first, and longer than the second", content_type="application/json")
    async with harness.store.open_writer(BUCKET, "k.json", content_type="application/json") as writer:
        await writer.write(b"second")
    assert await harness.store.get(BUCKET, "k.json") == b"second"


async def test_read_chunks_from_an_offset(harness: StoreHarness) -> None:
    data = os.urandom(3 * MIB + 123)
    await harness.store.put(BUCKET, "o.bin", data, content_type="application/octet-stream")
    for offset in (0, 1, MIB, len(data) - 1, len(data)):
        chunks = await _read_all(harness, "o.bin", offset=offset, chunk_size=256 * 1024)
        assert b"".join(chunks) == data[offset:]
        assert all(0 < len(c) <= 256 * 1024 for c in chunks)


async def test_read_chunks_of_a_missing_blob_raises_blob_not_found(harness: StoreHarness) -> None:
    with pytest.raises(BlobNotFound):
        await _read_all(harness, "missing/blob.bin")
    with pytest.raises(BlobNotFound):
        await _read_all(harness, "missing/blob.bin", offset=10)


@pytest.mark.parametrize("key", ["../x", "a//b", ".hidden", ""], ids=repr)
async def test_streaming_rejects_malformed_keys_and_writes_nothing(harness: StoreHarness, key: str) -> None:
    before = await harness.everything()
    with pytest.raises(InvalidBlobKey):
        await _write_then_fail(harness, key, 1)
    with pytest.raises(InvalidBlobKey):
        await _read_all(harness, key)
    assert await harness.everything() == before


# --- S3 only ---------------------------------------------------------------------------------------------------


async def test_s3_writer_abort_leaves_no_incomplete_multipart_upload(
    s3_harness: StoreHarness, raw_s3: S3Client
) -> None:
    with pytest.raises(Boom):
        await _write_then_fail(s3_harness, "aborted.bin", DEFAULT_PART_BYTES * 2 + 1)
    uploads = await raw_s3.list_multipart_uploads(Bucket=BUCKET)
    assert uploads.get("Uploads", []) == []


async def test_s3_multipart_parts_are_the_configured_size(moto_s3: MotoS3Server, raw_s3: S3Client) -> None:
    store = await open_s3_store(moto_s3.endpoint_url)
    small = await S3BlobStore.open(
        endpoint_url=moto_s3.endpoint_url,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        create_buckets=True,
        part_bytes=MIN_PART_BYTES,
    )
    try:
        await store.ensure_buckets([BUCKET])
        data = os.urandom(MIN_PART_BYTES * 2 + 5)
        async with small.open_writer(BUCKET, "parts.bin", content_type="application/octet-stream") as writer:
            await writer.write(data)
        head = await raw_s3.head_object(Bucket=BUCKET, Key="parts.bin")
        # A multipart object's ETag is the MD5 of the part MD5s, then "-" and the number of parts.
        assert head["ETag"].strip('"').endswith("-3")
        got = await raw_s3.get_object(Bucket=BUCKET, Key="parts.bin")
        async with got["Body"] as body:
            assert hashlib.sha256(await body.read()).digest() == hashlib.sha256(data).digest()
    finally:
        await small.close()
        await store.close()
    with pytest.raises(ValueError, match="part_bytes"):
        S3BlobStore(
            endpoint_url=None,
            region="us-east-1",
            access_key_id=None,
            secret_access_key=None,
            create_buckets=False,
            part_bytes=MIB,
        )
