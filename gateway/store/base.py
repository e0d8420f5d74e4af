"""The store's interface, its records, the limits every implementation enforces, and the embedding cache's
entry format."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from gateway.config import GatewayConfig
from training.core.contract import Event

LinkSourceName = Literal["login", "api"]
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Link:
    anonymous_id: str
    customer_id: str
    source: LinkSourceName
    linked_at_ms: int


@dataclass(frozen=True)
class StoreLimits:
    retention_days: int = 90
    """Events older than this (by event time) are pruned, and links whose visitor has no event left."""
    max_events_per_visitor: int = 5000
    """A visitor's oldest events beyond this are dropped on write (bots and runaway tabs), and reported."""
    cache_ttl_s: int = 86_400
    """How long a cached session embedding lives."""
    tombstone_days: float = 30.0
    """How long a forgotten customer's and their visitors' pseudonyms refuse new events and links."""
    timeout_s: float = 0.5
    """Connect and socket timeout of one store call (Redis); SQLite waits this long for a lock."""
    aof_rewrite_interval_s: float = 60.0
    """Redis: at most one BGREWRITEAOF per this many seconds after forgets (a burst of forgets, one rewrite)."""

    @classmethod
    def from_config(cls, cfg: GatewayConfig) -> StoreLimits:
        return cls(cfg.retention_days, cfg.max_events_per_visitor, tombstone_days=cfg.forget_tombstone_days,
                   timeout_s=cfg.store_timeout_s)

    def retention_cutoff(self, now_ms: int) -> int:
        return now_ms - self.retention_days * DAY_MS

    def tombstone_until(self, now_ms: int) -> int:
        return now_ms + int(self.tombstone_days * DAY_MS)


class StoreUnavailable(Exception):
    """The store could not be reached or answer in time (connection refused, timeout, database locked): reads
    degrade (RankTiles answers the baseline order), writes fail UNAVAILABLE and the caller retries."""


class Forgotten(Exception):
    """A link to a customer or visitor that ForgetCustomer tombstoned: refused until the tombstone expires."""


@dataclass(frozen=True)
class Appended:
    """What one append did: events stored, older events dropped by the per-visitor cap, events refused because
    their visitor or customer is tombstoned."""
    accepted: int
    evicted: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Forgot:
    """What one forget deleted, and the visitors (pseudonyms) it tombstoned with the customer."""
    links: int
    events: int
    visitors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pruned:
    """What one retention pass deleted, by kind (counts only: logs never carry ids)."""
    events: int = 0
    links: int = 0
    cache: int = 0
    tombstones: int = 0

    def total(self) -> int:
        return self.events + self.links + self.cache + self.tombstones


def tombstone_id(pseudonym: str) -> str:
    """What a tombstone is filed under: SHA-1 of the pseudonym (Redis' Lua has `redis.sha1hex`, so both stores
    compute the same). A tombstone must recognize a late event of the forgotten id, but needs not hold the
    pseudonym itself: a forgotten customer's pseudonym then appears nowhere in the store. Only preimage
    resistance matters here (of a 128-bit keyed value), which SHA-1 still has."""
    return hashlib.sha1(pseudonym.encode()).hexdigest()


def event_key(event: Event) -> str:
    """Identity of an event for deduplication: a collector's retry stores nothing twice."""
    return f"{event.anonymous_id}|{event.ts}|{event.event_type}|{event.url}"


def to_json(event: Event) -> str:
    return event.model_dump_json(exclude_none=True)


def from_json(text: str | bytes) -> Event:
    return Event.model_validate_json(text)


class SessionStore(Protocol):
    """Every id a store receives is a pseudonym (gateway/privacy.py): it never holds a customer or visitor id."""

    limits: StoreLimits

    async def append(self, events: Sequence[Event], now_ms: int | None = None) -> Appended:
        """Store events (already validated); atomic per visitor. Events of a tombstoned visitor, or carrying a
        tombstoned customer, are refused (tombstones compared with `now_ms`, default the wall clock)."""

    async def events(self, anonymous_id: str, since_ms: int = 0) -> list[Event]:
        """A visitor's events with ts >= since_ms, in time order."""

    async def customer_events(self, customer_id: str, since_ms: int = 0) -> list[Event]:
        """The events with ts >= since_ms of every visitor linked to the customer, in time order."""

    async def link(self, anonymous_id: str, customer_id: str, source: LinkSourceName, at_ms: int
                   ) -> tuple[Link, bool]:
        """Idempotent: returns the (possibly existing) link and whether it was created. Raises Forgotten when
        the customer or the visitor is tombstoned at `at_ms`."""

    async def unlink(self, anonymous_id: str, customer_id: str) -> bool: ...

    async def links(self, customer_id: str) -> list[Link]:
        """The customer's links, oldest first."""

    async def linked_visitors(self, anonymous_ids: Sequence[str]) -> set[str]:
        """Those of `anonymous_ids` linked to some customer (their sessions are worth embedding on write)."""

    async def forget_customer(self, customer_ids: Sequence[str], now_ms: int) -> Forgot:
        """Delete everything about the customer (one pseudonym per id key): their links both ways, their
        visitors' events and cached embeddings, events carrying the customer; tombstone the customer and those
        visitors until now_ms + tombstone_days."""

    async def prune(self, now_ms: int) -> Pruned:
        """Delete events past retention, links whose visitor has no event left and that are past retention,
        expired cache entries and tombstones."""

    async def cache_get(self, visitor: str, key: str) -> bytes | None: ...

    async def cache_put(self, visitor: str, key: str, value: bytes) -> None:
        """Cache an entry of `visitor`'s; ignored when the visitor is tombstoned (an in-flight embedding of a
        forgotten visitor must not come back)."""

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot answer (the health probe)."""

    async def close(self) -> None: ...


# -- the embedding cache's entries ------------------------------------------------------------------------
CACHE_MAGIC = b"IEMB"
CACHE_FORMAT = 1
_HEADER = struct.Struct("<4sB8sHH")
"""magic, format, manifest hash (8 bytes), embedding dim, label count: 17 bytes before the float32 values."""


def _tag(manifest_hash: str) -> bytes:
    """The manifest hash as 8 bytes (its 16 hex digits; any other text is hashed down to 8 bytes)."""
    try:
        raw = bytes.fromhex(manifest_hash)
    except ValueError:
        raw = b""
    return raw if len(raw) == 8 else hashlib.sha256(manifest_hash.encode()).digest()[:8]


def pack_cache_entry(manifest_hash: str, embedding: np.ndarray, probabilities: np.ndarray) -> bytes:
    """One session's embedding and intent probabilities behind a header that says what made them.

    Cache keys already carry the manifest hash; the header is the second lock: an entry written by another
    model set, another layout or a truncated write is detected on read (`unpack_cache_entry`) and treated as
    a miss, never decoded into a wrong answer. Redis entries outlive a gateway, so this matters across
    deployments that share one store."""
    emb = np.asarray(embedding, "<f4").reshape(-1)
    probs = np.asarray(probabilities, "<f4").reshape(-1)
    return _HEADER.pack(CACHE_MAGIC, CACHE_FORMAT, _tag(manifest_hash), len(emb), len(probs)) + emb.tobytes() + \
        probs.tobytes()


def unpack_cache_entry(blob: bytes | None, manifest_hash: str, dim: int, labels: int
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """(embedding, probabilities) of an entry written for this manifest with these dims, else None (a miss)."""
    if blob is None or len(blob) != _HEADER.size + 4 * (dim + labels):
        return None
    magic, fmt, tag, e, k = _HEADER.unpack_from(blob)
    if magic != CACHE_MAGIC or fmt != CACHE_FORMAT or tag != _tag(manifest_hash) or (e, k) != (dim, labels):
        return None
    values = np.frombuffer(blob, "<f4", offset=_HEADER.size).astype(np.float32)
    return values[:dim], values[dim:]


def open_store(url: str, limits: StoreLimits | None = None) -> SessionStore:
    """`sqlite:///abs/path.db`, `sqlite://relative.db`, a bare path, `redis://host:port/db` (one node), or
    `redis+cluster://host:port[,host:port...]` (a Redis Cluster; docs/deploy.md). A password in the URL never
    reaches a log or an error."""
    limits = limits or StoreLimits()
    if url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        from gateway.store.redis_store import RedisStore

        return RedisStore(url, limits)
    from gateway.store.sqlite_store import SqliteStore

    return SqliteStore(url.removeprefix("sqlite://"), limits)  # sqlite:///abs/path, sqlite://rel/path, or a path
