"""`python -m harness.footprint`: the gateway image's environment against the full one -> reports/footprint.json.

Two environments run the same gateway code on the same artifacts:

- `gateway`: a fresh venv from requirements-gateway.lock alone (built once into --gateway-env, rebuilt when the
  lock changes), and a copy of only proto/, training/core/ and gateway/ (what deploy/docker/Dockerfile copies) on
  PYTHONPATH, run from that copy: the image's contents without docker.
- `full`: the platform's .venv (requirements.lock: torch, the LLM runtime, sklearn, ...) and the repository.

For each: installed_mb (bytes of the files under site-packages / 1e6; venv_mb: the whole venv), packages (the
installed distributions, as `pip list` counts them, pip and setuptools included) and startup_s: wall time from
spawning `python -m gateway.server` to its grpc.health.v1 check answering SERVING (no Triton: the gateway then
serves degraded rankings; Prometheus metrics on and traces over OTLP/HTTP to a local sink, as in the chart).
Start-ups are paired and interleaved (gateway, full, then full, gateway, ...) after one unmeasured warm-up of
each; the report gives the median, the spread and the paired differences.

Before measuring, the gateway environment is checked: the three entry modules import, both CLIs answer --help,
torch/sklearn/the LLM runtime/training are not importable in it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from training.export.triton_server import free_ports

ROOT = Path(__file__).resolve().parent.parent
IMAGE_PATHS = ("proto", "training/__init__.py", "training/core", "gateway")  # what deploy/docker/Dockerfile copies
# Must not be importable in the gateway environment (the offline stack and the repository's other packages).
ABSENT_MODULES = ("torch", "sklearn", "matplotlib", "xllamacpp", "llama_cpp", "llm", "onnx", "onnxruntime",
                  "pytriton", "tqdm", "pyarrow", "scipy", "training.encoder", "training.export", "harness")
LOOPBACK = "127.0.0.1"

# Run inside an environment's interpreter: its distributions, their sizes and where site-packages is.
_INVENTORY = r"""
import importlib.metadata as m, json, os, re, sysconfig
sizes = {}
for d in m.distributions():
    name = re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower()
    total = 0
    for f in d.files or []:
        try:
            total += os.lstat(d.locate_file(f)).st_size
        except OSError:
            pass
    sizes[name] = total
print(json.dumps({"site_packages": sysconfig.get_paths()["purelib"], "sizes": sizes}))
"""

# Run inside the gateway environment: the distributions each set of direct requirements pulls in (markers and
# extras evaluated), to price the KServe transformer's share of the image.
_CLOSURE = r"""
import importlib.metadata as m, json, re, sys
from packaging.requirements import Requirement
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def closure(roots):
    seen, todo = set(), [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = norm(req.name)
        extras = sorted(req.extras) or [""]
        key = (name, tuple(extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = m.distribution(name).requires or []
        except m.PackageNotFoundError:
            continue
        for text in requires:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dep)
    return sorted({name for name, _ in seen})
roots = json.loads(sys.argv[1])
print(json.dumps({"all": closure(roots), "without_kserve": closure([r for r in roots if norm(r) != "kserve"])}))
"""


def tree_bytes(path: Path) -> int:
    """Apparent size of the regular files under path (symlinks not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def lock_digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:16]


def build_gateway_env(env: Path, lock: Path, python: str, rebuild: bool) -> None:
    """A venv from the gateway lock alone, as the image's `pip install -r requirements-gateway.lock` makes it."""
    marker = env / ".lock-sha256"
    if not rebuild and marker.exists() and marker.read_text().strip() == lock_digest(lock):
        return
    print(f"building the gateway environment {env} from {lock.name} ...", file=sys.stderr)
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(env)], check=True)
    subprocess.run([str(env / "bin" / "pip"), "install", "-qq", "-r", str(lock)], check=True)
    marker.write_text(lock_digest(lock) + "\n")


def stage_image(dest: Path) -> Path:
    """Copy what the image copies (proto/, training/core/, gateway/) without caches or generated stubs."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "_gen", "*.pyc")
    for name in IMAGE_PATHS:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, dest / name)
        else:
            shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def run_checked(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return proc.stdout


def check_gateway_env(python: Path, app: Path, env: dict[str, str]) -> dict:
    """What the image must do: import and start its entry points, and lack the offline stack."""
    checks = {}
    run_checked([str(python), "-c", "import gateway.server, gateway.kserve_transformer, gateway.app"], app, env)
    checks["import gateway.server, gateway.kserve_transformer, gateway.app"] = "ok"
    checks["stubs generated from proto/"] = sorted(p.name for p in (app / "gateway" / "_gen").rglob("*_pb2*.py"))
    for module in ("gateway.server", "gateway.kserve_transformer"):
        run_checked([str(python), "-m", module, "--help"], app, env)
        checks[f"python -m {module} --help"] = "ok"
    probe = ("import importlib.util as u, json; "
             f"print(json.dumps([m for m in {list(ABSENT_MODULES)!r} if u.find_spec(m) is not None]))")
    present = json.loads(run_checked([str(python), "-c", probe], app, env))
    if present:
        raise RuntimeError(f"the gateway environment can import {present}: it must not")
    checks["not importable"] = list(ABSENT_MODULES)
    return checks


def in_env(python: Path, script: str, *args: str) -> dict:
    """Run script in python's environment alone (no PYTHONPATH, away from the repository's egg-info)."""
    with tempfile.TemporaryDirectory() as cwd:
        return json.loads(subprocess.run([str(python), "-c", script, *args], capture_output=True, text=True,
                                         check=True, cwd=cwd, env={"PATH": os.environ.get("PATH", "")}).stdout)


def direct_requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def server_args(python: Path, cwd: Path, env: dict[str, str], artifacts: Path, repository: Path,
                extra: list[str]) -> list[str]:
    args = ["--artifacts", str(artifacts)]
    # The model manifest (issue 15): pass it when this gateway version asks for one and the export wrote it.
    manifest = repository / "manifest.json"
    if "--manifest" in run_checked([str(python), "-m", "gateway.server", "--help"], cwd, env):
        if manifest.exists():
            args += ["--manifest", str(manifest)]
        else:
            print(f"note: the gateway takes --manifest but {manifest} does not exist (make export writes it)",
                  file=sys.stderr)
    return args + extra


def wait_serving(port: int, proc: subprocess.Popen, deadline: float, pki_dir: Path) -> None:
    """Return once grpc.health.v1 answers SERVING on port (TCP connect first, then the health check over mTLS
    with the client certificate of `pki_dir`; health needs no token)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from harness.client import transport_credentials

    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} before serving")
        if time.perf_counter() > deadline:
            raise TimeoutError("gateway not SERVING in time")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((LOOPBACK, port)) == 0:
                break
        time.sleep(0.005)
    with grpc.secure_channel(f"{LOOPBACK}:{port}", transport_credentials(pki_dir)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.perf_counter() > deadline:
                raise TimeoutError("gateway not SERVING in time")
            time.sleep(0.005)


class _CollectorSink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that accepts every export (the start-ups export their health-check spans)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def collector():
    """http://HOST:PORT of a local OTLP/HTTP sink, for as long as the block runs."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _CollectorSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def start_once(python: Path, cwd: Path, env: dict[str, str], args: list[str], workdir: Path,
               timeout_s: float, otlp: str) -> tuple[float, float | None]:
    """One start-up: spawn `python -m gateway.server`, time it to SERVING, stop it. (seconds, RSS MB)."""
    port, metrics_port, no_triton = free_ports(3)
    store = workdir / f"store-{port}.db"
    # As the chart runs it: Prometheus metrics on, traces over OTLP/HTTP (here to a local sink).
    run_env = dict(env, OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_HOST=LOOPBACK,
                   OTEL_EXPORTER_PROMETHEUS_PORT=str(metrics_port), OTEL_TRACES_EXPORTER="otlp",
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_EXPORTER_OTLP_ENDPOINT=otlp)
    pki = workdir / "pki"  # the embedded default's mTLS: generated by the first start-up (the warm-up), then reused
    cmd = [str(python), "-m", "gateway.server", "--listen", f"{LOOPBACK}:{port}", "--store", f"sqlite://{store}",
           "--triton-url", f"{LOOPBACK}:{no_triton}", "--pki-dir", str(pki), *args]
    log = (workdir / f"gateway-{port}.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_serving(port, proc, t0 + timeout_s, pki)
        elapsed = time.perf_counter() - t0
        rss = rss_mb(proc.pid)
    except Exception as exc:
        log.close()
        raise RuntimeError(f"{' '.join(cmd)}: {exc}\n{Path(log.name).read_text()[-4000:]}") from exc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return elapsed, rss


def spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "p25": round(q[0], 3), "p75": round(q[2], 3),
            "runs": [round(v, 3) for v in values]}


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    mem_gb = None
    with contextlib.suppress(OSError, StopIteration):
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        mem_gb = round(kb / 1024 / 1024, 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "memory_gb": mem_gb, "os": platform.platform(),
            "python": platform.python_version(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def describe(python: Path, venv: Path) -> dict:
    inv = in_env(python, _INVENTORY)
    return {"installed_mb": round(tree_bytes(Path(inv["site_packages"])) / 1e6, 1),
            "venv_mb": round(tree_bytes(venv) / 1e6, 1), "packages": len(inv["sizes"]), "sizes": inv["sizes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.footprint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts",
                        help="directory with featurizer.json and ranker.json (default: artifacts)")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository",
                        help="model repository whose manifest.json is passed when the gateway asks for --manifest")
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements-gateway.lock")
    parser.add_argument("--requirements", type=Path, default=ROOT / "deploy" / "docker" / "requirements-gateway.in",
                        help="the gateway's direct requirements (to price the KServe share)")
    parser.add_argument("--gateway-env", type=Path, default=ROOT / ".cache" / "gateway-env",
                        help="where the gateway venv is built if absent or older than the lock")
    parser.add_argument("--full-env", type=Path, default=ROOT / ".venv", help="the full environment")
    parser.add_argument("--python", default=shutil.which("python3") or sys.executable,
                        help="interpreter the gateway venv is made with (the image's is python:3.11-slim)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the gateway venv even if it is current")
    parser.add_argument("--runs", type=int, default=11, help="measured start-ups per environment (paired)")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="limit of one start-up")
    parser.add_argument("--gateway-arg", action="append", default=[],
                        help="extra argument for python -m gateway.server (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "footprint.json")
    args = parser.parse_args(argv)
    for name in ("featurizer.json", "ranker.json"):
        if not (args.artifacts / name).exists():
            parser.error(f"{args.artifacts / name} is missing (make eval writes ranker.json)")

    build_gateway_env(args.gateway_env, args.lock, args.python, args.rebuild)
    app = stage_image(args.gateway_env.parent / "gateway-image")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "OTEL_",
                                                                          "GATEWAY_"))}
    envs = {
        "gateway": {"python": args.gateway_env / "bin" / "python", "venv": args.gateway_env, "cwd": app,
                    "env": dict(base_env, PYTHONPATH=str(app))},
        "full": {"python": args.full_env / "bin" / "python", "venv": args.full_env, "cwd": ROOT,
                 "env": dict(base_env)},
    }
    checks = check_gateway_env(envs["gateway"]["python"], app, envs["gateway"]["env"])
    for spec in envs.values():
        spec["args"] = server_args(spec["python"], spec["cwd"], spec["env"], args.artifacts.resolve(),
                                   args.repository.resolve(), args.gateway_arg)

    report: dict = {}
    samples: dict[str, list[float]] = {name: [] for name in envs}
    rss: dict[str, list[float]] = {name: [] for name in envs}
    host = machine()
    with tempfile.TemporaryDirectory(prefix="footprint-") as tmp, collector() as otlp:
        work = Path(tmp)
        first = {name: start_once(s["python"], s["cwd"], s["env"], s["args"], work, args.timeout_s, otlp)[0]
                 for name, s in envs.items()}  # warm-up: page cache, .pyc of the copied sources
        for i in range(args.runs):
            for name in (("gateway", "full") if i % 2 == 0 else ("full", "gateway")):
                s = envs[name]
                elapsed, mb = start_once(s["python"], s["cwd"], s["env"], s["args"], work, args.timeout_s, otlp)
                samples[name].append(elapsed)
                if mb is not None:
                    rss[name].append(mb)

    sizes = {}
    for name, s in envs.items():
        d = describe(s["python"], s["venv"])
        sizes[name] = d.pop("sizes")
        report[name] = {**d, "startup_s": round(statistics.median(samples[name]), 3),
                        "startup_spread_s": spread(samples[name]), "warmup_startup_s": round(first[name], 3),
                        "rss_mb_at_serving": round(statistics.median(rss[name]), 1) if rss[name] else None,
                        "python": str(s["python"].relative_to(ROOT)) if s["python"].is_relative_to(ROOT)
                        else str(s["python"])}
    left_out = sorted(set(sizes["full"]) - set(sizes["gateway"]), key=lambda n: -sizes["full"][n])
    diffs = [f - g for g, f in zip(samples["gateway"], samples["full"], strict=True)]
    report["difference"] = {
        "installed_mb": round(report["full"]["installed_mb"] - report["gateway"]["installed_mb"], 1),
        "installed_ratio": round(report["full"]["installed_mb"] / report["gateway"]["installed_mb"], 2),
        "packages": report["full"]["packages"] - report["gateway"]["packages"],
        "startup_s_full_minus_gateway": spread(diffs),
        "largest_left_out_mb": {n: round(sizes["full"][n] / 1e6, 1) for n in left_out[:12]},
        "left_out_packages": len(left_out),
        "only_in_gateway": sorted(set(sizes["gateway"]) - set(sizes["full"])),
    }
    roots = direct_requirements(args.requirements)
    sets = in_env(envs["gateway"]["python"], _CLOSURE, json.dumps(roots))
    kserve_only = sorted(set(sets["all"]) - set(sets["without_kserve"]), key=lambda n: -sizes["gateway"].get(n, 0))
    report["gateway"]["kserve_share"] = {
        "note": "distributions only the KServe transformer needs (kserve and what it alone pulls in): an image "
                "for `python -m gateway.server` alone could leave them out",
        "mb": round(sum(sizes["gateway"].get(n, 0) for n in kserve_only) / 1e6, 1),
        "packages": len(kserve_only),
        "largest_mb": {n: round(sizes["gateway"].get(n, 0) / 1e6, 1) for n in kserve_only[:8]},
    }
    report["gateway"]["checks"] = checks
    report["machine"] = dict(host, loadavg_at_end=[round(x, 2) for x in os.getloadavg()])
    report["method"] = {
        "installed_mb": "bytes of the regular files under the environment's site-packages / 1e6 (venv_mb: the "
                        "whole venv directory, interpreter links and bin/ included)",
        "packages": "installed distributions (importlib.metadata, as pip list counts them; pip and setuptools "
                    "included, and in the full env the editable intent-platform)",
        "startup_s": f"median of {args.runs} paired, interleaved runs per environment after one warm-up each: "
                     "spawn `python -m gateway.server` -> grpc.health.v1 Check answers SERVING; no Triton "
                     "(degraded rankings), SQLite store in a temp dir, Prometheus metrics on, traces over OTLP/HTTP "
                     "to a local sink (the chart's telemetry)",
        "gateway_env": f"fresh venv from {args.lock.name} ({lock_digest(args.lock)}), sources: a copy of "
                       f"{', '.join(IMAGE_PATHS)} on PYTHONPATH, as deploy/docker/Dockerfile",
        "full_env": f"{args.full_env.name} from requirements.lock, run from the repository",
        "server_args": envs["gateway"]["args"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    g, f = report["gateway"], report["full"]
    print(f"gateway: {g['installed_mb']} MB, {g['packages']} packages, start-up {g['startup_s']} s | "
          f"full: {f['installed_mb']} MB, {f['packages']} packages, start-up {f['startup_s']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
