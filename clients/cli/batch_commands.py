"""`convgen batch ...`: create, list, inspect, watch and steer batch jobs."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from typing import Any

from clients.arguments import NIL_UUID, tier_value
from clients.catalog_index import Catalog
from clients.cli.common import with_client
from clients.cli.output import Output, cost_text, item_state_name, job_state_name, tier_name, usage_text, when
from clients.cli.watch_view import job_succeeded, watch_job
from clients.client import ConvgenClient
from clients.errors import ConvgenRpcError
from convgen.v1 import batch_pb2, common_pb2

JOB_HELP = "job UUID, or 'latest' for the newest job"


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Adds the batch subcommands."""
    batch = commands.add_parser("batch", help="create, watch and steer batch jobs")
    sub = batch.add_subparsers(dest="batch_command", required=True, metavar="SUBCOMMAND")
    _register_create(sub, parents)

    listing = sub.add_parser("list", parents=parents, help="jobs, newest first")
    listing.add_argument("--state", help="only jobs in this state (queued, running, paused, completed, failed, ...)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0 = all)")
    listing.set_defaults(handler=with_client(_list))

    watch = sub.add_parser(
        "watch",
        parents=parents,
        help="follow a job live until it ends (exit code 0 only when it completed without failures)",
        description="Replays the job's events from its start (so earlier failures are shown too), then follows it "
        "live until it ends. Exit code 0 only when the job completed without failed items.",
    )
    watch.add_argument("job", metavar="JOB", help=JOB_HELP)
    watch.add_argument("--new-only", action="store_true", help="skip the replay: only events from now on")
    watch.set_defaults(handler=with_client(_watch))

    for name, handler, text in (
        ("get", _get, "one job with its counters, usage, cost and log location"),
        ("pause", _pause, "stop new claims; in-flight items finish"),
        ("resume", _resume, "start a queued job or continue a paused one"),
        ("cancel", _cancel, "cancel a job (in-flight items finish first)"),
        ("log", _log, "print the job log (its blob location goes to stderr)"),
    ):
        parser = sub.add_parser(name, parents=parents, help=text)
        parser.add_argument("job", metavar="JOB", help=JOB_HELP)
        parser.set_defaults(handler=with_client(handler))

    items = sub.add_parser("items", parents=parents, help="a job's items in position order")
    items.add_argument("job", metavar="JOB", help=JOB_HELP)
    items.add_argument("--state", help="only items in this state (queued, processing, completed, failed, cancelled)")
    items.set_defaults(handler=with_client(_items))

    retry = sub.add_parser("retry-failed", parents=parents, help="re-queue failed items and run the job again")
    retry.add_argument("job", metavar="JOB", help=JOB_HELP)
    retry.add_argument("--item", action="append", default=[], help="only this failed item (repeatable)")
    retry.add_argument("--watch", action="store_true", help="then follow the job live")
    retry.set_defaults(handler=with_client(_retry))


def _register_create(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    create = sub.add_parser(
        "create",
        parents=parents,
        help="create a job: persona x arc x topic, or the seed's job",
        description="Creates a job for every combination of the given personas, arcs and topics (ids or keys), "
        "or the seed's failing 8-item job with --seed-job.",
    )
    create.add_argument("--persona", action="append", default=[], help="persona key or id (repeatable)")
    create.add_argument("--arc", action="append", default=[], help="emotional arc key or id (repeatable)")
    create.add_argument("--topic", action="append", default=[], help="training topic key or id (repeatable)")
    create.add_argument("--seed-job", action="store_true", help="the seed's 8-item job from the packaged catalog")
    create.add_argument("--tier", choices=("template", "scenario", "edge_case"), help="default: each arc's tier")
    create.add_argument("--template", help="template name or id for every item (default: auto-selected)")
    create.add_argument("--name", default="", help="display name")
    create.add_argument("--concurrency", type=int, default=0, help="items at once, 1..256 (default 8)")
    create.add_argument("--max-attempts", type=int, default=0, help="attempts per item, 1..20 (default 3)")
    create.add_argument("--stop-on-failure", action="store_true", help="fail the job at the first failed item")
    create.add_argument("--no-start", action="store_true", help="leave the job queued (start: batch resume)")
    create.add_argument("--request-id", default="", help="idempotency key: a repeat returns the same job")
    create.add_argument(
        "--max-cost",
        type=float,
        default=None,
        metavar="USD",
        help="budget: the job pauses (BUDGET_EXHAUSTED) before its spend can pass it",
    )
    create.add_argument(
        "--estimate",
        action="store_true",
        help="create nothing: print the job's estimated tokens and cost, realtime and through provider batches",
    )
    create.add_argument("--watch", action="store_true", help="then follow the job live")
    create.set_defaults(handler=with_client(_create))

    update = sub.add_parser(
        "update",
        parents=parents,
        help="change a job's budget, concurrency or name",
        description="Changes the given fields of a job (UpdateBatchJob). A job paused with BUDGET_EXHAUSTED "
        "continues after its budget is raised with --max-cost and it is resumed (batch resume).",
    )
    update.add_argument("job", metavar="JOB", help=JOB_HELP)
    budget = update.add_mutually_exclusive_group()
    budget.add_argument("--max-cost", type=float, default=None, metavar="USD", help="the new budget")
    budget.add_argument("--no-budget", action="store_true", help="remove the budget")
    update.add_argument("--concurrency", type=int, default=None, help="items at once, 1..256")
    update.add_argument("--name", default=None, help="display name")
    update.set_defaults(handler=with_client(_update))


def seed_job_selection() -> dict[str, Any]:
    """The seed's failing job (catalog.json's seed_failing_job) as a Combination mapping."""
    text = (resources.files("convgen.data") / "catalog.json").read_text(encoding="utf-8")
    seed = json.loads(text)["seed_failing_job"]
    return {
        "persona_ids": seed["persona_ids"],
        "emotional_arc_ids": seed["emotional_arc_ids"],
        "training_topic_ids": seed["training_topic_ids"],
        "tier": seed["tier"],
        "template_id": seed.get("template_id") or NIL_UUID,
    }


async def _selection(args: argparse.Namespace, client: ConvgenClient) -> dict[str, Any]:
    """combination=... or parameters=[...] for create_batch_job."""
    chosen = args.persona or args.arc or args.topic
    if args.seed_job:
        if chosen:
            raise ConvgenRpcError.invalid_argument("--seed-job", "cannot be combined with --persona/--arc/--topic")
        return {"combination": seed_job_selection()}
    for flag, values in (("--persona", args.persona), ("--arc", args.arc), ("--topic", args.topic)):
        if not values:
            raise ConvgenRpcError.invalid_argument(flag, "select at least one (or use --seed-job)")
    catalog = await client.catalog()
    personas = [catalog.persona(v, "--persona").id for v in args.persona]
    arcs = [catalog.emotional_arc(v, "--arc") for v in args.arc]
    topics = [catalog.training_topic(v, "--topic").id for v in args.topic]
    template_id = catalog.template(args.template, "--template").id if args.template else NIL_UUID
    tiers = {arc.tier for arc in arcs}
    if args.tier or len(tiers) == 1:
        tier = tier_value(args.tier, "--tier") if args.tier else tiers.pop()
        combination = {
            "persona_ids": personas,
            "emotional_arc_ids": [a.id for a in arcs],
            "training_topic_ids": topics,
            "tier": tier,
            "template_id": template_id,
        }
        return {"combination": combination}
    # Arcs of different tiers: one explicit parameter set per item, each with its arc's tier.
    parameters = [
        common_pb2.GenerationParameters(
            persona_id=p, emotional_arc_id=a.id, training_topic_id=t, tier=a.tier, template_id=template_id
        )
        for p in personas
        for a in arcs
        for t in topics
    ]
    return {"parameters": parameters}


async def _create(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    if args.estimate and args.watch:
        raise ConvgenRpcError.invalid_argument("--estimate", "creates no job, so there is nothing to --watch")
    job = await client.create_batch_job(
        **await _selection(args, client),
        name=args.name,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        error_policy="stop_on_failure" if args.stop_on_failure else "continue",
        auto_start=not args.no_start,
        request_id=args.request_id,
        max_cost_usd=args.max_cost,
        validate_only=args.estimate,
    )
    if args.estimate:
        if out.json_mode:
            out.json(job.estimate)
        else:
            show_estimate(out, job.estimate, job.concurrency)
        return 0
    if out.json_mode:
        out.json(job)
    else:
        out.text(f"created job {job.id} ({job.name}): {job.total_items} items, {job_state_name(job.state)}")
    if not args.watch:
        return 0
    final = await watch_job(client, out, job.id, after_sequence=job.last_sequence)
    return 0 if job_succeeded(final) else 1


def show_estimate(out: Output, e: common_pb2.CostEstimate, concurrency: int) -> None:
    """An estimate as a key/value table, then where its output sizes come from."""
    realtime = "unknown (model not in the price table)" if e.cost_unknown else f"${e.cost_usd:.4f}"
    batches = "unknown" if e.cost_unknown else f"${e.batch_cost_usd:.4f}"
    out.fields(
        [
            ("items", f"{e.items} (concurrency {concurrency})"),
            ("model", e.model),
            ("tokens", usage_text(e.usage)),
            ("cost, realtime", realtime),
            ("cost, provider batches", f"{batches} (Batch API prices; cache reads there are best effort)"),
            ("cost by kind", "-" if e.cost_unknown else cost_text(e.cost_breakdown)),
            ("price table", e.price_version),
        ],
        title="Estimate (nothing was created)",
    )
    for basis in e.output_basis:
        source = (
            f"average of {basis.observed_conversations} stored conversation(s)"
            if basis.observed_conversations
            else "the stated default (ESTIMATE_DEFAULT_OUTPUT_TOKENS): no stored conversation yet"
        )
        out.text(f"  {basis.template_name}: {basis.output_tokens_per_conversation} output tokens each, {source}")


async def _update(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    job = await client.update_batch_job(
        await resolve_job(client, args.job),
        name=args.name,
        concurrency=args.concurrency,
        max_cost_usd=args.max_cost,
        clear_budget=args.no_budget,
    )
    return await _steer(out, job, "updated")


async def resolve_job(client: ConvgenClient, job: str) -> str:
    """The job id a JOB argument names ('latest' = the newest job)."""
    if job != "latest":
        return job
    page = await client.list_batch_jobs(page_size=1)
    if not page.batch_jobs:
        raise ConvgenRpcError.invalid_argument("JOB", "there are no jobs yet")
    return page.batch_jobs[0].id


async def _list(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    found: list[batch_pb2.BatchJob] = []
    page_size = min(args.limit, 1000) if args.limit > 0 else 1000
    async for job in client.iter_batch_jobs(state=args.state, page_size=page_size):
        found.append(job)
        if 0 < args.limit <= len(found):
            break
    if out.json_mode:
        out.json(batch_pb2.ListBatchJobsResponse(batch_jobs=found))
        return 0
    out.table(
        ["created", "id", "name", "state", "total", "completed", "failed", "cancelled", "cost"],
        [
            (
                when(j.created_at),
                j.id,
                j.name,
                job_state_name(j.state),
                j.total_items,
                j.completed_items,
                j.failed_items,
                j.cancelled_items,
                f"${j.cost_usd:.4f}",
            )
            for j in found
        ],
        title=f"Batch jobs ({len(found)})",
        wide=["id"],
    )
    return 0


def show_job(out: Output, j: batch_pb2.BatchJob) -> None:
    """A job's fields as a key/value table."""
    out.fields(
        [
            ("id", j.id),
            ("name", j.name),
            ("state", job_state_name(j.state)),
            ("items", f"{j.total_items} total"),
            (
                "counters",
                f"{j.queued_items} queued · {j.processing_items} processing · {j.completed_items} completed · "
                f"{j.failed_items} failed · {j.cancelled_items} cancelled",
            ),
            ("concurrency", j.concurrency),
            ("max attempts", j.max_attempts),
            ("error policy", batch_pb2.ErrorPolicy.Name(j.error_policy).removeprefix("ERROR_POLICY_").lower()),
            ("usage", f"{usage_text(j.usage)}; cache hit ratio {j.cache_hit_ratio:.3f}"),
            ("cost", f"${j.cost_usd:.4f} ({cost_text(j.cost_breakdown)})"),
            *(
                [("unpriced", f"{j.unpriced_items} item(s) of a model the price table does not know")]
                if j.unpriced_items
                else []
            ),
            (
                "budget",
                f"${j.max_cost_usd:.4f} ({j.reserved_cost_usd:.4f} reserved)" if j.HasField("max_cost_usd") else "none",
            ),
            *(
                [("state reason", f"{j.state_reason.reason}: {j.state_reason.message}")]
                if j.HasField("state_reason")
                else []
            ),
            ("created", when(j.created_at, j.HasField("created_at"))),
            ("started", when(j.started_at, j.HasField("started_at"))),
            ("finished", when(j.finished_at, j.HasField("finished_at"))),
            ("last sequence", j.last_sequence),
            ("log", f"{j.log_blob.uri} ({'uploaded' if j.log_uploaded else 'not uploaded yet'})"),
        ],
        title="Batch job",
    )


async def _get(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    job = await client.get_batch_job(await resolve_job(client, args.job))
    if out.json_mode:
        out.json(job)
    else:
        show_job(out, job)
    return 0


async def _watch(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    after = None if args.new_only else 0
    final = await watch_job(client, out, await resolve_job(client, args.job), after_sequence=after)
    return 0 if job_succeeded(final) else 1


def item_rows(catalog: Catalog, items: list[batch_pb2.BatchItem]) -> list[tuple[Any, ...]]:
    """Table rows of items: position, persona, arc, topic, tier, state, attempts, keys, error."""
    return [
        (
            i.position,
            catalog.label("persona", i.parameters.persona_id),
            catalog.label("emotional arc", i.parameters.emotional_arc_id),
            catalog.label("training topic", i.parameters.training_topic_id),
            tier_name(i.parameters.tier),
            item_state_name(i.state),
            i.attempts,
            i.conversation_pk or "-",
            i.conversation_business_key or "-",
            i.error_code or "",
        )
        for i in items
    ]


ITEM_COLUMNS = [
    "#",
    "persona",
    "arc",
    "topic",
    "tier",
    "state",
    "attempts",
    "conversation pk",
    "business key",
    "error code",
]
NO_WRAP_ITEM_COLUMNS = ["persona", "arc", "topic", "conversation pk", "business key"]


def show_items(out: Output, catalog: Catalog, items: list[batch_pb2.BatchItem], *, title: str) -> None:
    """The items as a table, then each item's error message on its own line."""
    out.table(ITEM_COLUMNS, item_rows(catalog, items), title=title, wide=NO_WRAP_ITEM_COLUMNS)
    errors = [i for i in items if i.error_message]
    if errors:
        out.text("errors:")
        for i in errors:
            out.text(f"  #{i.position} ({item_state_name(i.state)}): {i.error_message}")


async def _items(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    job_id = await resolve_job(client, args.job)
    items = [i async for i in client.iter_batch_items(job_id, state=args.state, page_size=1000)]
    if out.json_mode:
        out.json(batch_pb2.ListBatchItemsResponse(items=items))
        return 0
    show_items(out, await client.catalog(), items, title=f"Items of job {job_id} ({len(items)})")
    return 0


async def _steer(out: Output, job: batch_pb2.BatchJob, verb: str) -> int:
    if out.json_mode:
        out.json(job)
    else:
        out.text(f"job {job.id} {verb}: now {job_state_name(job.state)}")
    return 0


async def _pause(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    return await _steer(out, await client.pause_batch_job(await resolve_job(client, args.job)), "paused")


async def _resume(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    return await _steer(out, await client.resume_batch_job(await resolve_job(client, args.job)), "resumed")


async def _cancel(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    return await _steer(out, await client.cancel_batch_job(await resolve_job(client, args.job)), "cancelled")


async def _retry(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    job_id = await resolve_job(client, args.job)
    before = await client.get_batch_job(job_id)
    response = await client.retry_failed_items(job_id, item_ids=args.item)
    if out.json_mode:
        out.json(response)
    else:
        out.text(
            f"job {job_id}: re-queued {response.requeued_items} failed items; now {job_state_name(response.job.state)}"
        )
    if not args.watch:
        return 0
    final = await watch_job(client, out, job_id, after_sequence=before.last_sequence)
    return 0 if job_succeeded(final) else 1


async def _log(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    log = await client.get_batch_job_log(await resolve_job(client, args.job))
    if out.json_mode:
        out.json(log)
        return 0
    sys.stdout.write(log.text if log.text.endswith("\n") or not log.text else log.text + "\n")
    sys.stdout.flush()
    state = "uploaded" if log.uploaded else "not uploaded yet"
    print(f"log: {log.line_count} lines; blob {log.blob.uri} ({state})", file=sys.stderr)
    return 0
