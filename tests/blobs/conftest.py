"""Fixtures for the blob store suites: one moto S3 server for the session and a store per adapter."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aioboto3
import pytest
from aiobotocore.config import AioConfig

from convgen.blobs.filesystem import FileBlobStore
from convgen.blobs.port import BlobStore
from convgen.blobs.s3 import S3BlobStore
from tests.support.moto_s3 import FAKE_ACCESS_KEY_ID, FAKE_REGION, FAKE_SECRET_ACCESS_KEY, MotoS3Server

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

BUCKET = "conversation-files"
LOG_BUCKET = "batch-logs"


@dataclass
class StoreHarness:
    """A store under test plus a way to see everything stored anywhere it could write."""

    kind: str
    store: BlobStore
    root: Path | None
    everything: Callable[[], Awaitable[set[str]]]


async def open_s3_store(
    endpoint_url: str,
    *,
    access_key_id: str = FAKE_ACCESS_KEY_ID,
    secret_access_key: str = FAKE_SECRET_ACCESS_KEY,
    create_buckets: bool = True,
    max_attempts: int = 3,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
) -> S3BlobStore:
    """An S3BlobStore against endpoint_url, with the fake credentials unless told otherwise."""
    return await S3BlobStore.open(
        endpoint_url=endpoint_url,
        region=FAKE_REGION,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        create_buckets=create_buckets,
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


@pytest.fixture(scope="session")
async def shared_s3_store(moto_s3: MotoS3Server) -> AsyncIterator[S3BlobStore]:
    """One S3BlobStore on moto for the session, as a process has one."""
    store = await open_s3_store(moto_s3.endpoint_url)
    yield store
    await store.close()


@pytest.fixture(scope="session")
async def raw_s3(moto_s3: MotoS3Server) -> AsyncIterator[S3Client]:
    """A plain aioboto3 S3 client on moto, to look behind the store's back."""
    session = aioboto3.Session(
        aws_access_key_id=FAKE_ACCESS_KEY_ID, aws_secret_access_key=FAKE_SECRET_ACCESS_KEY, region_name=FAKE_REGION
    )
    config = AioConfig(s3={"addressing_style": "path"})
    async with session.client("s3", endpoint_url=moto_s3.endpoint_url, config=config) as client:
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
