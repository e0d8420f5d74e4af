"""`python -m harness.bench_interceptor` (`make bench-interceptor`): what each server interceptor setup costs
per call, in server CPU.

Tracing's fixed cost is paid by every request, sampled or not, and it is small beside a RankTiles request's
noise on a shared machine; here it is isolated. One server process hosts five echo services over real gRPC on
loopback, which differ only in their interceptors: none; metrics only (`TelemetryInterceptor`, tracing off);
opentelemetry-instrumentation-grpc's aio interceptor plus ours for metrics; ours with tracing on; metrics plus
the bearer-token check (gateway/auth.py's `AuthInterceptor`, ES256, as the gateway runs it; every call carries
the same token, so this is the cached path). Tracing samples `parentbased_traceidratio` at 1% (the chart's
default) into an exporter that drops the spans. A load generator (this process) sends sequential calls to each
in rounds of a fresh order; the server's CPU seconds per call are read with psutil. ->
reports/interceptor_bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
import psutil

from gateway.auth import AuthInterceptor, KeySet, TokenVerifier
from gateway.config import GatewayConfig
from gateway.pki import LocalPKI
from gateway.telemetry import METRICS, TelemetryInterceptor
from harness.stats import median_ci90, save_json_report

SETUPS = ("none", "metrics_only", "upstream_tracing", "gateway_tracing", "metrics_auth")
METHOD = "/bench.Echo/Call"


def _interceptors(setup: str, pki_dir: Path) -> list:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    if setup == "metrics_auth":
        cfg = GatewayConfig(pki_dir=str(pki_dir))
        verifier = TokenVerifier(KeySet(LocalPKI(pki_dir).ensure().path("jwt.pub"), jwks=False), cfg.jwt_issuer,
                                 cfg.jwt_audience)
        return [TelemetryInterceptor(METRICS), AuthInterceptor(verifier, {"Call": "rank:read"}, "/bench.Echo/")]
    return {"none": [], "metrics_only": [TelemetryInterceptor(METRICS)],
            "upstream_tracing": [aio_server_interceptor(), TelemetryInterceptor(METRICS)],
            "gateway_tracing": [TelemetryInterceptor(METRICS, tracing=True)]}[setup]


def serve(ratio: float, pki_dir: Path) -> None:
    """The server process: one echo server per setup on a free port; prints {setup: port} when ready."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Dropped(SpanExporter):
        def export(self, spans) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    # gateway.telemetry is imported by now (at the top), as in the gateway: its module-level tracer is a proxy
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)

    async def echo(request: bytes, context) -> bytes:
        return request

    async def run() -> None:
        ports, servers = {}, []  # servers: a server nobody refers to is collected, and stops
        for setup in SETUPS:
            server = grpc.aio.server(interceptors=_interceptors(setup, pki_dir))
            servers.append(server)
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}),))
            ports[setup] = server.add_insecure_port("127.0.0.1:0")
            await server.start()
        print(json.dumps(ports), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


def measure(rounds: int, calls: int, ratio: float, payload: int = 200) -> dict:
    pki = tempfile.TemporaryDirectory(prefix="bench-pki-")
    metadata = (("authorization", f"Bearer {LocalPKI(pki.name).mint_token(['rank:read'])}"),)
    server = subprocess.Popen([sys.executable, "-m", "harness.bench_interceptor", "--serve", "--ratio", str(ratio),
                               "--pki-dir", pki.name], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 60)
        if not ready:
            raise RuntimeError("the benchmark's server process did not start within 60 s")
        ports = json.loads(server.stdout.readline())
        process = psutil.Process(server.pid)
        channels = {s: grpc.insecure_channel(f"127.0.0.1:{p}") for s, p in ports.items()}
        stubs = {s: c.unary_unary(METHOD) for s, c in channels.items()}
        body = b"x" * payload
        for stub in stubs.values():  # warm up: connections, first-call paths
            for _ in range(200):
                stub(body, timeout=5, metadata=metadata)
        us: dict[str, list[float]] = {s: [] for s in SETUPS}
        order = np.random.default_rng(0)
        for _ in range(rounds):
            for setup in order.permutation(SETUPS):
                before = sum(process.cpu_times()[:2])
                for _ in range(calls):
                    stubs[setup](body, timeout=5, metadata=metadata)  # the same metadata to every setup
                us[setup].append(1e6 * (sum(process.cpu_times()[:2]) - before) / calls)
        for channel in channels.values():
            channel.close()
    finally:
        server.kill()
        server.wait()
        pki.cleanup()

    def extra(setup: str, base: str) -> dict:
        """Per-round differences (paired: the same round's load), their median and its 90% interval."""
        diff = np.asarray(us[setup]) - np.asarray(us[base])
        return {"median": round(float(np.median(diff)), 1), "median_ci90": median_ci90(diff)}

    return {
        "server_cpu_us_per_call": {s: round(float(np.median(v)), 1) for s, v in us.items()},
        "extra_over_none_us": {s: extra(s, "none") for s in SETUPS[1:]},
        "tracing_extra_over_metrics_only_us": {s: extra(s, "metrics_only")
                                               for s in ("upstream_tracing", "gateway_tracing")},
        "auth_extra_over_metrics_only_us": extra("metrics_auth", "metrics_only"),
        "rounds": {s: [round(x, 1) for x in v] for s, v in us.items()},
        "load": {"rounds": rounds, "calls_per_round": calls, "payload_bytes": payload, "sampling_ratio": ratio,
                 "machine": f"{os.cpu_count()} CPUs, server and load generator together"},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench_interceptor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=1500, help="sequential calls per setup and round")
    parser.add_argument("--ratio", type=float, default=0.01, help="share of new traces sampled")
    parser.add_argument("--out", type=Path, default=Path("reports/interceptor_bench.json"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--pki-dir", type=Path, help=argparse.SUPPRESS)  # the server's token key
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.ratio, args.pki_dir)
        return 0
    report = measure(args.rounds, args.calls, args.ratio)
    save_json_report(args.out, report, hidden=("rounds",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
