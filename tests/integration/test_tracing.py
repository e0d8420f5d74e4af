"""One trace id from a caller's client span through the gateway (its own process) into Triton's compute spans.

A local OTLP/HTTP receiver takes the gateway's protobuf export and Triton's JSON export; the gateway sends its
sampled requests to Triton over HTTP (the transport that keeps every traceparent in Triton 2.51), the
others over gRPC, as the chart deploys it.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.api import pb, pb_grpc
from harness.client import bearer
from harness.otlp_receiver import OtlpReceiver
from harness.processes import metrics_env, start_transformer, stop
from harness.tracing_check import GATEWAY_SERVICE, otel_env, trace_report, tracing_gateway, triton_trace_args
from harness.workload import event_json
from training.export.triton_server import TritonServer, free_port

DAY_MS = 86_400_000
TILES = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan"]


@pytest.fixture(scope="module")
def traced(gw_repository, tmp_path_factory):
    with OtlpReceiver() as rx, TritonServer(gw_repository, workdir=tmp_path_factory.mktemp("traced_triton"),
                                            extra_args=triton_trace_args(rx.endpoint)) as triton:
        yield rx, triton


def test_one_trace_from_the_caller_into_tritons_compute_spans(traced, gw_artifacts, visitor, tmp_path):
    rx, triton = traced
    _, events = visitor
    metrics_port = free_port()
    env = {**otel_env(rx.endpoint), **metrics_env(metrics_port)}
    gw = tracing_gateway(gw_artifacts, triton, events[-1].ts + DAY_MS, tmp_path, env,
                         trace_url=f"http://{triton.http_url}")
    try:
        gw.seed(events[:40], "C-traced")
        client = TracerProvider()
        memory = InMemorySpanExporter()
        client.add_span_processor(SimpleSpanProcessor(memory))
        with client.get_tracer("test-client").start_as_current_span("client.rank") as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            with gw.new_channel() as channel:
                reply = pb_grpc.IntentGatewayServiceStub(channel).RankTiles(
                    pb.RankTilesRequest(customer_id="C-traced", tile_ids=TILES), timeout=10,
                    metadata=list(carrier.items()))
        assert not reply.degraded and reply.sessions_used > 0
        trace_id = format(span.get_span_context().trace_id, "032x")
        client_span_id = format(span.get_span_context().span_id, "016x")

        spans = rx.wait_for(lambda ss: trace_report(ss, [trace_id])["whole"] == 1, timeout=15)
        assert trace_report(spans, [trace_id])["whole"] == 1, sorted({(s.service, s.name) for s in spans})
        mine = [s for s in spans if s.trace_id == trace_id]
        gateway_spans = {s.name: s for s in mine if s.service == GATEWAY_SERVICE}
        server = next(s for s in gateway_spans.values() if s.name.endswith("RankTiles"))
        assert server.parent_id == client_span_id
        assert {"store.lookup", "featurize", "triton.infer", "rank"} <= set(gateway_spans)
        triton_names = [s.name.lower() for s in mine if s.service != GATEWAY_SERVICE]
        assert sum("compute" in n for n in triton_names) >= 2  # encoder and head
        assert len(triton_names) >= 5, triton_names

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'gateway_requests_total{code="OK",method="RankTiles"}' in text
        assert "gateway_request_duration_seconds_bucket" in text
    finally:
        gw.stop()


def test_triton_traces_only_what_the_gateway_sampled(traced, gw_artifacts, visitor, tmp_path):
    """Triton at rate=0 traces exactly the requests that carry a sampled context: a caller's unsampled
    traceparent leaves no span anywhere, a sampled one a whole trace, with the gateway sampling nothing new."""
    rx, triton = traced
    _, events = visitor
    gw = tracing_gateway(gw_artifacts, triton, events[-1].ts + DAY_MS, tmp_path,
                         otel_env(rx.endpoint, ratio=0.0), trace_url=f"http://{triton.http_url}")
    try:
        gw.seed(events[:40], "C-sampled")
        before = {s.trace_id for s in rx.spans()}
        unsampled = [secrets.token_hex(16) for _ in range(5)]
        sampled = [secrets.token_hex(16) for _ in range(5)]
        with gw.new_channel() as channel:
            stub = pb_grpc.IntentGatewayServiceStub(channel)
            for trace_id, flags in [*((t, "00") for t in unsampled), *((t, "01") for t in sampled)]:
                header = f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"
                reply = stub.RankTiles(pb.RankTilesRequest(customer_id="C-sampled", tile_ids=TILES), timeout=10,
                                       metadata=[("traceparent", header)])
                assert not reply.degraded
            for _ in range(5):  # no caller context, and the gateway samples none of its own (ratio 0)
                assert not stub.RankTiles(pb.RankTilesRequest(customer_id="C-sampled", tile_ids=TILES),
                                          timeout=10).degraded
        spans = rx.wait_for(lambda ss: trace_report(ss, sampled)["whole"] == len(sampled), timeout=15)
        time.sleep(1.5)  # Triton exports every 0.5 s: anything it traced by mistake has arrived
        spans = rx.spans()
        assert trace_report(spans, sampled)["whole"] == len(sampled)
        new = {s.trace_id for s in spans} - before
        assert new == set(sampled), "Triton or the gateway traced a request nobody sampled"
    finally:
        gw.stop()


def test_the_kserve_transformer_continues_the_callers_trace_into_triton(traced, gw_artifacts, visitor,
                                                                        tmp_path):
    """REST v2 request with a caller traceparent -> the transformer's server span -> Triton (gRPC metadata)."""
    rx, triton = traced
    _, events = visitor
    env = {**otel_env(rx.endpoint), "OTEL_SERVICE_NAME": "intent-reranker"}
    process, http_port, _ = start_transformer(triton, gw_artifacts, events[-1].ts + DAY_MS,
                                              tmp_path / "kserve.log", env=env)
    token = f"Bearer {bearer(tmp_path / 'pki', ['rank:read'])}"  # start_transformer's PKI
    body = json.dumps({"inputs": [
        {"name": "EVENTS", "shape": [min(len(events), 40)], "datatype": "BYTES", "data": [event_json(e)
                                                                                          for e in events[:40]]},
        {"name": "TILE_IDS", "shape": [len(TILES)], "datatype": "BYTES", "data": TILES}]}).encode()
    callers = []
    try:
        for _ in range(5):  # Triton 2.51 drops a few traceparents sent as gRPC metadata: one whole trace suffices
            trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/reranker/infer", data=body,
                                         headers={"Content-Type": "application/json", "Authorization": token,
                                                  "traceparent": f"00-{trace_id}-{parent}-01"})
            with urllib.request.urlopen(req, timeout=10) as response:
                out = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
            assert out["DEGRADED"] == [False] and out["SESSIONS_USED"][0] > 0
            callers.append((trace_id, parent))
    finally:
        stop(process)

    def whole(spans) -> list[str]:
        ids = []
        for trace_id, _ in callers:
            mine = [s for s in spans if s.trace_id == trace_id]
            infer = {s.span_id for s in mine if s.service == "intent-reranker" and s.name == "triton.infer"}
            triton_spans = [s for s in mine if s.service == "triton"]
            if any("compute" in s.name.lower() for s in triton_spans) and any(
                    s.parent_id in infer for s in triton_spans):
                ids.append(trace_id)
        return ids

    spans = rx.wait_for(lambda ss: len(whole(ss)) == len(callers), timeout=10)
    assert whole(spans), sorted({(s.service, s.name) for s in spans})
    for trace_id, parent in callers:  # every request continued its caller's trace in the transformer
        server = [s for s in spans if s.trace_id == trace_id and s.name == "reranker.infer"]
        assert len(server) == 1 and server[0].parent_id == parent
        names = {s.name for s in spans if s.trace_id == trace_id and s.service == "intent-reranker"}
        assert {"featurize", "triton.infer"} <= names
