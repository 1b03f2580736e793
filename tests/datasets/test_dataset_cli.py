"""Acceptance 6: `convgen dataset export` through the CLI entry point writes the files and prints the report, and
`--json` parses; `convgen dataset report` prints the report without writing files. Also the client library's
download helper (resume, checksum) and its errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients import ConvgenClient, ConvgenRpcError
from clients.cli.main import main
from convgen.v1 import dataset_pb2
from tests.datasets.helpers import completed_seed_job, dataset_stub, lines, read_file
from tests.support.services import Services, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """Both services on the file store."""
    async with running_services(test_settings(database_url, tmp_path / "data")) as running:
        yield running


@pytest.fixture
async def client(services: Services) -> AsyncIterator[ConvgenClient]:
    """A client on the services."""
    assert services.generation is not None
    assert services.batch is not None
    async with await ConvgenClient.connect(
        f"127.0.0.1:{services.generation.port}", f"127.0.0.1:{services.batch.port}"
    ) as connected:
        yield connected


def cli(services: Services, capsys: pytest.CaptureFixture[str]) -> Any:
    """Runs `convgen ARGS` in-process on its own thread; returns (exit code, stdout, stderr)."""
    assert services.generation is not None
    assert services.batch is not None
    targets = ["--generation-target", f"127.0.0.1:{services.generation.port}"]
    targets += ["--batch-target", f"127.0.0.1:{services.batch.port}"]

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, [*targets, *argv])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return code, captured.out, captured.err

    return run


async def test_dataset_export_writes_the_files_and_prints_the_report(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cli(services, capsys)
    job_id = await completed_seed_job(services)
    out = tmp_path / "out"
    code, stdout, stderr = await run(
        "dataset", "export", "--job", job_id, "--format", "chat", "--eval-fraction", "0.25", "--group-by", "topic",
        "--drop-near-duplicates", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    for heading in ("Export", "Validation", "Coverage", "near-duplicates", "distinct-1", "Files"):
        assert heading in stdout
    assert sorted(p.name for p in out.iterdir()) == ["eval.jsonl", "manifest.json", "report.md", "train.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["files"]:
        data = (out / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(lines(data)) == entry["rows"]
    assert manifest["split"] == {"eval_fraction": 0.25, "group_by": "training_topic", "seed": 0}
    assert manifest["counts"]["selected"] == 8
    assert f"wrote {out / 'train.jsonl'}" in stdout

    json_out = tmp_path / "json-out"
    code, stdout, stderr = await run(
        "--json", "dataset", "export", "--job", "latest", "--format", "bedrock", "--out", str(json_out)
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["state"] == "EXPORT_STATE_SUCCEEDED"
    assert document["format"] == "EXPORT_FORMAT_BEDROCK_CLAUDE"
    assert document["selection"]["job_ids"] == [job_id]
    assert sorted(Path(p).name for p in document["downloaded"]) == [
        "eval.jsonl",
        "manifest.json",
        "report.md",
        "train.jsonl",
    ]
    assert document["report"]["counts"]["conversations"] == 8

    code, stdout, _ = await run("--json", "dataset", "list")
    assert code == 0
    assert len(json.loads(stdout)["exports"]) == 2


async def test_dataset_report_writes_no_file(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cli(services, capsys)
    job_id = await completed_seed_job(services)
    code, stdout, stderr = await run("--json", "dataset", "report", "--job", job_id)
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["report_only"] is True
    assert "files" not in document or document["files"] == []
    assert document["counts"]["selected"] == 8
    assert not (tmp_path / "data" / "blobs" / "datasets" / document["id"]).exists()
    code, stdout, _ = await run("dataset", "report", "--job", job_id)
    assert code == 0
    assert "Coverage" in stdout


async def test_dataset_export_errors_are_one_line_with_the_code(
    services: Services, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cli(services, capsys)
    unknown = "00000000-0000-4000-8000-000000000001"
    code, _, stderr = await run("dataset", "export", "--job", unknown)
    assert code == 1
    assert stderr.startswith(f"error: NOT_FOUND: unknown batch job ids: {unknown}")
    job_id = await completed_seed_job(services)
    code, _, stderr = await run("dataset", "export", "--job", job_id, "--eval-fraction", "0.7")
    assert code == 1
    assert "INVALID_ARGUMENT" in stderr
    assert "split.eval_fraction" in stderr


async def test_download_helper_resumes_and_checks_the_sha256(
    services: Services, client: ConvgenClient, tmp_path: Path
) -> None:
    job_id = await completed_seed_job(services)
    export = await client.create_export([job_id], format="convgen", eval_fraction=0.25, seed=9)
    done = await client.wait_export(export.id)
    assert done.state == dataset_pb2.EXPORT_STATE_SUCCEEDED
    whole = await read_file(dataset_stub(services), done.id, "train.jsonl")
    target = tmp_path / "download"
    target.mkdir()
    # Half a file from an interrupted download: the helper goes on from its end.
    (target / "train.jsonl.part").write_bytes(whole[: len(whole) // 2])
    paths = await client.download_export(done.id, target)
    assert [p.name for p in paths] == ["train.jsonl", "eval.jsonl", "manifest.json", "report.md"]
    assert (target / "train.jsonl").read_bytes() == whole
    assert not list(target.glob("*.part"))

    # A corrupt partial file (right size, wrong bytes) fails the checksum and leaves no file under the name.
    other = tmp_path / "corrupt"
    other.mkdir()
    (other / "train.jsonl.part").write_bytes(b"x" * len(whole))
    with pytest.raises(ConvgenRpcError) as caught:
        await client.download_export(done.id, other, names=["train.jsonl"])
    assert caught.value.code == grpc.StatusCode.DATA_LOSS
    assert not (other / "train.jsonl").exists()

    chunks = [c async for c in client.read_export_file(done.id, "train.jsonl", offset=len(whole) - 10)]
    assert b"".join(c.data for c in chunks) == whole[-10:]
    assert chunks[0].offset == len(whole) - 10
    assert chunks[0].total_bytes == len(whole)
    listed = [e.id async for e in client.iter_exports(page_size=1)]
    assert listed == [done.id]
