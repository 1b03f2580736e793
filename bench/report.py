"""What a benchmark reports: progress notes on stderr, its JSON line, and the rows of the docs/performance.md table."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def note(message: str) -> None:
    """Progress output for humans (stderr; stdout carries only the JSON lines)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def result_line(benchmark: str, quick: bool, figures: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object a benchmark prints: its figures plus the benchmark name, the machine and the mode."""
    return {"benchmark": benchmark, "cores": os.cpu_count(), "quick": quick, **figures}


def rounded(value: float | None, digits: int = 2) -> float | None:
    """Rounds for the JSON line; None stays None."""
    return None if value is None else round(value, digits)


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


@dataclass(frozen=True)
class Row:
    """One line of the docs/performance.md table."""

    benchmark: str
    figure: str
    measured: str
    target: str = "—"
    met: str = "—"
    notes: str = ""


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    """A measured value for the table; 'not measured' when missing."""
    if value is None:
        return "not measured"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def verdict(value: float | None, *, at_least: float | None = None, below: float | None = None) -> str:
    """yes / no against a target; 'not measured' when the value is missing."""
    if value is None:
        return "not measured"
    if at_least is not None:
        return "yes" if value >= at_least else "no"
    if below is not None:
        return "yes" if value < below else "no"
    return "—"
