"""`python -m gateway.bench`: RankTiles latency and throughput beside the raw Triton ensemble, same run.

For each concurrency level, a bounded number of requests goes to (a) Triton's `intent_pipeline` directly,
with each customer's sessions already featurized and padded (the model-server floor), and (b) the gateway's
RankTiles for the same customers, in three configurations, each a fresh gateway process and store:

- `gateway`, as shipped: the web traffic is replayed through RecordEvents, the write-behind embedder embeds
  the linked visitors' sessions as they arrive, and RankTiles (store lookup + sessionize + cache + ranker)
  finds them cached. No customer was ranked before; the report counts the read-path Triton calls (0 expected).
- `gateway_cold`: the embedding cache off, so every request featurizes and calls Triton (the worst case: a
  session that changed after its last write-behind embedding, or a cache that was lost).
- `gateway_warm`: write-behind off, read-through cache on, every customer ranked once before measuring.

The gateway runs as its own process; the load generator is grpc.aio in this one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from core.contract import Customer, LoadReport, load_events, read_rows
from core.featurizer import Featurizer, pad_batch
from core.sessionize import sessionize
from gateway.api import pb, pb_grpc
from gateway.replay import pick_visitors, replay
from training.export.triton_server import TritonServer, free_port

DAY_MS = 86_400_000
VARIANTS = (("gateway", True, True), ("gateway_cold", False, False), ("gateway_warm", True, False))
"""(name, embedding cache on, write-behind embedding on) of each gateway configuration measured."""


def median_ci90(values: Sequence[float]) -> list[float]:
    """A 90% percentile-bootstrap interval of the median of per-round values (2,000 resamples, seeded). It
    assumes rounds are independent, which shuffled back-to-back rounds only roughly are: an indication."""
    values = np.asarray(values, float)
    resampled = np.random.default_rng(0).choice(values, size=(2000, len(values)), replace=True)
    return [round(float(q), 2) for q in np.percentile(np.median(resampled, axis=1), [5, 95])]


def save_json_report(path: Path, report: dict, hidden: Sequence[str] = ()) -> None:
    """Write `report` as JSON to `path` and print it, less the bulky `hidden` keys (per-round values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in hidden}, indent=2))


async def measure(call: Callable[[int], Awaitable[object]], concurrency: int, requests: int) -> dict:
    """`requests` calls from `concurrency` workers; latency percentiles and completed calls per second."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    for i in range(min(concurrency, 4)):  # warm-up: channels, Triton's first calls
        await call(i)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "throughput_per_s": round(len(ms) / wall, 1), "requests": len(ms)}


def metric(port: int, name: str, **labels: str) -> float:
    """One sample of the gateway's Prometheus endpoint on loopback (0.0 when it has not been recorded yet)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_for_write_behind(metrics_port: int, timeout_s: float = 120.0) -> float:
    """Wait until the gateway's write-behind embedder has nothing pending; sessions it embedded."""
    deadline = time.monotonic() + timeout_s
    time.sleep(0.2)
    while metric(metrics_port, "gateway_embed_pending") > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("write-behind embedding still busy")
        time.sleep(0.1)
    return metric(metrics_port, "gateway_sessions_embedded_total", path="write")


def metrics_env(port: int) -> dict[str, str]:
    """The OTEL_* settings that make a gateway serve its Prometheus metrics on 127.0.0.1:`port`."""
    return {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}


def launch_gateway(flags: Sequence[str], env: Mapping[str, str], log: Path, timeout_s: float = 60.0
                   ) -> tuple[subprocess.Popen, int]:
    """`python -m gateway.server` with `flags` on a free loopback port, once its health check says SERVING:
    (process, port)."""
    port = free_port()
    args = [sys.executable, "-m", "gateway.server", "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
            *flags]
    with log.open("a") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return process, port
            except grpc.RpcError:
                if process.poll() is not None:
                    raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"gateway did not become healthy in {timeout_s:.0f} s")


def start_gateway(artifacts: Path, store: str, triton_url: str, as_of: int, cache: bool, log: Path,
                  embed_on_write: bool = False, metrics_port: int | None = None) -> tuple:
    flags = ["--store", store, "--artifacts", str(artifacts), "--triton-url", triton_url, "--as-of", str(as_of),
             "--triton-timeout-s", "5", "--cache-embeddings", str(cache).lower(),
             "--embed-on-write", str(embed_on_write).lower()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if metrics_port is not None:
        env |= metrics_env(metrics_port)
    return launch_gateway(flags, env, log)


async def run(args: argparse.Namespace) -> dict:
    events = pick_visitors(load_events(args.data), args.visitors)
    as_of = events[-1].ts + 1
    customers = {c.customer_id: c for c in read_rows(args.data / "customers.jsonl", Customer, LoadReport())}
    tiles = [json.loads(line)["tile_id"] for line in (args.data / "tiles.jsonl").read_text().splitlines()]
    featurizer = Featurizer.load(args.artifacts / "featurizer.json")
    lookback = float(json.loads((args.artifacts / "ranker.json").read_text())["meta"].get("lookback_days", 21))
    anon_of: dict[str, set[str]] = {}
    for e in events:
        if e.customer_id in customers:
            anon_of.setdefault(e.customer_id, set()).add(e.anonymous_id)
    recent = [s for s in sessionize(events) if s.start_ms >= as_of - lookback * DAY_MS]
    sessions_of = {c: [s for s in recent if s.anonymous_id in anons] for c, anons in anon_of.items()}
    active = sorted(c for c, ss in sessions_of.items() if ss)
    if not active:
        raise ValueError("no replayed customer has a session inside the ranker's lookback window")
    batches = [pad_batch([featurizer.encode(s.events) for s in sessions_of[c][-20:]]) for c in active]

    work = Path(tempfile.mkdtemp(prefix="intent-bench-"))
    report: dict = {"levels": {}, "customers": len(active),
                    "mean_sessions_per_customer": round(float(np.mean([len(sessions_of[c]) for c in active])), 2)}
    with TritonServer(args.repository, workdir=work / "triton") as triton:
        client = triton_aio.InferenceServerClient(triton.grpc_url)

        async def triton_call(i: int) -> None:
            b = batches[i % len(batches)]
            inputs = [triton_aio.InferInput("CATEGORICAL", list(b.categorical.shape), "INT64"),
                      triton_aio.InferInput("CONTINUOUS", list(b.continuous.shape), "FP32")]
            inputs[0].set_data_from_numpy(b.categorical)
            inputs[1].set_data_from_numpy(b.continuous)
            await client.infer("intent_pipeline", inputs)

        for name, cache, write_behind in VARIANTS:
            metrics_port = free_port()
            process, port = start_gateway(args.artifacts, f"sqlite://{work / f'{name}.db'}", triton.grpc_url, as_of,
                                          cache, work / f"{name}.log", write_behind, metrics_port)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = pb_grpc.IntentGatewayServiceStub(channel)
                    await replay(stub, events, 500)

                    async def rank_call(i: int, stub=stub) -> None:
                        c = customers[active[i % len(active)]]
                        ctx = pb.CustomerContext(segment=c.segment, tenure_months=c.tenure_months,
                                                 products_held=c.products)
                        reply = await stub.RankTiles(pb.RankTilesRequest(customer_id=c.customer_id, tile_ids=tiles,
                                                                         context=ctx), timeout=30)
                        if reply.degraded:
                            raise RuntimeError(f"degraded answer in the benchmark: {reply.degraded_reason}")

                    if write_behind:
                        report["write_behind_sessions_embedded"] = wait_for_write_behind(metrics_port)
                    elif cache:  # warm: every customer's sessions embedded once, as for a returning customer
                        for i in range(len(active)):
                            await rank_call(i)
                    read_before = metric(metrics_port, "gateway_sessions_embedded_total", path="read")
                    for c in args.concurrency:
                        level = report["levels"].setdefault(f"c{c}", {})
                        if "triton" not in level:
                            level["triton"] = await measure(triton_call, c, args.requests)
                        level[name] = await measure(rank_call, c, args.requests)
                    report.setdefault("read_path_sessions_embedded", {})[name] = metric(
                        metrics_port, "gateway_sessions_embedded_total", path="read") - read_before
            finally:
                process.terminate()
                process.wait(timeout=30)
        await client.close()
    levels = report["levels"]
    names = [v[0] for v in VARIANTS]
    report["p50_ms"] = {f"{k}_c{c}": levels[f"c{c}"][k]["p50_ms"] for c in args.concurrency
                        for k in (*names, "triton")}
    if "c8" in levels:
        for k in names:
            report["throughput_ratio_c8" + k.removeprefix("gateway")] = round(
                levels["c8"][k]["throughput_per_s"] / levels["c8"]["triton"]["throughput_per_s"], 3)
    report["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    report["config"] = {"requests_per_level": args.requests, "visitors_replayed": args.visitors, "tiles": len(tiles)}
    return report


def table(report: dict) -> str:
    rows = ["| concurrency | target | p50 ms | p99 ms | requests/s |", "| --- | --- | --- | --- | --- |"]
    for level, targets in report["levels"].items():
        for name, m in targets.items():
            rows.append(f"| {level} | {name} | {m['p50_ms']} | {m['p99_ms']} | {m['throughput_per_s']} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="(default: %(default)s)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="(default: %(default)s)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="(default: %(default)s)")
    parser.add_argument("--visitors", type=int, default=600, help="logged-in visitors replayed (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=400, help="requests per level (default: %(default)s)")
    parser.add_argument("--concurrency", type=lambda t: [int(x) for x in t.split(",")], default=[1, 8, 32],
                        help="levels, comma-separated (default: 1,8,32)")
    parser.add_argument("--report", type=Path, default=Path("reports/bench_gateway.json"),
                        help="(default: %(default)s)")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    args.report.with_suffix(".md").write_text("# Gateway benchmark\n\n" + table(report) + "\n")
    print(table(report))
    print(json.dumps({k: v for k, v in report.items() if k.startswith(("p50_ms", "throughput_ratio", "read_path"))},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
