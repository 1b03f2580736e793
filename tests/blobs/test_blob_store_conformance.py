"""One set of cases every BlobStore adapter must pass: the filesystem store and the S3 store against moto."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from convgen.blobs.factory import open_blob_store
from convgen.blobs.filesystem import FileBlobStore
from convgen.blobs.port import BlobNotFound, BlobRef, BlobStoreUnavailable, InvalidBlobKey
from convgen.blobs.s3 import S3BlobStore
from convgen.settings import Settings
from tests.blobs.helpers import BUCKET, LOG_BUCKET, StoreHarness
from tests.support.moto_s3 import MotoS3Server
from tests.support.s3 import s3_settings

NIL = "00000000-0000-0000-0000-000000000000"


async def test_round_trip_binary(harness: StoreHarness) -> None:
    data = bytes(range(256)) * 8
    await harness.store.put(BUCKET, "raw/blob.bin", data, content_type="application/octet-stream")
    assert await harness.store.get(BUCKET, "raw/blob.bin") == data


async def test_round_trip_utf8_with_emoji(harness: StoreHarness) -> None:
    text = '{"turns": ["Budget for 2025 💸", "Retire at 55? 🏖️ — ça dépend"]}'
    await harness.store.put(BUCKET, "parsed/conversation.json", text.encode(), content_type="application/json")
    assert (await harness.store.get(BUCKET, "parsed/conversation.json")).decode() == text


async def test_round_trip_empty_blob(harness: StoreHarness) -> None:
    await harness.store.put(LOG_BUCKET, "empty.txt", b"", content_type="text/plain")
    assert await harness.store.get(LOG_BUCKET, "empty.txt") == b""
    assert await harness.store.exists(LOG_BUCKET, "empty.txt")


async def test_overwrite_replaces(harness: StoreHarness) -> None:
    await harness.store.put(BUCKET, "k.json", b"first, and longer than the second", content_type="application/json")
    await harness.store.put(BUCKET, "k.json", b"second", content_type="application/json")
    assert await harness.store.get(BUCKET, "k.json") == b"second"


async def test_exists_before_and_after_put(harness: StoreHarness) -> None:
    assert not await harness.store.exists(BUCKET, "a/b/c.txt")
    await harness.store.put(BUCKET, "a/b/c.txt", b"x", content_type="text/plain")
    assert await harness.store.exists(BUCKET, "a/b/c.txt")
    assert not await harness.store.exists(LOG_BUCKET, "a/b/c.txt")
    # A key prefix is not a blob.
    assert not await harness.store.exists(BUCKET, "a/b")


async def test_get_missing_key_raises_blob_not_found(harness: StoreHarness) -> None:
    with pytest.raises(BlobNotFound) as caught:
        await harness.store.get(BUCKET, "raw/missing.json")
    assert BUCKET in caught.value.message
    assert "raw/missing.json" in caught.value.message
    assert caught.value.reason == "BLOB_NOT_FOUND"


async def test_get_of_a_key_prefix_raises_blob_not_found(harness: StoreHarness) -> None:
    await harness.store.put(BUCKET, "dir/leaf.txt", b"x", content_type="text/plain")
    with pytest.raises(BlobNotFound):
        await harness.store.get(BUCKET, "dir")


async def test_put_and_locate_return_the_same_ref(harness: StoreHarness) -> None:
    key = f"raw/{NIL}/{uuid.uuid4()}_raw.json"
    located = harness.store.locate(BUCKET, key)
    ref = await harness.store.put(BUCKET, key, b"{}", content_type="application/json")
    assert ref == located
    assert isinstance(ref, BlobRef)
    assert (ref.bucket, ref.key) == (BUCKET, key)
    if harness.kind == "s3":
        assert ref.uri == f"s3://{BUCKET}/{key}"
    else:
        assert harness.root is not None
        parsed = urlparse(ref.uri)
        assert parsed.scheme == "file"
        path = Path(unquote(parsed.path))
        assert path.is_absolute()
        assert path == harness.root.absolute() / BUCKET / key
        assert await asyncio.to_thread(path.read_bytes) == b"{}"


async def test_locate_does_not_need_the_blob(harness: StoreHarness) -> None:
    ref = harness.store.locate(LOG_BUCKET, f"{uuid.uuid4()}/log.txt")
    assert ref.uri.startswith("s3://" if harness.kind == "s3" else "file:///")
    assert not await harness.store.exists(ref.bucket, ref.key)


BAD_KEYS = [
    "../x",
    "a/../../b",
    "..",
    ".",
    "a/./b",
    "/abs",
    "/etc/passwd",
    "a//b",
    "a/",
    "a\\b",
    "..\\x",
    "a\x00b",
    "",
    " ",
    ".hidden",
    "a/b c",
    "x" * 1025,
]
BAD_BUCKETS = ["Conversation-Files", "UPPER", "a", "", "../x", "bucket_name", "-leading", "trailing-", "a/b", "a\x00b"]


async def _assert_rejected(harness: StoreHarness, bucket: str, key: str) -> None:
    before = await harness.everything()
    with pytest.raises(InvalidBlobKey):
        await harness.store.put(bucket, key, b"payload", content_type="text/plain")
    with pytest.raises(InvalidBlobKey):
        await harness.store.get(bucket, key)
    with pytest.raises(InvalidBlobKey):
        await harness.store.exists(bucket, key)
    with pytest.raises(InvalidBlobKey):
        harness.store.locate(bucket, key)
    assert await harness.everything() == before


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
async def test_malformed_keys_raise_invalid_blob_key_and_write_nothing(harness: StoreHarness, key: str) -> None:
    await _assert_rejected(harness, BUCKET, key)


@pytest.mark.parametrize("bucket", BAD_BUCKETS, ids=repr)
async def test_malformed_buckets_raise_invalid_blob_key_and_write_nothing(harness: StoreHarness, bucket: str) -> None:
    await _assert_rejected(harness, bucket, "fine/key.json")
    before = await harness.everything()
    with pytest.raises(InvalidBlobKey):
        await harness.store.ensure_buckets([bucket])
    assert await harness.everything() == before


async def test_five_megabyte_blob_round_trips(harness: StoreHarness) -> None:
    data = os.urandom(5 * 1024 * 1024)
    await harness.store.put(BUCKET, "big/blob.bin", data, content_type="application/octet-stream")
    assert await harness.store.get(BUCKET, "big/blob.bin") == data


async def test_fifty_concurrent_puts_and_gets(harness: StoreHarness) -> None:
    blobs = {f"raw/{NIL}/{uuid.uuid4()}_raw.json": os.urandom(1024) for _ in range(50)}
    refs = await asyncio.gather(
        *(harness.store.put(BUCKET, key, data, content_type="application/json") for key, data in blobs.items())
    )
    assert [ref.key for ref in refs] == list(blobs)
    read = await asyncio.gather(*(harness.store.get(BUCKET, key) for key in blobs))
    assert read == list(blobs.values())


async def test_ensure_buckets_twice_is_fine(harness: StoreHarness) -> None:
    await harness.store.ensure_buckets([BUCKET, LOG_BUCKET, "extra-bucket"])
    await harness.store.ensure_buckets([BUCKET, LOG_BUCKET, "extra-bucket"])
    await harness.store.put("extra-bucket", "k.txt", b"v", content_type="text/plain")
    assert await harness.store.get("extra-bucket", "k.txt") == b"v"


async def test_convgen_key_shapes(harness: StoreHarness) -> None:
    raw_key = f"raw/{NIL}/{uuid.uuid4()}_raw.json"
    log_key = f"{uuid.uuid4()}/log.txt"
    await harness.store.put(BUCKET, raw_key, b'{"raw": true}', content_type="application/json")
    await harness.store.put(LOG_BUCKET, log_key, b"line 1\nline 2\n", content_type="text/plain; charset=utf-8")
    assert await harness.store.get(BUCKET, raw_key) == b'{"raw": true}'
    assert await harness.store.get(LOG_BUCKET, log_key) == b"line 1\nline 2\n"
    assert await harness.store.exists(LOG_BUCKET, log_key)


# --- filesystem adapter only -----------------------------------------------------------------------------------


async def test_file_store_rejects_symlinks_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    store = FileBlobStore(tmp_path / "root")
    await store.ensure_buckets([BUCKET])
    (tmp_path / "root" / BUCKET / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidBlobKey):
        await store.get(BUCKET, "link/secret.txt")
    with pytest.raises(InvalidBlobKey):
        await store.exists(BUCKET, "link/secret.txt")
    with pytest.raises(InvalidBlobKey):
        await store.put(BUCKET, "link/new.txt", b"x", content_type="text/plain")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_file_store_rejects_a_bucket_symlinked_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / BUCKET).symlink_to(outside, target_is_directory=True)
    store = FileBlobStore(tmp_path / "root")
    with pytest.raises(InvalidBlobKey):
        await store.ensure_buckets([BUCKET])
    with pytest.raises(InvalidBlobKey):
        await store.put(BUCKET, "k.txt", b"x", content_type="text/plain")
    assert list(outside.iterdir()) == []


async def test_file_store_put_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    await store.ensure_buckets([BUCKET])
    for n in range(3):
        await store.put(BUCKET, "raw/k.json", str(n).encode(), content_type="application/json")
    assert sorted(p.name for p in (tmp_path / BUCKET / "raw").iterdir()) == ["k.json"]


async def test_file_store_key_under_an_existing_blob_is_unavailable_with_the_cause(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    await store.ensure_buckets([BUCKET])
    await store.put(BUCKET, "a", b"file", content_type="text/plain")
    with pytest.raises(BlobStoreUnavailable, match=r"put of blob conversation-files/a/b failed: .*Error"):
        await store.put(BUCKET, "a/b", b"x", content_type="text/plain")
    with pytest.raises(BlobNotFound):
        await store.get(BUCKET, "a/b")
    assert await store.get(BUCKET, "a") == b"file"


async def test_file_store_on_a_broken_root_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_bytes(b"")
    store = FileBlobStore(tmp_path / "not-a-dir")
    with pytest.raises(BlobStoreUnavailable, match="conversation-files") as caught:
        await store.ensure_buckets([BUCKET])
    assert "Error" in caught.value.message
    with pytest.raises(BlobStoreUnavailable):
        await store.put(BUCKET, "k.txt", b"x", content_type="text/plain")
    assert not await store.exists(BUCKET, "k.txt")


async def test_file_store_after_close_is_unavailable_and_kept_earlier_writes(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    await store.ensure_buckets([BUCKET])
    await store.put(BUCKET, "before.txt", b"kept", content_type="text/plain")
    await store.close()
    with pytest.raises(BlobStoreUnavailable, match="closed"):
        await store.put(BUCKET, "after.txt", b"x", content_type="text/plain")
    assert (tmp_path / BUCKET / "before.txt").read_bytes() == b"kept"
    assert not (tmp_path / BUCKET / "after.txt").exists()


# --- factory -----------------------------------------------------------------------------------------------------


async def test_factory_opens_a_file_store_with_its_buckets(tmp_path: Path) -> None:
    settings = Settings(blob_store="file", blob_dir=tmp_path / "blobs")
    store = await open_blob_store(settings)
    try:
        assert isinstance(store, FileBlobStore)
        assert (tmp_path / "blobs" / settings.conversation_bucket).is_dir()
        assert (tmp_path / "blobs" / settings.log_bucket).is_dir()
    finally:
        await store.close()


async def test_factory_opens_an_s3_store_with_its_buckets(moto_s3: MotoS3Server) -> None:
    await asyncio.to_thread(moto_s3.reset)
    settings = Settings(
        **s3_settings(moto_s3.endpoint_url),
        conversation_bucket="factory-conversations",
        log_bucket="factory-logs",
    )
    store = await open_blob_store(settings)
    try:
        assert isinstance(store, S3BlobStore)
        await store.put("factory-logs", "j/log.txt", b"ok", content_type="text/plain")
        assert await store.get("factory-logs", "j/log.txt") == b"ok"
        assert await store.exists("factory-conversations", "nothing") is False
    finally:
        await store.close()
