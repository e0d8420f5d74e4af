"""gRPC errors with rich details (google.rpc.Status): callers see which field was wrong and why.

The error model (docs/serving.md, "Errors"): every failure a caller can see is one of these helpers' statuses,
mapped in one place (gateway/rpc.py). Details are bounded: a whole status, message and details together,
stays well under 8 KB of trailers (gRPC clients refuse trailers over their metadata limit, 8-16 KB, and then
report RESOURCE_EXHAUSTED with no details at all), and no message or detail carries a customer id, visitor id
or event payload: violations name the field and the rule, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

MAX_DETAILS_BYTES = 4096
"""Serialized google.rpc.Status budget: base64 in `grpc-status-details-bin` makes it ~5.5 KB of trailers,
plus the message (at most MAX_MESSAGE_CHARS, percent-encoded) under 8 KB."""
MAX_VIOLATIONS = 50
"""Most field violations listed; the rest are counted in a final "(and N more)" entry."""
MAX_FIELD_CHARS = 160
MAX_DESCRIPTION_CHARS = 200
MAX_MESSAGE_CHARS = 512
MORE_FIELD = "..."
"""The field of the final entry that counts the violations left out."""
REQUEST_ID_KEY = "x-request-id"


class GatewayError(Exception):
    """Raised by the service logic; turned into its status by gateway/rpc.py (and the servicer's guard)."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


def _status(code: int, message: str, *details) -> grpc.Status:
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    return rpc_status.to_status(status_pb2.Status(code=code, message=_clip(message, MAX_MESSAGE_CHARS),
                                                  details=packed))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def bad_request(violations: Sequence[tuple[str, str]]) -> error_details_pb2.BadRequest:
    """A BadRequest of the first violations that fit MAX_DETAILS_BYTES / MAX_VIOLATIONS, then one entry
    `("...", "(and N more)")` counting the rest."""
    detail = error_details_pb2.BadRequest()
    budget = MAX_DETAILS_BYTES - 64  # room for the count entry and the Status envelope
    for n, (field, description) in enumerate(violations):
        entry = error_details_pb2.BadRequest.FieldViolation(field=_clip(field, MAX_FIELD_CHARS),
                                                            description=_clip(description, MAX_DESCRIPTION_CHARS))
        if n >= MAX_VIOLATIONS or detail.ByteSize() + entry.ByteSize() + 4 > budget:
            detail.field_violations.add(field=MORE_FIELD, description=f"(and {len(violations) - n} more)")
            break
        detail.field_violations.append(entry)
    return detail


def invalid_argument(violations: Sequence[tuple[str, str]]) -> GatewayError:
    """INVALID_ARGUMENT with a BadRequest listing the (field, description) pairs (capped, see `bad_request`);
    the message names the first few and counts the rest."""
    shown = "; ".join(f"{_clip(f, MAX_FIELD_CHARS)}: {_clip(d, 120)}" for f, d in violations[:3])
    more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
    return GatewayError(_status(code_pb2.INVALID_ARGUMENT, f"invalid request: {shown}{more}",
                                bad_request(violations)))


def invalid_body(message_name: str) -> GatewayError:
    """INVALID_ARGUMENT for a request body that does not decode as its method's message."""
    return GatewayError(_status(code_pb2.INVALID_ARGUMENT, f"request body is not a valid {message_name}",
                                bad_request([("(body)", f"not a serialized {message_name}")])))


def resource_exhausted(field: str, description: str) -> GatewayError:
    """RESOURCE_EXHAUSTED naming the field over a limit (a BadRequest with that one violation)."""
    return GatewayError(_status(code_pb2.RESOURCE_EXHAUSTED, f"limit exceeded: {field}: {description}",
                                bad_request([(field, description)])))


def unavailable(what: str, retry_after_s: float = 1.0) -> GatewayError:
    """UNAVAILABLE with google.rpc.RetryInfo: the caller may retry the same request after `retry_after_s`
    (writes are idempotent: a retried batch is deduplicated)."""
    seconds = int(retry_after_s)
    delay = duration_pb2.Duration(seconds=seconds, nanos=int((retry_after_s - seconds) * 1e9))
    return GatewayError(_status(code_pb2.UNAVAILABLE, f"{what}; retry in {retry_after_s:g} s",
                                error_details_pb2.RetryInfo(retry_delay=delay)))


def deadline_exceeded(what: str = "the call's deadline passed before it completed") -> GatewayError:
    return GatewayError(_status(code_pb2.DEADLINE_EXCEEDED, what))


def internal(request_id: str) -> GatewayError:
    """INTERNAL naming only the request id (the server's log has the traceback under it), never internals."""
    return GatewayError(_status(code_pb2.INTERNAL, f"internal error, request id {request_id}",
                                error_details_pb2.RequestInfo(request_id=request_id)))


def not_found(resource_type: str, what: str) -> GatewayError:
    """NOT_FOUND naming the kind of subject, never its id (ids stay out of errors, logs and spans)."""
    detail = error_details_pb2.ResourceInfo(resource_type=resource_type, description=what)
    return GatewayError(_status(code_pb2.NOT_FOUND, f"{resource_type}: {what}", detail))


def failed_precondition(subject: str, what: str) -> GatewayError:
    """FAILED_PRECONDITION (a forgotten customer or visitor) naming the kind of subject, never its id."""
    detail = error_details_pb2.PreconditionFailure(violations=[
        error_details_pb2.PreconditionFailure.Violation(type="FORGOTTEN", subject=subject, description=what)])
    return GatewayError(_status(code_pb2.FAILED_PRECONDITION, f"{subject}: {what}", detail))


def field_violations(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of a BadRequest detail in an error received by a client."""
    status = rpc_status.from_call(error)
    out = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def retry_delay_s(error: grpc.aio.AioRpcError | grpc.RpcError) -> float | None:
    """The RetryInfo delay of an error received by a client, None without one."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def startup_error(exc: BaseException) -> str:
    """A start-up failure as the log says it: its class and message, with any URL's credentials masked (a
    message may quote a setting, such as a store URL with its password)."""
    masked = _URL_CREDENTIALS.sub(r"\g<scheme>***@", str(exc))
    return f"{type(exc).__name__}: {masked}"
