"""Who may call: TLS server credentials (mTLS when configured) and per-method bearer-token scopes.

`auth` (gateway/config.py): `mtls+jwt` (the default) requires a client certificate chaining to tls_client_ca
and, on every call of the typed service, `authorization: Bearer <JWT>` signed by the configured key (or a key
of the JWKS file, by `kid`), with the right `iss` and `aud`, inside exp/nbf (give or take jwt_leeway_s), whose
`scope` claim holds the method's scope (SCOPES). `jwt`: TLS without client certificates, same tokens. `none`:
plaintext and no checks, for local experiments only. Health and reflection stay open (probes, grpcurl).

No token, a garbled, expired or wrongly signed one -> UNAUTHENTICATED; a valid token without the method's
scope -> PERMISSION_DENIED naming the scope. Tokens and their subjects are never logged. Empty tls_* / jwt_*
paths resolve to the embedded default's local PKI under pki_dir (gateway/pki.py, generated if missing).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.api import SERVICE_NAME
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.pki import LocalPKI

log = logging.getLogger("gateway.auth")

MODES = ("mtls+jwt", "jwt", "none")
SCOPES: dict[str, str] = {
    "RecordEvents": "events:write",
    "LinkIdentity": "identity:link",
    "UnlinkIdentity": "identity:link",
    "GetSessions": "sessions:read",
    "RankTiles": "rank:read",
    "ForgetCustomer": "privacy:forget",
}
"""The scope each method of intent.gateway.v1.IntentGatewayService needs (a method missing here is refused).
RecordEvents batches whose login events carry a customer_id also need identity:link (`require_scope`)."""
ERROR_DOMAIN = "intent.gateway.v1"
_PREFIX = f"/{SERVICE_NAME}/"
_CACHE_SIZE = 4096
_RELOAD_CHECK_S = 5.0


@dataclass(frozen=True)
class Principal:
    """The verified caller of the current call. `subject` is for authorization only: never logged."""

    subject: str
    scopes: frozenset[str]
    expires_at: float


class AuthError(Exception):
    """A refused call: UNAUTHENTICATED (who are you?) or PERMISSION_DENIED (not allowed), with a safe message."""

    def __init__(self, code: grpc.StatusCode, message: str, scope: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.scope = scope

    def status(self) -> grpc.Status:
        """The status with a google.rpc.ErrorInfo (reason, and the scope needed when one is missing)."""
        reason = "MISSING_SCOPE" if self.scope else self.code.name
        info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN,
                                           metadata={"scope": self.scope} if self.scope else {})
        return _rich_status(self.code.value[0], self.message, [info])


def _rich_status(code: int, message: str, details: Sequence) -> grpc.Status:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


def _unauthenticated(message: str) -> AuthError:
    return AuthError(grpc.StatusCode.UNAUTHENTICATED, message)


def missing_scope(scope: str, what: str) -> AuthError:
    return AuthError(grpc.StatusCode.PERMISSION_DENIED, f"{what} needs the scope {scope}", scope)


# -- keys -------------------------------------------------------------------------------------------------------

def algorithm_for(key) -> str:
    """The one algorithm a key verifies (pinned: a token's own `alg` never chooses, so no `none` or HS256)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithms = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name not in algorithms:
            raise ValueError(f"unsupported EC curve for tokens: {key.curve.name}")
        return algorithms[key.curve.name]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"RSA token key of {key.key_size} bits: at least 2048 needed")
        return "RS256"
    raise ValueError(f"unsupported token verification key type: {type(key).__name__}")


class KeySet:
    """Token verification keys: one PEM public key (any kid), or a JWKS file's keys by kid. The file is re-read
    when it changes on disk (a Secret's rotation), checked at most every few seconds."""

    def __init__(self, path: Path, jwks: bool) -> None:
        self.path, self.jwks = path, jwks
        self._lock = threading.Lock()
        self._mtime: float = -1.0
        self._checked = 0.0
        self._keys: dict[str | None, tuple[object, str]] = {}
        self.generation = 0
        self._load()

    def _load(self) -> None:
        text = self.path.read_bytes()
        if self.jwks:
            keys: dict[str | None, tuple[object, str]] = {}
            for jwk in json.loads(text).get("keys", []):
                if jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                    continue
                key = jwt.PyJWK(jwk).key
                key = key.public_key() if hasattr(key, "private_bytes") else key
                alg = algorithm_for(key)
                if jwk.get("alg", alg) != alg:
                    raise ValueError(f"{self.path}: key {jwk['kid']!r} says alg {jwk['alg']}, its type verifies {alg}")
                keys[jwk["kid"]] = (key, alg)
            if not keys:
                raise ValueError(f"{self.path}: no signing keys with a kid in the JWKS")
        else:
            key = load_pem_public_key(text)
            keys = {None: (key, algorithm_for(key))}
        self._keys = keys
        self._mtime = os.stat(self.path).st_mtime
        self.generation += 1

    def refresh(self) -> None:
        """Re-read the file if it changed (at most one stat every few seconds)."""
        now = time.monotonic()
        if now - self._checked < _RELOAD_CHECK_S:
            return
        with self._lock:
            self._checked = now
            try:
                if os.stat(self.path).st_mtime != self._mtime:
                    self._load()
                    log.info("token verification keys reloaded from %s (%d keys)", self.path, len(self._keys))
            except (OSError, ValueError) as exc:  # keep the keys we have; a half-written Secret is retried
                log.warning("token verification keys not reloaded from %s: %s", self.path, exc)

    def key(self, kid: str | None) -> tuple[object, str]:
        if not self.jwks:
            return self._keys[None]
        found = self._keys.get(kid) if isinstance(kid, str) else None
        if found is None and kid is None and len(self._keys) == 1:  # issuers with one key often send no kid
            found = next(iter(self._keys.values()))
        if found is None:
            raise _unauthenticated("token signed by an unknown key (kid)")
        return found


def _scopes(claim: object) -> frozenset[str]:
    """`scope` as OAuth2 writes it (one space-separated string); a list of strings is read too."""
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list) and all(isinstance(s, str) for s in claim):
        return frozenset(claim)
    return frozenset()


class TokenVerifier:
    """Verifies bearer tokens against a KeySet: signature (pinned algorithm), iss, aud, exp, nbf (with leeway).
    Verified tokens are cached until they expire, so the hot path costs a dict lookup."""

    def __init__(self, keys: KeySet, issuer: str, audience: str, leeway_s: float = 30.0) -> None:
        self.keys, self.issuer, self.audience, self.leeway_s = keys, issuer, audience, leeway_s
        self._cache: dict[str, Principal] = {}
        self._generation = keys.generation

    @classmethod
    def from_config(cls, cfg: GatewayConfig) -> TokenVerifier:
        if cfg.jwt_jwks:
            keys = KeySet(Path(cfg.jwt_jwks), jwks=True)
        elif cfg.jwt_public_key:
            keys = KeySet(Path(cfg.jwt_public_key), jwks=False)
        else:
            keys = KeySet(LocalPKI(cfg.pki_dir).ensure().path("jwt.pub"), jwks=False)
        return cls(keys, cfg.jwt_issuer, cfg.jwt_audience, cfg.jwt_leeway_s)

    def verify(self, token: str, now: float | None = None) -> Principal:
        now = time.time() if now is None else now
        self.keys.refresh()
        cached = self._cache.get(token)
        if cached is not None and self.keys.generation == self._generation:
            if now <= cached.expires_at + self.leeway_s:
                return cached
            del self._cache[token]
        principal = self._decode(token, now)
        if self.keys.generation != self._generation or len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()  # new keys: tokens of a removed key must be checked again
            self._generation = self.keys.generation
        self._cache[token] = principal
        return principal

    def _decode(self, token: str, now: float) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauthenticated("bearer token is not a JWT") from None
        key, algorithm = self.keys.key(header.get("kid"))
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway_s, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("bearer token expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("bearer token not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("bearer token is for another audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("bearer token from another issuer (iss)") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("bearer token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthenticated(f"bearer token rejected ({type(exc).__name__})") from None
        if claims["exp"] + self.leeway_s < now:  # PyJWT checks against its own clock; `now` may be a test's
            raise _unauthenticated("bearer token expired")
        return Principal(str(claims.get("sub", "")), _scopes(claims.get("scope")), float(claims["exp"]))


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of the one `authorization: Bearer <token>` entry (UNAUTHENTICATED when missing or not one)."""
    values = [v for k, v in metadata or () if k.lower() == "authorization"]
    if not values:
        raise _unauthenticated("no credentials: send authorization: Bearer <token>")
    if len(values) > 1:
        raise _unauthenticated("more than one authorization header")
    value = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("authorization must be Bearer <token>")
    return token.strip()


def authorize(verifier: TokenVerifier, scope: str, metadata, what: str) -> Principal:
    """The verified principal of a call that needs `scope` (AuthError otherwise)."""
    principal = verifier.verify(bearer_token(metadata))
    if scope not in principal.scopes:
        raise missing_scope(scope, what)
    return principal


# -- the interceptor ----------------------------------------------------------------------------------------------

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("gateway_principal", default=None)


def current_principal() -> Principal | None:
    return _principal.get()


def _refusal(handler: grpc.RpcMethodHandler, error: AuthError) -> grpc.RpcMethodHandler:
    """A handler that refuses the call without decoding its body (an unauthenticated caller's bytes are not
    parsed at all)."""
    status = error.status()

    async def refuse(request, context):
        await context.abort(status.code, status.details, status.trailing_metadata)

    return grpc.unary_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call of the methods under `prefix` (default: the typed service) but `open_methods`,
    and checks the scope `scopes` gives its method name (a name missing there is refused); other services pass."""

    def __init__(self, verifier: TokenVerifier, scopes: Mapping[str, str] = SCOPES, prefix: str = _PREFIX,
                 open_methods: frozenset[str] = frozenset()) -> None:
        self.verifier, self.scopes, self.prefix, self.open_methods = verifier, scopes, prefix, open_methods

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        method = handler_call_details.method
        name = method[len(self.prefix):] if method.startswith(self.prefix) else ""
        if not name or name in self.open_methods:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED, as for any unknown method
        try:
            scope = self.scopes.get(name)
            if scope is None or handler.unary_unary is None:
                raise AuthError(grpc.StatusCode.PERMISSION_DENIED, f"{name}: no scope grants this method")
            principal = authorize(self.verifier, scope, handler_call_details.invocation_metadata, name)
        except AuthError as exc:
            log.info("refused %s: %s", name, exc.message)
            return _refusal(handler, exc)
        # grpc.aio runs the interceptors and then the handler in the call's own task, so the principal set here is
        # what the handler's require_scope reads, and it ends with the call. The handler itself is returned
        # unchanged: the error model's wrapper of it is built once per method, not once per call.
        _principal.set(principal)
        return handler


# -- what the server and the service call -----------------------------------------------------------------------

def check_mode(cfg: GatewayConfig) -> str:
    if cfg.auth not in MODES:
        raise ValueError(f"auth must be one of {MODES}, got {cfg.auth!r}")
    return cfg.auth


def tls_files(cfg: GatewayConfig) -> tuple[Path, Path, Path]:
    """(server certificate chain, its key, client CA bundle), empty settings from the local PKI."""
    pki = LocalPKI(cfg.pki_dir)
    if not (cfg.tls_cert and cfg.tls_key and cfg.tls_client_ca):
        pki.ensure()
    return (Path(cfg.tls_cert or pki.path("server.crt")), Path(cfg.tls_key or pki.path("server.key")),
            Path(cfg.tls_client_ca or pki.path("ca.crt")))


class TlsFiles:
    """The server certificate chain, its key and the client CA, read from files and read again at a new handshake
    once they changed on disk (a renewed cert-manager Secret), so a rotation needs no restart. A half-updated set
    (a key that does not match the certificate) keeps the previous one until it is whole."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.paths = tuple(p for p in (cert, key, client_ca) if p is not None)
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._checked = time.monotonic()
        self._stamps = self._mtimes()
        self.initial = self._load()

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in self.paths)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        chain, key = self.cert.read_bytes(), self.key.read_bytes()
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        leaf = x509.load_pem_x509_certificate(chain).public_key().public_bytes(serialization.Encoding.PEM, public)
        own = serialization.load_pem_private_key(key, password=None).public_key().public_bytes(
            serialization.Encoding.PEM, public)
        if leaf != own:
            raise ValueError(f"{self.key} is not the key of {self.cert}")
        return grpc.ssl_server_certificate_configuration(
            [(key, chain)], root_certificates=self.client_ca.read_bytes() if self.client_ca else None)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback at each new handshake: a new configuration when the files changed, else None (keep)."""
        now = time.monotonic()
        if now - self._checked < _RELOAD_CHECK_S:
            return None
        self._checked = now
        try:
            stamps = self._mtimes()
            if stamps == self._stamps:
                return None
            config = self._load()
        except (OSError, ValueError) as exc:
            log.warning("TLS files not reloaded (keeping the current ones): %s", exc)
            return None
        self._stamps = stamps
        log.info("TLS certificate reloaded from %s", self.cert)
        return config


def server_credentials(cfg: GatewayConfig) -> grpc.ServerCredentials | None:
    """The listening port's credentials; None: plaintext (auth `none`). The certificate files are re-read when
    they change (TlsFiles)."""
    if check_mode(cfg) == "none":
        log.warning("AUTH IS OFF (auth: none): plaintext gRPC, no client certificates, no tokens, every caller may "
                    "read, write and forget any customer. For local experiments only; never deploy this.")
        return None
    cert, key, client_ca = tls_files(cfg)
    mtls = cfg.auth == "mtls+jwt"
    files = TlsFiles(cert, key, client_ca if mtls else None)
    return grpc.dynamic_ssl_server_credentials(files.initial, files.fetch, require_client_authentication=mtls)


def verifier(cfg: GatewayConfig) -> TokenVerifier | None:
    """The token verifier of `cfg` (None when auth is `none`): for other faces than the typed service (KServe)."""
    return None if check_mode(cfg) == "none" else TokenVerifier.from_config(cfg)


def interceptors(cfg: GatewayConfig) -> list[grpc.aio.ServerInterceptor]:
    """Server interceptors that authenticate each call of the typed service and check its method's scope."""
    if check_mode(cfg) == "none":
        return []
    return [AuthInterceptor(TokenVerifier.from_config(cfg))]


def require_scope(scope: str, field: str) -> None:
    """Raise PERMISSION_DENIED naming `field` when the current call's token lacks `scope` (a no-op when auth is
    `none` or outside a call)."""
    principal = _principal.get()
    if principal is None or scope in principal.scopes:
        return
    message = f"{field}: needs the scope {scope}"
    info = error_details_pb2.ErrorInfo(reason="MISSING_SCOPE", domain=ERROR_DOMAIN,
                                       metadata={"scope": scope, "field": field})
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=field, description=f"needs the scope {scope}")])
    raise GatewayError(_rich_status(code_pb2.PERMISSION_DENIED, message, [info, bad]))
