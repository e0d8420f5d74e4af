"""gRPC errors with rich details (google.rpc.Status): callers see which field was wrong and why."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class GatewayError(Exception):
    """Raised by the service logic; turned into a status by the servicer."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


def _status(code: int, message: str, detail) -> grpc.Status:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=[packed]))


def invalid_argument(violations: Sequence[tuple[str, str]]) -> GatewayError:
    """INVALID_ARGUMENT with a BadRequest listing every (field, description); the message names the first few."""
    detail = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations])
    shown = "; ".join(f"{f}: {d}" for f, d in violations[:3])
    more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
    return GatewayError(_status(code_pb2.INVALID_ARGUMENT, f"invalid request: {shown}{more}", detail))


def not_found(resource_type: str, what: str) -> GatewayError:
    """NOT_FOUND naming the kind of subject, never its id (ids stay out of errors, logs and spans)."""
    detail = error_details_pb2.ResourceInfo(resource_type=resource_type, description=what)
    return GatewayError(_status(code_pb2.NOT_FOUND, f"{resource_type}: {what}", detail))


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
