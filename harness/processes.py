"""The service's processes as the harnesses and the integration tests start them: the gateway, the KServe transformer.

Each runs as its own process on free loopback ports (as deployed, and because kserve and tritonclient.grpc
cannot share an interpreter), is handed back once it answers its health or readiness check, and is stopped
with SIGTERM. The gateway's Prometheus endpoint is read here too (`metrics_env`, `gateway_metric`).

Both run on the embedded default auth (mTLS and bearer tokens, gateway/auth.py) with a local PKI of their own
(`pki_dir`, beside their log unless given); clients reach them through harness/client.py with it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.api import pb, pb_grpc
from harness import client
from harness.workload import to_message
from training.core.manifest import MANIFEST_FILE
from training.export.triton_server import TritonServer, free_port, free_ports

TRANSFORMER_MODEL = "reranker"
"""The model name the KServe transformer serves."""


def _flag(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class GatewayProcess:
    """`python -m gateway.server` in a process of its own on a free loopback port, handed back with a typed stub
    once its health check says SERVING; a new one on the same store is a restart.

    Flags beyond the store, artifacts, Triton and `as_of` are keyword arguments (`cache_embeddings=False` is
    `--cache-embeddings false`). `env` is the whole environment of the process (default: this one's); `log`
    receives its output (default: beside a SQLite store's file); `python` runs it (another environment's
    interpreter, for instance).

    Auth is the gateway's default (mtls+jwt) unless `auth=` (or GATEWAY_AUTH in `env`) says otherwise; its local
    PKI is `pki_dir=` (default: `pki/` beside the log, shared by the gateways of one run, so a restart keeps its
    certificates). `.stub` has every scope; `.channel(scopes=...)` / `.aio_channel(...)` give others."""

    def __init__(self, artifacts: Path, store: str, triton_url: str, as_of_ms: int, *,
                 env: Mapping[str, str] | None = None, log: Path | None = None, python: str = sys.executable,
                 **flags: object) -> None:
        self.flags = ["--store", store, "--artifacts", str(artifacts), "--triton-url", triton_url,
                      "--as-of", str(as_of_ms), "--log-level", "WARNING"]
        for name, value in flags.items():
            self.flags += [f"--{name.replace('_', '-')}", _flag(value)]
        self.env = dict(os.environ if env is None else env)
        if log is None:
            if not store.startswith("sqlite://"):
                raise ValueError(f"log= is needed for the store {store!r} (not a SQLite file to write it beside)")
            log = Path(store.removeprefix("sqlite://")).with_suffix(f".{secrets.token_hex(3)}.log")
        self.log_path = log
        self.auth = str(flags.get("auth") or self.env.get("GATEWAY_AUTH") or "mtls+jwt")
        self.pki_dir = Path(str(flags.get("pki_dir") or self.env.get("GATEWAY_PKI_DIR") or log.parent / "pki"))
        if "drain_s" not in flags:  # nothing balances load onto a test's gateway: stop at once
            self.flags += ["--drain-s", "0"]
        if "pki_dir" not in flags:
            self.flags += ["--pki-dir", str(self.pki_dir)]
        self.python = python
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> GatewayProcess:
        """`spawn`, then wait until the health check says SERVING (RuntimeError with the log if it exits)."""
        return self.spawn().wait_serving(timeout_s)

    def spawn(self) -> GatewayProcess:
        """Start the process without waiting for it (a test of a refused start-up waits for its exit code)."""
        self.port = free_port()
        args = [self.python, "-m", "gateway.server", "--listen", self.address, *self.flags]
        with self.log_path.open("a") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                            env={**self.env, "PYTHONUNBUFFERED": "1"})
        self.channel = self.new_channel()
        self.stub = pb_grpc.IntentGatewayServiceStub(self.channel)
        return self

    def new_channel(self, scopes: Sequence[str] = client.ALL_SCOPES,
                    options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
        """A new blocking channel to this gateway with a token carrying `scopes` (close it when done)."""
        return client.channel(self.address, pki_dir=self.pki_dir, scopes=scopes, auth=self.auth, options=options)

    def aio_channel(self, scopes: Sequence[str] = client.ALL_SCOPES,
                    options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
        """A new grpc.aio channel to this gateway with a token carrying `scopes` (use it in `async with`)."""
        return client.channel(self.address, pki_dir=self.pki_dir, scopes=scopes, auth=self.auth, asynchronous=True,
                              options=options)

    def wait_serving(self, timeout_s: float = 60.0) -> GatewayProcess:
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return self
            except grpc.RpcError:
                if self.process.poll() is not None:
                    self.channel.close()
                    raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gateway did not become healthy in {timeout_s:.0f} s: {self.log_path.read_text()[-2000:]}")

    def seed(self, events: Sequence, customer_id: str, batch: int = 500) -> None:
        """Store a visitor's events (RecordEvents, `batch` at a time) and link them to `customer_id`."""
        for start in range(0, len(events), batch):
            self.stub.RecordEvents(pb.RecordEventsRequest(events=[to_message(e) for e in events[start:start + batch]]),
                                   timeout=30)
        self.stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=events[0].anonymous_id, customer_id=customer_id),
                               timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL if it has not exited after `timeout_s`; its exit code."""
        if self.process is None:
            return None
        self.channel.close()
        return stop(self.process, timeout_s)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def benchmark_gateway(artifacts: Path, store: Path, triton: TritonServer, as_of: int, cache: bool,
                      embed_on_write: bool, metrics_port: int | None = None) -> GatewayProcess:
    """A gateway for a benchmark (not started) in front of `triton`, checked against its repository's manifest:
    its own SQLite store, no OTEL_* settings from this environment but the Prometheus endpoint on
    `metrics_port`, a 5 s Triton timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if metrics_port is not None:
        env |= metrics_env(metrics_port)
    return GatewayProcess(artifacts, f"sqlite://{store}", triton.grpc_url, as_of, env=env,
                          log=store.with_suffix(".log"), manifest=manifest_of(triton), triton_timeout_s=5,
                          cache_embeddings=cache, embed_on_write=embed_on_write)


def manifest_of(triton: TritonServer) -> Path:
    """The model manifest `make export` wrote beside the repository `triton` serves."""
    return Path(triton.repository) / MANIFEST_FILE


def stop(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if the process has not exited after `timeout_s`; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def metrics_env(port: int) -> dict[str, str]:
    """The OTEL_* settings that make a gateway serve its Prometheus metrics on 127.0.0.1:`port`."""
    return {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}


def gateway_metric(port: int, name: str, **labels: str) -> float:
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
    while gateway_metric(metrics_port, "gateway_embed_pending") > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("write-behind embedding still busy")
        time.sleep(0.1)
    return gateway_metric(metrics_port, "gateway_sessions_embedded_total", path="write")


def start_transformer(triton: TritonServer, artifacts: Path, as_of: int, log_path: Path, timeout_s: float = 90,
                      env: Mapping[str, str] | None = None, extra: Sequence[str] = (), pki_dir: Path | None = None
                      ) -> tuple[subprocess.Popen, int, int]:
    """`python -m gateway.kserve_transformer` (KServe v2, `triton` as its grpc-v2 predictor, checked against its
    repository's manifest) in its own process, once its model is ready: (process, http_port, grpc_port).

    It serves the v2 endpoint only (`--enable_gateway_grpc false`: no typed service on a fixed port), with its
    own SQLite store beside `log_path` and its local PKI in `pki_dir` (default: `pki/` beside `log_path`; a v2
    infer needs a token with rank:read from it, `client.bearer(pki_dir, ["rank:read"])`, unless `extra` has
    `--auth none`). `env`: the process environment (default: this one's); `extra`: more command-line flags (later
    ones win). Stop it with `stop(process)`."""
    http_port, grpc_port = free_ports(2)
    store = log_path.with_suffix(f".{secrets.token_hex(3)}.db")
    args = [sys.executable, "-m", "gateway.kserve_transformer", "--predictor_host", triton.grpc_url,
            "--predictor_protocol", "grpc-v2", "--http_port", str(http_port), "--grpc_port", str(grpc_port),
            "--artifacts", str(artifacts), "--manifest", str(manifest_of(triton)), "--store", f"sqlite://{store}",
            "--enable_gateway_grpc", "false", "--as-of", str(as_of), "--triton-timeout-s", "5",
            "--pki-dir", str(pki_dir or log_path.parent / "pki"), *extra]
    with log_path.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{TRANSFORMER_MODEL}/ready",
                                        timeout=1) as r:
                if r.status == 200:
                    return process, http_port, grpc_port
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"kserve transformer did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.3)
