"""`python -m training.export serve-triton`: serves until SIGTERM, then stops cleanly (exit 0)."""

import signal
import subprocess
import sys
import time

import tritonclient.grpc as grpcclient

from training.export.triton_server import free_port


def test_serve_triton_becomes_ready_and_stops_on_sigterm(exported_cpu, tmp_path):
    grpc_port = free_port()
    log = tmp_path / "triton.log"
    cmd = [sys.executable, "-m", "training.export", "serve-triton", "--repository", exported_cpu.repository,
           "--grpc-port", str(grpc_port), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
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
