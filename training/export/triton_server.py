"""Start, wait for and stop the real Triton server that ships in the `nvidia-pytriton` wheel (CPU only).

The wheel carries Triton 2.51 (`pytriton/tritonserver/bin/tritonserver`) with the python backend only.
What it needs to start (found by trial on this machine, see ARCHITECTURE.md):
  * a backend directory holding the python backend and the stub for this interpreter's Python version;
  * this venv's `bin` first on PATH (the stub runs the `python3` it finds there, so model.py sees the
    venv's onnxruntime and numpy) and the interpreter's LIBDIR plus `nvidia_pytriton.libs` on
    LD_LIBRARY_PATH;
  * GPU features off: no GPU metrics, no pinned or CUDA memory pools. CUDA error lines at start-up are
    harmless on CPU.

    with TritonServer(Path("model_repository")) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Model control (`model_control`): "none" loads every model at start and never again; "explicit" (hot reload)
loads every model at start too (`--load-model=*`) and later whatever is asked by the load API
(`load_version`, `python -m training.export load-triton`). What a load of a new repository version does, as
measured on this Triton (2.51.0, python backend, ensemble of two; 4 clients sending throughout, the old
encoder made slow so that requests were in flight at the swap):
  * a plain file at the repository root (manifest.json) is ignored in both modes (not in the repository
    index, no error);
  * loading the ensemble alone (`load_model("intent_pipeline")`) also loads the new versions of its composing
    models: Triton reloads a model's loaded versions with the new config (all versions of a model share one
    config.pbtxt: per-version settings must live in the version folder) and adds the new one;
  * while the load runs (1.4-2.4 s here) the old ensemble version keeps answering; once the new one is ready,
    the old one turns UNLOADING, finishes its in-flight requests on its own (pinned) steps, and is gone: a
    request pinned to it afterwards fails UNAVAILABLE "Request for unknown model: 'intent_pipeline' version 1
    is not at ready state" (NOT_FOUND "... is not found" for a version that never existed);
  * 0 errors and no request mixed versions, with the ensemble's steps pinned to its own version and the
    composing models keeping 2 versions (`version_policy latest 2`). With latest 1 it also held on this Triton
    (the UNLOADING composing versions drained as well); latest 2 keeps the guarantee from depending on that,
    and the previous version warm;
  * with the steps at `model_version: -1` instead ("latest", resolved per step) and the composing models
    loaded one after the other, requests did mix: of about 5,800 answers during such a swap, 3,371 ran the new
    encoder with the old head, and every one of them (old, mixed, new) reported ensemble version 1. Hence the
    pinned steps and a new ensemble version per repository version: the version in an answer names the set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


MODEL_CONTROL = ("none", "explicit")


class TritonStartError(RuntimeError):
    """Triton exited or did not become ready; the message carries the tail of its log."""


class TritonLoadError(RuntimeError):
    """A model load was refused, failed, or left Triton serving something else than the manifest says."""


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free on `host` a moment ago (the OS picks it; a tiny race is accepted)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct ports free on `host` a moment ago. They are held open together while chosen: closed one at a
    time, the OS may hand the same port out twice (it did: a transformer's HTTP and gRPC ports collided)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pytriton_root() -> Path:
    """`site-packages/pytriton/tritonserver` of the installed nvidia-pytriton wheel."""
    import pytriton

    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise FileNotFoundError(f"no tritonserver binary under {root}: is nvidia-pytriton installed?")
    return root


def prepare_backends(directory: Path) -> Path:
    """A backend directory with the wheel's python backend and the stub for this Python (idempotent)."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise FileNotFoundError(f"the pytriton wheel has no python backend stub for Python {version}")
    python_dir = directory / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in [*sorted((root / "backends" / "python").glob("*.*")), stub]:
        target = python_dir / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            shutil.copy2(source, target)
    return directory


def triton_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH that let tritonserver and the python stub find their libraries and Python."""
    env = dict(os.environ if base is None else base)
    libs = [str(Path(pytriton_root()).parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class TritonServer:
    """A tritonserver process on loopback, as a context manager (ports default to free ones).

    `start()` returns once every model is ready (gRPC health), or raises TritonStartError with the log's
    tail; `stop()` sends SIGTERM (Triton drains in-flight requests) and kills the process group after
    `stop_timeout` seconds.
    """

    def __init__(self, repository: Path, *, grpc_port: int = 0, http_port: int = 0, metrics_port: int = 0,
                 host: str = LOOPBACK, log_path: Path | None = None, workdir: Path | None = None,
                 extra_args: Sequence[str] = (), startup_timeout: float = 90.0, stop_timeout: float = 15.0,
                 log_verbose: int = 0, model_control: str = "none", load_models: Sequence[str] = ("*",)) -> None:
        """`model_control` "explicit" loads `load_models` at start (all by default) and then only on request."""
        if model_control not in MODEL_CONTROL:
            raise ValueError(f"model_control must be one of {MODEL_CONTROL}, got {model_control!r}")
        self.model_control = model_control
        self.load_models = list(load_models)
        self.repository = Path(repository).resolve()
        self.host = host
        ports = free_ports(3, host)
        self.grpc_port = grpc_port or ports[0]
        self.http_port = http_port or ports[1]
        self.metrics_port = metrics_port or ports[2]
        self._tmp: tempfile.TemporaryDirectory | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="triton-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir).resolve()  # Triton runs with cwd=workdir: every path it gets is absolute
        self.log_path = Path(log_path).resolve() if log_path else self.workdir / "tritonserver.log"
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_verbose = log_verbose
        self.process: subprocess.Popen | None = None

    # -- addresses ------------------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        backends = prepare_backends(self.workdir / "backends")
        return [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
            "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={int(self.stop_timeout)}",
            f"--log-verbose={self.log_verbose}",
            *self._model_control_args(),
            *self.extra_args,
        ]

    def _model_control_args(self) -> list[str]:
        if self.model_control == "none":
            return []
        return ["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.load_models)]

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> TritonServer:
        if self.process is not None:
            raise RuntimeError("this TritonServer is already started")
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository {self.repository} does not exist (run `make export`)")
        # A port taken by another server would answer our readiness probe: refuse up front instead.
        for name, port in (("gRPC", self.grpc_port), ("HTTP", self.http_port), ("metrics", self.metrics_port)):
            if not port_is_free(self.host, port):
                raise TritonStartError(f"{name} port {self.host}:{port} is already in use (another Triton?)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with self.log_path.open("wb") as log:
            # A new session: stop() can signal Triton and its python stubs as one process group.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                            env=triton_environment(), start_new_session=True)
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout
        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise TritonStartError(f"tritonserver exited with code {code} before it was ready; "
                                           f"log {self.log_path}:\n{self.log_tail()}")
                with contextlib.suppress(Exception):
                    if client.is_server_ready(client_timeout=1.0):
                        return
                time.sleep(0.2)
        raise TritonStartError(f"tritonserver was not ready after {timeout:.0f}s; log {self.log_path}:\n"
                               f"{self.log_tail()}")

    def stop(self) -> int | None:
        """Stop Triton (SIGTERM, then SIGKILL to its process group) and return its exit code."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(self.stop_timeout + 5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
            code = process.returncode
            with contextlib.suppress(ProcessLookupError):  # python stubs left behind by a crash
                os.killpg(process.pid, signal.SIGKILL)
        return code

    def close(self) -> None:
        """stop() and remove the temporary work directory (if this server made one)."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log written)"

    def load(self, manifest, timeout: float = 120.0) -> int:
        """`load_version` on this server (model control "explicit")."""
        return load_version(self.grpc_url, manifest, timeout)

    def metrics(self) -> dict[str, float]:
        """Triton's Prometheus metrics as {'name{labels}': value}."""
        import urllib.request

        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        return parse_prometheus(text)

    def __enter__(self) -> TritonServer:
        return self if self.process is not None else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def load_version(url: str, manifest, timeout: float = 120.0) -> int:
    """Have the Triton at `url` (model control "explicit") load the newest version of the manifest's ensemble,
    then check that the ensemble it serves is the manifest's; returns the served repository version.

    One load of the ensemble is enough: Triton loads the composing models' new versions with it. The previous
    version answers until the new one is ready (see the module docstring), so this is the hot-reload step.
    `manifest` is a training.core.manifest.Manifest (the repository's manifest.json).
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    model, version = manifest.model, str(manifest.repository_version)
    with grpcclient.InferenceServerClient(url) as client:
        try:
            client.load_model(model, client_timeout=timeout)
            config = client.get_model_config(model, as_json=True, client_timeout=10)["config"]
            ready = client.is_model_ready(model, version, client_timeout=10)
        except InferenceServerException as exc:
            raise TritonLoadError(f"Triton at {url} did not load {model}: {exc.message()} (is it running with "
                                  "model control explicit? `serve-triton --model-control explicit`)") from None
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    problems = manifest.check_served(params)
    if problems or not ready:
        why = "; ".join(map(str, problems)) or f"version {version} is not ready"
        raise TritonLoadError(f"after the load Triton at {url} does not serve {manifest.model_version}: {why}. Is "
                              "it serving the repository this manifest is in?")
    return manifest.repository_version


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'metric{labels}': value} (comments skipped)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[key] = float(value)
    return values


def model_metric(metrics: dict[str, float], name: str, model: str) -> float:
    """Sum of `name` over the series of `model` (all versions)."""
    return sum(v for k, v in metrics.items() if k.startswith(name + "{") and f'model="{model}"' in k)
