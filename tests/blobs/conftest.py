"""Fixtures for the blob store suites: one moto S3 server for the session and a store per adapter."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from convgen.blobs.filesystem import FileBlobStore
from convgen.blobs.s3 import S3BlobStore
from tests.blobs.helpers import BUCKET, LOG_BUCKET, StoreHarness
from tests.support.moto_s3 import MotoS3Server
from tests.support.s3 import open_s3_store, raw_s3_client

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client


@pytest.fixture(scope="session")
async def shared_s3_store(moto_s3: MotoS3Server) -> AsyncIterator[S3BlobStore]:
    """One S3BlobStore on moto for the session, as a process has one."""
    store = await open_s3_store(moto_s3.endpoint_url)
    yield store
    await store.close()


@pytest.fixture(scope="session")
async def raw_s3(moto_s3: MotoS3Server) -> AsyncIterator[S3Client]:
    """A plain aioboto3 S3 client on moto, to look behind the store's back."""
    async with raw_s3_client(moto_s3.endpoint_url) as client:
        yield client


def _walk(top: Path) -> set[str]:
    found: set[str] = set()
    for directory, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            found.add(str(Path(directory, name).relative_to(top)))
    return found


@pytest.fixture
async def file_harness(tmp_path: Path) -> AsyncIterator[StoreHarness]:
    """A FileBlobStore under tmp_path/blobs with BUCKET and LOG_BUCKET."""
    root = tmp_path / "blobs"
    store = FileBlobStore(root)
    await store.ensure_buckets([BUCKET, LOG_BUCKET])

    # The whole tmp_path, so that a write beside the root would show too.
    async def everything_on_disk() -> set[str]:
        return await asyncio.to_thread(_walk, tmp_path)

    yield StoreHarness("file", store, root, everything_on_disk)
    await store.close()


@pytest.fixture
async def s3_harness(moto_s3: MotoS3Server, shared_s3_store: S3BlobStore, raw_s3: S3Client) -> StoreHarness:
    """The session's S3BlobStore on an emptied moto, with BUCKET and LOG_BUCKET."""
    await asyncio.to_thread(moto_s3.reset)
    await shared_s3_store.ensure_buckets([BUCKET, LOG_BUCKET])

    async def everything_in_s3() -> set[str]:
        found: set[str] = set()
        for bucket in (await raw_s3.list_buckets()).get("Buckets", []):
            name = bucket.get("Name", "")
            found.add(name)
            listing = await raw_s3.list_objects_v2(Bucket=name)
            found.update(f"{name}/{item.get('Key')}" for item in listing.get("Contents", []))
        return found

    return StoreHarness("s3", shared_s3_store, None, everything_in_s3)


@pytest.fixture(params=["file", "s3"])
def harness(request: pytest.FixtureRequest) -> StoreHarness:
    """Each adapter in turn; only the s3 case starts moto."""
    found: StoreHarness = request.getfixturevalue(f"{request.param}_harness")
    return found
