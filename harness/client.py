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
                    "login_event_without_identity_link")
AUTH_CASES: tuple[tuple[str, str], ...] = (
    *((method, case) for method in SCOPES for case in METHOD_CASES),
    *(("*", case) for case in CONNECTION_CASES))
"""(RPC or "*", case): each is one test of tests/integration/test_auth.py."""


class _TokenPlugin(grpc.AuthMetadataPlugin):
    """Sends `authorization: Bearer <token>` on every call, minting a fresh token before the current one expires
    (a long `make run` outlives any one token)."""

    def __init__(self, pki: LocalPKI, scopes: Sequence[str], ttl_s: float) -> None:
        self.pki, self.scopes, self.ttl_s = pki, tuple(scopes), ttl_s
        self._token, self._renew_at = "", 0.0

    def token(self) -> str:
        if time.time() >= self._renew_at:
            self._token = self.pki.mint_token(self.scopes, ttl_s=self.ttl_s)
            self._renew_at = time.time() + max(self.ttl_s - _RENEW_BEFORE_S, self.ttl_s / 2)
        return self._token

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback((("authorization", f"Bearer {self.token()}"),), None)


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
    token = grpc.metadata_call_credentials(_TokenPlugin(LocalPKI(pki_dir), tuple(scopes), TOKEN_TTL_S),
                                           name="local-bearer")
    return grpc.composite_channel_credentials(transport_credentials(pki_dir, auth), token)


def channel(address: str, *, pki_dir: str | Path, scopes: Iterable[str] = ALL_SCOPES, auth: str = "mtls+jwt",
            asynchronous: bool = False, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel | grpc.aio.Channel:
    """A channel to the gateway at `address` (host:port): mTLS and tokens, or plaintext when auth is `none`."""
    if auth == "none":
        return grpc.aio.insecure_channel(address, options=options) if asynchronous else \
            grpc.insecure_channel(address, options=options)
    creds = credentials(pki_dir, scopes, auth)
    return grpc.aio.secure_channel(address, creds, options=options) if asynchronous else \
        grpc.secure_channel(address, creds, options=options)
