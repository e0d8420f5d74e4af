"""The error model (gateway/rpc.py) over real gRPC on loopback: a tiny IntentGatewayService servicer raises each
kind of failure behind the ErrorModelInterceptor, and the caller sees the documented status, never UNKNOWN,
always with a request id; undecodable bodies are INVALID_ARGUMENT; the deadline is honoured and readable."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway import rpc
from gateway.api import SERVICE_NAME, pb, pb_grpc
from gateway.errors import REQUEST_ID_KEY, field_violations, invalid_argument, retry_delay_s
from gateway.rpc import ErrorModelInterceptor
from gateway.server import store_location
from gateway.store import StoreUnavailable

SECRET = "C0000042-secret"
"""Put in an exception's message: it must reach neither the caller nor the log."""


class Tiny(pb_grpc.IntentGatewayServiceServicer):
    """RankTiles does what its customer_id says."""

    cancelled: ClassVar[list[str]] = []

    async def RankTiles(self, request, context):
        kind = request.customer_id
        if kind == "invalid":
            raise invalid_argument([("tile_ids[0]", "unknown tile")])
        if kind == "store":
            raise StoreUnavailable(f"redis at {SECRET} refused")
        if kind == "crash":
            raise RuntimeError(f"bug with {SECRET}")
        if kind == "timeout-inside":
            raise TimeoutError("a socket timeout of its own")
        if kind == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no scope")
        if kind == "guarded":  # what the servicer's guard does with a GatewayError: abort with its rich status
            await context.abort_with_status(invalid_argument([("customer_id", "required")]).status)
        if kind == "slow":
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                self.cancelled.append(kind)
                raise
        left = rpc.remaining_s()
        return pb.RankTilesResponse(model_version="none" if left is None else f"{left:.3f}")


class ParsedOnly(grpc.aio.ServerInterceptor):
    """Stands for the auth interceptor: its wrapper needs the parsed request."""

    def __init__(self) -> None:
        self.seen: list[type] = []

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler
        inner = handler.unary_unary

        async def check(request, context):
            self.seen.append(type(request))
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(check, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def serve_and_call(calls, parsed: ParsedOnly | None = None, settle_s: float = 0.0, seen: list | None = None) -> list:
    """Serve Tiny behind the interceptor (and `parsed` inside it); run each (method, body, timeout) as a raw
    bytes call; the (reply or error, trailing metadata) of each. `seen` gets Tiny.cancelled as it was
    `settle_s` after the last call, before the server stopped (stopping cancels whatever still runs)."""

    async def run() -> list:
        server = grpc.aio.server(interceptors=[ErrorModelInterceptor(), *([parsed] if parsed else [])])
        pb_grpc.add_IntentGatewayServiceServicer_to_server(Tiny(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        out = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for method, body, timeout in calls:
                    call = channel.unary_unary(f"/{SERVICE_NAME}/{method}")(body, timeout=timeout)
                    try:
                        reply = pb.RankTilesResponse.FromString(await call)
                    except grpc.aio.AioRpcError as exc:
                        reply = exc
                    out.append((reply, dict(await call.trailing_metadata() or ())))
            await asyncio.sleep(settle_s)
            if seen is not None:
                seen.extend(Tiny.cancelled)
        finally:
            await server.stop(None)
        return out

    return asyncio.run(run())


def rank(kind: str, timeout: float | None = 5.0) -> tuple:
    return ("RankTiles", pb.RankTilesRequest(customer_id=kind).SerializeToString(), timeout)


@pytest.mark.parametrize("kind, code", [("invalid", grpc.StatusCode.INVALID_ARGUMENT),
                                        ("store", grpc.StatusCode.UNAVAILABLE),
                                        ("crash", grpc.StatusCode.INTERNAL),
                                        ("timeout-inside", grpc.StatusCode.INTERNAL),
                                        ("abort", grpc.StatusCode.PERMISSION_DENIED),
                                        ("guarded", grpc.StatusCode.INVALID_ARGUMENT)])
def test_each_failure_has_its_documented_status_and_a_request_id(kind, code, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="gateway")
    [(error, trailers)] = serve_and_call([rank(kind)])
    assert isinstance(error, grpc.aio.AioRpcError) and error.code() == code
    rid = trailers[REQUEST_ID_KEY]
    assert len(rid) == 32 and SECRET not in error.details()
    if kind == "invalid":
        assert field_violations(error) == [("tile_ids[0]", "unknown tile")]
    if kind == "guarded":  # an abort inside keeps its details beside the request id
        assert field_violations(error) == [("customer_id", "required")]
    if kind == "store":
        assert retry_delay_s(error) == 1.0
    if code == grpc.StatusCode.INTERNAL:
        assert error.details() == f"internal error, request id {rid}"
        info = error_details_pb2.RequestInfo()
        rpc_status.from_call(error).details[0].Unpack(info)
        assert info.request_id == rid
        [record] = [r for r in caplog.records if rid in r.getMessage()]
        assert "test_rpc.py" in record.getMessage() and SECRET not in record.getMessage()


def test_undecodable_bodies_are_invalid_argument_and_the_inner_handler_sees_parsed_requests() -> None:
    parsed = ParsedOnly()
    results = serve_and_call([("RankTiles", b"\x6e", 5), ("RecordEvents", b"\xff\xff\xff", 5), rank("ok")], parsed)
    for (error, trailers), name in zip(results[:2], ("RankTilesRequest", "RecordEventsRequest"), strict=True):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == f"request body is not a valid {name}"
        assert trailers[REQUEST_ID_KEY]
    reply, trailers = results[2]
    assert isinstance(reply, pb.RankTilesResponse) and trailers[REQUEST_ID_KEY]
    assert parsed.seen == [pb.RankTilesRequest]  # the undecodable ones never reached it


def test_request_ids_differ_per_call() -> None:
    results = serve_and_call([rank("ok"), rank("ok")])
    assert results[0][1][REQUEST_ID_KEY] != results[1][1][REQUEST_ID_KEY]


def test_the_deadline_is_readable_inside_and_bounds_the_call() -> None:
    (reply, _), (none, _), (slow, _) = serve_and_call([rank("ok", 3.0), rank("ok", None), rank("slow", 0.5)])
    assert 2.0 < float(reply.model_version) <= 3.1  # grpc rounds the deadline it passes on
    assert none.model_version == "none"
    assert slow.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_server_stops_working_on_a_call_at_its_deadline() -> None:
    Tiny.cancelled.clear()
    seen: list[str] = []
    [(error, _)] = serve_and_call([rank("slow", 0.3)], settle_s=0.5, seen=seen)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert seen == ["slow"]  # its 10 s of work was cut at the deadline (by grpc.aio and the interceptor alike)
    assert rpc.remaining_s() is None  # outside a call


def test_other_services_pass_through_untouched() -> None:
    interceptor = ErrorModelInterceptor()
    assert "/grpc.health.v1.Health/Check" not in interceptor.inputs
    assert f"/{SERVICE_NAME}/RankTiles" in interceptor.inputs


@pytest.mark.parametrize("url, shown", [("redis://:s3cret@redis.serving.svc:6379/0", "redis://redis.serving.svc:6379"),
                                        ("redis://user:s3cret@10.0.0.5/1", "redis://10.0.0.5"),
                                        ("sqlite:///var/lib/gateway/s3cret.db", "sqlite"),
                                        ("sqlite://.run/gateway.db", "sqlite")])
def test_the_start_up_log_names_the_store_by_scheme_and_host_only(url, shown) -> None:
    assert store_location(url) == shown and "s3cret" not in store_location(url)


def test_startup_errors_mask_url_credentials_and_keep_the_rest():
    from gateway.errors import startup_error

    text = startup_error(ValueError("cannot reach redis://:s3cret@10.0.0.1:6379/0 (see http://docs/x)"))
    assert text == "ValueError: cannot reach redis://***@10.0.0.1:6379/0 (see http://docs/x)"
    assert "s3cret" not in text
