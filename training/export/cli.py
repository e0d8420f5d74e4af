"""`python -m training.export`: export, serve-triton, load-triton, bench-triton, fetch-perf-analyzer.

Every flag can also come from the environment as INTENT_<FLAG> (e.g. INTENT_TARGET=gpu).

Hot reload, step by step (build.py and triton_server.py say why each step is safe):
    python -m training.export serve-triton --model-control explicit      # Triton, models loaded by request
    python -m training.export export --version next                      # version v+1 beside v, new manifest
    python -m training.export load-triton --url 127.0.0.1:8001           # Triton serves v+1; the gateway
                                                                          # follows within reload_poll_s
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from training.flags import add_flag

log = logging.getLogger("intent.export")
_QUIET = ("onnx_ir", "onnxscript", "torch.onnx", "torch._export", "torch.export")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _add_serving(p: argparse.ArgumentParser) -> None:
    """The ServingConfig knobs (see training/export/repository.py for what each one does)."""
    add_flag(p, "max-batch", 64, "max_batch_size of every model", type=int)
    add_flag(p, "max-queue-delay-us", 0, "dynamic batcher: how long a request may wait for company", type=int)
    add_flag(p, "preferred-batch-sizes", "", "dynamic batcher preferred sizes, e.g. 8,16", type=_ints)
    add_flag(p, "encoder-instances", 1, "session_encoder instances", type=int)
    add_flag(p, "ort-threads", 1, "onnxruntime intra-op threads per python-backend instance (cpu)", type=int)
    add_flag(p, "length-buckets", "8,16,32,64", "cpu: pad each batch per length bucket", type=_ints)


def _serving(args: argparse.Namespace, target: str = "cpu"):
    from training.export.repository import ServingConfig

    return ServingConfig(target=target, max_batch_size=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
                         preferred_batch_sizes=args.preferred_batch_sizes, encoder_instances=args.encoder_instances,
                         ort_threads=args.ort_threads, length_buckets=args.length_buckets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="encoder + intent head -> ONNX (parity-checked) -> Triton model repository")
    add_flag(p, "artifacts", "artifacts", "trained featurizer.json + encoder.pt", type=Path)
    add_flag(p, "head", "artifacts/intent_head.json", "distilled intent head (from `make taxonomy`)", type=Path)
    add_flag(p, "repository", "model_repository", "Triton model repository to write", type=Path)
    add_flag(p, "target", "cpu", "cpu: python backend + onnxruntime; gpu: TensorRT plans", choices=["cpu", "gpu"])
    add_flag(p, "precision", "fp16", "gpu: encoder engine precision", choices=["fp16", "fp32"])
    add_flag(p, "version", "current", "repository version to write: 'current' rewrites the newest in place (1 in "
             "a new repository), 'next' writes v+1 beside v (hot reload), or a number")
    add_flag(p, "ranker", "", "tile ranker pinned by the manifest (default ARTIFACTS/ranker.json)", type=Path)
    add_flag(p, "taxonomy", "", "taxonomy pinned by the manifest (default ARTIFACTS/taxonomy.yaml)", type=Path)
    p.add_argument("--allow-unpinned-ranker", action="store_true",
                   help="export a ranker.json that records no encoder fingerprint (meta.encoder_sha256)")
    _add_serving(p)

    p = sub.add_parser("serve-triton", help="serve a model repository on the real Triton (CPU) until Ctrl-C/SIGTERM")
    add_flag(p, "repository", "model_repository", "model repository (from `make export`)", type=Path)
    add_flag(p, "host", "127.0.0.1", "address to bind (0.0.0.0 to serve other machines)")
    add_flag(p, "http-port", 8000, "HTTP/REST port", type=int)
    add_flag(p, "grpc-port", 8001, "gRPC port", type=int)
    add_flag(p, "metrics-port", 8002, "Prometheus metrics port", type=int)
    add_flag(p, "log", ".cache/triton/tritonserver.log", "Triton's log file", type=Path)
    add_flag(p, "workdir", ".cache/triton", "where the backend directory is assembled", type=Path)
    add_flag(p, "model-control", "none", "none: load every model at start; explicit: also load new versions on "
             "request (load-triton), for hot reload", choices=["none", "explicit"])

    p = sub.add_parser("load-triton", help="load the repository's newest version into a Triton in explicit model "
                                           "control mode, and check it serves the repository's manifest")
    add_flag(p, "url", "127.0.0.1:8001", "Triton's gRPC endpoint")
    add_flag(p, "repository", "model_repository", "the repository Triton serves (its manifest.json is checked)",
             type=Path)
    add_flag(p, "timeout", 120.0, "seconds to wait for the load", type=float)

    p = sub.add_parser("bench-triton", help="perf_analyzer on the ensemble, with and without dynamic batching")
    add_flag(p, "artifacts", "artifacts", "trained featurizer.json + encoder.pt", type=Path)
    add_flag(p, "head", "artifacts/intent_head.json", "distilled intent head", type=Path)
    add_flag(p, "data", "data/synthetic", "data directory: real sessions become perf_analyzer's input data", type=Path)
    add_flag(p, "sessions", 512, "sessions in the input data (held-out visitors)", type=int)
    add_flag(p, "concurrency", "1,2,4,8,16", "concurrency levels", type=_ints)
    add_flag(p, "report", "reports/bench_triton.json", "JSON report (a .md table is written beside it)", type=Path)
    add_flag(p, "workdir", ".cache/bench_triton", "repositories, input data and logs of the runs", type=Path)
    add_flag(p, "max-other-cpu", 15, "repeat a run when unrelated processes took more CPU than this (%%)", type=int)
    add_flag(p, "attempts", 3, "runs per level at most (the least disturbed one is kept)", type=int)
    _add_serving(p)

    p = sub.add_parser("fetch-perf-analyzer", help="get perf_analyzer from the tritonclient 2.51.0 wheel (idempotent)")
    add_flag(p, "cache", ".cache/perf_analyzer", "where bin/perf_analyzer and lib/ go", type=Path)
    return parser


COMMANDS = ("export", "serve-triton", "load-triton", "bench-triton", "fetch-perf-analyzer")


def _export(args: argparse.Namespace) -> int:
    from training.export.build import ExportError, export

    given = lambda p: str(p) not in ("", ".")  # noqa: E731
    try:
        result = export(args.artifacts, args.head, args.repository, _serving(args, args.target),
                        fp16=args.precision == "fp16", version=args.version,
                        ranker=args.ranker if given(args.ranker) else None,
                        taxonomy=args.taxonomy if given(args.taxonomy) else None,
                        allow_unpinned_ranker=args.allow_unpinned_ranker)
    except ExportError as exc:
        log.error("%s", exc)
        return 1
    worst = max(result.onnx_parity.values())
    print(f"wrote {result.repository} version {result.version} for {result.target}: {', '.join(result.configs)}; "
          f"{len(result.labels)} intents; ONNX vs PyTorch max abs diff {worst:.1e}")
    print(f"manifest {result.manifest}: model_version {result.model_version}")
    if result.engine_parity:
        print(f"TensorRT vs onnxruntime max abs diff: {json.dumps(result.engine_parity)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from training.export.triton_server import TritonServer, TritonStartError

    if not (args.repository / "intent_pipeline" / "config.pbtxt").exists():
        log.error("%s has no intent_pipeline: run `make export` first", args.repository)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = TritonServer(args.repository, grpc_port=args.grpc_port, http_port=args.http_port,
                          metrics_port=args.metrics_port, host=args.host, log_path=args.log, workdir=args.workdir,
                          model_control=args.model_control)
    print(f"starting Triton on {args.repository}; log: {server.log_path}", flush=True)
    try:
        server.start()
    except TritonStartError as exc:
        log.error("%s", exc)
        return 1
    with server:  # stops Triton however this block ends
        print(f"ready: gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}  "
              "(Ctrl-C stops)", flush=True)
        while not stop.wait(1.0):
            if not server.running():
                log.error("Triton exited on its own; log %s:\n%s", server.log_path, server.log_tail())
                return 1
        print("stopping Triton", flush=True)
    print("stopped", flush=True)
    return 0


def _load(args: argparse.Namespace) -> int:
    from training.core.manifest import MANIFEST_FILE, Manifest
    from training.export.triton_server import TritonLoadError, load_version

    manifest = Manifest.load(args.repository / MANIFEST_FILE)
    try:
        served = load_version(args.url, manifest, args.timeout)
    except TritonLoadError as exc:
        log.error("%s", exc)
        return 1
    print(f"Triton at {args.url} serves {manifest.model} version {served} ({manifest.model_version})")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from training.core.featurizer import Featurizer
    from training.export.build import export_models
    from training.export.perf import bench_triton
    from training.pipeline import machine_info
    from training.sessions import load_sessions

    models = export_models(args.artifacts, args.head, args.workdir / "onnx")
    featurizer = Featurizer.load(args.artifacts / "featurizer.json")
    sessions = load_sessions(args.data).part(holdout=True)[: args.sessions]
    encoded = [featurizer.encode(s.events) for s in sessions]
    report = bench_triton(models.onnx, models.shapes, encoded, args.report, _serving(args), args.workdir,
                          args.concurrency, machine_info(), args.max_other_cpu, args.attempts)
    print(args.report.with_suffix(".md").read_text())
    ratio = next(v for k, v in report.items() if k.startswith("throughput_ratio_"))
    print(f"wrote {args.report}; throughput ratio {ratio}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from training.export.perf import ensure_perf_analyzer

    pa = ensure_perf_analyzer(args.cache)
    print(f"{pa.binary} (LD_LIBRARY_PATH={pa.lib_dir})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    handlers = {"export": _export, "serve-triton": _serve, "load-triton": _load, "bench-triton": _bench,
                "fetch-perf-analyzer": _fetch}
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
