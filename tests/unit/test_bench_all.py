"""make bench's report building, on perf_analyzer output captured from a real run here (no servers, no timing)."""

from __future__ import annotations

import json

import pytest

from harness.bench_all import markdown, pa_failure, parse_pa_csv, write_bytes_input_data

# `perf_analyzer -m intent_pipeline -i grpc --concurrency-range 4:4 -f out.csv` against Triton 2.51 on 2 CPUs
CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
4,1386.81,4,1053,0,42,1222,538,1,2645,3799,4535,7511
"""


def test_a_perf_analyzer_csv_row_becomes_throughput_and_percentiles_in_ms():
    assert parse_pa_csv(CSV) == {"concurrency": 4, "throughput_per_s": 1386.8, "p50_ms": 2.645, "p90_ms": 3.799,
                                 "p99_ms": 7.511, "server_queue_ms": 0.0, "server_compute_ms": 1.222}


def test_a_sweep_csv_keeps_every_level_and_an_empty_one_is_an_error():
    sweep = CSV + "8,1477.2,4,2100,900,40,2200,500,1,4940,7000,9000,13140\n"
    assert [r["concurrency"] for r in parse_pa_csv(sweep)["levels"]] == [4, 8]
    with pytest.raises(ValueError):
        parse_pa_csv(CSV.splitlines()[0] + "\n")


def test_the_reason_perf_analyzer_stopped_is_its_error_line():
    # what perf_analyzer 2.51 printed against the KServe transformer over gRPC and over HTTP
    assert pa_failure("error: failed to get model config: Method not found!\n", "") == \
        "error: failed to get model config: Method not found!"
    out = " Successfully read data for 1 stream/streams with 112 step/steps.\n" \
          "error: failed to get model config: attempt to access non-existing object member 'error'\n"
    assert pa_failure(out, "").endswith("non-existing object member 'error'")
    assert pa_failure("", "") == "no output"


def test_bytes_input_data_gives_each_request_its_own_shapes(tmp_path):
    requests = [{"EVENTS": ['{"url":"/a"}', '{"url":"/b"}'], "TILE_IDS": ["t1", "t2", "t3"], "CONTEXT": ["{}"]},
                {"EVENTS": [], "TILE_IDS": ["t1"]}]
    write_bytes_input_data(requests, tmp_path / "in.json")
    data = json.loads((tmp_path / "in.json").read_text())["data"]
    assert data[0]["EVENTS"] == {"content": ['{"url":"/a"}', '{"url":"/b"}'], "shape": [2]}
    assert data[0]["TILE_IDS"]["shape"] == [3] and data[1]["EVENTS"]["shape"] == [0] and "CONTEXT" not in data[1]


def test_the_markdown_report_is_one_table_with_the_machine_and_the_notes():
    row = {"tier": "triton", "target": "intent_pipeline", "protocol": "v2 grpc", "tool": "perf_analyzer",
           **parse_pa_csv(CSV)}
    fallback = {"tier": "transformer", "target": "reranker", "protocol": "v2 grpc", "tool": "v2 load generator",
                "concurrency": 4, "throughput_per_s": 116.0, "p50_ms": 21.87, "p99_ms": 139.7}
    report = {"rows": [row, fallback], "machine": {"cpus": 2, "processor": "x86_64", "platform": "Linux",
                                                   "cuda": None, "load_avg_1m_at_start": 1.0,
                                                   "load_avg_1m_at_end": 4.5},
              "notes": ["perf_analyzer cannot drive the KServe transformer: ..."]}
    text = markdown(report)
    assert "2 CPUs (x86_64), Linux, no GPU; load average (1 min) 1.0 at start, 4.5 at end" in text
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert table[0].startswith("| tier | target | protocol | tool | concurrency | throughput /s | p50 ms | p99 ms")
    assert table[2] == "| triton | intent_pipeline | v2 grpc | perf_analyzer | 4 | 1387 | 2.65 | 7.51 |"
    assert table[3] == "| transformer | reranker | v2 grpc | v2 load generator | 4 | 116 | 21.87 | 139.70 |"
    assert "cannot drive the KServe transformer" in text
