"""TLS and mutual TLS on the services, and the batch service's TLS client towards the generation service."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from convgen.v1 import batch_pb2, batch_pb2_grpc, catalog_pb2, catalog_pb2_grpc
from tests.support.certificates import make_pki
from tests.support.demo_catalog import seed_job_request
from tests.support.services import running_services, test_settings


async def list_personas(channel: grpc.aio.Channel) -> int:
    response = await catalog_pb2_grpc.CatalogServiceStub(channel).ListPersonas(
        catalog_pb2.ListPersonasRequest(), timeout=10
    )
    return len(response.personas)


async def test_tls_server_accepts_tls_clients_and_refuses_plaintext(database_url: str, tmp_path: Path) -> None:
    ca, server, _client = make_pki(tmp_path)
    settings = test_settings(
        database_url, tmp_path, tls_cert_file=server.cert, tls_key_file=server.key, generation_tls_ca_file=ca.cert
    )
    async with running_services(settings) as services:
        assert services.generation is not None
        assert services.batch is not None
        address = f"localhost:{services.generation.port}"
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert.read_bytes())
        async with grpc.aio.secure_channel(address, credentials) as secure:
            assert await list_personas(secure) == 3
        async with grpc.aio.insecure_channel(address) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_personas(plaintext)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        # The batch service (TLS too) reaches the generation service over TLS with GENERATION_TLS_CA_FILE.
        async with grpc.aio.secure_channel(f"localhost:{services.batch.port}", credentials) as batch_channel:
            stub = batch_pb2_grpc.BatchServiceStub(batch_channel)
            job = await stub.CreateBatchJob(seed_job_request())
            async for _ in stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job.id)):
                pass
            done = await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))
            assert done.completed_items == 8


async def test_mutual_tls_requires_a_client_certificate(database_url: str, tmp_path: Path) -> None:
    ca, server, client = make_pki(tmp_path)
    settings = test_settings(
        database_url,
        tmp_path,
        tls_cert_file=server.cert,
        tls_key_file=server.key,
        tls_client_ca_file=ca.cert,
        generation_tls_ca_file=ca.cert,
        generation_tls_cert_file=client.cert,
        generation_tls_key_file=client.key,
    )
    async with running_services(settings, batch=False) as services:
        assert services.generation is not None
        address = f"localhost:{services.generation.port}"
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca.cert.read_bytes())
        async with grpc.aio.secure_channel(address, anonymous) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_personas(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        identified = grpc.ssl_channel_credentials(
            root_certificates=ca.cert.read_bytes(),
            private_key=client.key.read_bytes(),
            certificate_chain=client.cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(address, identified) as channel:
            assert await list_personas(channel) == 3
