"""The gateway's server interceptor over real gRPC on loopback: the span it makes for each RPC (parent, name,
rpc.* attributes, status) and the metrics it counts, for answers, aborts and crashes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import grpc
import pytest
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

from gateway import telemetry
from gateway.telemetry import Metrics, TelemetryInterceptor, TelemetrySettings, server_interceptors

SERVICE = "probe.v1.Probe"


async def _ok(request: bytes, context) -> bytes:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}".encode()  # what the handler sees as its trace


async def _invalid(request: bytes, context) -> bytes:
    await context.abort_with_status(rpc_status.to_status(status_pb2.Status(code=code_pb2.INVALID_ARGUMENT,
                                                                           message="tile_ids: empty")))
    return b""


async def _unavailable(request: bytes, context) -> bytes:
    await context.abort(grpc.StatusCode.UNAVAILABLE, "store down")
    return b""


async def _crash(request: bytes, context) -> bytes:
    raise RuntimeError("bug")


async def _not_found(request: bytes, context) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)  # set, not raised
    context.set_details("no such customer")
    return b""


async def _slow(request: bytes, context) -> bytes:
    await asyncio.sleep(5)
    return b""


HANDLERS: dict[str, Callable] = {"Ok": _ok, "Invalid": _invalid, "Unavailable": _unavailable, "Crash": _crash,
                                 "NotFound": _not_found, "Slow": _slow}


@pytest.fixture
def spans(monkeypatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(telemetry, "tracer", provider.get_tracer("gateway"))  # the global provider is set once
    return memory


def call(interceptor: TelemetryInterceptor, method: str, metadata=None, times: int = 1, timeout: float = 5,
         started_in_span: bool = False, settle_s: float = 0.0) -> list:
    """Serve HANDLERS behind `interceptor` on loopback and call `method`; the replies or raised errors.
    `started_in_span`: start the server inside an active span (its handlers' tasks inherit that context);
    `settle_s`: time for the server side to finish after the client gave up (deadlines)."""

    async def run() -> list:
        server = grpc.aio.server(interceptors=[interceptor])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in HANDLERS.items()}),))
        port = server.add_insecure_port("127.0.0.1:0")
        if started_in_span:
            with telemetry.tracer.start_as_current_span("startup"):
                await server.start()
        else:
            await server.start()
        out: list = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = channel.unary_unary(f"/{SERVICE}/{method}")
                for _ in range(times):
                    try:
                        out.append(await stub(b"", timeout=timeout, metadata=metadata))
                    except grpc.aio.AioRpcError as exc:
                        out.append(exc)
            await asyncio.sleep(settle_s)
        finally:
            await server.stop(None)
        return out

    return asyncio.run(run())


def traceparent(flags: str = "01") -> tuple[str, str, list[tuple[str, str]]]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, [("traceparent", f"00-{trace_id}-{span_id}-{flags}")]


def test_a_callers_trace_continues_in_the_server_span(spans) -> None:
    trace_id, parent_id, metadata = traceparent()
    [reply] = call(TelemetryInterceptor(Metrics(), tracing=True), "Ok", metadata)
    assert reply.decode() == trace_id  # the handler runs inside the caller's trace
    [span] = spans.get_finished_spans()
    assert span.name == f"/{SERVICE}/Ok" and span.kind == trace.SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == trace_id and f"{span.parent.span_id:016x}" == parent_id
    attrs = dict(span.attributes)
    assert {k: attrs[k] for k in ("rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code")} == {
        "rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": "Ok", "rpc.grpc.status_code": 0}
    assert attrs["net.peer.ip"] == "127.0.0.1" and attrs["rpc.user_agent"].startswith("grpc-")
    assert span.status.status_code == trace.StatusCode.UNSET


def test_without_a_caller_context_the_server_starts_a_trace(spans) -> None:
    """Even when the server was started inside a span: its handlers' tasks inherit that context in grpc.aio,
    and calls without a context must not all join the start-up trace."""
    [reply] = call(TelemetryInterceptor(Metrics(), tracing=True), "Ok", started_in_span=True)
    startup, [span] = spans.get_finished_spans()[:1], spans.get_finished_spans()[1:]
    assert startup[0].name == "startup"
    assert span.parent is None and reply.decode() == f"{span.context.trace_id:032x}"
    assert span.context.trace_id != startup[0].context.trace_id


def test_a_callers_unsampled_context_records_nothing_but_keeps_its_trace_id(spans) -> None:
    trace_id, _, metadata = traceparent(flags="00")
    [reply] = call(TelemetryInterceptor(Metrics(), tracing=True), "Ok", metadata)
    assert reply.decode() == trace_id and spans.get_finished_spans() == ()


@pytest.mark.parametrize("method, code, error", [("Invalid", grpc.StatusCode.INVALID_ARGUMENT, False),
                                                 ("Unavailable", grpc.StatusCode.UNAVAILABLE, True),
                                                 ("Crash", grpc.StatusCode.UNKNOWN, True)])
def test_failures_are_counted_and_marked_on_the_span(spans, method, code, error) -> None:
    """A caller's mistake leaves the span's status unset, a server failure marks it ERROR (OpenTelemetry's
    gRPC conventions); `abort_with_status` counts too. A crash is recorded as an exception event."""
    metrics = Metrics()
    [reply] = call(TelemetryInterceptor(metrics, tracing=True), method)
    assert isinstance(reply, grpc.aio.AioRpcError) and reply.code() == code
    [span] = spans.get_finished_spans()
    assert span.attributes["rpc.grpc.status_code"] == code.value[0]
    assert (span.status.status_code == trace.StatusCode.ERROR) == error
    assert [e.name for e in span.events] == (["exception"] if method == "Crash" else [])
    assert metrics.registry.get_sample_value("gateway_requests_total", {"method": method, "code": code.name}) == 1
    assert metrics.registry.get_sample_value("gateway_request_duration_seconds_count", {"method": method}) == 1


def test_with_tracing_off_only_metrics_are_kept(spans) -> None:
    metrics = Metrics()
    replies = call(TelemetryInterceptor(metrics), "Ok", traceparent()[2], times=3)
    assert all(r == f"{0:032x}".encode() for r in replies)  # no span, not even the caller's context
    assert spans.get_finished_spans() == ()
    assert metrics.registry.get_sample_value("gateway_requests_total", {"method": "Ok", "code": "OK"}) == 3


def test_the_sampler_decides_new_traces_and_a_callers_sampled_flag_wins(monkeypatch) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))  # samples no new trace of its own
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(telemetry, "tracer", provider.get_tracer("gateway"))
    interceptor = TelemetryInterceptor(Metrics(), tracing=True)
    call(interceptor, "Ok", times=2)
    assert memory.get_finished_spans() == ()
    trace_id, _, metadata = traceparent()
    call(interceptor, "Ok", metadata)
    assert [f"{s.context.trace_id:032x}" for s in memory.get_finished_spans()] == [trace_id]


def test_a_code_set_without_raising_is_the_one_recorded(spans) -> None:
    metrics = Metrics()
    [reply] = call(TelemetryInterceptor(metrics, tracing=True), "NotFound")
    assert reply.code() == grpc.StatusCode.NOT_FOUND
    [span] = spans.get_finished_spans()
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert metrics.registry.get_sample_value("gateway_requests_total", {"method": "NotFound", "code": "NOT_FOUND"}) == 1


def test_a_missed_deadline_is_recorded_as_such_not_as_a_client_cancel(spans) -> None:
    """grpc.aio cancels the handler when the caller's deadline passes: that is DEADLINE_EXCEEDED (a server
    failure: ERROR on the span), with no exception event."""
    metrics = Metrics()
    [reply] = call(TelemetryInterceptor(metrics, tracing=True), "Slow", timeout=0.2, settle_s=0.5)
    assert reply.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    [span] = spans.get_finished_spans()
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert span.status.status_code == trace.StatusCode.ERROR and list(span.events) == []
    assert metrics.registry.get_sample_value("gateway_requests_total",
                                             {"method": "Slow", "code": "DEADLINE_EXCEEDED"}) == 1


def test_instrumentation_is_chosen_by_setting() -> None:
    on = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    [ours] = server_interceptors(on)
    assert isinstance(ours, TelemetryInterceptor) and ours.tracing
    upstream, metrics = server_interceptors(on, "opentelemetry")
    assert type(upstream).__module__.startswith("opentelemetry.instrumentation.grpc") and not metrics.tracing
    [off] = server_interceptors(TelemetrySettings.from_env({}), "opentelemetry")
    assert not off.tracing
    with pytest.raises(ValueError, match="grpc_instrumentation"):
        server_interceptors(on, "jaeger")


def test_each_method_is_wrapped_once_not_per_call(monkeypatch) -> None:
    """The per-call cost is what tracing overhead is made of: the wrapped handler is built once per method."""
    interceptor = TelemetryInterceptor(Metrics(), tracing=True)
    built: list[str] = []
    wrap = interceptor._wrap
    monkeypatch.setattr(interceptor, "_wrap", lambda method, handler: built.append(method) or wrap(method, handler))
    call(interceptor, "Ok", times=4)
    assert built == [f"/{SERVICE}/Ok"]


def test_the_interceptor_benchmark_serves_every_setup() -> None:
    """`make bench-interceptor` end to end, tiny: its server process answers on every setup's port."""
    from harness.bench_interceptor import SETUPS, measure

    report = measure(rounds=1, calls=20, ratio=0.01)
    assert list(report["server_cpu_us_per_call"]) == list(SETUPS)
    assert all(len(v) == 1 and v[0] >= 0 for v in report["rounds"].values())
