"""The one way harnesses and tests reach a gateway: its TLS, client certificate and bearer token, from the run's PKI.

A gateway on the embedded default (`auth: mtls+jwt`, empty tls_* / jwt_* paths) generates its local PKI under its
`pki_dir` (gateway/pki.py); a client of the same run reads the CA and the client certificate from there and mints
its own token with the scopes it asks for. `auth="none"` gives a plaintext channel.

`AUTH_CASES` lists the cases tests/integration/test_auth.py proves (it parametrizes over them), so the reliability
report can count them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc

from gateway.auth import SCOPES
from gateway.pki import LocalPKI

ALL_SCOPES: tuple[str, ...] = tuple(sorted(set(SCOPES.values())))
"""Every scope of the typed service: what a harness or test client gets unless it asks for fewer."""
TOKEN_TTL_S = 3600.0
_RENEW_BEFORE_S = 300.0

METHOD_CASES = ("no_credentials", "missing_scope", "expired_token", "wrong_signing_key", "granted")
"""What is tried on every RPC of the typed service."""
CONNECTION_CASES = ("no_client_certificate", "health_without_token", "reflection_without_token", "auth_none_plaintext",
                    "auth_jwt_without_client_certificate", "undecodable_body_without_token",
                    "login_event_without_identity_link")
AUTH_CASES: tuple[tuple[str, str], ...] = (
    *((method, case) for method in SCOPES for case in METHOD_CASES),
    *(("*", case) for case in CONNECTION_CASES))
"""(RPC or "*", case): each is one test of tests/integration/test_auth.py."""


class _Tokens:
    """The current bearer token of a channel, minted from the run's signing key and renewed before it expires (a
    long `make run` outlives any one token)."""

    def __init__(self, pki: LocalPKI, scopes: Sequence[str], ttl_s: float = TOKEN_TTL_S) -> None:
        self.pki, self.scopes, self.ttl_s = pki, tuple(scopes), ttl_s
        self._header, self._renew_at = "", 0.0

    def header(self) -> str:
        if time.time() >= self._renew_at:
            self._header = f"Bearer {self.pki.mint_token(self.scopes, ttl_s=self.ttl_s)}"
            self._renew_at = time.time() + max(self.ttl_s - _RENEW_BEFORE_S, self.ttl_s / 2)
        return self._header


class _TokenPlugin(grpc.AuthMetadataPlugin):
    """Call credentials: `authorization: Bearer <token>` on every call."""

    def __init__(self, tokens: _Tokens) -> None:
        self.tokens = tokens

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", self.tokens.header()),), None)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: tuple) -> None:
        self.method, self.timeout, self.credentials = details.method, details.timeout, details.credentials
        self.wait_for_ready, self.compression = details.wait_for_ready, getattr(details, "compression", None)
        self.metadata = metadata


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor):
    """The token as call metadata added in the calling thread: call credentials (a metadata plugin) run on
    another thread and cost a blocking channel about 0.3 ms per call at p50 on 2 cores (measured)."""

    def __init__(self, tokens: _Tokens) -> None:
        self.tokens = tokens

    def intercept_unary_unary(self, continuation, details: grpc.ClientCallDetails, request):
        metadata = (*(details.metadata or ()), ("authorization", self.tokens.header()))
        return continuation(_CallDetails(details, metadata), request)


class _AioBearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """_BearerInterceptor for grpc.aio channels."""

    def __init__(self, tokens: _Tokens) -> None:
        self.tokens = tokens

    async def intercept_unary_unary(self, continuation, details: grpc.aio.ClientCallDetails, request):
        metadata = grpc.aio.Metadata(*(details.metadata or ()), ("authorization", self.tokens.header()))
        return await continuation(details._replace(metadata=metadata), request)


def bearer(pki_dir: str | Path, scopes: Iterable[str] = ALL_SCOPES, ttl_s: float = TOKEN_TTL_S) -> str:
    """A token from the run's signing key (for REST calls and for tests that set metadata by hand)."""
    return LocalPKI(pki_dir).mint_token(tuple(scopes), ttl_s=ttl_s)


def transport_credentials(pki_dir: str | Path, auth: str = "mtls+jwt", client_certificate: bool = True
                          ) -> grpc.ChannelCredentials:
    """TLS trusting the run's CA, with its client certificate (mtls+jwt) unless `client_certificate` is False."""
    pki = LocalPKI(pki_dir).ensure()
    if auth == "mtls+jwt" and client_certificate:
        return grpc.ssl_channel_credentials(root_certificates=pki.read("ca.crt"), private_key=pki.read("client.key"),
                                            certificate_chain=pki.read("client.crt"))
    return grpc.ssl_channel_credentials(root_certificates=pki.read("ca.crt"))


def credentials(pki_dir: str | Path, scopes: Iterable[str] = ALL_SCOPES, auth: str = "mtls+jwt"
                ) -> grpc.ChannelCredentials:
    """TLS with the run's CA and client certificate, composed with a bearer token carrying `scopes`."""
    if auth not in ("mtls+jwt", "jwt"):
        raise ValueError(f"credentials are for auth mtls+jwt or jwt, not {auth!r} (use channel(), plaintext)")
    token = grpc.metadata_call_credentials(_TokenPlugin(_Tokens(LocalPKI(pki_dir), tuple(scopes))),
                                           name="local-bearer")
    return grpc.composite_channel_credentials(transport_credentials(pki_dir, auth), token)


def channel(address: str, *, pki_dir: str | Path, scopes: Iterable[str] = ALL_SCOPES, auth: str = "mtls+jwt",
            asynchronous: bool = False, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel | grpc.aio.Channel:
    """A channel to the gateway at `address` (host:port): TLS with the run's CA and client certificate and a token
    carrying `scopes` on every unary call (added by a client interceptor: cheaper than `credentials()`'s call
    credentials), or plaintext when auth is `none`."""
    if auth == "none":
        return grpc.aio.insecure_channel(address, options=options) if asynchronous else \
            grpc.insecure_channel(address, options=options)
    if auth not in ("mtls+jwt", "jwt"):
        raise ValueError(f"auth must be mtls+jwt, jwt or none, got {auth!r}")
    tokens, tls = _Tokens(LocalPKI(pki_dir), tuple(scopes)), transport_credentials(pki_dir, auth)
    if asynchronous:
        return grpc.aio.secure_channel(address, tls, options=options, interceptors=[_AioBearerInterceptor(tokens)])
    return grpc.intercept_channel(grpc.secure_channel(address, tls, options=options), _BearerInterceptor(tokens))
