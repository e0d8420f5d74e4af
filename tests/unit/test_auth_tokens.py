"""Token verification, the scope map, expiry and leeway, JWKS by kid, require_scope and the local PKI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway import auth
from gateway.api import SERVICE_NAME, pb, pb_grpc
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.pki import FILES, LocalPKI

ISS, AUD = GatewayConfig.jwt_issuer, GatewayConfig.jwt_audience


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> LocalPKI:
    return LocalPKI(tmp_path_factory.mktemp("pki")).ensure()


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> LocalPKI:
    return LocalPKI(tmp_path_factory.mktemp("other")).ensure()


def verifier(path: Path, jwks: bool = False, leeway_s: float = 30.0) -> auth.TokenVerifier:
    return auth.TokenVerifier(auth.KeySet(path, jwks), ISS, AUD, leeway_s)


def refused(verify, token: str) -> auth.AuthError:
    with pytest.raises(auth.AuthError) as info:
        verify.verify(token)
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    return info.value


# -- the scope map ------------------------------------------------------------------------------------------------

def test_every_method_of_the_service_has_a_scope_and_nothing_else_does():
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["IntentGatewayService"].methods}
    assert set(auth.SCOPES) == methods
    assert auth.SCOPES["RecordEvents"] == "events:write" and auth.SCOPES["RankTiles"] == "rank:read"
    assert auth.SCOPES["LinkIdentity"] == auth.SCOPES["UnlinkIdentity"] == "identity:link"
    assert auth.SCOPES["GetSessions"] == "sessions:read" and auth.SCOPES["ForgetCustomer"] == "privacy:forget"


# -- verification ---------------------------------------------------------------------------------------------------

def test_a_token_of_the_pki_verifies_with_its_scopes(pki):
    principal = verifier(pki.path("jwt.pub")).verify(pki.mint_token(["rank:read", "events:write"], subject="svc-a"))
    assert principal.scopes == {"rank:read", "events:write"} and principal.subject == "svc-a"


def test_a_scope_list_claim_is_read_and_other_shapes_grant_nothing():
    assert auth._scopes(["a", "b"]) == {"a", "b"} and auth._scopes("a  b") == {"a", "b"}
    assert auth._scopes(7) == frozenset() and auth._scopes([1]) == frozenset()


def test_expired_beyond_the_leeway_is_refused_within_it_accepted(pki):
    verify = verifier(pki.path("jwt.pub"), leeway_s=30)
    assert verify.verify(pki.mint_token(["rank:read"], ttl_s=-10)).scopes == {"rank:read"}
    assert "expired" in refused(verify, pki.mint_token(["rank:read"], ttl_s=-120)).message


def test_not_yet_valid_is_refused(pki):
    verify = verifier(pki.path("jwt.pub"), leeway_s=5)
    assert "nbf" in refused(verify, pki.mint_token(["rank:read"], now=time.time() + 600)).message


def test_another_key_issuer_or_audience_is_refused(pki, other):
    verify = verifier(pki.path("jwt.pub"))
    assert "signature" in refused(verify, other.mint_token(["rank:read"])).message
    assert "iss" in refused(verify, pki.mint_token(["rank:read"], issuer="someone-else")).message
    assert "aud" in refused(verify, pki.mint_token(["rank:read"], audience="another-service")).message


def test_garbage_alg_none_and_hs256_with_the_public_key_are_refused(pki):
    verify = verifier(pki.path("jwt.pub"))
    claims = {"iss": ISS, "aud": AUD, "exp": time.time() + 60, "scope": "rank:read"}
    assert "not a JWT" in refused(verify, "not-a-token").message
    refused(verify, jwt.encode(claims, None, algorithm="none"))
    # the classic confusion attack: HS256 keyed with the (public) verification key, signed by hand
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    mac = hmac.new(pki.read("jwt.pub"), head + b"." + body, hashlib.sha256).digest()
    refused(verify, (head + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode())


def test_a_token_without_exp_is_refused(pki):
    key = serialization.load_pem_private_key(pki.read("jwt.key"), None)
    token = jwt.encode({"iss": ISS, "aud": AUD, "scope": "rank:read"}, key, algorithm="ES256")
    refused(verifier(pki.path("jwt.pub")), token)


def test_jwks_picks_the_key_by_kid_and_rotation_keeps_both(pki, other, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(pki.jwks()))
    verify = verifier(jwks, jwks=True)
    assert verify.verify(pki.mint_token(["rank:read"])).scopes == {"rank:read"}
    assert "kid" in refused(verify, other.mint_token(["rank:read"])).message
    # rotation: the new key is added beside the old one (two kids); both verify once the file is re-read
    jwks.write_text(json.dumps({"keys": pki.jwks()["keys"] + other.jwks()["keys"]}))
    os.utime(jwks, (time.time() + 5, time.time() + 5))
    verify.keys._checked = 0.0
    assert verify.verify(other.mint_token(["sessions:read"])).scopes == {"sessions:read"}
    assert verify.verify(pki.mint_token(["rank:read"])).scopes == {"rank:read"}


def test_a_token_without_kid_verifies_against_a_one_key_jwks_only(pki, other, tmp_path):
    key = serialization.load_pem_private_key(pki.read("jwt.key"), None)
    token = jwt.encode({"iss": ISS, "aud": AUD, "exp": time.time() + 60, "scope": "rank:read"}, key, algorithm="ES256")
    one_key = tmp_path / "one.json"
    one_key.write_text(json.dumps(pki.jwks()))
    assert verifier(one_key, jwks=True).verify(token).scopes == {"rank:read"}
    two_keys = tmp_path / "two.json"
    two_keys.write_text(json.dumps({"keys": pki.jwks()["keys"] + other.jwks()["keys"]}))
    assert "kid" in refused(verifier(two_keys, jwks=True), token).message


def test_a_key_removed_from_the_jwks_stops_verifying_even_cached_tokens(pki, other, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": pki.jwks()["keys"] + other.jwks()["keys"]}))
    verify = verifier(jwks, jwks=True)
    old = other.mint_token(["rank:read"])
    assert verify.verify(old).scopes == {"rank:read"}
    jwks.write_text(json.dumps(pki.jwks()))
    os.utime(jwks, (time.time() + 5, time.time() + 5))
    verify.keys._checked = 0.0
    refused(verify, old)


def test_key_types_pin_their_algorithm():
    assert auth.algorithm_for(ec.generate_private_key(ec.SECP256R1()).public_key()) == "ES256"
    assert auth.algorithm_for(ed25519.Ed25519PrivateKey.generate().public_key()) == "EdDSA"
    with pytest.raises(ValueError):
        auth.algorithm_for(object())


def test_an_ed25519_public_key_file_verifies_eddsa_tokens(tmp_path):
    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "ed.pub"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    token = jwt.encode({"iss": ISS, "aud": AUD, "exp": time.time() + 60, "scope": "privacy:forget"}, key,
                       algorithm="EdDSA")
    assert verifier(pem).verify(token).scopes == {"privacy:forget"}


# -- metadata and authorization ------------------------------------------------------------------------------------

def test_bearer_metadata():
    assert auth.bearer_token((("x-other", "1"), ("authorization", "Bearer abc"))) == "abc"
    assert auth.bearer_token((("Authorization", "bearer  abc "),)) == "abc"
    for metadata in (None, (), (("authorization", "Basic abc"),), (("authorization", "Bearer "),),
                     (("authorization", "Bearer a"), ("authorization", "Bearer b"))):
        with pytest.raises(auth.AuthError) as info:
            auth.bearer_token(metadata)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_valid_token_without_the_scope_is_permission_denied_naming_it(pki):
    verify = verifier(pki.path("jwt.pub"))
    metadata = (("authorization", f"Bearer {pki.mint_token(['rank:read'])}"),)
    assert auth.authorize(verify, "rank:read", metadata, "RankTiles").scopes == {"rank:read"}
    with pytest.raises(auth.AuthError) as info:
        auth.authorize(verify, "privacy:forget", metadata, "ForgetCustomer")
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED and "privacy:forget" in info.value.message
    status = info.value.status()
    detail = rpc_status.from_call(_Call(status)).details[0]
    error_info = error_details_pb2.ErrorInfo()
    detail.Unpack(error_info)
    assert error_info.reason == "MISSING_SCOPE" and error_info.metadata["scope"] == "privacy:forget"


class _Call:
    """Enough of a grpc.Call for rpc_status.from_call."""

    def __init__(self, status: grpc.Status) -> None:
        self.status = status

    def code(self):
        return self.status.code

    def details(self):
        return self.status.details

    def trailing_metadata(self):
        return self.status.trailing_metadata


def test_require_scope_names_the_field_and_is_a_no_op_outside_a_call(pki):
    auth.require_scope("identity:link", "events[0].customer_id")  # outside a call (or auth none): nothing
    token = auth._principal.set(auth.Principal("s", frozenset({"events:write"}), time.time() + 60))
    try:
        with pytest.raises(GatewayError) as info:
            auth.require_scope("identity:link", "events[3].customer_id")
        auth.require_scope("events:write", "events")
    finally:
        auth._principal.reset(token)
    status = info.value.status
    assert status.code == grpc.StatusCode.PERMISSION_DENIED
    assert "events[3].customer_id" in status.details and "identity:link" in status.details
    bad = [d for d in rpc_status.from_call(_Call(status)).details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    violations = error_details_pb2.BadRequest()
    bad[0].Unpack(violations)
    assert violations.field_violations[0].field == "events[3].customer_id"


def test_verified_tokens_are_cached_until_they_expire(pki):
    verify = verifier(pki.path("jwt.pub"), leeway_s=0)
    token = pki.mint_token(["rank:read"], ttl_s=60)
    first = verify.verify(token)
    assert verify.verify(token) is first
    with pytest.raises(auth.AuthError):
        verify.verify(token, now=time.time() + 120)


def test_unknown_auth_mode_is_refused():
    with pytest.raises(ValueError, match="auth must be one of"):
        auth.interceptors(GatewayConfig(auth="tls-ish"))


def test_auth_none_has_no_credentials_and_no_interceptors(caplog):
    cfg = GatewayConfig(auth="none")
    with caplog.at_level("WARNING", logger="gateway.auth"):
        assert auth.server_credentials(cfg) is None
    assert auth.interceptors(cfg) == [] and "AUTH IS OFF" in caplog.text


# -- the local PKI ----------------------------------------------------------------------------------------------------

def test_the_pki_is_created_once_with_private_keys_0600(tmp_path):
    pki = LocalPKI(tmp_path / "pki").ensure()
    before = {f: pki.read(f) for f in FILES}
    assert LocalPKI(tmp_path / "pki").ensure().read("ca.crt") == before["ca.crt"]
    assert {f: pki.read(f) for f in FILES} == before
    for name in ("ca.key", "server.key", "client.key", "jwt.key"):
        assert stat.S_IMODE(pki.path(name).stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate(before["server.crt"])
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    ca = x509.load_pem_x509_certificate(before["ca.crt"])
    for name in ("server.crt", "client.crt"):
        x509.load_pem_x509_certificate(before[name]).verify_directly_issued_by(ca)


def test_a_partial_pki_is_regenerated_whole(tmp_path):
    pki = LocalPKI(tmp_path).ensure()
    old_ca = pki.read("ca.crt")
    pki.path("client.key").unlink()
    pki.ensure()
    assert pki.read("ca.crt") != old_ca
    x509.load_pem_x509_certificate(pki.read("client.crt")).verify_directly_issued_by(
        x509.load_pem_x509_certificate(pki.read("ca.crt")))


def _ensure_and_read(directory: str) -> bytes:
    return LocalPKI(directory).ensure().read("ca.crt")


def test_processes_starting_at_once_share_one_pki(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        cas = pool.map(_ensure_and_read, [str(tmp_path / "shared")] * 8)
    assert len(set(cas)) == 1
    assert not [p for p in (tmp_path / "shared").iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_unknown_pki_file_names_are_refused(tmp_path):
    with pytest.raises(ValueError):
        LocalPKI(tmp_path).path("../etc/passwd")


# -- the KServe transformer's REST check ---------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "kind"), [
    ("/", "open"), ("/metrics", "open"), ("/v2", "open"), ("/v2/health/live", "open"), ("/v2/health/ready", "open"),
    ("/v2/models/reranker", "open"), ("/v2/models/reranker/ready", "open"), ("/v2/models/reranker/versions/1", "open"),
    ("/v1/models/reranker", "open"), ("/v2/models/reranker/infer", "infer"), ("/v2/models/reranker/versions/1/infer",
                                                                              "infer"),
    ("/v1/models/reranker:predict", "infer"), ("/v2/repository/models/reranker/unload", "refused"),
    ("/v1/models/reranker:explain", "refused"), ("/v2/models/reranker/infer/../ready", "refused")])
def test_transformer_rest_paths(path, kind):
    from gateway import kserve_transformer as kt

    got = "open" if kt._REST_OPEN.fullmatch(path) else "infer" if kt._REST_INFER.fullmatch(path) else "refused"
    assert got == kind


# -- certificate rotation ------------------------------------------------------------------------------------------

def test_a_renewed_certificate_is_served_without_a_restart(tmp_path, monkeypatch):
    """The Secret's files are replaced by a renewal from another CA: new handshakes get the new certificate; a
    half-written set (new certificate, old key) keeps the old one meanwhile. Real TLS over loopback."""
    import asyncio
    import shutil

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from harness.client import transport_credentials

    monkeypatch.setattr(auth, "_RELOAD_CHECK_S", 0.0)
    old, new = LocalPKI(tmp_path / "old").ensure(), LocalPKI(tmp_path / "new").ensure()
    live = tmp_path / "secret"
    live.mkdir()
    for name, target in (("server.crt", "tls.crt"), ("server.key", "tls.key"), ("ca.crt", "ca.crt")):
        shutil.copy(old.path(name), live / target)
    cfg = GatewayConfig(tls_cert=str(live / "tls.crt"), tls_key=str(live / "tls.key"),
                        tls_client_ca=str(live / "ca.crt"), pki_dir=str(tmp_path / "unused"))

    def replace(name: str, source: Path) -> None:
        (live / f".{name}").write_bytes(source.read_bytes())
        os.replace(live / f".{name}", live / name)
        os.utime(live / name, (time.time() + 10, time.time() + 10))

    async def serves(pki: LocalPKI, port: int) -> bool:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", transport_credentials(pki.directory)) as channel:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
                return True
            except grpc.aio.AioRpcError:
                return False

    async def run() -> list[bool]:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_secure_port("127.0.0.1:0", auth.server_credentials(cfg))
        await server.start()
        try:
            seen = [await serves(old, port)]
            replace("tls.crt", new.path("server.crt"))  # the key is still the old one: not a whole set yet
            seen.append(await serves(old, port))
            replace("tls.key", new.path("server.key"))
            replace("ca.crt", new.path("ca.crt"))
            seen += [await serves(new, port), await serves(old, port)]
            return seen
        finally:
            await server.stop(None)

    assert asyncio.run(run()) == [True, True, True, False]


class _WhoAmI(pb_grpc.IntentGatewayServiceServicer):
    """RankTiles answers with the principal the handler sees, after yielding to the loop (calls interleave)."""

    async def RankTiles(self, request, context):
        await asyncio.sleep(0.01)
        principal = auth.current_principal()
        return pb.RankTilesResponse(model_version=principal.subject if principal else "-")


def test_each_call_sees_its_own_principal_and_the_error_model_wraps_once(pki, monkeypatch):
    """The principal set in the interceptor reaches the handler of its own call only (concurrent calls with
    other tokens interleave), and the error model's wrapper is built once for the method, not per call."""
    from gateway.rpc import ErrorModelInterceptor

    built: list[str] = []
    wrap = ErrorModelInterceptor._wrap
    monkeypatch.setattr(ErrorModelInterceptor, "_wrap", lambda self, method, h: built.append(method) or wrap(
        self, method, h))
    tokens = {f"svc-{i}": pki.mint_token(["rank:read"], subject=f"svc-{i}") for i in range(4)}

    async def run() -> list[str]:
        server = grpc.aio.server(interceptors=[ErrorModelInterceptor(),
                                               auth.AuthInterceptor(verifier(pki.path("jwt.pub")))])
        pb_grpc.add_IntentGatewayServiceServicer_to_server(_WhoAmI(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.IntentGatewayServiceStub(channel)
                calls = [stub.RankTiles(pb.RankTilesRequest(), timeout=5,
                                        metadata=(("authorization", f"Bearer {tokens[name]}"),))
                         for _ in range(5) for name in tokens]
                replies = await asyncio.gather(*calls)
                with pytest.raises(grpc.aio.AioRpcError) as refused:  # a refusal is a handler of its own
                    await stub.RankTiles(pb.RankTilesRequest(), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                replies += await asyncio.gather(*calls[:4])
                return [r.model_version for r in replies]
        finally:
            await server.stop(None)

    seen = asyncio.run(run())
    assert seen == [name for _ in range(5) for name in tokens] + list(tokens)
    assert built == [f"/{SERVICE_NAME}/RankTiles"] * 2  # the service's handler once, the refusal once
