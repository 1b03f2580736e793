"""`convgen demo` end to end in a subprocess: nothing configured, its own embedded PostgreSQL, twice."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from convgen.settings import environment_variable_names

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def run_demo(cwd: Path, data_dir: Path) -> tuple[int, str, str]:
    """Runs `python -m clients.cli.main demo` with no convgen setting but CONVGEN_DATA_DIR."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in environment_variable_names()}
    env["CONVGEN_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli.main",
        "demo",
        cwd=cwd,
        env=env,
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
