"""Gateway configuration: defaults < YAML file (--config) < environment (GATEWAY_<FIELD>) < flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class GatewayConfig:
    listen: str = "127.0.0.1:50051"
    """host:port the gRPC server binds."""
    store: str = "sqlite://.run/gateway.db"
    """Session store URL: sqlite://PATH (embedded, default; `.run/` is the ignored runtime directory),
    redis://HOST:PORT/DB (several replicas) or redis+cluster://HOST:PORT[,HOST:PORT...] (a Redis Cluster)."""
    artifacts: str = "artifacts"
    """Directory with featurizer.json and ranker.json (the same files the models were exported with)."""
    manifest: str = "model_repository/manifest.json"
    """The model manifest `make export` wrote beside the Triton repository (training/core/manifest.py): featurizer.json
    and ranker.json must hash to its values and Triton's ensemble must carry its hash, at start-up and on
    every reload."""
    reload_poll_s: float = 2.0
    """How often the manifest file and Triton's served ensemble are checked for a new model set (hot reload;
    SIGHUP checks at once). 0: only on SIGHUP, and when Triton has unloaded the version a request used."""
    triton_url: str = "127.0.0.1:8001"
    """Triton's gRPC endpoint (or its HTTP one, written http://HOST:8000)."""
    triton_trace_url: str = ""
    """Triton's HTTP endpoint (http://HOST:8000) for the requests whose trace is sampled: Triton 2.51 keeps
    every traceparent sent as an HTTP header but drops a few sent as gRPC metadata. Empty: triton_url."""
    triton_model: str = "intent_pipeline"
    triton_timeout_s: float = 0.25
    """Budget for the model call of one request; past it the answer is the baseline ranking, degraded."""
    lookback_days: float = 0.0
    """Pre-login sessions older than this do not count; 0 means the ranker's own training lookback."""
    as_of: str = ""
    """RFC 3339 time to treat as now when replaying historical traffic; empty means the wall clock."""
    cache_embeddings: bool = True
    """Keep each session's embedding and intents in the store, keyed by session version (its event count)."""
    embed_on_write: bool = True
    """Embed linked visitors' sessions in the background as their events arrive (gateway/embedder.py), so
    RankTiles finds them cached instead of calling Triton; needs cache_embeddings."""
    embed_delay_ms: float = 20.0
    """How long write-behind embedding waits to batch a burst of writes into one Triton call."""
    embed_timeout_s: float = 2.0
    """Budget of one write-behind Triton call (it is off the request path, so longer than triton_timeout_s)."""
    max_sessions: int = 20
    """Most recent linked sessions used per customer."""
    max_batch_events: int = 1000
    max_tiles: int = 50
    retention_days: int = 90
    max_events_per_visitor: int = 5000
    grpc_instrumentation: str = "gateway"
    """Who makes the server span of each RPC when tracing is on (OTEL_* variables): `gateway`, one lean
    interceptor for spans and metrics (gateway/telemetry.py), or `opentelemetry`, the aio interceptor of
    opentelemetry-instrumentation-grpc (same span names and rpc.* attributes, about twice the cost per call;
    reports/tracing.json measures both)."""
    grace_s: float = 5.0
    """Graceful shutdown: in-flight calls get this long to finish."""
    log_level: str = "INFO"

    # -- who may call (gateway/auth.py, gateway/pki.py) -----------------------------------------------------
    auth: str = "mtls+jwt"
    """`mtls+jwt`: TLS with client certificates required, and a signed bearer token with the method's scope on
    every call; `jwt`: TLS (no client certificate) and tokens; `none`: plaintext and no checks, for local
    experiments only (logged loudly at start-up)."""
    pki_dir: str = ".run/pki"
    """Where the embedded default generates (once) a local CA, the server and client certificates and the token
    signing key, for every tls_* / jwt_* path left empty. Never used in a real deployment: set the paths."""
    tls_cert: str = ""
    """PEM server certificate chain; empty: <pki_dir>/server.crt (generated)."""
    tls_key: str = ""
    """PEM private key of tls_cert; empty: <pki_dir>/server.key (generated)."""
    tls_client_ca: str = ""
    """PEM CA bundle client certificates must chain to (auth mtls+jwt); empty: <pki_dir>/ca.crt."""
    jwt_public_key: str = ""
    """PEM public key that verifies bearer tokens; empty (and no jwt_jwks): <pki_dir>/jwt.pub (generated)."""
    jwt_jwks: str = ""
    """JWKS file (JSON) of the token issuer's keys, picked by the token's `kid`; instead of jwt_public_key."""
    jwt_issuer: str = "intent-platform-local"
    """Required `iss` claim."""
    jwt_audience: str = "intent-gateway"
    """Required `aud` claim."""
    jwt_leeway_s: float = 30.0
    """Clock skew allowed on `exp` / `nbf`."""
    health_listen: str = ""
    """host:port of a second, plaintext listener that serves grpc.health.v1 only, for probes that cannot present a
    client certificate (the kubelet's gRPC probes; the chart sets it); empty: none (health stays on `listen`)."""

    # -- what is kept (gateway/privacy.py, gateway/store/, gateway/retention.py) ----------------------------
    id_hash_key: str = ""
    """Secret key of the HMAC-SHA256 pseudonyms every customer and visitor id is stored under (hex or base64,
    >= 32 bytes; from a Secret as env GATEWAY_ID_HASH_KEY). Empty: <pki_dir>/id_hash.key (generated)."""
    id_hash_previous_keys: str = ""
    """Comma-separated keys of earlier rotations: still read and forgotten, never written (docs/deploy.md)."""
    forget_tombstone_days: float = 30.0
    """After ForgetCustomer, links to that customer and events of their forgotten visitors are refused this long
    (late events in flight must not re-create what was deleted)."""
    retention_interval_s: float = 3600.0
    """How often the gateway prunes events, links, caches and tombstones past retention (0: never; then run
    `make prune`)."""
    store_timeout_s: float = 0.5
    """Connect and socket timeout of each store call (Redis): a hung store fails fast instead of hanging RPCs."""

    # -- bounded everything (gateway/validation.py, gateway/rpc.py, gateway/server.py) ----------------------
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest request the server accepts (grpc max_receive_message_length); larger is RESOURCE_EXHAUSTED."""
    max_concurrent_rpcs: int = 256
    """Calls served at once; more are refused RESOURCE_EXHAUSTED (grpc maximum_concurrent_rpcs)."""
    max_clock_skew_s: float = 300.0
    """Event times may be at most this far in the future."""
    max_products_held: int = 64
    """Most `context.products_held` entries of a RankTiles request."""
    max_pending_writes: int = 10_000
    """Most visitors waiting for write-behind embedding; beyond it new work is dropped (and counted)."""
    drain_s: float = 5.0
    """Graceful shutdown: health says NOT_SERVING this long before the server stops taking calls (load
    balancers notice), then in-flight calls get grace_s."""

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None,
             overrides: dict[str, Any] | None = None) -> GatewayConfig:
        values: dict[str, Any] = {}
        if path:
            doc = yaml.safe_load(Path(path).read_text()) or {}
            unknown = set(doc) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"{path}: unknown gateway settings {sorted(unknown)}")
            values.update(doc)
        env = os.environ if env is None else env
        for f in fields(cls):
            raw = env.get("GATEWAY_" + f.name.upper())
            if raw is not None:
                values[f.name] = raw
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        typed = {}
        for f in fields(cls):
            if f.name in values:
                kind = type(f.default) if f.default is not MISSING else str
                typed[f.name] = _to_bool(values[f.name]) if kind is bool else kind(values[f.name])
        return cls(**typed)

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help="YAML file of settings (env GATEWAY_<NAME> and flags override it)")
        for f in fields(cls):
            kind = _to_bool if isinstance(f.default, bool) else type(f.default)
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                                help=f"(default: {f.default}; env GATEWAY_{f.name.upper()})")


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")
