"""The convgen command line through its entry point, against the real services."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from typing import Any

import pytest

from clients import ConvgenClient
from clients.cli.main import main
from tests.clients.helpers import FAILING_ARC_KEY, set_arc_templates_active
from tests.support.checkout import ROOT
from tests.support.demo_catalog import seed_combination_fields
from tests.support.services import Services

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


async def test_catalog_list_json_and_table(cli: Any) -> None:
    listed = await cli("--json", "catalog", "list")
    assert listed.code == 0
    data = listed.json()
    assert (len(data["personas"]), len(data["arcs"]), len(data["topics"])) == (3, 8, 20)
    assert "pragmatic_optimist" in {p["persona_key"] for p in data["personas"]}

    table = await cli("catalog", "list", "arcs")
    assert table.code == 0
    assert "couple_conflict_to_alignment" in table.out
    assert "Emotional arcs (8)" in table.out


async def test_generate_with_human_keys_then_get_by_either_key(cli: Any) -> None:
    keys = ["--persona", "pragmatic_optimist", "--arc", "couple_conflict_to_alignment"]
    generated = await cli("generate", *keys, "--topic", "estate_planning_basics", "--json", "--request-id", "cli-1")
    assert generated.code == 0, generated.err
    stored = generated.json()
    assert stored["persona_key"] == "pragmatic_optimist"
    assert stored["parameters"]["tier"] == "TIER_TEMPLATE"  # the arc's tier
    assert stored["pk"] != stored["business_key"]

    human = await cli("generate", *keys, "--topic", "estate_planning_basics", "--request-id", "cli-1")
    assert human.code == 0
    for expected in (stored["pk"], stored["business_key"], stored["final_blob"]["uri"], "cost", "usage"):
        assert expected in human.out

    by_business_key = await cli("--json", "conversation", "get", stored["business_key"], "--content")
    assert by_business_key.code == 0
    assert by_business_key.json()["pk"] == stored["pk"]
    assert by_business_key.json()["content"]["turns"]
    by_pk = await cli("conversation", "get", stored["pk"], "--content")
    assert by_pk.code == 0
    assert stored["business_key"] in by_pk.out
    assert "[1] user" in by_pk.out


async def test_batch_create_seed_job_and_watch(cli: Any) -> None:
    created = await cli("batch", "create", "--seed-job", "--concurrency", "4", "--name", "cli seed", "--watch")
    assert created.code == 0, created.err
    assert "created job" in created.out
    assert re.search(r"completed: 8 completed, 0 failed, 0 cancelled of 8", created.out)

    listed = await cli("--json", "batch", "list", "--state", "completed")
    jobs = listed.json()["batch_jobs"]
    assert [j["name"] for j in jobs] == ["cli seed"]
    job_id = jobs[0]["id"]

    items = await cli("batch", "items", "latest")
    assert items.code == 0
    rows = [line for line in items.out.splitlines() if "completed" in line]
    assert len(rows) == 8
    for row in rows:
        pk, business_key = re.findall(UUID, row)
        assert pk != business_key

    log = await cli("batch", "log", job_id)
    assert log.code == 0
    assert "summary: 8 items: 8 completed, 0 failed, 0 cancelled" in log.out
    assert f"{job_id}/log.txt" in log.err


async def test_batch_watch_prints_failures_and_exits_1(cli: Any, services: Services, database_url: str) -> None:
    client = ConvgenClient.from_channels(services.generation_channel, services.batch_channel)
    job = await client.create_batch_job(combination=seed_combination_fields(), auto_start=False, name="half fails")
    await set_arc_templates_active(database_url, FAILING_ARC_KEY, False)
    await client.resume_batch_job(job.id)

    watched = await cli("batch", "watch", job.id)
    assert watched.code == 1
    failures = [line for line in watched.out.splitlines() if line.startswith("✗ item #")]
    assert len(failures) == 4
    for line in failures:
        assert f"pragmatic_optimist/{FAILING_ARC_KEY}/" in line
        assert f"no active prompt template for arc {FAILING_ARC_KEY}" in line
    assert "4 completed, 4 failed, 0 cancelled of 8" in watched.out
    assert "progress: 8/8 done" in watched.out

    streamed = await cli("batch", "watch", job.id, "--json")
    assert streamed.code == 1
    events = streamed.json_lines()
    assert "snapshot" in events[0]
    assert events[-1]["job"]["state"] == "BATCH_JOB_STATE_COMPLETED"
    assert [e["sequence"] for e in events[1:]] == list(range(1, len(events)))

    failed = await cli("--json", "batch", "items", job.id, "--state", "failed")
    assert len(failed.json()["items"]) == 4

    await set_arc_templates_active(database_url, FAILING_ARC_KEY, True)
    retried = await cli("batch", "retry-failed", job.id, "--watch")
    assert retried.code == 0, retried.out
    assert "re-queued 4 failed items" in retried.out
    assert "8 completed, 0 failed" in retried.out


async def test_steering_commands(cli: Any) -> None:
    created = await cli("--json", "batch", "create", "--seed-job", "--no-start")
    job_id = created.json()["id"]
    assert created.json()["state"] == "BATCH_JOB_STATE_QUEUED"
    paused = await cli("batch", "pause", job_id)
    assert paused.code == 0
    assert "now paused" in paused.out
    cancelled = await cli("--json", "batch", "cancel", job_id)
    assert cancelled.json()["state"] == "BATCH_JOB_STATE_CANCELLED"
    shown = await cli("batch", "get", job_id)
    assert shown.code == 0
    assert "cancelled" in shown.out
    assert f"{job_id}/log.txt" in shown.out


async def test_errors_print_code_and_message_without_traceback(cli: Any) -> None:
    missing = await cli("batch", "get", "00000000-0000-4000-8000-000000000000")
    assert missing.code == 1
    assert missing.err.startswith("error: NOT_FOUND: batch job 00000000-0000-4000-8000-000000000000 does not exist")
    assert missing.out == ""

    invalid = await cli("batch", "create", "--seed-job", "--concurrency", "999")
    assert invalid.code == 1
    assert invalid.err.startswith("error: INVALID_ARGUMENT: ")
    assert "  - concurrency: must be between 1 and 256" in invalid.err

    unknown_key = await cli("generate", "--persona", "nobody", "--arc", "x", "--topic", "y")
    assert unknown_key.code == 1
    assert unknown_key.err.startswith("error: NOT_FOUND: --persona: no persona with id or key 'nobody'")

    not_a_uuid = await cli("conversation", "get", "abc")
    assert not_a_uuid.code == 1
    assert "error: INVALID_ARGUMENT: key:" in not_a_uuid.err

    usage = await cli("batch", "frobnicate")
    assert usage.code == 2


async def test_unreachable_service_is_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(main, ["--batch-target", "127.0.0.1:1", "--timeout", "5", "batch", "list"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith("error: UNAVAILABLE: ")
    assert "Traceback" not in captured.err


@pytest.mark.slow
async def test_subprocess_entry_point(services: Services) -> None:
    generation, batch = services.targets
    argv = [sys.executable, "-m", "clients.cli.main", "--generation-target", generation, "--batch-target", batch]
    process = await asyncio.create_subprocess_exec(
        *argv, "catalog", "list", "topics", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert len(json.loads(out)["topics"]) == 20

    process = await asyncio.create_subprocess_exec(
        *argv, "batch", "watch", "not-a-job", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 1
    assert err.decode().startswith("error: INVALID_ARGUMENT: job_id")
    assert "Traceback" not in err.decode()


def run_in_terminal(argv: list[str]) -> tuple[int, str]:
    """Runs `convgen ARGV` in a subprocess whose stdout and stderr are a pseudo-terminal; (exit code, output)."""
    controller, terminal = pty.openpty()
    # A fixed size: rich sizes its live display from the terminal.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "clients.cli.main", *argv], stdout=terminal, stderr=terminal, env=env, cwd=ROOT
    )
    os.close(terminal)
    output = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=60), output.decode(errors="replace")


async def test_batch_watch_in_a_terminal_draws_the_live_bar(services: Services, database_url: str) -> None:
    """On a terminal, `batch watch` draws the rich bar (counts, throughput, ETA, cost) with failures above it."""
    client = ConvgenClient.from_channels(services.generation_channel, services.batch_channel)
    job = await client.create_batch_job(combination=seed_combination_fields(), auto_start=False, name="terminal watch")
    await set_arc_templates_active(database_url, FAILING_ARC_KEY, False)
    await client.resume_batch_job(job.id)
    generation, batch = services.targets

    code, output = await asyncio.to_thread(
        run_in_terminal, ["--generation-target", generation, "--batch-target", batch, "batch", "watch", job.id]
    )

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)  # without colours and cursor movements
    assert code == 1, text
    assert len(re.findall(rf"✗ item #\d \(pragmatic_optimist/{FAILING_ARC_KEY}/", text)) == 4, text
    bar = re.search(r"4 completed 4 failed / 8 · (?P<rate>[0-9.]+) items/s · ETA \S+ · \$\d+\.\d{4} · completed", text)
    assert bar, text
    assert float(bar["rate"]) > 0, "throughput from the items' own times, also when the events are replayed"
    assert "━" in text, "the bar itself is drawn"
    assert "progress: " not in text, "plain progress lines are for pipes, not terminals"
