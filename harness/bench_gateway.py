"""`python -m harness.bench_gateway` (`make bench-gateway`): RankTiles latency and throughput beside the raw
Triton ensemble, same run.

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
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as triton_aio

from gateway.api import pb_grpc
from harness.load import measure
from harness.processes import benchmark_gateway, gateway_metric, wait_for_write_behind
from harness.workload import add_paths, replay, workload
from training.core.featurizer import Featurizer, pad_batch
from training.export.triton_server import TritonServer, free_port

VARIANTS = (("gateway", True, True), ("gateway_cold", False, False), ("gateway_warm", True, False))
"""(name, embedding cache on, write-behind embedding on) of each gateway configuration measured."""


async def run(args: argparse.Namespace) -> dict:
    wl = workload(args.data, args.artifacts, args.visitors)
    featurizer = Featurizer.load(args.artifacts / "featurizer.json")
    batches = [pad_batch([featurizer.encode(s.events) for s in mine]) for mine in wl.customer_sessions]

    work = Path(tempfile.mkdtemp(prefix="intent-bench-"))
    report: dict = {"levels": {}, "customers": len(wl.customers),
                    "mean_sessions_per_customer": round(float(np.mean([len(m) for m in wl.customer_sessions])), 2)}
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
            gateway = benchmark_gateway(args.artifacts, work / f"{name}.db", triton, wl.as_of, cache,
                                        write_behind, metrics_port).start()
            try:
                async with gateway.aio_channel() as channel:
                    stub = pb_grpc.IntentGatewayServiceStub(channel)
                    await replay(stub, wl.events, 500)
                    rank_call = wl.rank_call(stub)
                    if write_behind:
                        report["write_behind_sessions_embedded"] = wait_for_write_behind(metrics_port)
                    elif cache:  # warm: every customer's sessions embedded once, as for a returning customer
                        for i in range(len(wl.customers)):
                            await rank_call(i)
                    read_before = gateway_metric(metrics_port, "gateway_sessions_embedded_total", path="read")
                    for c in args.concurrency:
                        level = report["levels"].setdefault(f"c{c}", {})
                        if "triton" not in level:
                            level["triton"] = await measure(triton_call, c, args.requests)
                        level[name] = await measure(rank_call, c, args.requests)
                    report.setdefault("read_path_sessions_embedded", {})[name] = gateway_metric(
                        metrics_port, "gateway_sessions_embedded_total", path="read") - read_before
            finally:
                gateway.stop()
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
    report["config"] = {"requests_per_level": args.requests, "visitors_replayed": args.visitors, "tiles": len(wl.tiles)}
    return report


def table(report: dict) -> str:
    rows = ["| concurrency | target | p50 ms | p99 ms | requests/s |", "| --- | --- | --- | --- | --- |"]
    for level, targets in report["levels"].items():
        for name, m in targets.items():
            rows.append(f"| {level} | {name} | {m['p50_ms']} | {m['p99_ms']} | {m['throughput_per_s']} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench_gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_paths(parser)
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
