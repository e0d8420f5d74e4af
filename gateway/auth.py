"""Who may call: TLS server credentials (mTLS when configured) and per-method bearer-token scopes.

INTERFACE STUB (issue 16): the server and the service already call these three functions; the
implementation (JWT verification, scopes, the local PKI of the embedded default) replaces the bodies.
"""

from __future__ import annotations

import grpc

from gateway.config import GatewayConfig


def server_credentials(cfg: GatewayConfig) -> grpc.ServerCredentials | None:
    """The listening port's credentials; None: plaintext (auth `none`)."""
    return None


def interceptors(cfg: GatewayConfig) -> list[grpc.aio.ServerInterceptor]:
    """Server interceptors that authenticate each call of the typed service and check its method's scope."""
    return []


def require_scope(scope: str, field: str) -> None:
    """Raise PERMISSION_DENIED naming `field` when the current call's token lacks `scope` (a no-op when auth is
    `none` or outside a call)."""
