"""The dataset card of an export: manifest.json (for tools) and report.md (for people)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from importlib import metadata
from typing import Any

from google.protobuf import json_format

from batch_service.datasets.domain import DroppedRow, ExportFile, ExportSpec
from convgen.v1 import dataset_pb2


def convgen_version() -> str:
    """The installed convgen version."""
    try:
        return metadata.version("convgen")
    except metadata.PackageNotFoundError:
        return "unknown"


def report_json(report: dataset_pb2.DatasetReport) -> dict[str, Any]:
    """The report as JSON: proto field names, every field (zeros included), 64-bit counts as numbers."""
    return json_format.MessageToDict(
        report,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def manifest(
    *,
    export_id: uuid.UUID,
    created_at: datetime,
    spec: ExportSpec,
    counts: dict[str, Any],
    files: Sequence[ExportFile],
    report: dataset_pb2.DatasetReport,
    dropped: Sequence[DroppedRow],
) -> bytes:
    """manifest.json: selection, format, counts, split, models, templates, totals, version, report, dropped rows."""
    document = {
        "export_id": str(export_id),
        "created_at": created_at.isoformat(),
        "convgen_version": convgen_version(),
        "selection": spec.to_json()["selection"],
        "format": spec.format.value,
        "system_prompt": spec.system_prompt,
        "system_prompt_sha256": hashlib.sha256(spec.system_prompt.encode()).hexdigest(),
        "split": {"eval_fraction": spec.eval_fraction, "group_by": spec.group_by.value, "seed": spec.seed},
        "quality_gate": {
            "drop_near_duplicates": spec.drop_near_duplicates,
            "near_duplicate_threshold": spec.near_duplicate_threshold,
        },
        "counts": counts,
        "files": [f.to_json() for f in files],
        "models": {m.name: m.count for m in report.models},
        "templates": [
            {
                "template_id": t.template_id,
                "template_name": t.template_name,
                "text_sha256": t.text_sha256,
                "rows": t.rows,
            }
            for t in report.templates
        ],
        "totals": report_json(report)["usage"],
        "report": report_json(report),
        "dropped": [d.to_json() for d in dropped],
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def markdown(
    *,
    export_id: uuid.UUID,
    spec: ExportSpec,
    counts: dict[str, Any],
    files: Sequence[ExportFile],
    report: dataset_pb2.DatasetReport,
) -> str:
    """report.md: the same report, for people."""
    c, u, d, v, s = report.counts, report.usage, report.duplicates, report.diversity, report.split
    lines = [
        f"# Dataset export {export_id}",
        "",
        f"Format **{spec.format.value}**, convgen {convgen_version()}. Jobs: "
        + ", ".join(str(j) for j in spec.selection.job_ids)
        + ".",
        "",
        "## Counts",
        "",
        *_table(
            ["selected", "train", "eval", "dropped"],
            [[counts["selected"], counts["exported_train"], counts["exported_eval"], counts["dropped"]]],
        ),
        "",
        "Dropped by reason: "
        + (", ".join(f"{k} {n}" for k, n in sorted(counts["dropped_by_reason"].items())) or "none")
        + ".",
        "",
        f"Turns per conversation: min {c.turns_min}, median {c.turns_median:g}, max {c.turns_max} "
        f"({c.turns} turns in {c.conversations} conversations).",
        "",
        *_table(
            ["role", "turns", "words min", "median", "mean", "max"],
            [
                [role, w.turns, w.min, f"{w.median:g}", f"{w.mean:g}", w.max]
                for role, w in (("user", c.user_words_per_turn), ("assistant", c.assistant_words_per_turn))
            ],
        ),
        "",
        "## Tokens and cost",
        "",
        *_table(
            ["", "input", "output", "cache write 5m", "cache write 1h", "cache read", "cost (USD)"],
            [
                [
                    name,
                    t.input_tokens,
                    t.output_tokens,
                    t.cache_creation_5m_input_tokens,
                    t.cache_creation_1h_input_tokens,
                    t.cache_read_input_tokens,
                    f"{cost:.6f}",
                ]
                for name, t, cost in (
                    ("selected", u.selected_usage, u.selected_cost_usd),
                    ("exported", u.exported_usage, u.exported_cost_usd),
                )
            ],
        ),
        "",
        *_table(
            ["cost by kind (USD)", "input", "output", "cache write 5m", "cache write 1h", "cache read"],
            [
                [
                    name,
                    f"{c.input_usd:.6f}",
                    f"{c.output_usd:.6f}",
                    f"{c.cache_write_5m_usd:.6f}",
                    f"{c.cache_write_1h_usd:.6f}",
                    f"{c.cache_read_usd:.6f}",
                ]
                for name, c in (("selected", u.selected_cost_breakdown), ("exported", u.exported_cost_breakdown))
            ],
        ),
        "",
        *(
            [
                f"Cost unknown (model not in the price table) for {u.selected_unknown_cost} selected and "
                f"{u.exported_unknown_cost} exported conversations; the costs above leave them out.",
                "",
            ]
            if u.selected_unknown_cost
            else []
        ),
        "Models: " + (", ".join(f"{m.name} ({m.count})" for m in report.models) or "none") + ".",
        "",
        "## Validation",
        "",
        *(
            _table(
                ["rule", "kind", "conversations"],
                [[r.rule, "blocking" if r.blocking else "warning", r.conversations] for r in report.validation],
            )
            if report.validation
            else ["Every selected conversation passes every rule."]
        ),
        "",
        "## Coverage",
        "",
        *_table(
            ["job", "combinations", "delivered", "items", "exported", "failed", "cancelled", "dropped", "pending"],
            [
                [
                    j.job_id,
                    j.combinations_requested,
                    j.combinations_delivered,
                    j.items_requested,
                    j.items_exported,
                    j.items_failed,
                    j.items_cancelled,
                    j.items_dropped,
                    j.items_pending,
                ]
                for j in report.coverage
            ],
        ),
    ]
    for job in report.coverage:
        if not job.holes_total:
            continue
        lines += ["", f"Holes of job {job.job_id} ({job.holes_total}):", ""]
        lines += _table(
            ["persona", "arc", "topic", "failed", "cancelled", "dropped", "pending", "outside window"],
            [
                [h.persona_key, h.arc_key, h.topic_key, h.failed, h.cancelled, h.dropped, h.pending, h.outside_window]
                for h in job.holes
            ],
        )
        if job.holes_total > len(job.holes):
            lines.append(f"... and {job.holes_total - len(job.holes)} more.")
    lines += [
        "",
        "## Duplicates",
        "",
        f"Exact duplicates (same normalised text): {d.exact_duplicates} in {d.exact_duplicate_groups} groups.",
        "",
        f"Near-duplicates (MinHash, {d.num_perm} permutations, LSH {d.lsh_bands} bands, Jaccard >= {d.threshold:g} "
        f"over word 3-gram shingles): {d.near_duplicates} in {d.near_duplicate_clusters} clusters"
        + (" (dropped: every member but the earliest)." if spec.drop_near_duplicates else " (kept)."),
    ]
    if d.clusters:
        lines += [""]
        lines += _table(
            ["kept (earliest)", "size", "members"],
            [[cl.kept_business_key, cl.size, " ".join(cl.business_keys[1:])] for cl in d.clusters],
        )
    lines += [
        "",
        "## Diversity (exported rows)",
        "",
        f"distinct-1 {v.distinct_1:.4f}, distinct-2 {v.distinct_2:.4f} (assistant turns), vocabulary "
        f"{v.vocabulary_size} words, first user turn repeated in {v.repeated_first_user_turn_share:.2%} of "
        "conversations.",
        "",
        "## Split",
        "",
        f"train {s.train_rows}, eval {s.eval_rows} (asked {s.eval_fraction:g}, got {s.actual_eval_fraction:.4f}); "
        f"group by {spec.group_by.value}, seed {s.seed}"
        + (
            f"; groups: {s.train_groups} in train, {s.eval_groups} in eval, none in both."
            if spec.group_by.value != "none"
            else "."
        ),
        "",
        "## Files",
        "",
        *_table(["file", "rows", "bytes", "sha256"], [[f.name, f.rows, f.bytes, f.sha256] for f in files]),
        "",
    ]
    return "\n".join(lines)
