"""`convgen demo`: everything in one process on a fresh machine, then the seed's failing job, run live."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from clients.cli.batch_commands import ITEM_COLUMNS, NO_WRAP_ITEM_COLUMNS, item_rows, seed_job_selection
from clients.cli.common import first_token, local
from clients.cli.output import Output, to_dict
from clients.cli.watch_view import job_succeeded, watch_job
from clients.client import ConvgenClient
from convgen.logging_setup import configure_logging
from convgen.settings import Settings
from convgen.v1 import batch_pb2

STOP_GRACE_SECONDS = 2.0
LOG_UPLOAD_WAIT_SECONDS = 5.0


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Adds `demo`."""
    demo = commands.add_parser(
        "demo",
        parents=parents,
        help="run both services in-process and the seed's 8-item job, live",
        description="Starts an embedded PostgreSQL (data under CONVGEN_DATA_DIR, default ./.convgen) unless "
        "DATABASE_URL is set, the blob store and the model (offline unless ANTHROPIC_API_KEY is set), both services "
        "on free ports; migrates, loads the catalog and runs the seed's failing job. Stops everything at the end.",
    )
    demo.add_argument("--concurrency", type=int, default=8, help="items at once (default 8)")
    demo.set_defaults(handler=local(run_demo))


def _demo_settings() -> Settings:
    settings = Settings()
    level = settings.log_level if "log_level" in settings.model_fields_set else "WARNING"
    fmt = settings.log_format if "log_format" in settings.model_fields_set else "text"
    configure_logging(level=level, fmt=fmt, secrets=settings.secrets())
    token = first_token(settings)
    update: dict[str, Any] = {"generation_port": 0, "batch_port": 0}
    if token and settings.generation_auth_token is None:
        update["generation_auth_token"] = token
    return settings.model_copy(update=update)


def _note(out: Output, line: str) -> None:
    """A progress note: dim on stdout, or on stderr when stdout carries JSON."""
    if out.json_mode:
        print(line, file=sys.stderr, flush=True)
    else:
        out.text(line, style="dim")


def _connect_host(settings: Settings) -> str:
    host = settings.listen_host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - recognising a wildcard bind, not binding one
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@asynccontextmanager
async def _running(settings: Settings, out: Output) -> AsyncIterator[ConvgenClient]:
    """The database, blob store and both services, started in order and stopped in reverse order."""
    # Imported here: the other commands only need the client.
    from batch_service.app import BatchApp  # noqa: PLC0415
    from convgen.blobs.factory import open_blob_store  # noqa: PLC0415
    from convgen.catalog.loader import load_catalog, packaged_catalog_path, read_catalog_file  # noqa: PLC0415
    from convgen.db.bootstrap import open_database  # noqa: PLC0415
    from generation_service.app import GenerationApp  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        where = "DATABASE_URL" if settings.database_url else f"embedded PostgreSQL in {settings.convgen_data_dir}"
        _note(out, f"starting {where} ...")
        handle = await open_database(settings)
        if handle.embedded is not None:
            stack.push_async_callback(asyncio.to_thread, handle.embedded.close)
        stack.push_async_callback(handle.close)
        async with handle.db.connection() as conn:
            summary = await load_catalog(conn, read_catalog_file(packaged_catalog_path())[0])
        blobs = await open_blob_store(settings)
        stack.push_async_callback(blobs.close)
        generation = await GenerationApp.start(settings, db=handle.db, blobs=blobs, port=0)
        stack.push_async_callback(generation.stop, STOP_GRACE_SECONDS)
        host = _connect_host(settings)
        local_settings = settings.model_copy(update={"generation_target": f"{host}:{generation.port}"})
        batch = await BatchApp.start(local_settings, database=handle, blobs=blobs, port=0)
        stack.push_async_callback(batch.stop, STOP_GRACE_SECONDS)
        model = "offline synthetic generator" if settings.uses_offline_model else f"Claude ({settings.anthropic_model})"
        _note(
            out,
            f"catalog: {summary.personas} personas, {summary.emotional_arcs} arcs, {summary.training_topics} topics, "
            f"{summary.templates} templates · model: {model} · blobs: {settings.blob_root}",
        )
        _note(out, f"generation service on {host}:{generation.port}, batch service on {host}:{batch.port}")
        client = await ConvgenClient.connect(
            f"{host}:{generation.port}", f"{host}:{batch.port}", token=first_token(settings)
        )
        stack.push_async_callback(client.close)
        yield client


async def run_demo(args: argparse.Namespace, out: Output) -> int:
    """Runs the seed's job on in-process services; 0 when it completed without failures."""
    settings = _demo_settings()
    async with _running(settings, out) as client:
        job = await client.create_batch_job(
            combination=seed_job_selection(), name="demo: seed failing job", concurrency=args.concurrency
        )
        if not out.json_mode:
            out.text(f"created job {job.id}: {job.total_items} items (the seed's failing job)")
        final = await watch_job(client, out, job.id, after_sequence=job.last_sequence)
        final = await _wait_for_log(client, final)
        items = [i async for i in client.iter_batch_items(job.id)]
        conversations = [await client.get_conversation(pk=i.conversation_pk) for i in items if i.conversation_pk]
        if out.json_mode:
            out.json({"job": to_dict(final), "items": [to_dict(i) for i in items]})
        else:
            out.table(
                ITEM_COLUMNS[:6] + ITEM_COLUMNS[7:9],
                [row[:6] + row[7:9] for row in item_rows(await client.catalog(), items)],
                title=f"Items of job {job.id}",
                wide=NO_WRAP_ITEM_COLUMNS,
            )
            out.text(f"job log: {final.log_blob.uri} ({'uploaded' if final.log_uploaded else 'not uploaded yet'})")
            out.text("conversation blobs:")
            for c in conversations:
                out.text(f"  {c.business_key}: final {c.final_blob.uri}")
                out.text(f"  {' ' * len(c.business_key)}  raw   {c.raw_blob.uri}")
    return 0 if job_succeeded(final) else 1


async def _wait_for_log(client: ConvgenClient, job: batch_pb2.BatchJob) -> batch_pb2.BatchJob:
    """The job once its log blob is uploaded (right after the terminal commit), or as it is after a short wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOG_UPLOAD_WAIT_SECONDS
    while not job.log_uploaded and loop.time() < deadline:
        await asyncio.sleep(0.1)
        job = await client.get_batch_job(job.id)
    return job
