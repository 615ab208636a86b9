"""gRPC server reflection under both names clients use: ``grpc.reflection.v1`` and ``v1alpha``.

Tools built on the current gRPC libraries (grpcurl, Postman, grpcui, Java and Go clients) ask
``grpc.reflection.v1.ServerReflection`` first and some never fall back, but the Python package
(grpcio-reflection 1.85) serves only ``v1alpha``. The two protocols are wire-identical (v1 is
v1alpha's proto with the package renamed), so rather than copy a reflection implementation,
the library's own servicer is registered a second time under the v1 service name: one
implementation answers both. The v1 file descriptor is derived from the library's v1alpha one
by the same rename and added to the descriptor pool, so ``grpcurl describe`` of the v1 service
itself resolves too. If a later grpcio-reflection brings its own v1 module, the pool already
holds the file and it is used as is.

    enable_reflection(service_names, server)      # in GatewayServer.start
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"


def _v1_file() -> Any:
    """The v1 reflection.proto descriptor: the pool's, or derived from v1alpha by renaming."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(V1_FILE_NAME)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE_NAME
    proto.package = _V1_PACKAGE
    proto.ClearField("options")
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    messages = list(proto.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            if field.HasField("type_name"):  # messages only; setting it on a scalar is invalid
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())
    return pool.FindFileByName(V1_FILE_NAME)


def v1_message(name: str) -> Any:
    """A ``grpc.reflection.v1`` message class, e.g. ``v1_message("ServerReflectionRequest")``
    (typed Any: it is built at run time, so there are no stubs to check its fields against)."""
    return message_factory.GetMessageClass(_v1_file().message_types_by_name[name])


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection of ``service_names`` (which should include ``SERVICE_NAMES``) under the
    v1alpha name, as the library does, and the same servicer under the v1 name."""
    names = tuple(service_names)
    reflection.enable_server_reflection(names, server)
    _v1_file()  # so the v1 service's own descriptor resolves through reflection
    servicer = reflection.aio.ReflectionServicer(names)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            # v1alpha classes on purpose: the servicer builds v1alpha messages, and the bytes
            # are the same for v1 (same fields, same numbers).
            request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
            response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, handlers),)
    )
    server.add_registered_method_handlers(V1_SERVICE_NAME, handlers)
