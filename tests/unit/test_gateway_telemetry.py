"""The gateway's telemetry settings and its outgoing trace context: only a sampled span reaches Triton."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased

from gateway.telemetry import TelemetrySettings, inject_headers


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
