#!/usr/bin/env python3
"""Developer entry point: bootstraps a local virtualenv, then runs the demo, the tests or a tool.

Needs only Python 3.11+. Usage:
    python3 dev.py demo            # the one-command demo (embedded PostgreSQL, offline model)
    python3 dev.py test [ARGS]     # the whole default test suite (pytest ARGS passed through)
    python3 dev.py reliability     # the full reliability suite, prints its table
    python3 dev.py bench [--quick] # the benchmark suite, writes docs/performance.md
    python3 dev.py gen             # regenerate Python code from protos/
    python3 dev.py lint [CHECK]    # the static checks the tests enforce (all, or the named ones)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TOOLS = ROOT / ".tools"
BUF_VERSION = "1.75.0"
INSTALL_INPUTS = ("pyproject.toml", "constraints.txt")


def _python() -> Path:
    return VENV / "bin" / "python"


def _install_stamp() -> str:
    digest = hashlib.sha256()
    for name in INSTALL_INPUTS:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Creates .venv and installs the project with its test extra when inputs changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on whatever python3 the user has
        sys.exit(f"convgen needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp_file = VENV / ".convgen-install-stamp"
    stamp = _install_stamp()
    if stamp_file.exists() and stamp_file.read_text() == stamp and _python().exists():
        return
    if not _python().exists():
        print(f"dev.py: creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("dev.py: installing convgen and its dependencies (first run takes a minute or two)", flush=True)
    subprocess.run(
        [str(_python()), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        check=True,
    )
    subprocess.run(
        [
            str(_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-c",
            str(ROOT / "constraints.txt"),
            "-e",
            f"{ROOT}[test]",
        ],
        check=True,
    )
    stamp_file.write_text(stamp)


def buf_binary() -> str | None:
    """The buf executable: the one ensure_buf installed, else one on PATH."""
    local = TOOLS / "node_modules" / ".bin" / "buf"
    return str(local) if local.exists() else shutil.which("buf")


def static_checks(python: str) -> dict[str, list[str]]:
    """Every static check by name: `dev.py lint` runs them, tests/test_static_checks.py enforces each."""
    checks = {
        "ruff-check": [python, "-m", "ruff", "check", "."],
        "ruff-format": [python, "-m", "ruff", "format", "--check", "."],
        "mypy": [python, "-m", "mypy"],
        "dead-code": [python, "-m", "vulture"],
        "generated-code": [python, "scripts/generate_protos.py", "--check"],
    }
    buf = buf_binary()
    if buf is not None:
        checks["buf-lint"] = [buf, "lint"]
    return checks


def lint(python: str, names: list[str]) -> int:
    """Runs the named static checks (all when none are named); non-zero when any fails."""
    ensure_buf()
    checks = static_checks(python)
    if buf_binary() is None:
        print("dev.py: buf is not installed (needs npm): skipping buf-lint, as the tests do", flush=True)
    unknown = [name for name in names if name not in checks and name != "buf-lint"]
    if unknown:
        print(f"unknown check(s) {', '.join(unknown)}; the checks are {', '.join(checks)}", file=sys.stderr)
        return 2
    failed = [name for name, command in checks.items() if (not names or name in names) and run(command) != 0]
    if failed:
        print(f"dev.py lint: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def ensure_buf() -> None:
    """Installs buf (for buf lint and buf curl tests) from npm when npm is available."""
    if buf_binary() is not None:
        return
    npm = shutil.which("npm")
    if npm is None:
        print("dev.py: npm not found; tests that need buf will be skipped", flush=True)
        return
    TOOLS.mkdir(exist_ok=True)
    print(f"dev.py: installing @bufbuild/buf@{BUF_VERSION} into {TOOLS}", flush=True)
    result = subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(TOOLS), f"@bufbuild/buf@{BUF_VERSION}"],
        check=False,
    )
    if result.returncode != 0:
        print("dev.py: buf install failed; tests that need buf will be skipped", flush=True)


def run(args: list[str]) -> int:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{TOOLS / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(args, cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    ensure_venv()
    py = str(_python())
    if command == "demo":
        return run([py, "-m", "clients.cli.main", "demo", *rest])
    if command == "test":
        ensure_buf()
        return run([py, "-m", "pytest", *rest])
    if command == "reliability":
        return run([py, "-m", "tests.reliability.full_suite", *rest])
    if command == "bench":
        return run([py, "-m", "bench.run_all", *rest])
    if command == "gen":
        return run([py, "scripts/generate_protos.py", *rest])
    if command == "lint":
        return lint(py, rest)
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
