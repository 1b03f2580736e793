"""`convgen demo` end to end in a subprocess: nothing configured, its own embedded PostgreSQL, twice; and Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
import pytest

from clients.cli.common import EXIT_INTERRUPTED
from tests.support.checkout import ROOT
from tests.support.messages_api import FakeMessagesApi
from tests.support.processes import clean_environment
from tests.support.services import claude_settings

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
DEMO_COMMAND = (sys.executable, "-m", "clients.cli.main", "demo")
# The demo as a terminal's foreground job: SIGINT at its default. A process started in the background by a
# non-interactive shell (CI runners, `cmd &`) inherits SIGINT ignored, and so would the demo, which then rightly
# ignores Ctrl-C: the test would hang on the runner's setup, not on the demo.
FOREGROUND_DEMO_COMMAND = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'clients.cli.main', 'demo'])",
)
# Model calls stall this long, so the job is still running whenever Ctrl-C comes.
STALLED_MODEL_SECONDS = 600.0
# Hang guards for a loaded machine, not timings: the demo starts an embedded PostgreSQL before the job.
RUNNING_WITHIN_SECONDS = 90.0
# A demo still running after this is sent SIGABRT: the failure then shows every thread's stack.
EXIT_WITHIN_SECONDS = 60.0
# The postmaster removes postmaster.pid just before it exits; its processes may take a moment more to vanish.
GONE_WITHIN_SECONDS = 10.0


def demo_environment(data_dir: Path, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without any convgen setting but CONVGEN_DATA_DIR (and the given settings)."""
    return clean_environment({**(settings or {}), "CONVGEN_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)})


async def run_demo(cwd: Path, data_dir: Path) -> tuple[int, str, str]:
    """Runs `python -m clients.cli.main demo` with no convgen setting but CONVGEN_DATA_DIR."""
    process = await asyncio.create_subprocess_exec(
        *DEMO_COMMAND,
        cwd=cwd,
        env=demo_environment(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def item_rows(out: str) -> list[tuple[str, str]]:
    """(conversation pk, business key) of every completed item row in the demo's table."""
    rows = []
    for line in out.splitlines():
        if "│" in line and " completed " in line:
            pk, business_key = re.findall(UUID, line)
            rows.append((pk, business_key))
    return rows


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    """A scratch directory outside pytest's basetemp.

    The embedded PostgreSQL runs as another user when tests run as root, so every parent directory must stay
    traversable; pytest resets /tmp/pytest-of-<user> to 0700 whenever another session starts.
    """
    path = Path(tempfile.mkdtemp(prefix="convgen-demo-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
async def test_demo_runs_the_seed_job_end_to_end_twice(demo_dir: Path) -> None:
    tmp_path = demo_dir
    data_dir = tmp_path / "state"
    code, out, err = await run_demo(tmp_path, data_dir)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    rows = item_rows(out)
    assert len(rows) == 8, out
    assert all(pk != business_key for pk, business_key in rows)
    assert "8 completed, 0 failed, 0 cancelled of 8" in out
    job_id = re.search(rf"created job ({UUID})", out)
    assert job_id is not None
    log_file = data_dir / "blobs" / "batch-logs" / job_id.group(1) / "log.txt"
    assert f"job log: {log_file.as_uri()}" in out
    assert "summary: 8 items: 8 completed" in log_file.read_text()
    for _pk, business_key in rows:
        assert business_key in out.split("conversation blobs:")[1]
    assert (data_dir / "pgdata").is_dir()

    again, out_again, err_again = await run_demo(tmp_path, data_dir)
    assert again == 0, f"stdout:\n{out_again}\nstderr:\n{err_again}"
    second_job = re.search(rf"created job ({UUID})", out_again)
    assert second_job is not None
    assert second_job.group(1) != job_id.group(1)
    assert len(item_rows(out_again)) == 8


async def collect_lines(stream: asyncio.StreamReader, lines: list[str]) -> None:
    """Appends every line of the stream as it arrives, until EOF."""
    while line := await stream.readline():
        lines.append(line.decode(errors="replace").rstrip("\n"))


async def wait_until_running(
    demo: asyncio.subprocess.Process, lines: list[str], api: FakeMessagesApi, stderr: asyncio.Task[bytes]
) -> None:
    """Returns once the demo has created its job and an item is waiting on the model."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUNNING_WITHIN_SECONDS
    while not (any(line.startswith("created job ") for line in lines) and api.requests):
        if demo.returncode is not None or loop.time() > deadline:
            if demo.returncode is None:
                os.killpg(demo.pid, signal.SIGKILL)
            await demo.wait()
            pytest.fail(
                f"the demo's job was not running within {RUNNING_WITHIN_SECONDS}s (exit code {demo.returncode})\n"
                "stdout:\n" + "\n".join(lines) + f"\nstderr:\n{(await stderr).decode(errors='replace')}"
            )
        await asyncio.sleep(0.1)


def postmaster_file(pgdata: Path) -> list[str]:
    """The lines of postmaster.pid: pid, data directory, start time, port, socket directory, ..."""
    return (pgdata / "postmaster.pid").read_text().splitlines()


def postmaster_processes(pgdata: Path) -> list[psutil.Process]:
    """The postmaster of postmaster.pid, when it serves pgdata, and its children (backends and workers)."""
    postmaster = psutil.Process(int(postmaster_file(pgdata)[0]))
    if str(pgdata) not in postmaster.cmdline():
        return []
    return [postmaster, *postmaster.children(recursive=True)]


def processes_started_by(demo_pid: int, pgdata: Path) -> list[psutil.Process]:
    """The demo, its descendants, and the embedded PostgreSQL's processes (pg_ctl detaches the postmaster)."""
    demo = psutil.Process(demo_pid)
    postgres = postmaster_processes(pgdata)
    assert postgres, "postmaster.pid names no postmaster of the demo's data directory"
    return [demo, *demo.children(recursive=True), *postgres]


def listening_ports(processes: list[psutil.Process]) -> set[int]:
    """TCP/UDP ports the processes listen on."""
    ports = set()
    for process in processes:
        try:
            connections = process.net_connections("inet")
        except psutil.NoSuchProcess:
            continue
        ports |= {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    return ports


def still_alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running after a grace period; zombies (dead, waiting to be reaped) count as gone."""
    _gone, alive = psutil.wait_procs(processes, timeout=GONE_WITHIN_SECONDS)
    survivors = []
    for process in alive:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                survivors.append(process)
        except psutil.NoSuchProcess:
            pass
    return survivors


def describe(process: psutil.Process) -> str:
    """pid, user and command line of a process, for failure messages."""
    try:
        return f"{process.pid} ({process.username()}): {' '.join(process.cmdline()).strip()}"
    except psutil.Error:
        return f"{process.pid} (gone)"


@pytest.mark.slow
@pytest.mark.timeout(RUNNING_WITHIN_SECONDS + EXIT_WITHIN_SECONDS + 4 * GONE_WITHIN_SECONDS)
async def test_ctrl_c_mid_job_stops_everything_the_demo_started(demo_dir: Path, fake_api: FakeMessagesApi) -> None:
    """Ctrl-C while items wait on Claude: exit 130 with 'interrupted', no process, listener or postmaster.pid left."""
    fake_api.update_config({"latency_seconds": STALLED_MODEL_SECONDS})
    data_dir = demo_dir.resolve() / "state"
    pgdata = data_dir / "pgdata"
    claude = {name.upper(): str(value) for name, value in claude_settings(fake_api.base_url).items()}
    demo = await asyncio.create_subprocess_exec(
        *FOREGROUND_DEMO_COMMAND,
        cwd=demo_dir,
        env={**demo_environment(data_dir, claude), "PYTHONFAULTHANDLER": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own session and process group, as a shell's foreground job: Ctrl-C signals that whole group.
        start_new_session=True,
    )
    assert demo.stdout is not None
    assert demo.stderr is not None
    lines: list[str] = []
    stdout = asyncio.create_task(collect_lines(demo.stdout, lines))
    stderr = asyncio.create_task(demo.stderr.read())
    started: list[psutil.Process] = []
    try:
        await wait_until_running(demo, lines, fake_api, stderr)
        started = processes_started_by(demo.pid, pgdata)
        postmaster = postmaster_file(pgdata)
        socket = Path(postmaster[4]) / f".s.PGSQL.{postmaster[3]}"
        assert socket.exists()
        ports = listening_ports(started)
        announced = next(line for line in lines if line.startswith("generation service on "))
        assert {int(port) for port in re.findall(r"service on \S+:(\d+)", announced)} <= ports, (announced, ports)

        os.killpg(demo.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        try:
            await asyncio.wait_for(demo.wait(), EXIT_WITHIN_SECONDS)
        except TimeoutError:
            # faulthandler (PYTHONFAULTHANDLER) prints every thread's stack on SIGABRT: where the demo is stuck.
            os.kill(demo.pid, signal.SIGABRT)
            await asyncio.wait_for(demo.wait(), GONE_WITHIN_SECONDS)
            stacks = (await stderr).decode(errors="replace")
            pytest.fail(
                f"the demo was still running {EXIT_WITHIN_SECONDS}s after Ctrl-C:\n" + "\n".join(lines) + "\n" + stacks
            )
        await stdout
        out, err = "\n".join(lines), (await stderr).decode(errors="replace")

        assert demo.returncode == EXIT_INTERRUPTED, f"stdout:\n{out}\nstderr:\n{err}"
        assert "Traceback" not in err
        assert "interrupted" in err.splitlines(), err
        survivors = await asyncio.to_thread(still_alive, started)
        assert not survivors, "left running after Ctrl-C:\n" + "\n".join(map(describe, survivors))
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL was not stopped"
        assert not socket.exists()
        listeners = [
            c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
        ]
        assert not listeners, f"still listening on the demo's ports after Ctrl-C: {listeners}"
    finally:
        if demo.returncode is None:
            os.killpg(demo.pid, signal.SIGKILL)
            await demo.wait()
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            started += postmaster_processes(pgdata)
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()
        stdout.cancel()
        stderr.cancel()
