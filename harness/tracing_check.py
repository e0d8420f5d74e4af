"""`python -m harness.tracing_check` (`make tracing-check`): are traces whole from a caller through the gateway
into Triton, and what does tracing cost? -> reports/tracing.json.

One run: a local OTLP receiver, the real Triton with OpenTelemetry tracing (`rate=0`: it traces exactly the
requests that carry a sampled context from the gateway, TIMESTAMPS), and gateway processes that differ only
in how sampled requests reach Triton (gRPC metadata, or HTTP headers via `--triton-trace-url` while the
others stay on gRPC) and in their sampler (off, every request, or `parentbased_traceidratio` at the chart's
default ratio). A trace is *whole* when Triton's own spans (ensemble, models, compute) carry the caller's
trace id and hang under the gateway's `triton.infer` span.
Throughput and CPU per request with tracing on vs off are measured in rounds of a fresh order each time,
against a gateway without tracing over gRPC in front of the same Triton (at `rate=0` it traces no request
that comes without a context; a second, untraced Triton would not do: two Tritons' idle onnxruntime threads
spin on the same 2 cores and swamp the comparison). The median of the per-round ratios is reported
(`paired_overhead_pct`), beside an A/A control; during those rounds the receiver answers without parsing,
as a collector on another machine would cost the sender only the export.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil

from gateway.api import pb, pb_grpc
from harness import client
from harness.load import measure
from harness.otlp_receiver import OtlpReceiver, ReceivedSpan, RemoteReceiver
from harness.processes import GatewayProcess, manifest_of, start_transformer, stop
from harness.stats import paired_overhead_pct, save_json_report
from harness.workload import DAY_MS, add_paths, busiest_visitor, event_json
from training.export.triton_server import TritonServer

GATEWAY_SERVICE = "intent-gateway"


def triton_trace_args(endpoint: str) -> list[str]:
    """Triton flags: OpenTelemetry traces of the requests that carry a context (`rate=0`: no others) to
    `endpoint`/v1/traces, exported every 0.5 s."""
    url = endpoint.removeprefix("http://") + "/v1/traces"
    return ["--trace-config", "mode=opentelemetry", "--trace-config", f"opentelemetry,url={url}",
            "--trace-config", "rate=0", "--trace-config", "level=TIMESTAMPS", "--trace-config", "count=-1",
            "--trace-config", "opentelemetry,bsp_schedule_delay=500",
            "--trace-config", "opentelemetry,bsp_max_queue_size=65536",
            "--trace-config", "opentelemetry,resource=service.name=triton"]


def otel_env(endpoint: str | None, ratio: float | None = None) -> dict[str, str]:
    """The gateway's OTEL_* environment: OTLP/HTTP protobuf to `endpoint`, quick export; None = off.

    `ratio`: sample that share of new traces (`parentbased_traceidratio`, a caller's decision wins); None
    traces every request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is None:
        return {**env, "OTEL_TRACES_EXPORTER": "none"}
    env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
           "OTEL_SERVICE_NAME": GATEWAY_SERVICE, "OTEL_BSP_SCHEDULE_DELAY": "200",
           "OTEL_BSP_MAX_QUEUE_SIZE": "65536"}
    if ratio is not None:
        env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(ratio)}
    return env


def tracing_gateway(artifacts: Path, triton: TritonServer, as_of_ms: int, work: Path, env: dict[str, str],
                    trace_url: str = "", instrumentation: str = "gateway") -> GatewayProcess:
    """A started gateway in front of `triton` (over gRPC; sampled requests over HTTP when `trace_url` is set),
    with its own store and the embedding cache off (every request reaches Triton), server spans made by
    `instrumentation`."""
    store = work / f"gw.{secrets.token_hex(4)}.db"
    return GatewayProcess(artifacts, f"sqlite://{store}", triton.grpc_url, as_of_ms, env=env,
                          log=store.with_suffix(".log"), manifest=manifest_of(triton),
                          grpc_instrumentation=instrumentation, triton_trace_url=trace_url, cache_embeddings=False,
                          triton_timeout_s=5).start()


def traceparent() -> tuple[str, str]:
    """A fresh caller context: (trace id, W3C traceparent header), as a client span would send it."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def trace_report(spans: Sequence[ReceivedSpan], trace_ids: Sequence[str], known: Sequence[str] = ()) -> dict:
    """Per caller trace id: does Triton's compute span sit in it, under the gateway's triton.infer span?"""
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    whole = 0
    for tid in trace_ids:
        trace = by_trace.get(tid, [])
        infer_ids = {s.span_id for s in trace if s.service == GATEWAY_SERVICE and s.name == "triton.infer"}
        triton = [s for s in trace if s.service != GATEWAY_SERVICE]
        triton_ids = {s.span_id for s in triton}
        roots_linked = [s for s in triton if s.parent_id not in triton_ids]
        if (infer_ids and any("compute" in s.name.lower() for s in triton) and roots_linked
                and all(s.parent_id in infer_ids for s in roots_linked)):
            whole += 1
    asked = set(trace_ids) | set(known)  # known: other callers' trace ids, not fresh ones
    orphans = {s.trace_id for s in spans if s.service != GATEWAY_SERVICE and s.trace_id not in asked}
    return {"requests": len(trace_ids), "whole": whole, "whole_pct": round(100.0 * whole / max(1, len(trace_ids)), 2),
            "triton_traces_with_a_fresh_trace_id": len(orphans)}


def fire(gateway: GatewayProcess, customer_id: str, tiles: Sequence[str], n: int, caller_context: bool = True
         ) -> list[str]:
    """n RankTiles calls, each with its own sampled caller traceparent (or none); the callers' trace ids."""
    ids = []
    with gateway.new_channel() as channel:
        stub = pb_grpc.IntentGatewayServiceStub(channel)
        for _ in range(n):
            tid, header = traceparent()
            reply = stub.RankTiles(pb.RankTilesRequest(customer_id=customer_id, tile_ids=list(tiles)), timeout=10,
                                   metadata=[("traceparent", header)] if caller_context else None)
            if reply.degraded:
                raise RuntimeError(f"degraded answer: {reply.degraded_reason}")
            ids.append(tid)
    return ids


async def throughput(gateway: GatewayProcess, customer_id: str, tiles: Sequence[str], concurrency: int,
                     requests: int) -> float:
    async with gateway.aio_channel() as channel:
        stub = pb_grpc.IntentGatewayServiceStub(channel)
        request = pb.RankTilesRequest(customer_id=customer_id, tile_ids=list(tiles))

        async def call(_: int) -> None:
            await stub.RankTiles(request, timeout=10)

        return (await measure(call, concurrency, requests))["throughput_per_s"]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (Triton's python-backend stubs do the work)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


# The traced gateway setups whose cost is measured against the untraced ones (see run()).
TRACED_SETUPS = ("sampled_none", "http_sampled", "http_sampled_upstream", "http_sampled_more", "http_traced")


def overhead_report(gateways: dict[str, GatewayProcess], triton: TritonServer, tiles: Sequence[str],
                    concurrency: int, requests: int, rounds: int) -> dict:
    """Throughput and CPU per request of each gateway setup (gateway + Triton), in rounds of a fresh order,
    against the untraced ones; `a_a_control` (`grpc_off` vs the identical `grpc_off_again`) shows what noise
    alone reads as on this machine."""
    names = ["grpc_off", "grpc_off_again", *TRACED_SETUPS]
    rate: dict[str, list[float]] = {k: [] for k in names}
    cpu_ms: dict[str, list[float]] = {k: [] for k in names}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        for name in order.permutation(names):  # a fresh order each round: no setup always follows another
            pids = (gateways[name].process.pid, triton.process.pid)
            cpu = sum(tree_cpu_s(p) for p in pids)
            rate[name].append(asyncio.run(throughput(gateways[name], "C-trace", tiles, concurrency,
                                                     requests)))
            cpu_ms[name].append(1000 * (sum(tree_cpu_s(p) for p in pids) - cpu) / requests)
    # CPU per request up means throughput down: compare 1/cpu like a rate
    inverse = {k: [1 / x for x in v] for k, v in cpu_ms.items()}
    # the baseline: both untraced gateway processes, per round (two identical processes differ by a few
    # percent on this machine; the A/A line shows how much)
    rate["untraced"] = [(a + b) / 2 for a, b in zip(rate["grpc_off"], rate["grpc_off_again"], strict=True)]
    inverse["untraced"] = [(a + b) / 2 for a, b in zip(inverse["grpc_off"], inverse["grpc_off_again"], strict=True)]

    def table(values: dict[str, list[float]]) -> dict:
        rows = {k: paired_overhead_pct(values["untraced"], values[k]) for k in TRACED_SETUPS}
        rows["a_a_control"] = paired_overhead_pct(values["grpc_off"], values["grpc_off_again"])
        return rows

    by_rate, by_cpu = table(rate), table(inverse)
    return {
        "tracing_throughput_overhead_pct": by_rate["http_sampled"]["median"],
        "tracing_throughput_overhead_ci90_pct": by_rate["http_sampled"]["median_ci90"],
        "tracing_throughput_overhead_every_request_pct": by_rate["http_traced"]["median"],
        "tracing_cpu_overhead_pct": by_cpu["http_sampled"]["median"],
        "overhead_pct_by_setup": {"throughput": by_rate, "cpu_per_request": by_cpu},
        "throughput_per_s": {k: {"median": round(float(np.median(v)), 1), "rounds": v} for k, v in rate.items()
                             if k in names},
        "cpu_ms_per_request": {k: round(float(np.median(v)), 3) for k, v in cpu_ms.items()},
        "overhead_baseline": "the mean of two untraced gateways (grpc_off, grpc_off_again) -> the same Triton over "
                             "gRPC, per round; cpu = gateway + Triton processes (with the python-backend stubs), "
                             "not the load generator or the receiver",
    }


def sampled_report(rx: OtlpReceiver | RemoteReceiver, gateway: GatewayProcess, tiles: Sequence[str], requests: int,
                   ratio: float, known: Sequence[str]) -> dict:
    """Callers without a context at a gateway sampling `ratio`: are the sampled traces whole, and does Triton
    trace nothing else? Enough requests for about 20 sampled ones (at most 3,000)."""
    requests = max(requests, min(3000, round(20 / max(ratio, 1e-9))))
    before = {s.trace_id for s in rx.spans()}
    fire(gateway, "C-trace", tiles, requests, caller_context=False)

    def sampled(spans: Sequence[ReceivedSpan]) -> list[str]:
        return sorted({s.trace_id for s in spans if s.service == GATEWAY_SERVICE and s.trace_id not in before})

    spans = rx.wait_for(lambda ss: trace_report(ss, sampled(ss))["whole"] == len(sampled(ss)), timeout=15)
    time.sleep(1.5)  # Triton's exports of traces the gateway did not sample would arrive by now
    spans = rx.spans()
    ids = sampled(spans)
    report = trace_report(spans, ids, [*known, *before])
    return {**report, "ratio": ratio, "sampled_pct": round(100.0 * len(ids) / requests, 2)}


KSERVE_SERVICE = "intent-reranker"


def kserve_report(rx: OtlpReceiver | RemoteReceiver, triton: TritonServer, artifacts: Path, events: Sequence,
                  tiles: Sequence[str], requests: int, work: Path, known: Sequence[str]) -> dict:
    """The KServe transformer: REST v2 with a caller traceparent -> its server span -> Triton over gRPC
    metadata (the only transport kserve's grpc-v2 predictor has)."""
    known = [*known, *{s.trace_id for s in rx.spans()}]  # earlier paths' traces are not fresh ones
    env = {**otel_env(rx.endpoint), "OTEL_SERVICE_NAME": KSERVE_SERVICE}
    process, http_port, _ = start_transformer(triton, artifacts, events[-1].ts + DAY_MS,
                                              work / "kserve.log", env=env, pki_dir=work / "kserve-pki")
    token = f"Bearer {client.bearer(work / 'kserve-pki', ['rank:read'])}"
    body = json.dumps({"inputs": [
        {"name": "EVENTS", "shape": [len(events[:200])], "datatype": "BYTES",
         "data": [event_json(e) for e in events[:200]]},
        {"name": "TILE_IDS", "shape": [len(tiles)], "datatype": "BYTES", "data": list(tiles)}]}).encode()
    ids = []
    try:
        for _ in range(requests):
            trace_id, header = traceparent()
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/reranker/infer", data=body,
                                         headers={"Content-Type": "application/json", "traceparent": header,
                                                  "Authorization": token})
            with urllib.request.urlopen(req, timeout=10) as response:
                response.read()
            ids.append(trace_id)
    finally:
        stop(process)

    def report(spans: Sequence[ReceivedSpan]) -> dict:
        renamed = [ReceivedSpan(s.trace_id, s.span_id, s.parent_id, s.name,
                                GATEWAY_SERVICE if s.service == KSERVE_SERVICE else s.service) for s in spans]
        return trace_report(renamed, ids, [*known, *ids])

    spans = rx.wait_for(lambda ss: report(ss)["whole"] == len(ids), timeout=15)
    return {**report(spans), "transport": "REST in, Triton gRPC metadata (kserve grpc-v2 predictor)"}


def run(repository: Path, artifacts: Path, data: Path, requests: int, rounds: int, round_requests: int,
        concurrency: int, ratio: float, work: Path) -> dict:
    events = busiest_visitor(data)
    as_of = events[-1].ts + DAY_MS
    tiles = list(json.loads((artifacts / "ranker.json").read_text())["tiles"])[:4]
    report: dict = {"requests_per_path": requests}
    with RemoteReceiver() as rx, TritonServer(repository, workdir=work / "triton",
                                            extra_args=triton_trace_args(rx.endpoint)) as triton:
        http_url = f"http://{triton.http_url}"
        gateways = {
            "grpc_traced": tracing_gateway(artifacts, triton, as_of, work, otel_env(rx.endpoint)),
            "http_traced": tracing_gateway(artifacts, triton, as_of, work, otel_env(rx.endpoint), http_url),
            "http_sampled": tracing_gateway(artifacts, triton, as_of, work, otel_env(rx.endpoint, ratio),
                                            http_url),
            "grpc_off": tracing_gateway(artifacts, triton, as_of, work, otel_env(None)),
            # the same again: an A/A control, how far two identical setups differ on this machine
            "grpc_off_again": tracing_gateway(artifacts, triton, as_of, work, otel_env(None)),
            # five times the shipped ratio: how the cost grows with the share sampled
            "http_sampled_more": tracing_gateway(artifacts, triton, as_of, work,
                                                 otel_env(rx.endpoint, min(1.0, 5 * ratio)), http_url),
            # tracing on, nothing sampled: what the instrumentation costs by itself
            "sampled_none": tracing_gateway(artifacts, triton, as_of, work, otel_env(rx.endpoint, 0.0),
                                            http_url),
            # as shipped, but with opentelemetry-instrumentation-grpc's interceptor making the server spans
            "http_sampled_upstream": tracing_gateway(artifacts, triton, as_of, work,
                                                     otel_env(rx.endpoint, ratio), http_url, "opentelemetry"),
        }
        try:
            for gw in gateways.values():
                gw.seed(events, "C-trace")
            paths = {}
            for name, transport in (("grpc_traced", "grpc_metadata"), ("http_traced", "http_header")):
                paths[transport] = fire(gateways[name], "C-trace", tiles, requests)
            # a caller's sampled context wins over the gateway's ratio (parentbased)
            paths["http_header_caller_sampled_at_ratio"] = fire(gateways["http_sampled"], "C-trace", tiles,
                                                                 requests)
            all_ids = [i for ids in paths.values() for i in ids]
            spans = rx.wait_for(lambda ss: trace_report(ss, all_ids)["whole"] == len(all_ids), timeout=15)
            report["paths"] = {t: trace_report(spans, ids, all_ids) for t, ids in paths.items()}
            report["paths"]["http_header_gateway_sampled"] = sampled_report(
                rx, gateways["http_sampled"], tiles, requests, ratio, all_ids)
            report["paths"]["kserve_transformer"] = kserve_report(rx, triton, artifacts, events, tiles, requests,
                                                                  work, all_ids)
            report["trace_whole_pct"] = report["paths"]["http_header"]["whole_pct"]
            report["trace_path"] = ("gateway -> Triton: sampled requests over HTTP with a traceparent header "
                                    "(--triton-trace-url), the others over gRPC")

            rx.discard = True
            report |= overhead_report(gateways, triton, tiles, concurrency, round_requests, rounds)
            rx.discard = False
            report["sampling"] = {"sampler": "parentbased_traceidratio", "ratio": ratio, "triton_rate": 0,
                                  "ratio_of_http_sampled_more": min(1.0, 5 * ratio)}
            report["load"] = {"concurrency": concurrency, "requests_per_round": round_requests, "rounds": rounds,
                              "machine": f"{os.cpu_count()} CPUs, gateway + Triton + load generator together"}
            report["receiver_errors"] = rx.errors[:5]
        finally:
            for gw in gateways.values():
                gw.stop()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tracing_check", description=__doc__)
    add_paths(parser)
    parser.add_argument("--requests", type=int, default=200, help="traced requests per transport")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--round-requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ratio", type=float, default=0.01,
                        help="the sampling ratio measured as the shipped default (the chart's otel.samplerArg)")
    parser.add_argument("--out", type=Path, default=Path("reports/tracing.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="intent-tracing-") as work:
        report = run(args.repository, args.artifacts, args.data, args.requests, args.rounds, args.round_requests,
                     args.concurrency, args.ratio, Path(work))
    save_json_report(args.out, report, hidden=("throughput_per_s",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
