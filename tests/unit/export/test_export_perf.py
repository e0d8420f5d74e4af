"""bench-triton helpers: perf_analyzer input data, metrics parsing, the report table."""

import json

import numpy as np

from training.export.perf import markdown_table, write_input_data
from training.export.triton_server import model_metric, parse_prometheus


def test_input_data_has_one_entry_per_session_with_its_own_shape(tmp_path):
    encoded = [(np.ones((n, 9), np.int64) * n, np.full((n, 6), 0.5, np.float32)) for n in (1, 3, 64)]
    summary = write_input_data(encoded, tmp_path / "data.json")
    doc = json.loads((tmp_path / "data.json").read_text())
    assert [e["CATEGORICAL"]["shape"] for e in doc["data"]] == [[1, 9], [3, 9], [64, 9]]
    assert doc["data"][1]["CATEGORICAL"]["content"] == [3] * 27
    assert doc["data"][2]["CONTINUOUS"]["content"][:2] == [0.5, 0.5]
    assert summary == {"sessions": 3, "mean_len": 22.67, "p50_len": 3, "p90_len": 51, "max_len": 64}


def test_prometheus_text_is_parsed_per_model():
    text = """# HELP nv_inference_exec_count Number of model executions
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="session_encoder",version="1"} 12
nv_inference_exec_count{model="intent_head",version="1"} 30
nv_inference_request_success{model="session_encoder",version="1"} 64
"""
    metrics = parse_prometheus(text)
    assert model_metric(metrics, "nv_inference_exec_count", "session_encoder") == 12
    assert model_metric(metrics, "nv_inference_request_success", "session_encoder") == 64
    assert model_metric(metrics, "nv_inference_request_success", "intent_head") == 0


def test_markdown_table_lists_every_run():
    row = {"concurrency": 1, "throughput_infer_per_s": 1000.0, "p50_ms": 0.9, "p90_ms": 1.1, "p99_ms": 2.0,
           "server_queue_ms": 0.0, "encoder_avg_batch": 1.0}
    report = {"model": "intent_pipeline", "protocol": "grpc", "triton": "2.51.0", "machine": {"cpus": 2},
              "input_data": {"sessions": 3, "mean_len": 5, "p50_len": 4, "p90_len": 9, "max_len": 12},
              "perf_analyzer": {"args": ["-b", "1"]}, "throughput_ratio_c16_over_c1": 3.1,
              "variants": {"dynamic_batching": [row, {**row, "concurrency": 16}], "no_batching": [row]}}
    table = markdown_table(report)
    assert table.count("| dynamic_batching |") == 2 and table.count("| no_batching |") == 1
    assert "**3.1**" in table
