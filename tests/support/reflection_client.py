"""A small reflection-based gRPC client (like grpcurl): list, describe, and invoke methods with JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


class ReflectionClient:
    """Learns the schema from the server's reflection service; needs no generated code."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._channel = channel
        self._metadata = metadata
        self._pool = descriptor_pool.DescriptorPool()
        self._loaded: set[str] = set()

    async def _ask(self, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        stub = reflection_pb2_grpc.ServerReflectionStub(self._channel)

        async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield request

        call = stub.ServerReflectionInfo(one(), metadata=self._metadata)
        async for response in call:
            if response.HasField("error_response"):
                raise LookupError(response.error_response.error_message)
            return response
        raise LookupError("no reflection response")

    async def list_services(self) -> list[str]:
        """Every service the server exposes."""
        response = await self._ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        return sorted(s.name for s in response.list_services_response.service)

    async def _load_symbol(self, symbol: str) -> None:
        response = await self._ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        await self._add_files(response.file_descriptor_response.file_descriptor_proto)

    async def _add_files(self, serialized: Any) -> None:
        files = [descriptor_pb2.FileDescriptorProto.FromString(data) for data in serialized]
        by_name = {f.name: f for f in files}
        for dependency in {d for f in files for d in f.dependency} - set(by_name) - self._loaded:
            response = await self._ask(reflection_pb2.ServerReflectionRequest(file_by_filename=dependency))
            await self._add_files(response.file_descriptor_response.file_descriptor_proto)
        pending = [f for f in files if f.name not in self._loaded]
        while pending:
            ready = [f for f in pending if all(d in self._loaded for d in f.dependency)]
            if not ready:
                raise LookupError(f"unresolvable dependencies among {[f.name for f in pending]}")
            for file in ready:
                self._pool.Add(file)
                self._loaded.add(file.name)
            pending = [f for f in pending if f.name not in self._loaded]

    async def describe(self, symbol: str) -> str:
        """A service's methods (with request and response types) or a message's fields, as text."""
        await self._load_symbol(symbol)
        try:
            service: ServiceDescriptor = self._pool.FindServiceByName(symbol)
        except KeyError:
            message = self._pool.FindMessageTypeByName(symbol)
            return f"{symbol} is a message:\n" + "\n".join(f"  {f.name} = {f.number}" for f in message.fields)
        lines = [f"{symbol} is a service:"]
        for method in service.methods:
            stream = "stream " if method.server_streaming else ""
            lines.append(
                f"  rpc {method.name}({method.input_type.full_name}) returns ({stream}{method.output_type.full_name})"
            )
        return "\n".join(lines)

    async def _method(self, full_method: str) -> MethodDescriptor:
        service_name, _, method_name = full_method.partition("/")
        await self._load_symbol(service_name)
        service = self._pool.FindServiceByName(service_name)
        return service.methods_by_name[method_name]

    async def invoke(self, full_method: str, request_json: str = "{}") -> list[dict[str, Any]]:
        """Calls a unary or server-streaming method; returns the responses as JSON objects."""
        method = await self._method(full_method)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(request_json, request_class())
        path = f"/{method.containing_service.full_name}/{method.name}"
        if method.server_streaming:
            call = self._channel.unary_stream(
                path,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )(request, metadata=self._metadata)
            return [json.loads(json_format.MessageToJson(r)) async for r in call]
        response = await self._channel.unary_unary(
            path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_class.FromString
        )(request, metadata=self._metadata)
        return [json.loads(json_format.MessageToJson(response))]
