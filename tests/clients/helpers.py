"""Helpers for client and CLI tests: CLI results, secured settings, database reads, template switches."""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convgen.settings import Settings
from tests.support.certificates import Pem
from tests.support.postgres import fetch
from tests.support.services import Services, running_services, test_settings

# The seed's second arc: turning its templates off makes its 4 items fail at template selection.
FAILING_ARC_KEY = "couple_conflict_to_alignment"
CLIENT_TOKEN = "client-token-4b8e"


@dataclass
class Result:
    """Exit code and captured output of one CLI run."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout as one JSON document."""
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        """stdout as JSON lines."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


Pki = tuple[Pem, Pem, Pem]
"""(ca, server, client) certificates."""


def secured_services(dsn: str, data_dir: Path, pki: Pki, *, mutual: bool) -> AbstractAsyncContextManager[Services]:
    """Both services with the settings of secured_settings, running until the block ends."""
    return running_services(secured_settings(dsn, data_dir, pki, mutual=mutual))


def secured_settings(dsn: str, data_dir: Path, pki: Pki, *, mutual: bool) -> Settings:
    """Services with a server certificate and AUTH_TOKENS; mutual ones also require a client certificate."""
    ca, server, client = pki
    mutual_tls = {
        "tls_client_ca_file": ca.cert,
        "generation_tls_cert_file": client.cert,
        "generation_tls_key_file": client.key,
    }
    return test_settings(
        dsn,
        data_dir,
        tls_cert_file=server.cert,
        tls_key_file=server.key,
        generation_tls_ca_file=ca.cert,
        auth_tokens=CLIENT_TOKEN,
        generation_auth_token=CLIENT_TOKEN,
        **(mutual_tls if mutual else {}),
    )


async def event_sequences(dsn: str, job_id: str) -> list[tuple[int, str]]:
    """(sequence, kind) of every stored event of a job, in order."""
    rows = await fetch(
        dsn,
        "SELECT sequence, kind FROM batch_job_events WHERE batch_job_id = $1 ORDER BY sequence",
        uuid.UUID(job_id),
    )
    return [(row["sequence"], row["kind"]) for row in rows]


async def set_arc_templates_active(dsn: str, arc_key: str, active: bool) -> None:
    """Turns every prompt template of an arc on or off."""
    await fetch(dsn, "UPDATE prompt_templates SET active = $2 WHERE arc_key = $1", arc_key, active)
