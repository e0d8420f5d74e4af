"""The gateway's telemetry settings and its outgoing trace context: only a sampled span reaches Triton."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN

from gateway import telemetry
from gateway.telemetry import TelemetrySettings, child_span, inject_headers
from gateway.triton_client import TritonIntentClient
from training.core.contract import Event
from training.core.featurizer import Featurizer, FeaturizerConfig


def test_a_sampled_span_sends_its_traceparent() -> None:
    tracer = TracerProvider(sampler=ALWAYS_ON).get_tracer("t")
    with tracer.start_as_current_span("triton.infer") as span:
        headers = inject_headers()
    ctx = span.get_span_context()
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


def test_an_unsampled_span_sends_nothing() -> None:
    """Triton traces any request with a context, sampled flag or not: an unsampled one must carry none."""
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    with tracer.start_as_current_span("triton.infer") as span:
        assert span.get_span_context().is_valid
        assert inject_headers() == {}


def test_outside_any_span_nothing_is_sent() -> None:
    assert inject_headers() == {}


def test_ratio_sampler_sends_about_its_share() -> None:
    tracer = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.1))).get_tracer("t")
    sent = 0
    for _ in range(2000):
        with tracer.start_as_current_span("triton.infer"):
            sent += bool(inject_headers())
    assert 120 <= sent <= 280  # 10% of 2000, well inside +-6 standard deviations


def test_settings_from_env() -> None:
    assert not TelemetrySettings.from_env({}).tracing
    on = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                     "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert on.tracing and on.protocol == "http/protobuf"
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})


class _Recorder:
    """Stands in for one Triton transport: records the headers each call carried."""

    def __init__(self) -> None:
        self.calls: list[dict | None] = []

    async def infer(self, model, categorical, continuous, timeout_s, headers):
        self.calls.append(headers)
        n = categorical.shape[0]
        return SimpleNamespace(as_numpy=lambda name: np.zeros((n, 4 if name == "EMBEDDING" else 2), np.float32))


@pytest.mark.parametrize("sampler, via", [(ALWAYS_ON, "traced"), (ALWAYS_OFF, "transport")])
def test_sampled_requests_take_the_trace_transport_with_their_context(sampler, via) -> None:
    """With a trace_url, a sampled span's request goes there (HTTP keeps every traceparent in Triton 2.51)
    carrying its context; an unsampled one stays on the default transport and carries nothing."""
    events = [Event(anonymous_id="a", ts=i * 10_000, event_type="page_view", url="/checking") for i in range(3)]
    client = TritonIntentClient.__new__(TritonIntentClient)  # no network: the transports are recorders
    client.model, client.max_batch = "intent_pipeline", 64
    client.featurizer = Featurizer.fit([events], FeaturizerConfig(max_len=5, min_count=1))
    client.transport, client.traced = _Recorder(), _Recorder()
    tracer = TracerProvider(sampler=sampler).get_tracer("t")
    with tracer.start_as_current_span("RankTiles"):
        out = asyncio.run(client.infer([events, events[:2]], 1.0))
    assert out.embeddings.shape == (2, 4)
    used, idle = (client.traced, client.transport) if via == "traced" else (client.transport, client.traced)
    assert len(used.calls) == 1 and idle.calls == []
    assert ("traceparent" in (used.calls[0] or {})) == (via == "traced")


def test_child_spans_exist_only_under_a_recording_span(monkeypatch) -> None:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    monkeypatch.setattr(telemetry, "tracer", provider.get_tracer("gateway"))  # the global provider is set once
    with provider.get_tracer("t").start_as_current_span("RankTiles") as parent, child_span("rank") as span:
        assert span.is_recording() and span.get_span_context().trace_id == parent.get_span_context().trace_id
    off = TracerProvider(sampler=ALWAYS_OFF)
    with off.get_tracer("t").start_as_current_span("RankTiles"), child_span("rank") as span:
        assert span is INVALID_SPAN  # the shared no-op: no SDK work for an unsampled request
    with child_span("rank") as span:  # tracing off altogether
        assert not span.is_recording()


def test_paired_overhead_cancels_drift_between_rounds() -> None:
    from harness.stats import paired_overhead_pct

    off = [500.0, 300.0, 520.0, 310.0]  # the machine slows down and recovers between rounds
    traced = [475.0, 285.0, 494.0, 294.5]  # always 5% below the round beside it
    row = paired_overhead_pct(off, traced)
    assert row["median"] == 5.0 and row["interquartile"] == row["median_ci90"] == [5.0, 5.0]


def test_the_interval_of_the_overhead_widens_with_noise() -> None:
    from harness.stats import paired_overhead_pct

    rng = np.random.default_rng(1)
    off = rng.uniform(300, 500, 30)
    quiet = paired_overhead_pct(off, off * 0.97)
    noisy = paired_overhead_pct(off, off * 0.97 * rng.normal(1, 0.05, 30))
    low, high = noisy["median_ci90"]
    assert quiet["median_ci90"] == [3.0, 3.0] and low < 3.0 < high and low <= noisy["median"] <= high
