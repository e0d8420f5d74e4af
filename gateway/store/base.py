"""The store's interface, its records and the limits every implementation enforces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from core.contract import Event

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
    """Events older than this (by event time, against the newest write) are pruned."""
    max_events_per_visitor: int = 5000
    """A visitor's oldest events beyond this are dropped on write (bots and runaway tabs)."""
    cache_ttl_s: int = 86_400
    """How long a cached session embedding lives."""


def event_key(event: Event) -> str:
    """Identity of an event for deduplication: a collector's retry stores nothing twice."""
    return f"{event.anonymous_id}|{event.ts}|{event.event_type}|{event.url}"


def to_json(event: Event) -> str:
    return event.model_dump_json(exclude_none=True)


def from_json(text: str | bytes) -> Event:
    return Event.model_validate_json(text)


class SessionStore(Protocol):
    limits: StoreLimits

    async def append(self, events: Sequence[Event]) -> int:
        """Store events (already validated); returns how many were new. Atomic: all or none."""

    async def events(self, anonymous_id: str, since_ms: int = 0) -> list[Event]:
        """A visitor's events with ts >= since_ms, in time order."""

    async def customer_events(self, customer_id: str, since_ms: int = 0) -> list[Event]:
        """The events with ts >= since_ms of every visitor linked to the customer, in time order."""

    async def link(self, anonymous_id: str, customer_id: str, source: LinkSourceName, at_ms: int
                   ) -> tuple[Link, bool]:
        """Idempotent: returns the (possibly existing) link and whether it was created."""

    async def unlink(self, anonymous_id: str, customer_id: str) -> bool: ...

    async def links(self, customer_id: str) -> list[Link]:
        """The customer's links, oldest first."""

    async def linked_visitors(self, anonymous_ids: Sequence[str]) -> set[str]:
        """Those of `anonymous_ids` linked to some customer (their sessions are worth embedding on write)."""

    async def forget_customer(self, customer_id: str) -> tuple[int, int]:
        """Delete the customer's links and their visitors' events: (links deleted, events deleted)."""

    async def prune(self, now_ms: int) -> int:
        """Delete events older than the retention window; returns how many."""

    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_put(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...


def open_store(url: str, limits: StoreLimits | None = None) -> SessionStore:
    """`sqlite:///abs/path.db`, `sqlite://relative.db`, a bare path, or `redis://host:port/db`."""
    limits = limits or StoreLimits()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from gateway.store.redis_store import RedisStore

        return RedisStore(url, limits)
    from gateway.store.sqlite_store import SqliteStore

    return SqliteStore(url.removeprefix("sqlite://"), limits)  # sqlite:///abs/path, sqlite://rel/path, or a path
