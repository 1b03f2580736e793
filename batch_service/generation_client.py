"""The batch service's client of GenerationService: one channel per process, errors classified by status code."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from batch_service.domain import Usage
from convgen.catalog.models import GenerationParameters
from convgen.rpc.channel import channel_options
from convgen.rpc.convert import parameters_to_proto
from convgen.rpc.status import ERROR_DOMAIN
from convgen.settings import Settings
from convgen.v1 import generation_pb2, generation_pb2_grpc

# Codes worth another attempt: the generation service or the model is busy, down or slow right now.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True)
class Generated:
    """A stored conversation as the batch service needs it: both keys, kept apart."""

    pk: uuid.UUID
    business_key: uuid.UUID
    usage: Usage


class GenerationFailed(Exception):
    """A GenerateConversation call failed: the status code, the step it names and the full message."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        step: str | None,
        transient: bool,
        retry_after: float | None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.step = step
        self.transient = transient
        self.retry_after = retry_after
        # The generation service itself could not be reached (no convgen status came back): not the item's fault.
        self.unreachable = unreachable

    def describe(self) -> str:
        """CODE (step X): message."""
        step = f" (step {self.step})" if self.step else ""
        return f"{self.code}{step}: {self.message}"


def generation_channel_options(settings: Settings) -> list[tuple[str, Any]]:
    """Options of the channel to the generation service (round-robin across resolved replicas)."""
    return channel_options(
        settings.grpc_max_message_bytes,
        [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_permit_without_calls", 1),
            # The engine decides about retries itself (an unreachable service does not cost the item an attempt).
            ("grpc.enable_retries", 0),
        ],
    )


def open_channel(settings: Settings) -> grpc.aio.Channel:
    """The channel to GENERATION_TARGET, with TLS when GENERATION_TLS_CA_FILE is set."""
    options = generation_channel_options(settings)
    if settings.generation_tls_ca_file is None:
        return grpc.aio.insecure_channel(settings.generation_target, options=options)
    key = settings.generation_tls_key_file.read_bytes() if settings.generation_tls_key_file else None
    cert = settings.generation_tls_cert_file.read_bytes() if settings.generation_tls_cert_file else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=settings.generation_tls_ca_file.read_bytes(), private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(settings.generation_target, credentials, options=options)


class GenerationClient:
    """Calls GenerateConversation with a deadline, an idempotency key and the service's own token."""

    def __init__(self, channel: grpc.aio.Channel, *, deadline_seconds: float, token: str | None) -> None:
        self._channel = channel
        self._stub = generation_pb2_grpc.GenerationServiceStub(channel)
        self._deadline = deadline_seconds
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()

    async def generate(self, parameters: GenerationParameters, *, request_id: str, created_by: uuid.UUID) -> Generated:
        """Generates (or, for a repeated request_id, fetches) the item's conversation; raises GenerationFailed."""
        request = generation_pb2.GenerateConversationRequest(
            parameters=parameters_to_proto(parameters),
            request_id=request_id,
            created_by=str(created_by),
        )
        try:
            response = await self._stub.GenerateConversation(
                request, timeout=self._deadline, metadata=self._metadata, wait_for_ready=False
            )
        except grpc.aio.AioRpcError as error:
            raise classify(error) from error
        usage = response.usage
        return Generated(
            pk=uuid.UUID(response.pk),
            business_key=uuid.UUID(response.business_key),
            usage=Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cost_usd=Decimal(str(response.cost_usd)),
            ),
        )


def classify(error: grpc.aio.AioRpcError) -> GenerationFailed:
    """Reads the status once: code, message, the step from ErrorInfo and the delay from RetryInfo."""
    code = error.code()
    message = error.details() or "(no message)"
    step: str | None = None
    retry_after: float | None = None
    from_service = False
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                step = info.metadata.get("step") or None
                from_service = info.domain == ERROR_DOMAIN
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    unreachable = not from_service and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    if unreachable:
        # gRPC's transport text embeds its own error class names ("last error: UNKNOWN: ipv4:…: Connection
        # refused"); the item's message keeps the cause without them.
        message = "generation service unreachable: " + message.replace("UNKNOWN: ", "")
    return GenerationFailed(
        code=code.name,
        message=message,
        step=step,
        transient=code in TRANSIENT_CODES,
        retry_after=retry_after,
        unreachable=unreachable,
    )
