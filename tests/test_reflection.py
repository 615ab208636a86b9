"""gRPC server reflection under ``grpc.reflection.v1`` (what current tools ask for) and
``v1alpha`` (what older ones ask for), against the real gateway over real mutual TLS."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from credgate.gateway.reflection import V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME, v1_message
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import mtls_channel

STATUS_SERVICE = "credit_repair.v1.RepairStatusService"
V1_METHOD = f"/{V1_SERVICE_NAME}/ServerReflectionInfo"
V1ALPHA_METHOD = f"/{V1ALPHA_SERVICE_NAME}/ServerReflectionInfo"


async def _ask(gateway: RunningGateway, method: str, requests: list[Any]) -> list[Any]:
    """One reflection stream on ``method``; v1 requests get v1 message classes both ways."""
    v1 = method == V1_METHOD
    request_cls = (
        v1_message("ServerReflectionRequest") if v1 else v1alpha_pb2.ServerReflectionRequest
    )
    response_cls = (
        v1_message("ServerReflectionResponse") if v1 else v1alpha_pb2.ServerReflectionResponse
    )
    async with mtls_channel(gateway.pki, gateway.port) as channel:
        call = channel.stream_stream(
            method,
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        return [r async for r in call(iter(requests), timeout=10)]


def _files(response: Any) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = {}
    for raw in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[proto.name] = proto
    return files


async def test_a_v1_only_client_lists_services_and_resolves_a_descriptor(
    gateway: RunningGateway,
) -> None:
    request = v1_message("ServerReflectionRequest")
    listed, resolved, itself, missing = await _ask(
        gateway,
        V1_METHOD,
        [
            request(list_services=""),
            request(file_containing_symbol=STATUS_SERVICE),
            request(file_containing_symbol=V1_SERVICE_NAME),
            request(file_containing_symbol="credit_repair.v1.NoSuchService"),
        ],
    )
    assert type(listed).DESCRIPTOR.full_name == "grpc.reflection.v1.ServerReflectionResponse"
    names = {s.name for s in listed.list_services_response.service}
    assert {STATUS_SERVICE, "grpc.health.v1.Health", V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME} <= names

    files = _files(resolved)
    status_file = next(f for f in files.values() if f.package == "credit_repair.v1")
    assert "RepairStatusService" in {s.name for s in status_file.service}

    v1_file = _files(itself)["grpc/reflection/v1/reflection.proto"]
    assert v1_file.package == "grpc.reflection.v1"
    method = v1_file.service[0].method[0]
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"

    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_v1alpha_still_lists_and_resolves(gateway: RunningGateway) -> None:
    request = v1alpha_pb2.ServerReflectionRequest
    listed, resolved = await _ask(
        gateway,
        V1ALPHA_METHOD,
        [request(list_services=""), request(file_containing_symbol=STATUS_SERVICE)],
    )
    names = {s.name for s in listed.list_services_response.service}
    assert {STATUS_SERVICE, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME} <= names
    assert any(f.package == "credit_repair.v1" for f in _files(resolved).values())


def test_v1_messages_are_wire_identical_to_v1alpha() -> None:
    """Why one servicer can answer both: the same bytes mean the same request and response."""
    v1 = v1_message("ServerReflectionRequest")(
        host="h", file_containing_extension={"containing_type": "x.Y", "extension_number": 7}
    )
    alpha = v1alpha_pb2.ServerReflectionRequest.FromString(v1.SerializeToString())
    assert alpha.host == "h"
    assert alpha.file_containing_extension.extension_number == 7
    response = v1alpha_pb2.ServerReflectionResponse(
        valid_host="h", list_services_response={"service": [{"name": "a.B"}]}
    )
    back = v1_message("ServerReflectionResponse").FromString(response.SerializeToString())
    assert [s.name for s in back.list_services_response.service] == ["a.B"]
