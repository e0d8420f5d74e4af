"""Who may call, proved on a real gateway process over loopback (mTLS, bearer tokens; no Triton needed: RankTiles
answers degraded without it). Every case of harness.client.AUTH_CASES is one test here.

For every RPC: no credentials -> UNAUTHENTICATED; a valid token without the method's scope -> PERMISSION_DENIED
naming it; an expired token and one signed by another key -> UNAUTHENTICATED; with the scope -> not an auth error.
A client without a certificate cannot connect under mtls+jwt; health and reflection answer without a token;
`auth: none` serves plaintext, `auth: jwt` TLS without client certificates; a login event in RecordEvents needs
identity:link too.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from gateway.api import SERVICE_NAME, pb, pb_grpc
from gateway.auth import SCOPES
from gateway.errors import field_violations
from gateway.pki import LocalPKI
from harness import client
from harness.processes import GatewayProcess
from harness.workload import to_message
from training.export.triton_server import free_port

DAY_MS = 86_400_000
AUTH_ERRORS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
ANON, CUSTOMER = "anon-auth-test-5521", "C-auth-test-5521"


def requests(events) -> dict[str, object]:
    """One well-formed request per RPC (answered OK or NOT_FOUND once authorized)."""
    return {
        "RecordEvents": pb.RecordEventsRequest(events=[to_message(e.model_copy(update={"anonymous_id": ANON}))
                                                       for e in events[:3]]),
        "LinkIdentity": pb.LinkIdentityRequest(anonymous_id=ANON, customer_id=CUSTOMER),
        "UnlinkIdentity": pb.UnlinkIdentityRequest(anonymous_id=ANON, customer_id=CUSTOMER),
        "GetSessions": pb.GetSessionsRequest(anonymous_id=ANON),
        "RankTiles": pb.RankTilesRequest(customer_id=CUSTOMER, tile_ids=["tile_auto_loan", "tile_open_checking"]),
        "ForgetCustomer": pb.ForgetCustomerRequest(customer_id="C-auth-test-forgotten"),
    }


@pytest.fixture(scope="module")
def gateway(gw_artifacts, gw_repository, visitor, tmp_path_factory):
    """The embedded default (mtls+jwt, local PKI) with no Triton behind it."""
    work = tmp_path_factory.mktemp("auth")
    gw = GatewayProcess(gw_artifacts, f"sqlite://{work / 'gw.db'}", f"127.0.0.1:{free_port()}",
                        visitor[1][-1].ts + DAY_MS, manifest=gw_repository / "manifest.json", triton_timeout_s=0.3,
                        health_listen=f"127.0.0.1:{free_port()}")
    yield gw.start()
    gw.stop()
    log = gw.log_path.read_text()
    assert CUSTOMER not in log and ANON not in log and "Bearer" not in log and "eyJ" not in log


@pytest.fixture(scope="module")
def calls(visitor) -> dict[str, object]:
    return requests(visitor[1])


def call(channel: grpc.Channel, method: str, request, metadata=None):
    rpc = getattr(pb_grpc.IntentGatewayServiceStub(channel), method)
    return rpc(request, timeout=10, metadata=metadata)


def error_of(channel: grpc.Channel, method: str, request, metadata=None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request, metadata)
    return info.value


def tls_only(gw: GatewayProcess, client_certificate: bool = True) -> grpc.Channel:
    """TLS (and the client certificate), no token: the caller sets its own metadata."""
    return grpc.secure_channel(gw.address, client.transport_credentials(gw.pki_dir, gw.auth, client_certificate))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _method_case(gw: GatewayProcess, calls: dict, method: str, case: str, other_pki: LocalPKI) -> None:
    request, scope = calls[method], SCOPES[method]
    if case == "granted":
        with gw.new_channel(scopes=[scope]) as channel:
            try:
                call(channel, method, request)
            except grpc.RpcError as exc:
                assert exc.code() not in AUTH_ERRORS, exc.details()
        return
    if case == "missing_scope":
        with gw.new_channel(scopes=[s for s in client.ALL_SCOPES if s != scope]) as channel:
            error = error_of(channel, method, request)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and scope in error.details()
        info = error_details_pb2.ErrorInfo()
        rpc_status.from_call(error).details[0].Unpack(info)
        assert info.reason == "MISSING_SCOPE" and info.metadata["scope"] == scope
        return
    tokens = {"no_credentials": None,
              "expired_token": LocalPKI(gw.pki_dir).mint_token(client.ALL_SCOPES, ttl_s=-3600),
              "wrong_signing_key": other_pki.mint_token(client.ALL_SCOPES)}
    with tls_only(gw) as channel:
        token = tokens[case]
        error = error_of(channel, method, request, None if token is None else bearer(token))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert CUSTOMER not in error.details() and ANON not in error.details()


METHOD_CASES = [(m, c) for m, c in client.AUTH_CASES if m != "*"]
CONNECTION_CASES = [c for m, c in client.AUTH_CASES if m == "*"]


@pytest.mark.parametrize(("method", "case"), METHOD_CASES, ids=[f"{m}-{c}" for m, c in METHOD_CASES])
def test_every_rpc(gateway, calls, method, case, tmp_path_factory):
    other = LocalPKI(tmp_path_factory.getbasetemp() / "auth-other-pki").ensure()
    _method_case(gateway, calls, method, case, other)


def _no_client_certificate(gw: GatewayProcess, tmp_path: Path) -> None:
    with tls_only(gw, client_certificate=False) as channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def _health_without_token(gw: GatewayProcess, tmp_path: Path) -> None:
    with tls_only(gw) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _reflection_without_token(gw: GatewayProcess, tmp_path: Path) -> None:
    with tls_only(gw) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                 timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert SERVICE_NAME in names


def _auth_none_plaintext(gw: GatewayProcess, tmp_path: Path) -> None:
    plain = GatewayProcess(gw.flags[gw.flags.index("--artifacts") + 1], f"sqlite://{tmp_path / 'none.db'}",
                           f"127.0.0.1:{free_port()}", as_of(gw), manifest=gw.flags[gw.flags.index("--manifest") + 1],
                           triton_timeout_s=0.3, auth="none").start()
    try:
        with grpc.insecure_channel(plain.address) as channel:  # no TLS, no token
            reply = call(channel, "RankTiles", pb.RankTilesRequest(customer_id="C-plain", tile_ids=["tile_auto_loan"]))
        assert [t.tile_id for t in reply.tiles] == ["tile_auto_loan"]
    finally:
        plain.stop()
    assert "AUTH IS OFF" in plain.log_path.read_text()


def _auth_jwt_without_client_certificate(gw: GatewayProcess, tmp_path: Path) -> None:
    """auth jwt (a mesh terminates mTLS in front): TLS without a client certificate, tokens still checked."""
    tls = GatewayProcess(gw.flags[gw.flags.index("--artifacts") + 1], f"sqlite://{tmp_path / 'jwt.db'}",
                         f"127.0.0.1:{free_port()}", as_of(gw), manifest=gw.flags[gw.flags.index("--manifest") + 1],
                         triton_timeout_s=0.3, auth="jwt").start()
    request = pb.RankTilesRequest(customer_id="C-jwt", tile_ids=["tile_auto_loan"])
    try:
        with tls_only(tls, client_certificate=False) as channel:
            assert error_of(channel, "RankTiles", request).code() == grpc.StatusCode.UNAUTHENTICATED
            token = LocalPKI(tls.pki_dir).mint_token(["rank:read"])
            assert [t.tile_id for t in call(channel, "RankTiles", request, bearer(token)).tiles] == ["tile_auto_loan"]
        with grpc.insecure_channel(tls.address) as plaintext, pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # still TLS
    finally:
        tls.stop()


def _undecodable_body_without_token(gw: GatewayProcess, tmp_path: Path) -> None:
    """An unauthenticated caller's body is not even parsed: UNAUTHENTICATED, not a decoding error."""
    with tls_only(gw) as channel:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/RecordEvents")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\x6e", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with gw.new_channel() as channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(f"/{SERVICE_NAME}/RecordEvents")(b"\x6e", timeout=5)
    assert info.value.code() not in AUTH_ERRORS  # authorized: the error model's answer (INVALID_ARGUMENT)


def as_of(gw: GatewayProcess) -> int:
    return int(gw.flags[gw.flags.index("--as-of") + 1])


def _login_event_without_identity_link(gw: GatewayProcess, tmp_path: Path) -> None:
    ts = str(as_of(gw) - DAY_MS)
    events = [pb.WebEvent(anonymous_id=ANON + "-login", ts=ts, event_type="page_view",
                          url="https://bank.example/checking"),
              pb.WebEvent(anonymous_id=ANON + "-login", ts=ts, event_type="login", url="https://bank.example/login",
                          customer_id=CUSTOMER)]
    with gw.new_channel(scopes=["events:write"]) as channel:
        error = error_of(channel, "RecordEvents", pb.RecordEventsRequest(events=events))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "identity:link" in error.details()
        assert [f for f, _ in field_violations(error)] == ["events[1].customer_id"]
        ok = call(channel, "RecordEvents", pb.RecordEventsRequest(events=events[:1]))  # no login: events:write
        assert ok.accepted == 1
    with gw.new_channel(scopes=["events:write", "identity:link"]) as channel:
        assert call(channel, "RecordEvents", pb.RecordEventsRequest(events=events)).accepted >= 1


CONNECTION_TESTS = {"no_client_certificate": _no_client_certificate, "health_without_token": _health_without_token,
                    "reflection_without_token": _reflection_without_token, "auth_none_plaintext": _auth_none_plaintext,
                    "undecodable_body_without_token": _undecodable_body_without_token,
                    "auth_jwt_without_client_certificate": _auth_jwt_without_client_certificate,
                    "login_event_without_identity_link": _login_event_without_identity_link}


def test_every_case_has_a_test():
    assert set(CONNECTION_CASES) == set(CONNECTION_TESTS)
    assert {m for m, _ in METHOD_CASES} == set(SCOPES)


@pytest.mark.parametrize("case", CONNECTION_CASES)
def test_connection(gateway, case, tmp_path):
    CONNECTION_TESTS[case](gateway, tmp_path)


def test_the_health_only_port_is_plaintext_and_serves_nothing_else(gateway, calls):
    """health_listen: what the kubelet's gRPC probes reach without a client certificate, and nothing more."""
    address = gateway.flags[gateway.flags.index("--health-listen") + 1]
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                             timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        error = error_of(channel, "RankTiles", calls["RankTiles"])
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
