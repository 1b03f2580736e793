"""A TCP proxy on 127.0.0.1 that can be made unavailable for a while, to cut a client off from a live server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Self, TypeVar

_CHUNK = 64 * 1024
_T = TypeVar("_T")


class _Connection:
    """One proxied client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream

    def abort(self) -> None:
        """Resets both sides at once."""
        self.client.transport.abort()
        self.upstream.transport.abort()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copies one direction until EOF, then half-closes; any socket error resets both sides."""
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except OSError:
            self.abort()


class TcpProxy:
    """Forwards 127.0.0.1:<OS-assigned port> to target_host:target_port; set_available(False) cuts it off."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._host = host
        self._server: asyncio.Server | None = None
        self._available = True
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.refused = 0

    async def start(self) -> None:
        """Starts listening."""
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._server = await asyncio.start_server(self._handle, self._host, 0)

    async def stop(self) -> None:
        """Stops listening, resets every open connection and waits for their handlers."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._abort_all()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the proxy listens on."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return self.address[1]

    @property
    def endpoint_url(self) -> str:
        """http://host:port of the proxy."""
        host, port = self.address
        return f"http://{host}:{port}"

    @property
    def available(self) -> bool:
        """False while connections are being cut off."""
        return self._available

    @property
    def connection_count(self) -> int:
        """Connections being forwarded now."""
        return len(self._connections)

    def set_available(self, available: bool) -> None:
        """False resets every open connection and every new one until set back to True."""
        self._available = available
        if not available:
            self._abort_all()

    def _abort_all(self) -> None:
        for connection in list(self._connections):
            connection.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._available:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            self.refused += 1
            writer.transport.abort()
            return
        connection = _Connection(writer, upstream_writer)
        if not self._available or self._server is None:
            # Cut off while the upstream connection was being opened.
            self.refused += 1
            connection.abort()
            return
        self.accepted += 1
        self._connections.add(connection)
        try:
            await asyncio.gather(
                connection.pump(reader, upstream_writer),
                connection.pump(upstream_reader, writer),
            )
        finally:
            self._connections.discard(connection)
            writer.close()
            upstream_writer.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ThreadedTcpProxy:
    """A TcpProxy running on its own event loop in a daemon thread, driven from synchronous code."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self._proxy = TcpProxy(target_host, target_port, host=host)
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the loop thread and the proxy."""
        if self._loop is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._call(self._proxy.start())

    def stop(self) -> None:
        """Stops the proxy, the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._proxy.stop())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=self._timeout)
            self._loop, self._thread = None, None
            loop.close()

    def set_available(self, available: bool) -> None:
        """As TcpProxy.set_available; returns once the open connections are reset."""
        self._call(self._set_available(available))

    async def _set_available(self, available: bool) -> None:
        self._proxy.set_available(available)

    def _call(self, coro: Coroutine[object, object, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=self._timeout)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the proxy listens on."""
        return self._proxy.address

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        return self._proxy.port

    @property
    def endpoint_url(self) -> str:
        """http://host:port of the proxy."""
        return self._proxy.endpoint_url

    @property
    def available(self) -> bool:
        """False while connections are being cut off."""
        return self._proxy.available

    @property
    def proxy(self) -> TcpProxy:
        """The proxy itself (its counters; call its methods only through this wrapper)."""
        return self._proxy

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
