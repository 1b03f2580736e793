"""The checkout the tests run in: its root directory and the tools `python3 dev.py test` installs into it."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def buf_binary() -> str | None:
    """The buf executable: the one dev.py installed under .tools, else one on PATH, else None."""
    local = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    return str(local) if local.exists() else shutil.which("buf")
