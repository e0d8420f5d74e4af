"""make bench-data: events file -> featurized sessions, columnar vs the row-level reference, at 1M and 10M events.

Each measurement runs in its own subprocess so its peak RSS is its own (the child's ru_maxrss, cross-checked
by polling it with psutil). The 1M file is the first million events of the synthetic bank (50,000 visitors,
time-ordered, so a shorter window of the same bank); the 10M file is that file ten times over with the visitor
ids made distinct, so it has the same shape without generating 10M events. The row-level reference runs at 10M
too when memory allows; `speedup_vs_row_level` is the smaller of the measured speedups.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROW_LEVEL_HEADROOM = 1.25
"""The row-level path runs at 10M only if 1.25x its 1M peak per event, times 10M, is free (it peaks near 15 GB)."""


def measure(path_name: str, data: Path, out: Path) -> dict:
    """One measurement, in this process: the child side of `run_measurement`."""
    start = time.perf_counter()
    if path_name == "columnar":
        from training.columnar.run import featurize_dir

        done = featurize_dir(data, out)
        events, sessions = done["events"], done["sessions"]
    else:
        from training.core.featurizer import Featurizer
        from training.sessions import load_sessions
        from training.splits import VALIDATION_PCT, is_holdout

        loaded = load_sessions(data, columnar=False)
        train = [s for s in loaded.part(holdout=False) if not is_holdout(s.anonymous_id, VALIDATION_PCT)]
        featurizer = Featurizer.fit(s.events for s in train)
        encoded = [featurizer.encode(s.events) for s in loaded.sessions]
        events, sessions = sum(len(s.events) for s in loaded.sessions), len(encoded)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "events": events, "sessions": sessions,
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def run_measurement(path_name: str, data: Path, out: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "harness.bench_data", "--measure", path_name, "--data", str(data), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    watched, polled = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            polled = max(polled, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.wait() != 0:
        raise RuntimeError(f"{path_name} on {data} failed ({proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    peak = max(result.pop("ru_maxrss_bytes"), polled)
    result.update(peak_rss_bytes=peak, events_per_s=result["events"] / result["seconds"],
                  peak_bytes_per_event=peak / result["events"])
    return result


MILLION = 1_000_000


def ensure_data(work: Path) -> tuple[Path, Path]:
    """The 1M bank (the first million events of a generated 50,000-visitor bank) and its 10M replica."""
    bank, one, ten = work / "bank", work / "events_1m", work / "events_10m"
    if not (bank / "events.jsonl").exists():
        from training.synthetic import GeneratorConfig, generate

        generate(GeneratorConfig(visitors=50_000, seed=7), bank)
    if not (one / "events.jsonl").exists():
        one.mkdir(parents=True, exist_ok=True)
        with (bank / "events.jsonl").open("rb") as src, (one / "events.partial").open("wb") as dst:
            for _, line in zip(range(MILLION), src, strict=False):
                dst.write(line)
        (one / "events.partial").rename(one / "events.jsonl")
    if not (ten / "events.jsonl").exists():
        ten.mkdir(parents=True, exist_ok=True)
        source = (one / "events.jsonl").read_bytes()
        with (ten / "events.partial").open("wb") as fh:
            for copy in range(10):
                fh.write(source.replace(b'"anonymous_id":"', f'"anonymous_id":"R{copy}-'.encode()))
        (ten / "events.partial").rename(ten / "events.jsonl")
    return one, ten


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total, "processor": platform.processor() or platform.machine()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("artifacts/bench_data"))
    p.add_argument("--report", type=Path, default=Path("reports/bench_data.json"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Arrow/BLAS threads per measurement")
    p.add_argument("--measure", choices=("columnar", "row_level"), help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.data, args.out)))
        return 0
    one, ten = ensure_data(args.work)
    runs: dict[str, dict] = {}
    for label, data in (("1m", one), ("10m", ten)):
        runs[f"columnar_{label}"] = run_measurement("columnar", data, args.work / f"shards_{label}", args.threads)
        print(label, "columnar", json.dumps(runs[f"columnar_{label}"]), flush=True)
    runs["row_level_1m"] = run_measurement("row_level", one, args.work / "unused", args.threads)
    print("1m", "row_level", json.dumps(runs["row_level_1m"]), flush=True)
    events_10m = runs["columnar_10m"]["events"]
    need_10m = runs["row_level_1m"]["peak_bytes_per_event"] * events_10m * ROW_LEVEL_HEADROOM
    row_10m = psutil.virtual_memory().available >= need_10m
    if row_10m:
        runs["row_level_10m"] = run_measurement("row_level", ten, args.work / "unused", args.threads)
        print("10m", "row_level", json.dumps(runs["row_level_10m"]), flush=True)
    speedups = {label: runs[f"columnar_{label}"]["events_per_s"] / runs[f"row_level_{label}"]["events_per_s"]
                for label in ("1m", "10m") if f"row_level_{label}" in runs}
    report = {
        "speedup_vs_row_level": round(min(speedups.values()), 2),
        "speedups": {label: round(x, 2) for label, x in speedups.items()},
        "events_per_s_columnar": {label: round(runs[f"columnar_{label}"]["events_per_s"]) for label in ("1m", "10m")},
        "peak_bytes_per_event_10m": round(runs["columnar_10m"]["peak_bytes_per_event"], 1),
        "targets": {"speedup_vs_row_level": 10, "events_per_s": 670_000, "peak_bytes_per_event_10m": 150},
        "row_level_10m_skipped": None if row_10m else
        f"needs ~{need_10m / 1e9:.0f} GB; {psutil.virtual_memory().available / 1e9:.0f} GB available",
        "runs": runs, "threads": args.threads, "machine": machine(),
        "what": "events.jsonl -> validated, sessionized, featurized sessions (columnar: written as shards; "
                "row-level: load_sessions(columnar=False) + Featurizer.fit on training visitors + encode)",
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("speedup_vs_row_level", "peak_bytes_per_event_10m")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
