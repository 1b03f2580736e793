"""How the S3 store fails: unreachable endpoint, recovery, missing buckets, throttling and 5xx, credential hygiene."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from convgen.blobs.factory import open_blob_store
from convgen.blobs.port import BlobStoreUnavailable
from convgen.blobs.s3 import S3BlobStore
from convgen.errors import ConvgenError
from convgen.settings import Settings
from tests.blobs.helpers import BUCKET
from tests.support.moto_s3 import FAKE_REGION, MotoS3Process, MotoS3Server
from tests.support.s3 import open_s3_store
from tests.support.tcp_proxy import TcpProxy

# moto accepts any credentials; distinctive ones make a leak easy to spot.
ACCESS_KEY_ID = "AKIAPROBEKEY7Q3X9Z2W"
SECRET_ACCESS_KEY = "probe-secret-Zr8vN4kq2L"
CREDENTIALS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
FAST_FAILURE_SECONDS = 5.0


async def _open_fragile(endpoint_url: str, **overrides: Any) -> S3BlobStore:
    """A store that gives up after one try and short timeouts, with the probe credentials."""
    options: dict[str, Any] = {
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        "max_attempts": 1,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
    }
    options.update(overrides)
    return await open_s3_store(endpoint_url, **options)


def _assert_no_credentials(error: ConvgenError) -> None:
    texts = [str(error), error.message, repr(error), *error.metadata.values(), *error.metadata.keys()]
    for text in texts:
        for secret in CREDENTIALS:
            assert secret not in text


@pytest.fixture
async def proxy(moto_s3: MotoS3Server) -> AsyncIterator[TcpProxy]:
    """A TcpProxy in front of the session's moto server."""
    await asyncio.to_thread(moto_s3.reset)
    async with TcpProxy("127.0.0.1", moto_s3.port) as found:
        yield found


@pytest.fixture
async def proxied_store(proxy: TcpProxy) -> AsyncIterator[S3BlobStore]:
    """A fragile store that talks to moto through the proxy, with BUCKET ensured."""
    store = await _open_fragile(proxy.endpoint_url)
    await store.ensure_buckets([BUCKET])
    yield store
    await store.close()


async def _unavailable(call: Callable[[], Awaitable[object]]) -> BlobStoreUnavailable:
    started = time.monotonic()
    with pytest.raises(BlobStoreUnavailable) as caught:
        await call()
    assert time.monotonic() - started < FAST_FAILURE_SECONDS
    _assert_no_credentials(caught.value)
    return caught.value


async def test_unreachable_through_proxy_fails_fast_naming_the_operation(
    proxy: TcpProxy, proxied_store: S3BlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await proxied_store.put(BUCKET, "before.txt", b"kept", content_type="text/plain")
    proxy.set_available(False)

    put_error = await _unavailable(lambda: proxied_store.put(BUCKET, "k/v.txt", b"x", content_type="text/plain"))
    assert "put" in put_error.message
    assert f"s3://{BUCKET}/k/v.txt" in put_error.message
    assert put_error.reason == "BLOB_STORE_UNAVAILABLE"

    get_error = await _unavailable(lambda: proxied_store.get(BUCKET, "before.txt"))
    assert "get" in get_error.message
    assert f"s3://{BUCKET}/before.txt" in get_error.message

    exists_error = await _unavailable(lambda: proxied_store.exists(BUCKET, "before.txt"))
    assert "exists" in exists_error.message

    ensure_error = await _unavailable(lambda: proxied_store.ensure_buckets(["other-bucket"]))
    assert "other-bucket" in ensure_error.message

    assert proxy.refused > 0
    # botocore's own DEBUG lines show the access key id inside the Authorization header; never the secret.
    assert SECRET_ACCESS_KEY not in caplog.text
    for record in caplog.records:
        if record.levelno >= logging.INFO or record.name.startswith("convgen"):
            assert ACCESS_KEY_ID not in record.getMessage()


async def test_the_same_store_recovers_when_the_endpoint_returns(proxy: TcpProxy, proxied_store: S3BlobStore) -> None:
    await proxied_store.put(BUCKET, "before.txt", b"kept", content_type="text/plain")
    proxy.set_available(False)
    await _unavailable(lambda: proxied_store.get(BUCKET, "before.txt"))
    await _unavailable(lambda: proxied_store.put(BUCKET, "during.txt", b"lost", content_type="text/plain"))

    proxy.set_available(True)
    assert await proxied_store.get(BUCKET, "before.txt") == b"kept"
    await proxied_store.put(BUCKET, "after.txt", b"new", content_type="text/plain")
    assert await proxied_store.get(BUCKET, "after.txt") == b"new"
    assert not await proxied_store.exists(BUCKET, "during.txt")


async def test_max_attempts_counts_every_try(proxy: TcpProxy) -> None:
    proxy.set_available(False)
    refused_per_store = []
    for attempts in (1, 3):
        store = await _open_fragile(proxy.endpoint_url, max_attempts=attempts)
        try:
            refused = proxy.refused
            await _unavailable(functools.partial(store.get, BUCKET, "k.txt"))
            refused_per_store.append(proxy.refused - refused)
        finally:
            await store.close()
    # aiohttp itself re-sends an idempotent request once on a reset connection, so one try may be two connections.
    assert refused_per_store[0] >= 1
    assert refused_per_store[1] == 3 * refused_per_store[0]


async def test_closed_port_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = await _open_fragile(f"http://127.0.0.1:{port}")
    try:
        error = await _unavailable(lambda: store.put(BUCKET, "k.txt", b"x", content_type="text/plain"))
        assert "put" in error.message
        assert error.metadata["operation"] == "put"
    finally:
        await store.close()


@pytest.mark.slow
async def test_stopped_moto_process_is_unavailable() -> None:
    moto = MotoS3Process()
    await asyncio.to_thread(moto.start)
    try:
        store = await _open_fragile(moto.endpoint_url)
        try:
            await store.ensure_buckets([BUCKET])
            await store.put(BUCKET, "k.txt", b"v", content_type="text/plain")
            assert await store.get(BUCKET, "k.txt") == b"v"
            await asyncio.to_thread(moto.stop)
            await _unavailable(lambda: store.get(BUCKET, "k.txt"))
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(moto.stop)


async def test_missing_bucket_without_create_names_it(moto_s3: MotoS3Server) -> None:
    await asyncio.to_thread(moto_s3.reset)
    store = await _open_fragile(moto_s3.endpoint_url, create_buckets=False)
    try:
        error = await _unavailable(lambda: store.ensure_buckets(["never-created"]))
        assert "never-created" in error.message
        assert error.metadata["bucket"] == "never-created"
    finally:
        await store.close()


async def test_factory_with_create_buckets_false_names_the_missing_bucket(moto_s3: MotoS3Server) -> None:
    await asyncio.to_thread(moto_s3.reset)
    settings = Settings(
        blob_store="s3",
        s3_endpoint_url=moto_s3.endpoint_url,
        aws_region=FAKE_REGION,
        aws_access_key_id=SecretStr(ACCESS_KEY_ID),
        aws_secret_access_key=SecretStr(SECRET_ACCESS_KEY),
        s3_create_buckets=False,
        conversation_bucket="absent-conversations",
    )
    with pytest.raises(BlobStoreUnavailable, match="absent-conversations") as caught:
        await open_blob_store(settings)
    _assert_no_credentials(caught.value)


async def test_get_and_put_in_a_missing_bucket_are_unavailable(moto_s3: MotoS3Server) -> None:
    await asyncio.to_thread(moto_s3.reset)
    store = await _open_fragile(moto_s3.endpoint_url)
    try:
        get_error = await _unavailable(lambda: store.get("no-such-bucket", "k.txt"))
        assert "no-such-bucket" in get_error.message
        assert get_error.metadata["cause"] == "NoSuchBucket"
        put_error = await _unavailable(lambda: store.put("no-such-bucket", "k.txt", b"x", content_type="text/plain"))
        assert "no-such-bucket" in put_error.message
    finally:
        await store.close()


# --- an endpoint that answers every request with one fixed S3 error ---------------------------------------------


@pytest.fixture
async def s3_error_endpoint() -> AsyncIterator[Callable[[int, str, str], str]]:
    """An HTTP server whose every answer is the S3 error set last; returns a setter giving its URL."""
    current: dict[str, Any] = {"status": 503, "code": "SlowDown", "message": "Please reduce your request rate."}

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{current['code']}</Code><Message>{current['message']}</Message>"
            "<RequestId>probe</RequestId></Error>"
        )
        return web.Response(status=current["status"], body=body.encode(), content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]

    def set_error(status: int, code: str, message: str) -> str:
        current.update(status=status, code=code, message=message)
        return f"http://{host}:{port}"

    yield set_error
    await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (503, "SlowDown", "unavailable"),
        (500, "InternalError", "unavailable"),
        (502, "BadGateway", "unavailable"),
        (429, "TooManyRequests", "unavailable"),
        (403, "AccessDenied", "refused"),
    ],
)
async def test_throttling_5xx_and_refusals_are_unavailable(
    s3_error_endpoint: Callable[[int, str, str], str], status: int, code: str, kind: str
) -> None:
    url = s3_error_endpoint(status, code, "try later")
    store = await _open_fragile(url)
    try:
        for operation, call in [
            ("put", lambda: store.put(BUCKET, "k.txt", b"x", content_type="text/plain")),
            ("get", lambda: store.get(BUCKET, "k.txt")),
        ]:
            error = await _unavailable(call)
            assert operation in error.message
            assert code in error.message
            assert kind in error.message
            assert f"s3://{BUCKET}/k.txt" in error.message
    finally:
        await store.close()


async def test_credentials_echoed_by_the_server_are_redacted(s3_error_endpoint: Callable[[int, str, str], str]) -> None:
    url = s3_error_endpoint(
        403, "SignatureDoesNotMatch", f"key {ACCESS_KEY_ID} with secret {SECRET_ACCESS_KEY} does not sign this"
    )
    store = await _open_fragile(url)
    try:
        error = await _unavailable(lambda: store.get(BUCKET, "k.txt"))
        assert "SignatureDoesNotMatch" in error.message
        assert "***" in error.message
    finally:
        await store.close()


async def test_closed_store_is_unavailable(moto_s3: MotoS3Server) -> None:
    store = await _open_fragile(moto_s3.endpoint_url)
    await store.close()
    await store.close()
    with pytest.raises(BlobStoreUnavailable, match="closed"):
        await store.get(BUCKET, "k.txt")
