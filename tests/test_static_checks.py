"""The static checks pass: ruff (lint and format), mypy strict, the dead-code check (vulture), fresh generated code
and buf lint. `python3 dev.py lint` runs the same list (dev.static_checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dev import buf_binary, static_checks

__all__ = ["buf_binary"]  # tests/test_readme.py imports it from here

ROOT = Path(__file__).resolve().parents[1]
CHECKS = static_checks(sys.executable)
HINTS = {
    "generated-code": "run `python3 dev.py gen`",
    "dead-code": "delete the unused code, or add the name to vulture_whitelist.py saying who uses it",
    "ruff-format": "run `.venv/bin/ruff format .`",
}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("name", sorted({*CHECKS, "buf-lint"}))
def test_static_check_passes(name: str) -> None:
    if name not in CHECKS:
        pytest.skip("buf is not installed (python3 dev.py test installs it when npm exists)")
    result = run(*CHECKS[name])
    assert result.returncode == 0, f"{HINTS.get(name, name)}:\n{result.stdout}{result.stderr}"


def test_pre_commit_runs_every_static_check() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = sorted(hook["entry"] for repo in config["repos"] for hook in repo["hooks"])
    assert entries == sorted(f"python3 dev.py lint {name}" for name in {*CHECKS, "buf-lint"})
