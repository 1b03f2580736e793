"""The S3 blob store: one aioboto3 session and one long-lived S3 client per process, errors translated here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, cast

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from convgen.blobs.port import DEFAULT_CHUNK_BYTES, BlobNotFound, BlobRef, BlobStoreUnavailable, BlobWriter, check_key
from convgen.errors import ConvgenError

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.literals import BucketLocationConstraintType
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "InternalError",
    }
)
_ALREADY_OWNED = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
# S3 refuses parts under 5 MiB except the last; bigger parts mean fewer requests but more memory per writer.
DEFAULT_PART_BYTES = 8 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024
# Connection-level failures; TimeoutError and ConnectionError are OSError subclasses.
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError)


class S3BlobStore:
    """Blobs as S3 objects, through one aioboto3 client entered once in open() and exited in close()."""

    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        create_buckets: bool,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_pool_connections: int = 64,
        addressing_style: str | None = None,
        part_bytes: int = DEFAULT_PART_BYTES,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3's smallest multipart part)")
        self._part_bytes = part_bytes
        self._region = region
        self._create_buckets = create_buckets
        self._secrets = [s for s in (access_key_id, secret_access_key) if s]
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        # MinIO and moto serve buckets under the path, not as virtual hosts.
        style = addressing_style or ("path" if endpoint_url else "auto")
        self._config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            s3={"addressing_style": style},
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None

    @classmethod
    async def open(
        cls,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        create_buckets: bool,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_pool_connections: int = 64,
        addressing_style: str | None = None,
        part_bytes: int = DEFAULT_PART_BYTES,
    ) -> S3BlobStore:
        """Creates the store and enters its one S3 client."""
        store = cls(
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            create_buckets=create_buckets,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            addressing_style=addressing_style,
            part_bytes=part_bytes,
        )
        with store._translating("open client", None, None):
            client_context = store._session.client("s3", endpoint_url=endpoint_url, config=store._config)
            store._client = await store._stack.enter_async_context(client_context)
        return store

    async def put(self, bucket: str, key: str, data: bytes, *, content_type: str) -> BlobRef:
        """Writes (or overwrites) a blob and returns where it is."""
        check_key(bucket, key)
        with self._translating("put", bucket, key):
            await self._open_client().put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return self.locate(bucket, key)

    async def get(self, bucket: str, key: str) -> bytes:
        """Reads a whole blob; BlobNotFound if absent."""
        check_key(bucket, key)
        with self._translating("get", bucket, key):
            response = await self._open_client().get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                return await body.read()

    async def exists(self, bucket: str, key: str) -> bool:
        """True when a blob is at bucket/key (a missing bucket reads as False: HEAD has no error body)."""
        check_key(bucket, key)
        try:
            with self._translating("exists", bucket, key):
                await self._open_client().head_object(Bucket=bucket, Key=key)
        except BlobNotFound:
            return False
        return True

    @contextlib.asynccontextmanager
    async def open_writer(self, bucket: str, key: str, *, content_type: str) -> AsyncIterator[BlobWriter]:
        """Streams a blob as a multipart upload (one PUT when it stays under one part), completed at the end."""
        check_key(bucket, key)
        writer = _MultipartWriter(self, bucket, key, content_type)
        try:
            yield writer
            await writer.complete()
        except BaseException:
            # Shielded: a cancelled export must not leave an incomplete upload (S3 bills its parts) behind.
            await asyncio.shield(writer.abort())
            raise

    async def read_chunks(
        self, bucket: str, key: str, *, offset: int = 0, chunk_size: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """Reads a blob from offset in chunks of at most chunk_size bytes (one ranged GET); BlobNotFound if absent."""
        check_key(bucket, key)
        with self._translating("get", bucket, key):
            try:
                if offset > 0:
                    response = await self._open_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-")
                else:
                    response = await self._open_client().get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                # A range that starts at (or past) the end: nothing left to read, if the blob exists at all.
                if _error_code(exc) != "InvalidRange":
                    raise
                response = None
            if response is None:
                await self._open_client().head_object(Bucket=bucket, Key=key)
                return
            body = response["Body"]
            try:
                async for chunk in body.iter_chunks(chunk_size):
                    yield chunk
            finally:
                body.close()

    def locate(self, bucket: str, key: str) -> BlobRef:
        """The reference a blob at bucket/key has (whether or not it exists)."""
        check_key(bucket, key)
        return BlobRef(bucket=bucket, key=key, uri=f"s3://{bucket}/{key}")

    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Creates missing buckets when allowed; otherwise BlobStoreUnavailable names the missing one."""
        for bucket in buckets:
            # The port validates buckets only together with a key; any valid key will do here.
            check_key(bucket, "bucket")
        for bucket in buckets:
            if await self._bucket_exists(bucket):
                continue
            if not self._create_buckets:
                raise BlobStoreUnavailable(
                    f"S3 bucket {bucket!r} does not exist and creating buckets is disabled (S3_CREATE_BUCKETS=false)",
                    metadata={"bucket": bucket, "operation": "ensure_buckets"},
                )
            await self._create_bucket(bucket)

    async def close(self) -> None:
        """Exits the S3 client; the store cannot be used afterwards."""
        self._client = None
        await self._stack.aclose()

    def _open_client(self) -> S3Client:
        if self._client is None:
            raise BlobStoreUnavailable("the S3 blob store is closed")
        return self._client

    async def _bucket_exists(self, bucket: str) -> bool:
        try:
            with self._translating("head bucket", bucket, None):
                await self._open_client().head_bucket(Bucket=bucket)
        except BlobNotFound:
            return False
        return True

    async def _create_bucket(self, bucket: str) -> None:
        client = self._open_client()
        try:
            with self._translating("create bucket", bucket, None, tolerate=_ALREADY_OWNED):
                if self._region == "us-east-1":
                    await client.create_bucket(Bucket=bucket)
                else:
                    location = cast("BucketLocationConstraintType", self._region)
                    await client.create_bucket(
                        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": location}
                    )
        except _Tolerated:
            # Another process created it first, or it exists under an owner we cannot read: the second HEAD tells.
            if not await self._bucket_exists(bucket):
                raise BlobStoreUnavailable(
                    f"S3 bucket {bucket!r} exists but is not accessible with the configured credentials",
                    metadata={"bucket": bucket, "operation": "ensure_buckets"},
                ) from None

    @contextlib.contextmanager
    def _translating(
        self, operation: str, bucket: str | None, key: str | None, *, tolerate: frozenset[str] = frozenset()
    ) -> Iterator[None]:
        """Turns botocore, aiohttp and socket errors raised inside into the port's errors."""
        try:
            yield
        except ClientError as exc:
            code = _error_code(exc)
            if code in tolerate:
                raise _Tolerated(code) from exc
            raise self._client_error(operation, bucket, key, exc) from exc
        except _TRANSPORT_ERRORS as exc:
            cause = self._redact(f"{type(exc).__name__}: {exc}")
            raise BlobStoreUnavailable(
                f"S3 {operation} of {_where(bucket, key)} failed: {cause}",
                metadata=_metadata(operation, bucket, key, type(exc).__name__),
            ) from exc

    def _client_error(self, operation: str, bucket: str | None, key: str | None, exc: ClientError) -> ConvgenError:
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        detail = exc.response.get("Error", {}).get("Message") or ""
        cause = self._redact(f"{code} (HTTP {status}){': ' + detail if detail else ''}")
        metadata = _metadata(operation, bucket, key, code)
        if code == "NoSuchBucket":
            return BlobStoreUnavailable(
                f"S3 {operation} of {_where(bucket, key)} failed: bucket {bucket!r} does not exist ({cause})",
                metadata=metadata,
            )
        if code in _NOT_FOUND_CODES or status == 404:
            if key is None:
                return BlobNotFound(f"no S3 bucket {bucket!r}", metadata=metadata)
            return BlobNotFound(f"no blob at bucket {bucket!r} key {key!r}", metadata=metadata)
        transient = code in _TRANSIENT_CODES or status == 429 or status >= 500
        kind = "is unavailable" if transient else "refused the request"
        return BlobStoreUnavailable(
            f"S3 {operation} of {_where(bucket, key)} failed: S3 {kind}: {cause}", metadata=metadata
        )

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _MultipartWriter:
    """Buffers writes into parts; the upload starts with the first full part and completes at the end."""

    def __init__(self, store: S3BlobStore, bucket: str, key: str, content_type: str) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    async def write(self, data: bytes) -> None:
        """Appends bytes; uploads a part each time a whole part is buffered."""
        self._buffer += data
        size = self._store._part_bytes
        while len(self._buffer) >= size:
            part = bytes(self._buffer[:size])
            del self._buffer[:size]
            await self._upload_part(part)

    async def _upload_part(self, data: bytes) -> None:
        client = self._store._open_client()
        with self._store._translating("multipart upload", self._bucket, self._key):
            if self._upload_id is None:
                started = await client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key, ContentType=self._content_type
                )
                self._upload_id = started["UploadId"]
            number = len(self._parts) + 1
            uploaded = await client.upload_part(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
            )
        self._parts.append({"ETag": uploaded["ETag"], "PartNumber": number})

    async def complete(self) -> None:
        """Makes the blob visible: one PUT for a small blob, else the last part and the completion."""
        if self._upload_id is None:
            await self._store.put(self._bucket, self._key, bytes(self._buffer), content_type=self._content_type)
            self._buffer.clear()
            return
        if self._buffer:
            await self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        with self._store._translating("multipart upload", self._bucket, self._key):
            await self._store._open_client().complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )
        self._upload_id = None

    async def abort(self) -> None:
        """Drops the parts uploaded so far (best effort: S3 lifecycle rules clean up what this cannot)."""
        self._buffer.clear()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        translating = self._store._translating("abort multipart upload", self._bucket, self._key)
        with contextlib.suppress(BlobStoreUnavailable, BlobNotFound), translating:
            await self._store._open_client().abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=upload_id
            )


class _Tolerated(Exception):
    """An S3 error code the caller said is fine."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _where(bucket: str | None, key: str | None) -> str:
    if bucket is None:
        return "the S3 endpoint"
    if key is None:
        return f"bucket {bucket!r}"
    return f"s3://{bucket}/{key}"


def _metadata(operation: str, bucket: str | None, key: str | None, cause: str) -> dict[str, str]:
    found = {"operation": operation, "cause": cause}
    if bucket is not None:
        found["bucket"] = bucket
    if key is not None:
        found["key"] = key
    return found
