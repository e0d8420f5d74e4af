"""`python -m gateway.server`: the gRPC gateway with health checking, reflection and graceful shutdown.

SIGHUP checks for a new model set at once (hot reload, gateway/snapshot.py); SIGINT/SIGTERM drain and stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway import auth
from gateway.api import SERVICE_NAME, pb_grpc
from gateway.app import ServingApp
from gateway.config import GatewayConfig
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
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[*server_interceptors(telemetry, cfg.grpc_instrumentation), *auth.interceptors(cfg)])
        self.port = 0

    async def start(self) -> int:
        if self.owns_app:
            await self.app.start()
        pb_grpc.add_IntentGatewayServiceServicer_to_server(GatewayServicer(self.gateway), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        credentials = auth.server_credentials(self.cfg)
        self.port = (self.server.add_secure_port(self.cfg.listen, credentials) if credentials is not None
                     else self.server.add_insecure_port(self.cfg.listen))
        if self.port == 0:
            raise OSError(f"cannot listen on {self.cfg.listen}")
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gateway serving on port %d (store %s, triton %s, model %s)", self.port, self.cfg.store,
                 self.cfg.triton_url, self.gateway.model_version)
        return self.port

    async def stop(self) -> None:
        """Report NOT_SERVING, let in-flight calls finish within grace_s, then close the store."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.cfg.grace_s)
        if self.owns_app:
            await self.app.stop()
        log.info("gateway stopped")


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
    log.info("shutdown requested; draining for up to %.1f s", cfg.grace_s)
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
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
