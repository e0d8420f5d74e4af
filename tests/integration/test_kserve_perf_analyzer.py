"""Triton's perf_analyzer (2.51) drives the KServe transformer over gRPC: it reads the reranker's ModelConfig and
ModelMetadata from the transformer, sends the BYTES tensors as raw_input_contents and parses the answers as
raw_output_contents (what `make bench` measures the transformer tier with)."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness.bench_all import pa_failure, parse_pa_csv
from harness.workload import event_json

TILES = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan"]


def test_perf_analyzer_measures_the_transformer_over_grpc(transformer, visitor, tmp_path):
    from training.export.perf import ensure_perf_analyzer

    try:
        pa = ensure_perf_analyzer()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the perf_analyzer binary cannot be obtained here: {exc}")
    _, grpc_port = transformer
    _, events = visitor
    context = json.dumps({"segment": "mass", "tenure_months": 12, "products_held": ["checking"]})
    requests = [{"EVENTS": [event_json(e) for e in events[:50]], "TILE_IDS": TILES, "CONTEXT": [context]},
                {"EVENTS": [], "TILE_IDS": TILES[:2]}]
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"data": [{k: {"content": v, "shape": [len(v)]} for k, v in r.items()}
                                         for r in requests]}))
    out = tmp_path / "pa.csv"
    cmd = [str(pa.binary), "-m", "reranker", "-u", f"127.0.0.1:{grpc_port}", "-i", "grpc", "--input-data", str(data),
           "-b", "1", "--concurrency-range", "1:1", "--measurement-mode", "count_windows",
           "--measurement-request-count", "20", "--stability-percentage", "100", "--max-trials", "3", "-f", str(out)]
    done = subprocess.run(cmd, env=pa.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, pa_failure(done.stdout, done.stderr) + "\n" + done.stdout[-2000:]
    metrics = parse_pa_csv(out.read_text())
    assert metrics["throughput_per_s"] > 0 and metrics["p50_ms"] > 0, metrics


def test_tritonclient_reads_the_config_and_raw_outputs(transformer, visitor):
    import numpy as np
    import tritonclient.grpc as triton_grpc

    _, grpc_port = transformer
    _, events = visitor
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    config = client.get_model_config("reranker", as_json=True)["config"]
    assert [i["name"] for i in config["input"]] == ["CUSTOMER_ID", "EVENTS", "TILE_IDS", "CONTEXT"]
    # CUSTOMER_ID or EVENTS (the stateless variant these benchmarks drive): both optional for perf_analyzer
    assert [bool(i.get("optional")) for i in config["input"]] == [True, True, False, True]
    assert {i["data_type"] for i in config["input"]} == {"TYPE_STRING"}
    metadata = client.get_model_metadata("reranker", as_json=True)
    assert [o["name"] for o in metadata["outputs"]] == ["TILE_IDS", "SCORES", "INTENTS", "INTENT_PROBS",
                                                        "SESSIONS_USED", "DEGRADED"]
    with pytest.raises(triton_grpc.InferenceServerException):
        client.get_model_config("nope")

    def infer(evs: list[str], tiles: list[str]):
        inputs = []
        for name, values in (("EVENTS", evs), ("TILE_IDS", tiles)):
            tensor = triton_grpc.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
            inputs.append(tensor)
        return client.infer("reranker", inputs, client_timeout=30)

    full = infer([event_json(e) for e in events[:50]], TILES)
    assert sorted(x.decode() for x in full.as_numpy("TILE_IDS")) == sorted(TILES)
    scores = full.as_numpy("SCORES")
    assert scores.dtype == np.float32 and list(scores) == sorted(scores, reverse=True)
    assert not full.as_numpy("DEGRADED")[0] and full.as_numpy("SESSIONS_USED")[0] > 0
    assert len(full.as_numpy("INTENTS")) == 3
    empty = infer([], TILES[:2])  # no sessions: INTENTS is empty, yet every output is raw and lines up
    assert empty.as_numpy("INTENTS").shape == (0,) and empty.as_numpy("SESSIONS_USED")[0] == 0
    assert len(empty.get_response().raw_output_contents) == 6 and len(empty.as_numpy("SCORES")) == 2
    client.close()
