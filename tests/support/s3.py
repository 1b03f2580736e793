"""Reaching moto's S3 from tests: settings that point a service at it, an S3BlobStore, a plain aioboto3 client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig

from convgen.blobs.s3 import S3BlobStore
from tests.support.moto_s3 import FAKE_ACCESS_KEY_ID, FAKE_REGION, FAKE_SECRET_ACCESS_KEY

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client


def s3_settings(endpoint_url: str) -> dict[str, Any]:
    """Settings overrides that make an in-process service store its blobs in S3 at endpoint_url."""
    return {
        "blob_store": "s3",
        "s3_endpoint_url": endpoint_url,
        "aws_region": FAKE_REGION,
        "aws_access_key_id": FAKE_ACCESS_KEY_ID,
        "aws_secret_access_key": FAKE_SECRET_ACCESS_KEY,
    }


async def open_s3_store(endpoint_url: str, **options: Any) -> S3BlobStore:
    """An S3BlobStore against endpoint_url: the fake credentials and S3BlobStore.open's defaults unless overridden."""
    fake = {"region": FAKE_REGION, "access_key_id": FAKE_ACCESS_KEY_ID, "secret_access_key": FAKE_SECRET_ACCESS_KEY}
    return await S3BlobStore.open(endpoint_url=endpoint_url, **{**fake, "create_buckets": True, **options})


@asynccontextmanager
async def raw_s3_client(endpoint_url: str) -> AsyncIterator[S3Client]:
    """A plain aioboto3 S3 client (path-style addressing), to look behind a store's back."""
    session = aioboto3.Session(
        aws_access_key_id=FAKE_ACCESS_KEY_ID, aws_secret_access_key=FAKE_SECRET_ACCESS_KEY, region_name=FAKE_REGION
    )
    config = AioConfig(s3={"addressing_style": "path"})
    async with session.client("s3", endpoint_url=endpoint_url, config=config) as client:
        yield client
