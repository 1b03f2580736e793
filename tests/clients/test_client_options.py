"""ConvgenClient options against secured services (TLS, mutual TLS, bearer tokens), and its RPC coverage."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

import convgen.v1
from clients import ConvgenClient, ConvgenRpcError
from tests.clients.helpers import CLIENT_TOKEN
from tests.support.certificates import Pem
from tests.support.services import Services

TIMEOUT = 10.0
CONVGEN_SERVICES = {
    "convgen.v1.GenerationService",
    "convgen.v1.CatalogService",
    "convgen.v1.BatchService",
    "convgen.v1.DatasetService",
}


async def connect_to(services: Services, **options: Any) -> ConvgenClient:
    """A client on both services with the given token and TLS options."""
    generation, batch = services.targets
    return await ConvgenClient.connect(generation, batch, default_timeout=TIMEOUT, **options)


async def test_tls_client_with_the_ca_and_token_reaches_both_services(
    tls_services: Services, pki: tuple[Pem, Pem, Pem]
) -> None:
    """connect(tls_ca_file=..., token=...) makes real calls over TLS to the generation and the batch service."""
    async with await connect_to(tls_services, token=CLIENT_TOKEN, tls_ca_file=pki[0].cert) as client:
        personas = await client.list_personas()
        jobs = await client.list_batch_jobs()
    assert "pragmatic_optimist" in {p.persona_key for p in personas.personas}
    assert list(jobs.batch_jobs) == []


@pytest.mark.parametrize(
    "tls_options", [pytest.param({}, id="plaintext"), pytest.param({"tls": True}, id="system-roots")]
)
async def test_a_tls_server_refuses_clients_without_its_ca(tls_services: Services, tls_options: dict[str, Any]) -> None:
    """A plaintext client, or a TLS client trusting only the system roots, gets ConvgenRpcError UNAVAILABLE."""
    async with await connect_to(tls_services, token=CLIENT_TOKEN, **tls_options) as client:
        with pytest.raises(ConvgenRpcError) as caught:
            await client.list_personas()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.message


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param(None, "missing bearer token in the authorization metadata", id="no-token"),
        pytest.param("wrong-token", "invalid bearer token", id="wrong-token"),
    ],
)
async def test_calls_without_the_right_token_are_unauthenticated(
    tls_services: Services, pki: tuple[Pem, Pem, Pem], token: str | None, message: str
) -> None:
    """Without the token, or with a wrong one, both services' calls raise ConvgenRpcError UNAUTHENTICATED."""
    async with await connect_to(tls_services, token=token, tls_ca_file=pki[0].cert) as client:
        for call in (client.list_personas, client.list_batch_jobs):
            with pytest.raises(ConvgenRpcError) as caught:
                await call()
            assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert caught.value.message == message


def certificate_files(ca: Pem, client: Pem) -> dict[str, Any]:
    """mTLS options as file paths."""
    return {"tls_ca_file": ca.cert, "tls_cert_file": client.cert, "tls_key_file": client.key}


def certificate_bytes(ca: Pem, client: Pem) -> dict[str, Any]:
    """mTLS options as PEM bytes."""
    return {
        "root_certificates": ca.cert.read_bytes(),
        "certificate_chain": client.cert.read_bytes(),
        "private_key": client.key.read_bytes(),
    }


@pytest.mark.parametrize("options", [certificate_files, certificate_bytes], ids=["files", "bytes"])
async def test_mutual_tls_client_presenting_its_certificate_succeeds(
    mtls_services: Services, pki: tuple[Pem, Pem, Pem], options: Callable[[Pem, Pem], dict[str, Any]]
) -> None:
    """With the client certificate and key (as files or bytes), calls to mTLS services succeed."""
    ca, _server, client_pem = pki
    async with await connect_to(mtls_services, token=CLIENT_TOKEN, **options(ca, client_pem)) as client:
        topics = await client.list_training_topics()
        jobs = await client.list_batch_jobs()
    assert len(topics.training_topics) == 20
    assert list(jobs.batch_jobs) == []


async def test_mutual_tls_client_without_a_certificate_gets_a_clear_error(
    mtls_services: Services, pki: tuple[Pem, Pem, Pem]
) -> None:
    """Trusting the CA but presenting no certificate, the call raises ConvgenRpcError UNAVAILABLE, not a gRPC error."""
    async with await connect_to(mtls_services, token=CLIENT_TOKEN, tls_ca_file=pki[0].cert) as client:
        with pytest.raises(ConvgenRpcError) as caught:
            await client.list_training_topics()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert str(caught.value).startswith("UNAVAILABLE: ")


async def test_bad_tls_options_are_invalid_arguments(pki: tuple[Pem, Pem, Pem], tmp_path: Path) -> None:
    """A client certificate without its key, or an unreadable CA file, is ConvgenRpcError INVALID_ARGUMENT."""
    _ca, _server, client = pki
    with pytest.raises(ConvgenRpcError) as without_key:
        await ConvgenClient.connect("127.0.0.1:1", tls_cert_file=client.cert)
    assert without_key.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in without_key.value.field_violations] == ["tls_cert_file"]

    with pytest.raises(ConvgenRpcError) as missing_ca:
        await ConvgenClient.connect("127.0.0.1:1", tls_ca_file=tmp_path / "absent.pem")
    assert missing_ca.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in missing_ca.value.field_violations] == ["tls_ca_file"]


def convgen_rpcs() -> list[MethodDescriptor]:
    """Every method of every service in the generated convgen.v1 descriptors."""
    methods = []
    for module in pkgutil.iter_modules(convgen.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"convgen.v1.{module.name}").DESCRIPTOR
            for service in descriptor.services_by_name.values():
                methods.extend(service.methods)
    return methods


def snake_case(name: str) -> str:
    """GetBatchJobLog -> get_batch_job_log."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_every_rpc_has_a_client_method() -> None:
    """Each convgen.v1 RPC has a ConvgenClient method named in snake_case: async with a deadline, or a stream."""
    rpcs = convgen_rpcs()
    assert {m.containing_service.full_name for m in rpcs} >= CONVGEN_SERVICES
    missing = [m.full_name for m in rpcs if not callable(getattr(ConvgenClient, snake_case(m.name), None))]
    assert missing == [], f"RPCs without a ConvgenClient method: {missing}"
    for rpc in rpcs:
        method = getattr(ConvgenClient, snake_case(rpc.name))
        if rpc.server_streaming:
            assert not inspect.iscoroutinefunction(method), f"{rpc.name} streams: an iterator, not a coroutine"
        else:
            assert inspect.iscoroutinefunction(method), f"{rpc.name} is unary: an async method"
            assert "timeout" in inspect.signature(method).parameters, f"{rpc.name} takes no deadline"
