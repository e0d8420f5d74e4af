"""How every call of the typed service runs: decoding, the error model, the deadline, the request id.

`ErrorModelInterceptor` wraps each unary method of the services it is given (the gateway's typed service):

- the request arrives as bytes (the handler is re-registered with no deserializer) and is decoded here, so an
  undecodable body is INVALID_ARGUMENT "request body is not a valid <Message>" instead of UNKNOWN DecodeError;
  the handlers inside (auth's check, the servicer) still get the parsed message;
- every failure becomes a documented status (docs/serving.md, "Errors"), never UNKNOWN:
  GatewayError -> its own status; StoreUnavailable -> UNAVAILABLE with google.rpc.RetryInfo; the call's
  deadline passing -> DEADLINE_EXCEEDED; an abort inside (auth, the servicer's guard) -> as aborted; anything
  else -> INTERNAL "internal error, request id <id>", the frames of its traceback logged under that id (the
  exception's message is not logged: it may quote a request's ids or payload);
- every answer, success or error, carries the request id in the trailing metadata `x-request-id` (generated
  here, never taken from the caller: a caller's header could carry an id into the log);
- `remaining_s()` tells the code under the call how long its caller still waits (the service caps its Triton
  budget with it), and the call is cancelled when its deadline passes.

It must sit outside the auth interceptor (which expects a parsed request) and inside the telemetry one (which
then records the final status code); gateway/server.py installs it so.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gateway.api import SERVICE_NAME, pb
from gateway.errors import (
    REQUEST_ID_KEY,
    GatewayError,
    deadline_exceeded,
    internal,
    invalid_body,
    unavailable,
)
from gateway.store import StoreUnavailable

log = logging.getLogger("gateway")
STORE_RETRY_AFTER_S = 1.0
"""The retry advice of UNAVAILABLE when the store cannot be reached."""
WRAPPERS_PER_METHOD = 4
"""Error-model wrappers kept per method (see ErrorModelInterceptor._wrapper)."""
_deadline: ContextVar[float | None] = ContextVar("gateway_call_deadline", default=None)
_request_id: ContextVar[str] = ContextVar("gateway_request_id", default="")
Behavior = Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]


def remaining_s() -> float | None:
    """Seconds left before the current call's deadline; None outside a call or without a deadline."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def request_id() -> str:
    """The current call's request id ("" outside a call)."""
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def _frames(exc: BaseException) -> str:
    """Where `exc` (and what caused it) was raised: type names and frames, no exception messages."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
        parts.append(f"{type(exc).__module__}.{type(exc).__qualname__}\n{frames}")
        exc = exc.__cause__ or exc.__context__
    return "caused by ".join(parts)


class ErrorModelInterceptor(grpc.aio.ServerInterceptor):
    """The error model of the module docstring for every unary method of `services` (default: the typed
    gateway service); other services (health, reflection) pass through untouched."""

    def __init__(self, services: Iterable[ServiceDescriptor] | None = None,
                 store_retry_after_s: float = STORE_RETRY_AFTER_S) -> None:
        services = list(services) if services is not None else [pb.DESCRIPTOR.services_by_name[
            SERVICE_NAME.rpartition(".")[2]]]
        self.inputs = {f"/{s.full_name}/{m.name}": m.input_type.name for s in services for m in s.methods}
        self.store_retry_after_s = store_retry_after_s
        self._wrapped: dict[str, OrderedDict[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method not in self.inputs:
            return handler
        return self._wrapper(method, handler)

    def _wrapper(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The wrapper of `handler`, built once: a few per method, least recently used out, because the handler
        below is the registered one for every call but a refused one (auth builds each refusal afresh)."""
        cache = self._wrapped.setdefault(method, OrderedDict())
        wrapped = cache.get(handler)
        if wrapped is None:
            wrapped = cache[handler] = self._wrap(method, handler)
            if len(cache) > WRAPPERS_PER_METHOD:
                cache.popitem(last=False)
        else:
            cache.move_to_end(handler)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        decode, behavior, name = handler.request_deserializer, handler.unary_unary, self.inputs[method]

        async def call(raw, context: grpc.aio.ServicerContext):
            rid = new_request_id()
            rid_token = _request_id.set(rid)
            remaining = context.time_remaining()
            deadline_token = _deadline.set(None if remaining is None else time.monotonic() + remaining)
            context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
            try:
                return await self._run(method, name, decode, behavior, raw, CallContext(context, rid), rid,
                                       remaining)
            finally:
                _deadline.reset(deadline_token)
                _request_id.reset(rid_token)

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=None,
                                                   response_serializer=handler.response_serializer)

    async def _run(self, method: str, name: str, decode, behavior: Behavior, raw, context: CallContext,
                   rid: str, remaining: float | None):
        scope = asyncio.timeout(remaining) if remaining is not None else None
        try:
            try:
                request = decode(raw) if decode is not None and isinstance(raw, bytes) else raw
            except Exception:  # DecodeError, and whatever else a malformed body makes the parser raise
                raise invalid_body(name) from None
            if scope is None:
                return await behavior(request, context)
            async with scope:
                return await behavior(request, context)
        except grpc.aio.AbortError:  # aborted inside (auth, the servicer's guard): its status, with the id
            raise
        except GatewayError as exc:
            status = exc.status
        except StoreUnavailable:
            status = unavailable("session store unavailable", self.store_retry_after_s).status
        except TimeoutError as exc:
            if scope is None or not scope.expired():
                status = self._internal(method, rid, exc)
            else:
                status = deadline_exceeded().status
        except asyncio.CancelledError:
            raise  # the client went away, or the server is stopping: there is nobody to answer
        except Exception as exc:
            status = self._internal(method, rid, exc)
        await context.abort_with_status(status)

    @staticmethod
    def _internal(method: str, rid: str, exc: BaseException) -> grpc.Status:
        log.error("internal error, request id %s, in %s: %s", rid, method, _frames(exc))
        return internal(rid).status


class CallContext:
    """The servicer context the handlers under the interceptor get: the call's own, except that whatever trailing
    metadata they set or abort with also carries the request id (an abort's metadata replaces what was set)."""

    def __init__(self, context: grpc.aio.ServicerContext, request_id: str) -> None:
        self._context, self._pair = context, (REQUEST_ID_KEY, request_id)

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    def _with_id(self, metadata) -> tuple:
        return (*(pair for pair in metadata or () if pair[0] != REQUEST_ID_KEY), self._pair)

    def set_trailing_metadata(self, metadata) -> None:
        self._context.set_trailing_metadata(self._with_id(metadata))

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        current = trailing_metadata or self._context.trailing_metadata()
        await self._context.abort(code, details, self._with_id(current))

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self._context.abort(status.code, status.details, self._with_id(status.trailing_metadata))
