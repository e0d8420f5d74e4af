"""`python -m gateway.server`: the gRPC gateway with health checking, reflection and graceful shutdown.

SIGHUP checks for a new model set at once (hot reload, gateway/snapshot.py); SIGINT/SIGTERM drain and stop:
every health status NOT_SERVING, `drain_s` for load balancers to notice, then `grace_s` for calls in flight.

Bounds (docs/serving.md, "Limits"): requests over `max_message_bytes` are refused RESOURCE_EXHAUSTED by gRPC
before they are read, calls beyond `max_concurrent_rpcs` RESOURCE_EXHAUSTED; health (grpc.health.v1, one
status per dependency, gateway/health.py) and reflection (grpc.reflection.v1 and v1alpha) stay open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from gateway import auth
from gateway.api import SERVICE_NAME, pb_grpc
from gateway.app import ServingApp
from gateway.config import GatewayConfig
from gateway.errors import startup_error
from gateway.health import GatewayHealth
from gateway.rpc import ErrorModelInterceptor
from gateway.service import GatewayServicer
from gateway.telemetry import TelemetrySettings, server_interceptors
from gateway.telemetry import setup as setup_telemetry

log = logging.getLogger("gateway")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log pipelines parse without regexes."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class GatewayServer:
    """The typed gRPC front end over one `ServingApp`: health, reflection, graceful shutdown."""

    def __init__(self, cfg: GatewayConfig, telemetry: TelemetrySettings | None = None,
                 app: ServingApp | None = None) -> None:
        """`app`: an already assembled ServingApp to serve (the KServe transformer shares its own); when given,
        its start and stop are the caller's."""
        self.cfg = cfg
        telemetry = telemetry or TelemetrySettings.from_env({})
        self.owns_app = app is None
        self.app = app or ServingApp(cfg)
        self.gateway = self.app.gateway
        self.health = GatewayHealth(self.app.probes)
        # Interceptor order, outermost first: telemetry sees the final status code of every call (it reads the
        # context after the call, so an abort below is recorded as what it is); the error model decodes the
        # body and maps every failure below it to its status (an exception escaping it would be UNKNOWN); auth
        # comes last because it needs the parsed request and its aborts are kept as they are.
        self.server = grpc.aio.server(
            interceptors=[*server_interceptors(telemetry, cfg.grpc_instrumentation), ErrorModelInterceptor(),
                          *auth.interceptors(cfg)],
            options=[("grpc.max_receive_message_length", cfg.max_message_bytes)],
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs)
        self.port = 0
        self.health_server: grpc.aio.Server | None = None
        self.health_port = 0

    async def start(self) -> int:
        if self.owns_app:
            await self.app.start()
        pb_grpc.add_IntentGatewayServiceServicer_to_server(GatewayServicer(self.gateway), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.server)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), self.server)
        credentials = auth.server_credentials(self.cfg)
        self.port = (self.server.add_secure_port(self.cfg.listen, credentials) if credentials is not None
                     else self.server.add_insecure_port(self.cfg.listen))
        if self.port == 0:
            raise OSError(f"cannot listen on {self.cfg.listen}")
        await self.server.start()
        if self.cfg.health_listen:
            await self._start_health_listener()
        await self.health.start()
        log.info("gateway serving on port %d (store %s, triton %s, model %s)", self.port,
                 store_location(self.cfg.store), self.cfg.triton_url, self.gateway.model_version)
        return self.port

    async def _start_health_listener(self) -> None:
        """grpc.health.v1 alone on a plaintext port (health_listen): the kubelet's gRPC probes cannot present a
        client certificate, and health says nothing about any customer."""
        self.health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.health_server)
        self.health_port = self.health_server.add_insecure_port(self.cfg.health_listen)
        if self.health_port == 0:
            raise OSError(f"cannot listen on {self.cfg.health_listen}")
        await self.health_server.start()

    async def stop(self) -> None:
        """Report NOT_SERVING everywhere, keep answering for drain_s (load balancers take the instance out of
        rotation meanwhile), then stop taking calls and let those in flight finish within grace_s; then the
        app (store, Triton client) stops."""
        await self.health.shutdown()
        if self.cfg.drain_s > 0:
            log.info("draining for %.1f s", self.cfg.drain_s)
            await asyncio.sleep(self.cfg.drain_s)
        await self.server.stop(self.cfg.grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.owns_app:
            await self.app.stop()
        log.info("gateway stopped")


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _reflection_v1_descriptor() -> None:
    """Add grpc/reflection/v1/reflection.proto to the default pool: grpcio-reflection 1.x ships only v1alpha,
    whose messages v1 kept field for field (v1 only renamed the package), so v1's file is v1alpha's under the
    new package, and a client can reflect on the v1 service itself."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type, method.output_type = (method.input_type.replace(old, new),
                                                     method.output_type.replace(old, new))
    pool.Add(proto)


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """grpc.reflection.v1 and v1alpha over one servicer (the same messages on the wire)."""
    _reflection_v1_descriptor()
    names = (*service_names, REFLECTION_V1, reflection.SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        REFLECTION_V1, {"ServerReflectionInfo": handler}),))


def store_location(url: str) -> str:
    """What the start-up log says of the store: its scheme and host, never a password or a path's user part."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme == "sqlite":
        return parts.scheme or "unknown"
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if _port(parts) else "")


def _port(parts) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


async def serve(cfg: GatewayConfig, telemetry: TelemetrySettings) -> None:
    provider = setup_telemetry(telemetry)
    server = GatewayServer(cfg, telemetry)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.app.request_reload)
    await stop.wait()
    log.info("shutdown requested: NOT_SERVING for %.1f s, then up to %.1f s for calls in flight", cfg.drain_s,
             cfg.grace_s)
    await server.stop()
    if provider is not None:
        provider.shutdown()  # flush the last spans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.server", description=__doc__)
    GatewayConfig.add_flags(parser)
    args = vars(parser.parse_args(argv))
    cfg = GatewayConfig.load(args.pop("config"), overrides=args)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=cfg.log_level, handlers=[handler])
    try:
        telemetry = TelemetrySettings.from_env()
        asyncio.run(serve(cfg, telemetry))
    except (FileNotFoundError, ValueError, OSError) as exc:
        log.error("%s", startup_error(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
