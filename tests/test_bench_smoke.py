"""Smoke test of the benchmark suite: `python -m bench.run_all --quick` runs and reports well-formed results (slow);
and the quick checks of its parts: every benchmark is wired in, job sizes are exact, a failure reads 'not measured'.

No timing assertions: the figures of a quick run on a shared machine mean nothing; only their presence is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import run_all
from bench.postgres import BENCH_PERSONAS, BENCH_TOPICS
from tests.support.checkout import ROOT
from tests.support.demo_catalog import CatalogIds

HAND_WRITTEN = "## Before/after\n\nHand-written notes that the suite must keep.\n"

# benchmark -> paths (dotted) that must be present and numeric in its JSON line
EXPECTED: dict[str, list[str]] = {
    "overhead": [
        "items",
        *(
            f"runs.{config}.{key}"
            for config in ("offline_file", "offline_s3", "sdk_file")
            for key in (
                "items_per_s",
                "elapsed_s",
                "cpu_ms_per_item.generation",
                "cpu_ms_per_item.batch",
                "cpu_ms_per_item.services",
            )
        ),
        "runs.sdk_file.cpu_ms_per_item.fake_api",
        "runs.offline_s3.cpu_ms_per_item.moto_s3",
    ],
    "concurrency": [
        "ideal_items_per_s",
        "convgen.items_per_s",
        "convgen.of_ideal",
        "naive_script.items_per_s",
        "naive_script.of_ideal",
        "seed_design.items_per_s",
        "convgen_vs_naive",
        "convgen_vs_seed",
    ],
    "rate_limit": ["achieved_per_s", "of_allowed", "requests", "requests_429", "share_429"],
    "output_pacing": ["output_tokens", "of_allowed", "requests", "requests_429", "share_429"],
    "progress_latency": [
        "p50_ms_1_watcher",
        "p99_ms_1_watcher",
        "p50_ms_100_watchers",
        "p99_ms_100_watchers",
        "p99_ms_100_watchers_moderate",
        "moderate.concurrency",
        "items_per_s_0_watchers",
        "items_per_s_100_watchers",
        "throughput_cost",
    ],
    "scale": [
        "items",
        "create_s",
        "list_unfiltered.far_end_page_100_ms.last",
        "list_unfiltered.page_1000_ms.max",
        "list_filtered_queued.far_end_page_100_ms.last",
        "snapshot_ms_idle.max",
        "snapshot_ms_running.p50",
        "peak_rss_mb.generation",
        "peak_rss_mb.batch",
    ],
    "cost": [
        "items",
        "convgen.cost_per_1000_usd",
        "convgen.cache_hit_ratio",
        "convgen.estimate_error",
        "convgen.estimate_batch_cost_per_1000_usd",
        "naive_script.cost_per_1000_usd",
        "convgen_vs_naive",
    ],
    "dataset_export": [
        "conversations",
        "file.end_to_end_s",
        "file.server_s",
        "file.peak_rss_mb",
        "file.selected",
        "near_duplicates.total_s",
        "near_duplicates.signing_s",
        "s3.rows_per_s",
        "s3.selected",
    ],
}


def _lookup(document: dict[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        assert isinstance(value, dict), f"{dotted}: {part} is not inside an object"
        assert part in value, f"missing {dotted}"
        value = value[part]
    return value


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_suite_runs_and_emits_well_formed_json_lines(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    report.write_text(f"# Performance\n\nold table\n\n{HAND_WRITTEN}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--output", str(report)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    assert [line["benchmark"] for line in lines] == list(EXPECTED)
    for line in lines:
        assert "error" not in line, line["error"]
        assert line["cores"] == os.cpu_count()
        assert line["quick"] is True
        for dotted in EXPECTED[line["benchmark"]]:
            value = _lookup(line, dotted)
            assert isinstance(value, int | float), f"{line['benchmark']}: {dotted} is {value!r}, not a number"
        assert _no_failed_items(line), f"{line['benchmark']}: some items failed"

    text = report.read_text()
    assert "| Benchmark | Figure | Measured | Target | Met? | Notes |" in text
    assert "--quick" in text
    assert f"{os.cpu_count()} cores" in text
    for name in EXPECTED:
        assert f"| {name} |" in text
    assert "old table" not in text
    assert text.endswith(HAND_WRITTEN), "the hand-written Before/after section is kept"


def _no_failed_items(line: dict[str, Any]) -> bool:
    """Every `failed` counter in the line is 0 (the quick jobs must complete)."""
    found: list[int] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "failed" and isinstance(inner, int):
                    found.append(inner)
                walk(inner)

    walk(line)
    return all(count == 0 for count in found)


def test_every_benchmark_is_wired_into_the_suite() -> None:
    assert [name for name, _ in run_all.BENCHMARKS] == list(EXPECTED)
    for name, module in run_all.BENCHMARKS:
        assert name == module.NAME
        assert callable(module.run)
        assert callable(module.rows)


@pytest.mark.parametrize("items", [1, 8, 30, 64, 100, 300, 1280, 2000, 10_000, 100_000])
def test_a_bench_job_selects_exactly_the_items_asked_for(items: int) -> None:
    catalog = CatalogIds(
        persona_ids=[f"p{n}" for n in range(BENCH_PERSONAS)],
        arc_ids=[f"a{n}" for n in range(5)],
        topic_ids=[f"t{n}" for n in range(BENCH_TOPICS)],
    )
    combination = catalog.combination(items)
    selected = len(combination.persona_ids) * len(combination.emotional_arc_ids) * len(combination.training_topic_ids)
    assert selected == items


def test_a_job_larger_than_the_catalog_cannot_be_selected() -> None:
    catalog = CatalogIds(persona_ids=["p"], arc_ids=["a"], topic_ids=["t1", "t2"])
    with pytest.raises(ValueError, match="3 items cannot be selected"):
        catalog.combination(3)


def test_a_failed_benchmark_reads_not_measured_in_the_table() -> None:
    rows = run_all.table_rows([{"benchmark": "overhead", "error": "RuntimeError: boom"}])
    assert [(row.benchmark, row.measured, row.notes) for row in rows] == [
        ("overhead", "not measured", "RuntimeError: boom")
    ]
