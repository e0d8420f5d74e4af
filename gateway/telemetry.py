"""OpenTelemetry traces and Prometheus metrics of the gateway, configured by the standard `OTEL_*` variables.

Traces: `OTEL_TRACES_EXPORTER` (`otlp` by default when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, `none` turns
tracing off) with `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, or `http/protobuf`), `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` and `OTEL_BSP_*` are read by the SDK itself. Without
an endpoint nothing is set up and every span below is the API's no-op (no cost worth measuring).

The server interceptor (`TelemetryInterceptor`, or opentelemetry-instrumentation-grpc's with
`grpc_instrumentation: opentelemetry`) continues a caller's W3C `traceparent`; the gateway adds spans
`store.lookup`, `featurize`, `triton.infer` and `rank`, and `triton.infer` hands its context to Triton as a
`traceparent` header (`inject_headers`), for sampled spans only: start Triton with `--trace-config rate=0`
and it traces exactly those, so a sampler such as
`OTEL_TRACES_SAMPLER=parentbased_traceidratio` (the chart's default, ratio 0.01) decides for the whole
trace, and a caller that sends a sampled `traceparent` always gets its trace whole. Triton 2.51 drops
that header from gRPC metadata for a few percent of requests; over its HTTP endpoint it keeps every one, so
give the gateway `--triton-trace-url http://HOST:8000`: sampled requests go there, the others stay on gRPC
(reports/tracing.json).

Metrics (`OTEL_METRICS_EXPORTER=prometheus`; host and port from `OTEL_EXPORTER_PROMETHEUS_HOST`/`_PORT`,
default 0.0.0.0:9464): `gateway_requests_total{method,code}`, `gateway_request_duration_seconds{method}`,
`gateway_degraded_answers_total{method}`, `gateway_sessions_embedded_total{path}` (read: a cache miss on the
request path; write: embedded in the background), `gateway_embed_pending`, `gateway_embed_dropped_total`,
`gateway_store_unavailable_total{operation}`, `gateway_pruned_total{kind}` and `gateway_forgotten_total`, served
with `prometheus_client` on their own registry.

No span attribute or log line here carries a request's ids or payload: spans hold the method, counts, the
status code and the peer's address; the gateway's own exceptions carry no ids (gateway/privacy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import grpc
from opentelemetry import context as otel_context
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
        self.embed_dropped = Counter("gateway_embed_dropped", "visitors not queued for write-behind embedding "
                                     "because max_pending_writes were already waiting", registry=self.registry)
        self.store_unavailable = Counter("gateway_store_unavailable", "store calls that failed (unreachable, "
                                         "timeout, locked), by operation", ["operation"], registry=self.registry)
        self.pruned = Counter("gateway_pruned", "records deleted by retention, by kind (events, links, cache, "
                              "tombstones)", ["kind"], registry=self.registry)
        self.forgotten = Counter("gateway_forgotten", "ForgetCustomer calls that deleted or tombstoned a "
                                 "customer", registry=self.registry)

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
        log.info("tracing on: OTLP/%s to %s", settings.protocol,
                 _location(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                           or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""))
    if settings.metrics == "prometheus":
        METRICS.serve(settings.prometheus_host, settings.prometheus_port)
        log.info("metrics on http://%s:%d/metrics", settings.prometheus_host, settings.prometheus_port)
    return provider


def _location(url: str) -> str:
    """scheme://host:port of a URL, without credentials, path or query (what a log line may show)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}" if parts.scheme \
        else "(unset)"


INSTRUMENTATIONS = ("gateway", "opentelemetry")


def server_interceptors(settings: TelemetrySettings,
                        instrumentation: str = "gateway") -> list[grpc.aio.ServerInterceptor]:
    """Metrics always, and a server span per RPC when tracing is on, made by `instrumentation`: `gateway`
    (TelemetryInterceptor does both) or `opentelemetry` (the upstream aio interceptor, then ours for metrics)."""
    if instrumentation not in INSTRUMENTATIONS:
        raise ValueError(f"grpc_instrumentation={instrumentation!r}: use one of {', '.join(INSTRUMENTATIONS)}")
    if settings.tracing and instrumentation == "opentelemetry":
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        return [aio_server_interceptor(), TelemetryInterceptor(METRICS)]
    return [TelemetryInterceptor(METRICS, tracing=settings.tracing)]


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


# Span status for a server: ERROR only for codes that mean the server failed (OpenTelemetry's gRPC
# conventions); a caller's mistake (INVALID_ARGUMENT, NOT_FOUND, ...) leaves the status unset.
_SERVER_ERRORS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Per unary RPC: its count by method and final status code, its latency, and (tracing on) a SERVER span
    that continues the caller's W3C context from the gRPC metadata.

    One interceptor in place of opentelemetry-instrumentation-grpc's plus a metrics one, because on the
    hot path the library's costs more than the gateway's own work for an untraced request: per call it
    builds two metadata dicts, a wrapt proxy of the context and the peer attributes, and attaches two
    contexts. Here a wrapped handler is built once per method; the metadata is scanned once, and only
    for the propagator's fields; peer attributes are added only to spans that are recorded; the status
    code is read from the context after the call, so `abort_with_status` is recorded too (the library's
    proxy misses it). Span names and `rpc.*` attributes follow the library's.
    """

    def __init__(self, metrics: Metrics, tracing: bool = False) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self._fields = frozenset(propagate.get_global_textmap().fields)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        full_method = handler_call_details.method
        cached = self._wrapped.get(full_method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._wrap(full_method, handler))
            self._wrapped[full_method] = cached
        return cached[1]

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = full_method.lstrip("/").rpartition("/")
        behavior, metrics, fields = handler.unary_unary, self.metrics, self._fields
        requests_ok = metrics.requests.labels(method, grpc.StatusCode.OK.name)
        latency = metrics.latency.labels(method)
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

        def record(code: grpc.StatusCode, started: float) -> None:
            latency.observe(time.perf_counter() - started)
            (requests_ok if code is grpc.StatusCode.OK else metrics.requests.labels(method, code.name)).inc()

        async def measured(request, context):
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                reply = await behavior(request, context)
                code = _code_of(context) or code  # a handler may set_code() and return
                return reply
            except BaseException as exc:
                code = _final_code(context, exc)
                raise
            finally:
                record(code, started)

        async def traced(request, context):
            started, code = time.perf_counter(), grpc.StatusCode.OK
            parent = _remote_context(context.invocation_metadata(), fields)
            with tracer.start_as_current_span(full_method, context=parent, kind=trace.SpanKind.SERVER,
                                              attributes=attributes, record_exception=False,
                                              set_status_on_exception=False) as span:
                try:
                    reply = await behavior(request, context)
                    code = _code_of(context) or code
                    return reply
                except BaseException as exc:
                    code = _final_code(context, exc)
                    if span.is_recording() and not isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError):
                        # the class only: an exception's message may quote a request's ids or payload
                        span.add_event("exception", {"exception.type": type(exc).__name__})
                    raise
                finally:
                    record(code, started)
                    if span.is_recording():
                        _finish_server_span(span, context, code)

        return grpc.unary_unary_rpc_method_handler(traced if self.tracing else measured,
                                                   request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


_ROOT = otel_context.Context()


def _remote_context(metadata, fields: frozenset[str]) -> otel_context.Context:
    """The caller's context from the propagator's metadata keys, or an empty one: a call without a context
    starts its own trace, whatever context the server's task inherited (grpc.aio handlers inherit the one
    `server.start()` ran in)."""
    carrier = {key: value for key, value in metadata or () if key in fields}
    return propagate.extract(carrier) if carrier else _ROOT


def _final_code(context, exc: BaseException) -> grpc.StatusCode:
    """The status a failed call ends with: the one it aborted with; DEADLINE_EXCEEDED or CANCELLED when its
    task was cancelled (by the deadline, or by the client); UNKNOWN for a crash."""
    if isinstance(exc, asyncio.CancelledError):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    return _code_of(context) or grpc.StatusCode.UNKNOWN


def _finish_server_span(span: trace.Span, context, code: grpc.StatusCode) -> None:
    """Attributes only a recorded span needs: the final status code, the peer and the user agent."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
    peer = context.peer() or ""
    if peer.startswith(("ipv4:", "ipv6:")):
        host, _, port = peer.split(",")[0].split(":", 1)[1].rpartition(":")
        span.set_attributes({"net.peer.ip": unquote(host), "net.peer.port": port})
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent":
            span.set_attribute("rpc.user_agent", value)


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _code_of(context) -> grpc.StatusCode | None:
    """The code a handler set (set_code, abort), None if it set none."""
    try:
        code = context.code()
    except Exception:  # older grpc.aio contexts have no code()
        return None
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _CODES.get(code)
