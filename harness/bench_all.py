"""`python -m harness.bench_all` (`make bench`): one benchmark of both serving tiers into one report.

Starts the real Triton (the ensemble `intent_pipeline`), the KServe v2 transformer (`reranker`, its own
process, Triton as its grpc-v2 predictor) and the gateway (typed gRPC RankTiles, its own process), all on
loopback, and measures at a few concurrency levels:

  triton       intent_pipeline  KServe v2 gRPC  perf_analyzer, --input-data: real featurized sessions
  transformer  reranker         KServe v2 gRPC  perf_analyzer, --input-data: real RankTiles requests as BYTES
                                                tensors (each customer's linked pre-login events, all tiles);
                                                the transformer answers Triton's ModelConfig and raw outputs,
                                                which perf_analyzer needs. If perf_analyzer still cannot drive
                                                it, the error is recorded and a v2 load generator
                                                (tritonclient.grpc.aio, the same ModelInfer wire form) sends
                                                the same requests instead
  gateway      RankTiles        typed gRPC      harness.load.measure (grpc.aio), the same customers

Everything shares the machine's cores with the load generators: the figures are for comparing tiers on
one machine, not capacity numbers. The machine and its load average are written into the report.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.api import pb_grpc
from harness.load import measure
from harness.processes import TRANSFORMER_MODEL, GatewayProcess, benchmark_gateway, start_transformer, stop
from harness.workload import Workload, add_paths, replay, workload

log = logging.getLogger("harness.bench_all")
CONCURRENCY = (1, 4, 8)
PIPELINE = "intent_pipeline"


# -- report building (pure; tested on a captured sample) ---------------------------------------------------------

def parse_pa_csv(text: str) -> dict:
    """perf_analyzer's `-f` CSV (one row per concurrency level) -> throughput and latency percentiles in ms."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("perf_analyzer wrote no result row")
    out = []
    for row in rows:
        us = {k: float(v) for k, v in row.items() if k and k.endswith("latency") and v not in (None, "")}
        out.append({"concurrency": int(row["Concurrency"]),
                    "throughput_per_s": round(float(row["Inferences/Second"]), 1),
                    "p50_ms": round(us["p50 latency"] / 1000, 3), "p90_ms": round(us["p90 latency"] / 1000, 3),
                    "p99_ms": round(us["p99 latency"] / 1000, 3),
                    "server_queue_ms": round(float(row.get("Server Queue") or 0) / 1000, 3),
                    "server_compute_ms": round(float(row.get("Server Compute Infer") or 0) / 1000, 3)})
    return out[0] if len(out) == 1 else {"levels": out}


def pa_failure(stdout: str, stderr: str) -> str:
    """The line of perf_analyzer's output that says why it stopped (it prints `error: ...` and exits 1)."""
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith(("error", "failed")) or "error:" in ln.lower():
            return ln
    return lines[-1] if lines else "no output"


def markdown(report: dict) -> str:
    """reports/bench.md: one table of every tier, then how it was measured."""
    m = report["machine"]
    lines = ["# Serving benchmark: Triton ensemble, KServe v2 transformer, typed gRPC gateway", "",
             f"Machine: {m.get('cpus', '?')} CPUs ({m.get('processor', '')}), {m.get('platform', '')}"
             f"{', GPU ' + m['cuda'] if m.get('cuda') else ', no GPU'}; load average (1 min) "
             f"{m.get('load_avg_1m_at_start')} at start, {m.get('load_avg_1m_at_end')} at end. Every server and "
             "load generator shares these cores.", "",
             "| tier | target | protocol | tool | concurrency | throughput /s | p50 ms | p99 ms |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['tier']} | {r['target']} | {r['protocol']} | {r['tool']} | {r['concurrency']} | "
                     f"{r['throughput_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines += ["", "Units: the triton tier counts inferences of one session each; the transformer and gateway tiers "
              "count ranking requests of one customer each (all their linked pre-login sessions in one Triton call)."]
    inputs = report.get("inputs", {})
    if inputs:
        lines += ["", f"Inputs: {inputs.get('customers')} customers with a session in the ranker's lookback "
                  f"(mean {inputs.get('mean_sessions_per_customer')} sessions, "
                  f"{inputs.get('mean_events_per_request')} events per request, {inputs.get('tiles')} tiles); "
                  f"{inputs.get('sessions')} of their sessions for the ensemble (length mean "
                  f"{inputs.get('session_length', {}).get('mean_len')})."]
    pa = report.get("perf_analyzer", {})
    if pa:
        lines += [f"perf_analyzer {pa.get('version')}: {' '.join(pa.get('args', []))}."]
    for note in report.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


# -- inputs --------------------------------------------------------------------------------------------------------

def write_bytes_input_data(requests: Sequence[dict], path: Path) -> None:
    """perf_analyzer's JSON input data for BYTES tensors: strings as content, each request its own shape."""
    entries = [{name: {"content": values, "shape": [len(values)]} for name, values in r.items()} for r in requests]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": entries}))


# -- perf_analyzer -------------------------------------------------------------------------------------------------

def run_perf_analyzer(pa, model: str, url: str, protocol: str, input_data: Path, concurrency: int, out_csv: Path,
                      stability_args: Sequence[str], fallback_stability: str) -> dict:
    """One perf_analyzer run at a fixed concurrency; retried once with a looser stability if it cannot settle.
    Raises RuntimeError carrying perf_analyzer's own error line when it fails."""
    from training.export.perf import run_perf_analyzer as run_pa

    done, stability = run_pa(pa, model, url, protocol, input_data, concurrency, out_csv, stability_args,
                             fallback_stability, timeout_s=300)
    if done.returncode != 0:
        raise RuntimeError(pa_failure(done.stdout, done.stderr))
    return {**parse_pa_csv(out_csv.read_text()), "stability_percentage": int(stability)}


# -- load generators -----------------------------------------------------------------------------------------------

def _v2_inputs(client_mod, request: dict) -> list:
    inputs = []
    for name, values in request.items():
        tensor = client_mod.InferInput(name, [len(values)], "BYTES")
        tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
        inputs.append(tensor)
    return inputs


async def v2_load(url: str, requests: Sequence[dict], concurrency: int, count: int) -> dict:
    """The reranker over KServe v2 gRPC ModelInfer (raw_input_contents, as perf_analyzer sends), via
    harness.load.measure; fails on a degraded answer (Triton behind the transformer failing)."""
    import tritonclient.grpc.aio as triton_aio

    client = triton_aio.InferenceServerClient(url)
    prepared = [_v2_inputs(triton_aio, r) for r in requests]
    used: list[int] = []

    async def call(i: int) -> None:
        result = await client.infer(TRANSFORMER_MODEL, prepared[i % len(prepared)], client_timeout=30)
        # raw inputs in, raw outputs back (as from Triton)
        if result.as_numpy("DEGRADED")[0]:
            raise RuntimeError("degraded answer from the transformer during the benchmark")
        used.append(int(result.as_numpy("SESSIONS_USED")[0]))

    try:
        result = await measure(call, concurrency, count)
    finally:
        await client.close()
    return {**result, "mean_sessions_used": round(float(np.mean(used)), 2)}


async def typed_load(gateway: GatewayProcess, workload: Workload, concurrency: Sequence[int], count: int
                     ) -> dict[int, dict]:
    """RankTiles on the gateway (store lookup + sessionize + featurize + Triton + ranker), after a replay, over
    its default auth (mTLS, a bearer token on every call)."""
    out = {}
    async with gateway.aio_channel() as channel:
        stub = pb_grpc.IntentGatewayServiceStub(channel)
        await replay(stub, workload.events, 500)
        call = workload.rank_call(stub)
        for c in concurrency:
            out[c] = await measure(call, c, count)
    return out


# -- the run -------------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    from training.core.featurizer import Featurizer
    from training.export.perf import (
        FALLBACK_STABILITY,
        PA_STABILITY_ARGS,
        PERF_ANALYZER_VERSION,
        ensure_perf_analyzer,
        write_input_data,
    )
    from training.export.triton_server import TritonServer
    from training.pipeline import machine_info

    load_start = os.getloadavg()[0]
    pa = ensure_perf_analyzer()
    stability = list(PA_STABILITY_ARGS)
    stability[stability.index("--max-trials") + 1] = str(args.max_trials)
    wl = workload(args.data, args.artifacts, args.visitors)
    featurizer = Featurizer.load(args.artifacts / "featurizer.json")
    work = Path(tempfile.mkdtemp(prefix="intent-bench-all-"))
    session_data = work / "ensemble_input.json"
    lengths = write_input_data([featurizer.encode(s.events) for s in wl.sessions[: args.sessions]], session_data)
    request_data = work / "reranker_input.json"
    write_bytes_input_data(wl.requests, request_data)
    rows: list[dict] = []
    notes: list[str] = []
    pa_errors: dict[str, str] = {}

    def row(tier: str, target: str, protocol: str, tool: str, c: int, m: dict) -> None:
        rows.append({"tier": tier, "target": target, "protocol": protocol, "tool": tool, "concurrency": c, **m})
        log.info("%s c=%d: %.0f/s p50 %.2f ms p99 %.2f ms", tier, c, m["throughput_per_s"], m["p50_ms"],
                 m["p99_ms"])

    with TritonServer(args.repository, workdir=work / "triton") as triton:
        # (a) the ensemble, perf_analyzer over KServe v2 gRPC
        for c in args.concurrency:
            row("triton", PIPELINE, "v2 grpc", "perf_analyzer", c,
                run_perf_analyzer(pa, PIPELINE, triton.grpc_url, "grpc", session_data, c,
                                  work / f"triton_c{c}.csv", stability, FALLBACK_STABILITY))
        # (b) the KServe transformer: perf_analyzer if it can, else the v2 load generator
        # auth none on the v2 endpoint: perf_analyzer (training/export/perf.py) sends no bearer token yet
        process, http_port, grpc_port = start_transformer(triton, args.artifacts, wl.as_of,
                                                          work / "transformer.log", extra=("--auth", "none"))
        try:
            for protocol, url in (("grpc", f"127.0.0.1:{grpc_port}"), ("http", f"127.0.0.1:{http_port}")):
                try:
                    m = run_perf_analyzer(pa, TRANSFORMER_MODEL, url, protocol, request_data, args.concurrency[0],
                                          work / f"transformer_{protocol}_probe.csv", stability, FALLBACK_STABILITY)
                except RuntimeError as exc:
                    pa_errors[protocol] = str(exc)
                    continue
                row("transformer", TRANSFORMER_MODEL, f"v2 {protocol}", "perf_analyzer", args.concurrency[0], m)
                for c in args.concurrency[1:]:
                    row("transformer", TRANSFORMER_MODEL, f"v2 {protocol}", "perf_analyzer", c,
                        run_perf_analyzer(pa, TRANSFORMER_MODEL, url, protocol, request_data, c,
                                          work / f"transformer_{protocol}_c{c}.csv", stability, FALLBACK_STABILITY))
                break
            if len(pa_errors) == 2:
                notes.append(
                    "perf_analyzer cannot drive the KServe transformer (the transformer serves Triton's "
                    "ModelConfig and ModelMetadata over gRPC and answers raw-input requests with "
                    f"raw_output_contents, yet perf_analyzer stopped: gRPC `{pa_errors['grpc']}`; HTTP, which has "
                    f"no /v2/models/{TRANSFORMER_MODEL}/config: `{pa_errors['http']}`). The transformer row is "
                    "measured with a v2 load generator instead: tritonclient.grpc.aio ModelInfer with the same "
                    "requests as perf_analyzer's input data (BYTES in raw_input_contents, the wire form "
                    "perf_analyzer uses), through harness.load.measure.")
                for c in args.concurrency:
                    row("transformer", TRANSFORMER_MODEL, "v2 grpc", "v2 load generator", c,
                        asyncio.run(v2_load(f"127.0.0.1:{grpc_port}", wl.requests, c, args.requests)))
        finally:
            stop(process)
        # (c) the typed gRPC API
        gateway = benchmark_gateway(args.artifacts, work / "gateway.db", triton, wl.as_of, cache=False,
                                    embed_on_write=False).start()
        try:
            for c, m in asyncio.run(typed_load(gateway, wl, args.concurrency, args.requests)).items():
                row("gateway", "RankTiles", "typed grpc", "grpc.aio load generator", c, m)
        finally:
            gateway.stop()
    notes.append("The typed gateway runs on its default auth (mTLS and a bearer token verified on every call); the "
                 "transformer's v2 endpoint with auth none (perf_analyzer is not given a token).")
    notes.append("The gateway runs with its embedding cache off, so every RankTiles reaches Triton, like every "
                 "reranker request (the transformer is stateless: the caller sends the events).")
    return {
        "rows": rows,
        "inputs": {"customers": len(wl.customers), "tiles": len(wl.tiles), "sessions": lengths["sessions"],
                   "mean_sessions_per_customer": round(len(wl.sessions) / len(wl.customers), 2),
                   "mean_events_per_request": round(float(np.mean([len(r["EVENTS"]) for r in wl.requests])), 1),
                   "session_length": lengths, "visitors_replayed": args.visitors},
        "perf_analyzer": {"version": PERF_ANALYZER_VERSION, "args": ["-i", "grpc", "-b", "1", *stability],
                          "transformer_errors": pa_errors},
        "load_generator": {"requests_per_level": args.requests},
        "machine": {**machine_info(), "load_avg_1m_at_start": round(load_start, 2),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "notes": notes,
        "workdir": str(work),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_paths(parser)
    parser.add_argument("--visitors", type=int, default=600, help="logged-in visitors replayed (default: %(default)s)")
    parser.add_argument("--sessions", type=int, default=512, help="sessions in the ensemble's input data "
                        "(default: %(default)s)")
    parser.add_argument("--requests", type=int, default=600, help="requests per level for the load generators "
                        "(default: %(default)s)")
    parser.add_argument("--max-trials", type=int, default=5, help="perf_analyzer windows per level at most "
                        "(default: %(default)s)")
    parser.add_argument("--concurrency", type=lambda t: [int(x) for x in t.split(",")], default=list(CONCURRENCY),
                        help="levels, comma-separated (default: 1,4,8)")
    parser.add_argument("--report", type=Path, default=Path("reports/bench.json"), help="JSON report; the "
                        "Markdown table goes beside it (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = run(args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    args.report.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
