"""The API lints with buf, the generated code is fresh, and the code passes ruff and mypy (strict)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.checkout import ROOT, buf_binary


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(
    buf_binary() is None, reason="buf is not installed (python3 dev.py test installs it when npm exists)"
)
def test_buf_lint_passes() -> None:
    result = run(str(buf_binary()), "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_fresh() -> None:
    result = run(sys.executable, "scripts/generate_protos.py", "--check")
    assert result.returncode == 0, f"run `python3 dev.py gen`:\n{result.stdout}{result.stderr}"


def test_ruff_passes() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    formatted = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.slow
def test_mypy_strict_passes() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
