"""OpenTelemetry traces and Prometheus metrics of the gateway, configured by the standard `OTEL_*` variables.

Traces: `OTEL_TRACES_EXPORTER` (`otlp` by default when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, `none` turns
tracing off) with `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, or `http/protobuf`), `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` and `OTEL_BSP_*` are read by the SDK itself. Without
an endpoint nothing is set up and every span below is the API's no-op (no cost worth measuring).

The gRPC server interceptor (the one `GrpcAioInstrumentorServer` installs) continues a caller's W3C
`traceparent`; the gateway adds spans `store.lookup`, `featurize`, `triton.infer` and `rank`, and
`triton.infer` hands its context to Triton as a `traceparent` header (`inject_headers`), for sampled spans
only: start Triton with `--trace-config rate=0` and it traces exactly those, so a sampler such as
`OTEL_TRACES_SAMPLER=parentbased_traceidratio` (the chart's default, ratio 0.01) decides for the whole
trace, and a caller that sends a sampled `traceparent` always gets its trace whole. Triton 2.51 drops
that header from gRPC metadata for a few percent of requests; over its HTTP endpoint it keeps every one, so
give the gateway `--triton-trace-url http://HOST:8000`: sampled requests go there, the others stay on gRPC
(reports/tracing.json).

Metrics (`OTEL_METRICS_EXPORTER=prometheus`; host and port from `OTEL_EXPORTER_PROMETHEUS_HOST`/`_PORT`,
default 0.0.0.0:9464): `gateway_requests_total{method,code}`, `gateway_request_duration_seconds{method}`,
`gateway_degraded_answers_total{method}`, `gateway_sessions_embedded_total{path}` (read: a cache miss on the
request path; write: embedded in the background) and `gateway_embed_pending`, served with `prometheus_client`
on their own registry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("gateway")
tracer = trace.get_tracer("gateway")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The gateway's request count, latency histogram and degraded answers, on one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests", "RPCs handled, by method and status code",
                                ["method", "code"], registry=self.registry)
        self.latency = Histogram("gateway_request_duration_seconds", "RPC latency in seconds, by method",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.degraded = Counter("gateway_degraded_answers", "answers served without the model (degraded)",
                                ["method"], registry=self.registry)
        self.embedded = Counter("gateway_sessions_embedded", "sessions sent to Triton, by path: read (a cache "
                                "miss while answering) or write (embedded in the background as events arrive)",
                                ["path"], registry=self.registry)
        self.embed_pending = Gauge("gateway_embed_pending", "visitors waiting for write-behind embedding",
                                   registry=self.registry)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)


METRICS = Metrics()


@dataclass(frozen=True)
class TelemetrySettings:
    """What the `OTEL_*` environment asks for (read once, in main())."""

    traces: str  # "otlp" or "none"
    protocol: str
    metrics: str  # "prometheus" or "none"
    prometheus_host: str
    prometheus_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        env = os.environ if env is None else env
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        traces = env.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none").strip().lower()
        if traces == "otlp" and not endpoint:
            traces = "none"
        if traces not in ("otlp", "none"):
            raise ValueError(f"OTEL_TRACES_EXPORTER={traces!r}: the gateway supports otlp or none")
        protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                    or "grpc").strip().lower()
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")
        metrics = env.get("OTEL_METRICS_EXPORTER", "none").strip().lower()
        if metrics not in ("prometheus", "none"):
            raise ValueError(f"OTEL_METRICS_EXPORTER={metrics!r}: the gateway supports prometheus or none")
        return cls(traces, protocol, metrics, env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0"),
                   int(env.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464")))

    @property
    def tracing(self) -> bool:
        return self.traces == "otlp"


def setup(settings: TelemetrySettings):
    """Install the global tracer provider (if traces are on) and start /metrics (if asked); the provider."""
    provider = None
    if settings.tracing:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if settings.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "intent-gateway"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        log.info("tracing on: OTLP/%s to %s", settings.protocol, os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if settings.metrics == "prometheus":
        METRICS.serve(settings.prometheus_host, settings.prometheus_port)
        log.info("metrics on http://%s:%d/metrics", settings.prometheus_host, settings.prometheus_port)
    return provider


def server_interceptors(settings: TelemetrySettings) -> list[grpc.aio.ServerInterceptor]:
    """The metrics interceptor, and the OpenTelemetry one first when tracing is on."""
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.tracing:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.append(aio_server_interceptor())
    interceptors.append(MetricsInterceptor(METRICS))
    return interceptors


_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)


def child_span(name: str, kind: trace.SpanKind = trace.SpanKind.INTERNAL):
    """A child of the current span, as `with child_span("rank") as span:`; a shared no-op when the current
    span is not recording (tracing off, or not sampled: a parent-based sampler would drop the child anyway).
    Unsampled requests then skip the SDK's span machinery (a few percent of throughput on a 2-core box)."""
    if not trace.get_current_span().is_recording():
        return _NO_SPAN
    return tracer.start_as_current_span(name, kind=kind)


def inject_headers() -> dict[str, str]:
    """The current span's context as W3C headers (`traceparent`, ...) for an outgoing call; {} when the span
    is not sampled (or tracing is off): Triton traces every request that carries a context, whatever its
    sampled flag, so with Triton at `rate=0` it traces exactly the requests the gateway sampled."""
    if not trace.get_current_span().get_span_context().trace_flags.sampled:
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every unary RPC by method and final status code and records its latency."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        behavior, metrics = handler.unary_unary, self.metrics

        async def observed(request, context):
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                return await behavior(request, context)
            except BaseException:
                code = _code_of(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                metrics.requests.labels(method, code.name).inc()
                metrics.latency.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(observed, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def _code_of(context) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:  # older grpc.aio contexts have no code()
        return None
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), None)
