"""moto's S3 server over real HTTP on 127.0.0.1 with an OS-assigned port: in a thread, or as a subprocess.

Run as a script (``python tests/support/moto_s3.py --port-file F``) it serves S3 and writes its port to F.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn, Self

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"
FAKE_REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
    "AWS_REGION": FAKE_REGION,
    "AWS_DEFAULT_REGION": FAKE_REGION,
}


class _MotoHandler(MotoRequestHandler):
    """moto's request handler minus werkzeug's own Server header."""

    def send_header(self, keyword: str, value: str) -> None:
        """Sends a header, except werkzeug's Server header."""
        # moto sets its own Server header; a second one makes aiohttp >= 3.13.4 (so aiobotocore) reject the
        # response with "Duplicate 'Server' header found" (getmoto/moto#9930).
        if keyword.lower() == "server" and value == self.version_string():
            return
        super().send_header(keyword, value)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Drops the per-request access log line."""


def make_moto_server(host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """A bound (not yet serving) threaded moto server; port 0 lets the OS choose."""
    app = DomainDispatcherApplication(create_backend_app)
    return make_server(host, port, app, threaded=True, request_handler=_MotoHandler)


def _post(url: str, timeout: float) -> None:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


class MotoS3Server:
    """moto's S3 served from a daemon thread of this process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Binds a free port and serves in a thread; returns once the socket is listening."""
        if self._server is not None:
            raise RuntimeError("moto server already started")
        self._server = make_moto_server(self._host, 0)
        # A short poll interval makes stop() quick; serve_forever only polls for its shutdown flag.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="moto-s3", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops serving and closes the listening socket."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("moto server not started")
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        """http://host:port of the server."""
        return f"http://{self._host}:{self.port}"

    def reset(self) -> None:
        """Forgets every bucket and object."""
        _post(f"{self.endpoint_url}/moto-api/reset", timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoS3Process:
    """moto's S3 served by a child process, for suites that run the services as separate processes."""

    def __init__(self, host: str = "127.0.0.1", *, startup_timeout: float = 30.0) -> None:
        self._host = host
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        """Starts the child and waits until it answers HTTP; raises RuntimeError with its log if it does not."""
        if self._process is not None:
            raise RuntimeError("moto process already started")
        self._workdir = tempfile.TemporaryDirectory(prefix="moto-s3-")
        port_file = Path(self._workdir.name) / "port"
        log_path = Path(self._workdir.name) / "moto.log"
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, __file__, "--host", self._host, "--port-file", str(port_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **FAKE_AWS_ENV},
            )
        deadline = time.monotonic() + self._startup_timeout
        try:
            self._port = self._wait_for_port(port_file, deadline)
            self._wait_until_serving(deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self, port_file: Path, deadline: float) -> int:
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto exited with {self._process.returncode}: {self.log_tail()}")
            try:
                text = port_file.read_text()
            except FileNotFoundError:
                text = ""
            if text.endswith("\n"):
                return int(text)
            time.sleep(0.05)
        raise RuntimeError(f"moto did not bind a port within {self._startup_timeout}s: {self.log_tail()}")

    def _wait_until_serving(self, deadline: float) -> None:
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2) as response:
                    response.read()
                return
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto not serving at {self.endpoint_url}: {exc}: {self.log_tail()}") from exc
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminates the child (kill after timeout) and removes its work directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._process is None:
            raise RuntimeError("moto process not started")
        return self._process.pid

    @property
    def port(self) -> int:
        """The child's bound port."""
        if self._port is None:
            raise RuntimeError("moto process not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        """http://host:port of the child."""
        return f"http://{self._host}:{self.port}"

    def service_env(self) -> dict[str, str]:
        """Environment variables that point a convgen process at this server."""
        return {"BLOB_STORE": "s3", "S3_ENDPOINT_URL": self.endpoint_url, **FAKE_AWS_ENV}

    def reset(self) -> None:
        """Forgets every bucket and object."""
        _post(f"{self.endpoint_url}/moto-api/reset", timeout=10)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the child's output."""
        if self._workdir is None:
            return ""
        try:
            return (Path(self._workdir.name) / "moto.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve moto's S3 on an OS-assigned port.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    server = make_moto_server(args.host, args.port)

    def _terminate(signum: int, frame: types.FrameType | None) -> NoReturn:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    # Written then renamed, so the parent never reads a half-written port.
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(f"{server.server_address[1]}\n")
    tmp.replace(args.port_file)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    _serve()
