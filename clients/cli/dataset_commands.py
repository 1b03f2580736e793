"""`convgen dataset ...`: export jobs as fine-tuning files with a quality report, or print the report alone."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from clients.cli.batch_commands import resolve_job
from clients.cli.common import with_client
from clients.cli.output import Output, cost_text, enum_name, to_dict, when
from clients.client import ConvgenClient
from convgen.v1 import dataset_pb2

FORMATS = ("chat", "sharegpt", "bedrock", "convgen")
GROUPS = ("none", "persona", "arc", "topic")


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Adds the dataset subcommands."""
    dataset = commands.add_parser("dataset", help="export jobs as fine-tuning files with a quality report")
    sub = dataset.add_subparsers(dest="dataset_command", required=True, metavar="SUBCOMMAND")

    export = sub.add_parser(
        "export",
        parents=parents,
        help="export jobs' conversations as JSON Lines files, print the report, download the files",
        description="Creates an export of the jobs' completed conversations, follows it with a progress bar, "
        "prints its quality report and downloads train.jsonl, eval.jsonl, manifest.json and report.md into --out.",
    )
    _selection_options(export)
    export.add_argument("--out", type=Path, default=None, help="directory for the files (default ./exports/EXPORT_ID/)")
    export.add_argument("--no-download", action="store_true", help="leave the files in the bucket")
    export.set_defaults(handler=with_client(_export))

    report = sub.add_parser(
        "report",
        parents=parents,
        help="print the quality report of jobs' conversations without writing files",
        description="Computes the report an export would have (validation, coverage, duplicates, diversity, split) "
        "and writes no file.",
    )
    _selection_options(report)
    report.set_defaults(handler=with_client(_report))

    get = sub.add_parser("get", parents=parents, help="one export with its report")
    get.add_argument("export", metavar="EXPORT", help="export UUID")
    get.set_defaults(handler=with_client(_get))

    listing = sub.add_parser("list", parents=parents, help="exports, newest first")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0 = all)")
    listing.set_defaults(handler=with_client(_list))

    download = sub.add_parser("download", parents=parents, help="download a succeeded export's files")
    download.add_argument("export", metavar="EXPORT", help="export UUID")
    download.add_argument("--out", type=Path, default=None, help="directory (default ./exports/EXPORT_ID/)")
    download.set_defaults(handler=with_client(_download))


def _selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--job", action="append", required=True, metavar="JOB", help="batch job UUID or 'latest' (repeatable)"
    )
    parser.add_argument("--format", choices=FORMATS, default="chat", help="line format (default chat)")
    parser.add_argument("--eval-fraction", type=float, default=0.0, help="share in eval.jsonl, 0..0.5 (default 0)")
    parser.add_argument("--group-by", choices=GROUPS, default="none", help="keep each group in one split")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--drop-near-duplicates", action="store_true", help="keep one row per near-duplicate cluster")
    parser.add_argument("--threshold", type=float, default=None, help="near-duplicate Jaccard threshold (0.8)")
    parser.add_argument("--system-prompt", default="", help="system prompt of every line (default: the advisor's)")
    parser.add_argument("--include-running", action="store_true", help="accept jobs that have not ended")
    parser.add_argument("--request-id", default="", help="idempotency key: a repeat returns the same export")


async def _create(args: argparse.Namespace, client: ConvgenClient, *, report_only: bool) -> dataset_pb2.Export:
    jobs = [await resolve_job(client, job) for job in args.job]
    return await client.create_export(
        jobs,
        format=args.format,
        system_prompt=args.system_prompt,
        eval_fraction=args.eval_fraction,
        group_by=args.group_by,
        seed=args.seed,
        drop_near_duplicates=args.drop_near_duplicates,
        near_duplicate_threshold=args.threshold,
        report_only=report_only,
        include_running=args.include_running,
        request_id=args.request_id,
    )


async def _follow(client: ConvgenClient, out: Output, export: dataset_pb2.Export) -> dataset_pb2.Export:
    """Waits for the export, with a progress bar on a terminal."""
    if out.json_mode or not out.is_terminal:
        return await client.wait_export(export.id)
    columns = (TextColumn("export"), BarColumn(), TaskProgressColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=out.console, transient=True) as bar:
        task = bar.add_task("export", total=export.counts.selected or None)

        def show(current: dataset_pb2.Export) -> None:
            bar.update(task, total=current.counts.selected or None, completed=current.counts.processed)

        return await client.wait_export(export.id, on_progress=show)


async def _export(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    created = await _create(args, client, report_only=False)
    if not out.json_mode:
        out.text(f"export {created.id}: {created.counts.selected} conversations selected")
    done = await _follow(client, out, created)
    if done.state != dataset_pb2.EXPORT_STATE_SUCCEEDED:
        return _failed(out, done)
    paths: list[Path] = []
    if not args.no_download:
        directory = args.out if args.out is not None else Path("exports") / done.id
        paths = await client.download_export(done.id, directory)
    if out.json_mode:
        out.json({**to_dict(done), "downloaded": [str(p) for p in paths]})
        return 0
    show_report(out, done)
    for path in paths:
        out.text(f"wrote {path}")
    return 0


async def _report(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    done = await _follow(client, out, await _create(args, client, report_only=True))
    if done.state != dataset_pb2.EXPORT_STATE_SUCCEEDED:
        return _failed(out, done)
    if out.json_mode:
        out.json(done)
    else:
        show_report(out, done)
    return 0


def _failed(out: Output, export: dataset_pb2.Export) -> int:
    if out.json_mode:
        out.json(export)
    else:
        out.text(f"export {export.id} failed: {export.error_code}: {export.error_message}", style="red")
    return 1


async def _get(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    export = await client.get_export(args.export)
    if out.json_mode:
        out.json(export)
    elif export.state == dataset_pb2.EXPORT_STATE_SUCCEEDED:
        show_report(out, export)
    else:
        _show_header(out, export)
    return 0


async def _list(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    found: list[dataset_pb2.Export] = []
    page_size = min(args.limit, 1000) if args.limit > 0 else 1000
    async for export in client.iter_exports(page_size=page_size):
        found.append(export)
        if 0 < args.limit <= len(found):
            break
    if out.json_mode:
        out.json(dataset_pb2.ListExportsResponse(exports=found))
        return 0
    out.table(
        ["created", "id", "state", "format", "selected", "train", "eval", "dropped"],
        [
            (
                when(e.created_at),
                e.id,
                _state(e.state),
                _format(e.format),
                e.counts.selected,
                e.counts.exported_train,
                e.counts.exported_eval,
                e.counts.dropped,
            )
            for e in found
        ],
        title=f"Exports ({len(found)})",
        wide=["id"],
    )
    return 0


async def _download(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    directory = args.out if args.out is not None else Path("exports") / args.export
    paths = await client.download_export(args.export, directory)
    if out.json_mode:
        out.json({"export_id": args.export, "downloaded": [str(p) for p in paths]})
    else:
        for path in paths:
            out.text(f"wrote {path}")
    return 0


def _state(value: int) -> str:
    return enum_name(dataset_pb2.ExportState, value, "EXPORT_STATE_")


def _format(value: int) -> str:
    return enum_name(dataset_pb2.ExportFormat, value, "EXPORT_FORMAT_")


def _show_header(out: Output, e: dataset_pb2.Export) -> None:
    c = e.counts
    out.fields(
        [
            ("id", e.id),
            ("state", _state(e.state)),
            ("format", _format(e.format)),
            ("jobs", ", ".join(e.selection.job_ids)),
            ("progress", f"{c.processed} of {c.selected} read"),
            ("rows", f"{c.exported_train} train · {c.exported_eval} eval · {c.dropped} dropped"),
            ("dropped by reason", ", ".join(f"{k} {v}" for k, v in sorted(c.dropped_by_reason.items())) or "none"),
            ("runs", e.runs),
            ("created", when(e.created_at, e.HasField("created_at"))),
            ("finished", when(e.finished_at, e.HasField("finished_at"))),
            *([("error", f"{e.error_code}: {e.error_message}")] if e.error_code else []),
        ],
        title="Export",
    )


def show_report(out: Output, e: dataset_pb2.Export) -> None:
    """The export's counts and quality report as tables."""
    _show_header(out, e)
    r = e.report
    counts, usage = r.counts, r.usage
    out.table(
        ["role", "turns", "words min", "median", "mean", "max"],
        [
            (role, w.turns, w.min, f"{w.median:g}", f"{w.mean:g}", w.max)
            for role, w in (("user", counts.user_words_per_turn), ("assistant", counts.assistant_words_per_turn))
        ],
        title=f"Conversations: {counts.conversations}, turns min {counts.turns_min} / median "
        f"{counts.turns_median:g} / max {counts.turns_max}",
    )
    out.table(
        ["", "input", "output", "cache write 5m", "cache write 1h", "cache read", "cost", "cost by kind"],
        [
            (
                name,
                t.input_tokens,
                t.output_tokens,
                t.cache_creation_5m_input_tokens,
                t.cache_creation_1h_input_tokens,
                t.cache_read_input_tokens,
                f"${cost:.4f}",
                cost_text(by_kind),
            )
            for name, t, cost, by_kind in (
                ("selected", usage.selected_usage, usage.selected_cost_usd, usage.selected_cost_breakdown),
                ("exported", usage.exported_usage, usage.exported_cost_usd, usage.exported_cost_breakdown),
            )
        ],
        title="Tokens and cost · models: " + (", ".join(f"{m.name} ({m.count})" for m in r.models) or "none"),
    )
    if r.validation:
        out.table(
            ["rule", "kind", "conversations"],
            [(v.rule, "blocking" if v.blocking else "warning", v.conversations) for v in r.validation],
            title="Validation",
        )
    else:
        out.text("Validation: every selected conversation passes every rule.")
    out.table(
        ["job", "combinations", "delivered", "holes", "items", "exported", "failed", "cancelled", "dropped"],
        [
            (
                j.job_id,
                j.combinations_requested,
                j.combinations_delivered,
                j.holes_total,
                j.items_requested,
                j.items_exported,
                j.items_failed,
                j.items_cancelled,
                j.items_dropped,
            )
            for j in r.coverage
        ],
        title="Coverage",
        wide=["job"],
    )
    for job in r.coverage:
        for hole in job.holes:
            out.text(
                f"  hole in {job.job_id[:8]}: {hole.persona_key} × {hole.arc_key} × {hole.topic_key} "
                f"(failed {hole.failed}, cancelled {hole.cancelled}, dropped {hole.dropped}, pending {hole.pending})"
            )
    d, v, s = r.duplicates, r.diversity, r.split
    out.fields(
        [
            ("exact duplicates", f"{d.exact_duplicates} in {d.exact_duplicate_groups} groups"),
            (
                "near-duplicates",
                f"{d.near_duplicates} in {d.near_duplicate_clusters} clusters (Jaccard >= {d.threshold:g}, "
                f"{d.num_perm} permutations, {d.lsh_bands} bands)",
            ),
            ("distinct-1 / distinct-2", f"{v.distinct_1:.4f} / {v.distinct_2:.4f} (assistant turns)"),
            ("vocabulary", f"{v.vocabulary_size} words"),
            ("repeated first user turn", f"{v.repeated_first_user_turn_share:.2%}"),
            (
                "split",
                f"{s.train_rows} train / {s.eval_rows} eval (asked {s.eval_fraction:g}, got "
                f"{s.actual_eval_fraction:.4f}); group by "
                f"{enum_name(dataset_pb2.SplitGroupBy, s.group_by, 'SPLIT_GROUP_BY_')}, seed {s.seed}; "
                + ("leakage-free" if s.leakage_free else "LEAKAGE"),
            ),
        ],
        title="Duplicates, diversity and split",
    )
    if e.files:
        out.table(
            ["file", "rows", "bytes", "sha256", "location"],
            [(f.name, f.rows, f.bytes, f.sha256, f.blob.uri) for f in e.files],
            title="Files",
            wide=["sha256"],
        )
    if e.dropped_sample:
        out.text(f"dropped ({e.counts.dropped}; the first {len(e.dropped_sample)}):")
        for row in e.dropped_sample:
            out.text(f"  {row.business_key}: {row.reason}")
