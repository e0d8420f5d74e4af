"""`python -m harness.bench_load` (`make bench-load`): a long RankTiles run on the shipped path, for errors and
memory growth rather than for the best latency (`make bench-gateway` measures that).

The gateway runs as its own process with its default settings (its default auth, the embedding cache and
write-behind embedding on) in front of a real Triton on --repository. The synthetic bank's logged-in
visitors are replayed through RecordEvents first, so the customers ranked have linked sessions; then
`--requests` RankTiles (default 100,000) from `--concurrency` client threads (default 32) through the gateway
process's own channel. Reported: errors (by status), degraded answers, p50/p99, throughput, the gateway
process's RSS (psutil) after warm-up and at the end, sampled every tenth of the run, and its growth.
A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
import psutil

from gateway.api import pb
from harness.footprint import machine
from harness.processes import GatewayProcess, manifest_of, metrics_env, wait_for_write_behind
from harness.workload import Workload, add_paths, rank_request, to_message, workload
from training.export.triton_server import TritonServer, free_port


def seed(gateway: GatewayProcess, wl: Workload, batch: int = 500) -> int:
    """Replay the workload's events through RecordEvents (as a collector would); events accepted."""
    accepted = 0
    for start in range(0, len(wl.events), batch):
        request = pb.RecordEventsRequest(events=[to_message(e) for e in wl.events[start:start + batch]])
        accepted += gateway.stub.RecordEvents(request, timeout=60).accepted
    return accepted


def rss_mb(gateway: GatewayProcess) -> float:
    return psutil.Process(gateway.process.pid).memory_info().rss / 2**20


def run_load(gateway: GatewayProcess, wl: Workload, requests: int, concurrency: int, warmup: int = 200) -> dict:
    """`requests` RankTiles over the workload's customers (round robin) from `concurrency` threads, after
    `warmup` calls that are not counted: errors by status, degraded answers, latency, throughput, RSS."""
    calls = [rank_request(c, wl.tiles) for c in wl.customers]
    for i in range(warmup):
        gateway.stub.RankTiles(calls[i % len(calls)], timeout=30)
    rss_start = rss_mb(gateway)
    latencies = np.zeros(requests)
    statuses: Counter = Counter()
    degraded = 0
    rss_samples: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    step = max(requests // 10, 1)

    def worker() -> None:
        nonlocal degraded
        for i in counter:
            started = time.perf_counter()
            try:
                reply = gateway.stub.RankTiles(calls[i % len(calls)], timeout=30)
                status, bad = "OK", reply.degraded
            except grpc.RpcError as exc:
                status, bad = exc.code().name, False
            latencies[i] = time.perf_counter() - started
            with lock:
                statuses[status] += 1
                degraded += bad
            if i % step == step - 1:
                rss_samples.append(round(rss_mb(gateway), 1))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    rss_end = rss_mb(gateway)
    ms = latencies * 1000
    return {"requests": requests, "concurrency": concurrency, "errors": requests - statuses["OK"],
            "statuses": dict(statuses), "degraded": degraded,
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "throughput_per_s": round(requests / wall, 1), "seconds": round(wall, 1),
            "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1), "rss_samples_mb": rss_samples,
            "rss_growth_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2)}


def bench(artifacts: Path, triton: TritonServer, data: Path, requests: int, concurrency: int, visitors: int,
          work: Path) -> dict:
    """A gateway with its defaults on a fresh SQLite store in front of `triton`, the workload seeded, the load."""
    wl = workload(data, artifacts, visitors)
    metrics_port = free_port()
    gateway = GatewayProcess(artifacts, f"sqlite://{work / 'load.db'}", triton.grpc_url, wl.as_of,
                             env={**_env(), **metrics_env(metrics_port)}, log=work / "gateway.log",
                             manifest=manifest_of(triton)).start()
    try:
        accepted = seed(gateway, wl)
        embedded = wait_for_write_behind(metrics_port)
        figures = run_load(gateway, wl, requests, concurrency)
    finally:
        gateway.stop()
    return {**figures, "customers": len(wl.customers), "events_seeded": accepted,
            "sessions_embedded_on_write": embedded, "tiles": len(wl.tiles)}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench_load", description=__doc__.split("\n\n")[0])
    add_paths(parser)
    parser.add_argument("--requests", type=int, default=100_000, help="RankTiles calls (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32, help="client threads (default: %(default)s)")
    parser.add_argument("--visitors", type=int, default=300, help="logged-in visitors replayed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_load.json"), help="(default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="intent-load-") as tmp, \
            TritonServer(args.repository, workdir=Path(tmp) / "triton") as triton:
        report = bench(args.artifacts, triton, args.data, args.requests, args.concurrency, args.visitors, Path(tmp))
    report["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['requests']} RankTiles at c{report['concurrency']}: {report['errors']} errors, "
          f"{report['degraded']} degraded, p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms, "
          f"{report['throughput_per_s']}/s, RSS {report['rss_start_mb']} -> {report['rss_end_mb']} MB "
          f"({report['rss_growth_pct']:+.1f}%) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
