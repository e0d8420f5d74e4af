"""`python -m training.export serve-triton`: serves until SIGTERM, then stops cleanly (exit 0)."""

import signal
import subprocess
import sys
import time

import tritonclient.grpc as grpcclient

from training.export.triton_server import free_ports


def test_serve_triton_becomes_ready_and_stops_on_sigterm(exported_cpu, tmp_path):
    grpc_port, http_port, metrics_port = free_ports(3)
    log = tmp_path / "triton.log"
    cmd = [sys.executable, "-m", "training.export", "serve-triton", "--repository", exported_cpu.repository,
           "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
           "--log", str(log), "--workdir", str(tmp_path / "work")]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "starting Triton" in process.stdout.readline()
        ready = process.stdout.readline()
        assert "ready: gRPC" in ready, ready + log.read_text()[-2000:]
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.is_model_ready("intent_pipeline")
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "stopped" in output
    assert time.monotonic() - start < 30
    assert "Started GRPCInferenceService" in log.read_text()


def test_explicit_model_control_serves_and_load_triton_checks_the_manifest(exported_cpu, tmp_path):
    """`serve-triton --model-control explicit` loads the repository at start; `load-triton` (re)loads the newest
    version and confirms Triton serves the repository's manifest, or exits 1 naming what disagrees."""
    from training.core.manifest import MANIFEST_FILE, Manifest

    grpc_port, http_port, metrics_port = free_ports(3)
    cmd = [sys.executable, "-m", "training.export", "serve-triton", "--repository", exported_cpu.repository,
           "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
           "--log", str(tmp_path / "triton.log"), "--workdir", str(tmp_path / "work"), "--model-control", "explicit"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        process.stdout.readline()
        assert "ready: gRPC" in process.stdout.readline(), (tmp_path / "triton.log").read_text()[-2000:]
        manifest = Manifest.load(f"{exported_cpu.repository}/{MANIFEST_FILE}")
        load = [sys.executable, "-m", "training.export", "load-triton", "--url", f"127.0.0.1:{grpc_port}",
                "--repository", exported_cpu.repository]
        done = subprocess.run(load, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"serves intent_pipeline version 1 ({manifest.model_version})" in done.stdout
        other = tmp_path / "other"  # a repository whose manifest Triton does not serve
        other.mkdir()
        Manifest.from_dict({**manifest.to_dict(), "labels": ["x"] * len(manifest.labels)}).write(other / MANIFEST_FILE)
        refused = subprocess.run([*load[:-1], str(other)], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "manifest_hash" in refused.stderr, refused.stderr
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
