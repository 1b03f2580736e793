"""The test TCP proxy forwards bytes both ways and cuts connections off while unavailable."""

from __future__ import annotations

import asyncio
import os
import socket
import socketserver
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.tcp_proxy import TcpProxy, ThreadedTcpProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """An asyncio echo server on an OS-assigned port."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the echo server."""
    async with TcpProxy("127.0.0.1", echo_port) as found:
        yield found


async def _round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout=5)
    finally:
        writer.close()
        await writer.wait_closed()


async def _is_cut_off(reader: asyncio.StreamReader) -> bool:
    """True when the connection ends (EOF or reset) instead of answering."""
    try:
        data = await asyncio.wait_for(reader.read(1), timeout=5)
    except ConnectionResetError:
        return True
    return data == b""


async def test_forwards_bytes_both_ways(proxy: TcpProxy) -> None:
    host, port = proxy.address
    assert host == "127.0.0.1"
    assert port == proxy.port != 0
    assert proxy.endpoint_url == f"http://127.0.0.1:{port}"
    payload = os.urandom(1024 * 1024)
    assert await _round_trip(proxy.port, payload) == payload
    assert proxy.accepted == 1


async def test_unavailable_cuts_open_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), timeout=5) == b"ping"
    assert proxy.connection_count == 1

    proxy.set_available(False)
    assert not proxy.available
    assert await _is_cut_off(reader)
    writer.close()

    late_reader, late_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await _is_cut_off(late_reader)
    late_writer.close()
    assert proxy.refused >= 1

    proxy.set_available(True)
    assert await _round_trip(proxy.port, b"back again") == b"back again"


async def test_unavailable_target_closes_the_client(echo_port: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with TcpProxy("127.0.0.1", closed_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await _is_cut_off(reader)
        writer.close()
        assert proxy.refused == 1


async def test_stop_closes_connections_and_the_port(echo_port: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_port)
    await proxy.start()
    port = proxy.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.readexactly(1), timeout=5) == b"x"
    await proxy.stop()
    assert await _is_cut_off(reader)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await proxy.stop()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def threaded_echo_port() -> Iterator[int]:
    """A thread-based echo server, for the synchronous proxy test."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def _sync_round_trip(port: int, payload: bytes) -> bytes:
    """What the echo sends back through the proxy; b"" when the proxy cuts the connection."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        try:
            conn.sendall(payload)
            while len(received) < len(payload):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return received


def test_threaded_proxy_from_synchronous_code(threaded_echo_port: int) -> None:
    with ThreadedTcpProxy("127.0.0.1", threaded_echo_port) as proxy:
        assert _sync_round_trip(proxy.port, b"hello") == b"hello"

        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        held.sendall(b"a")
        assert held.recv(1) == b"a"
        proxy.set_available(False)
        assert not proxy.available
        try:
            assert held.recv(1) == b""
        except ConnectionResetError:
            pass
        finally:
            held.close()
        assert _sync_round_trip(proxy.port, b"refused") == b""

        proxy.set_available(True)
        assert _sync_round_trip(proxy.port, b"again") == b"again"
        assert proxy.proxy.accepted >= 2
