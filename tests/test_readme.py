"""The README tells the truth: its configuration table, its grpcurl examples and its client snippet all work."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from convgen.settings_doc import render_into
from dev import buf_binary
from tests.support.checkout import ROOT
from tests.support.reflection_client import ReflectionClient
from tests.support.services import Services, running_services, test_settings

README = (ROOT / "README.md").read_text()


def grpcurl_examples() -> list[list[str]]:
    """The grpcurl command lines between the README's grpcurl-examples markers."""
    block = README.split("<!-- grpcurl-examples:begin -->")[1].split("<!-- grpcurl-examples:end -->")[0]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("grpcurl ")]


def test_configuration_table_matches_the_settings() -> None:
    assert render_into(README) == README, "run `python -m convgen.settings_doc` to refresh the README table"


def test_every_setting_is_documented_in_the_table() -> None:
    table = README.split("<!-- settings-table:begin -->")[1]
    from convgen.settings import environment_variable_names  # noqa: PLC0415

    for name in environment_variable_names():
        assert f"`{name}`" in table


def test_readme_has_the_examples_the_issue_asks_for() -> None:
    verbs = [args[-1] if args[-2] != "describe" else "describe" for args in grpcurl_examples()]
    assert "list" in verbs
    assert "describe" in verbs
    assert "convgen.v1.BatchService/CreateBatchJob" in verbs
    assert "convgen.v1.BatchService/WatchBatchJob" in verbs
    assert "grpc.health.v1.Health/Check" in verbs


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with running_services(test_settings(database_url, tmp_path)) as running:
        yield running


def parse(args: list[str], ports: dict[str, int]) -> tuple[str, str, str | None]:
    """(address, verb or method, request JSON) of a grpcurl command line, with README ports mapped to ours."""
    assert args[0] == "grpcurl"
    assert "-plaintext" in args
    data = args[args.index("-d") + 1] if "-d" in args else None
    positional = [a for i, a in enumerate(args[1:], 1) if not a.startswith("-") and args[i - 1] != "-d"]
    address, *rest = positional
    host, _, port = address.rpartition(":")
    assert host == "localhost"
    return f"127.0.0.1:{ports[port]}", " ".join(rest), data


async def run_with_reflection(address: str, verb: str, data: str | None) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        client = ReflectionClient(channel)
        if verb == "list":
            return "\n".join(await client.list_services())
        if verb.startswith("describe "):
            return await client.describe(verb.split()[1])
        return json.dumps(await client.invoke(verb, data or "{}"))


def run_with_buf(address: str, verb: str, data: str | None) -> str:
    buf = buf_binary()
    assert buf is not None
    base = [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    if verb == "list":
        command = [*base, "--list-services", f"http://{address}"]
    elif verb.startswith("describe "):
        command = [*base, "--list-methods", f"http://{address}"]
    else:
        command = [*base, *(["-d", data] if data else []), f"http://{address}/{verb}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr}"
    if verb.startswith("describe "):
        service = verb.split()[1]
        return "\n".join(line for line in result.stdout.splitlines() if line.startswith(service))
    return result.stdout


@pytest.mark.parametrize("client", ["reflection", "buf"])
async def test_every_grpcurl_example_works(services: Services, client: str) -> None:
    if client == "buf" and buf_binary() is None:
        pytest.skip("buf is not installed (python3 dev.py test installs it when npm exists)")
    assert services.generation is not None
    assert services.batch is not None
    ports = {"50051": services.generation.port, "50052": services.batch.port}
    job_id = ""
    for args in grpcurl_examples():
        address, verb, data = parse(args, ports)
        if data is not None:
            data = data.replace("JOB_ID", job_id)
        if client == "reflection":
            output = await run_with_reflection(address, verb, data)
        else:
            output = await asyncio.to_thread(run_with_buf, address, verb, data)
        if verb == "list":
            assert "convgen.v1.GenerationService" in output
            assert "convgen.v1.CatalogService" in output
        elif verb.startswith("describe "):
            assert "CreateBatchJob" in output
            assert "WatchBatchJob" in output
        elif verb.endswith("/ListPersonas"):
            assert len(re.findall(r'"persona_?[kK]ey"', output)) == 2
        elif verb.endswith("/CreateBatchJob"):
            job = json.loads(output)
            job = job[0] if isinstance(job, list) else job
            assert job["totalItems"] == 8
            job_id = job["id"]
        elif verb.endswith("/WatchBatchJob"):
            assert job_id
            assert "snapshot" in output
            assert "BATCH_JOB_STATE_COMPLETED" in output
        elif verb.endswith("Health/Check"):
            assert "SERVING" in output
        else:
            pytest.fail(f"README example without a check: {shlex.join(args)}")


async def test_the_client_library_snippet_runs(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    assert services.generation is not None
    assert services.batch is not None
    snippet = README.split("### The client library")[1].split("```python")[1].split("```")[0]
    snippet = snippet.replace('"localhost:50051"', f'"127.0.0.1:{services.generation.port}"')
    snippet = snippet.replace('"localhost:50052"', f'"127.0.0.1:{services.batch.port}"')
    snippet = snippet.replace("asyncio.run(main())", "")
    namespace: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    await namespace["main"]()  # type: ignore[operator]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("snapshot 0")
    assert printed[-1].split()[1:] == ["job", "1"]
