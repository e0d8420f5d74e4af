"""The embedded store: SQLite in WAL mode.

Writes go through one connection behind a lock in a worker thread (they fsync). Reads use a second
connection directly on the event loop: in WAL mode readers never wait for the writer, and a lookup of a
customer's few sessions takes tens of microseconds, less than a hop to a thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from gateway.store.base import DAY_MS, Link, LinkSourceName, StoreLimits, event_key, from_json, to_json
from training.core.contract import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,              -- anonymous_id|ts|event_type|url: deduplicates retries
    anonymous_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL                 -- the contract's Event as JSON
);
CREATE INDEX IF NOT EXISTS events_by_visitor ON events (anonymous_id, ts);
CREATE TABLE IF NOT EXISTS links (
    anonymous_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    source TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (anonymous_id, customer_id)
);
CREATE INDEX IF NOT EXISTS links_by_customer ON links (customer_id, linked_at);
"""
CACHE_ENTRIES = 100_000
"""The embedding cache lives in memory: an embedded store serves one replica, and a cache needs no fsync."""


class SqliteStore:
    def __init__(self, path: str | Path, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged write is on disk
        self._db.executescript(SCHEMA)
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None) \
            if self.path != ":memory:" else self._db
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def _run(self, fn, *args):
        def locked():
            with self._lock:
                return fn(*args)
        return await asyncio.to_thread(locked)

    def _tx(self, fn, *args):
        """Run fn inside one transaction (all or nothing)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(*args)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    # -- events

    async def append(self, events: Sequence[Event]) -> int:
        return await self._run(self._tx, self._append, events)

    def _append(self, events: Sequence[Event]) -> int:
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?)",
                             [(event_key(e), e.anonymous_id, e.ts, to_json(e)) for e in events])
        added = self._db.total_changes - before
        cap = self.limits.max_events_per_visitor
        for anon in {e.anonymous_id for e in events}:
            self._db.execute("DELETE FROM events WHERE anonymous_id = ? AND key NOT IN (SELECT key FROM events "
                             "WHERE anonymous_id = ? ORDER BY ts DESC LIMIT ?)", (anon, anon, cap))
        return added

    async def events(self, anonymous_id: str, since_ms: int = 0) -> list[Event]:
        rows = self._reader.execute("SELECT body FROM events WHERE anonymous_id = ? AND ts >= ? ORDER BY ts",
                                    (anonymous_id, since_ms)).fetchall()
        return [from_json(r[0]) for r in rows]

    async def customer_events(self, customer_id: str, since_ms: int = 0) -> list[Event]:
        rows = self._reader.execute(
            "SELECT e.body FROM links l JOIN events e ON e.anonymous_id = l.anonymous_id "
            "WHERE l.customer_id = ? AND e.ts >= ? ORDER BY e.ts", (customer_id, since_ms)).fetchall()
        return [from_json(r[0]) for r in rows]

    async def prune(self, now_ms: int) -> int:
        cutoff = now_ms - self.limits.retention_days * DAY_MS
        return await self._run(lambda: self._db.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount)

    # -- links

    async def link(self, anonymous_id: str, customer_id: str, source: LinkSourceName, at_ms: int
                   ) -> tuple[Link, bool]:
        def do() -> tuple[Link, bool]:
            created = self._db.execute("INSERT OR IGNORE INTO links VALUES (?, ?, ?, ?)",
                                       (anonymous_id, customer_id, source, at_ms)).rowcount == 1
            row = self._db.execute("SELECT source, linked_at FROM links WHERE anonymous_id = ? AND customer_id = ?",
                                   (anonymous_id, customer_id)).fetchone()
            return Link(anonymous_id, customer_id, row[0], row[1]), created
        return await self._run(self._tx, do)

    async def unlink(self, anonymous_id: str, customer_id: str) -> bool:
        return await self._run(lambda: self._db.execute(
            "DELETE FROM links WHERE anonymous_id = ? AND customer_id = ?", (anonymous_id, customer_id)).rowcount == 1)

    async def links(self, customer_id: str) -> list[Link]:
        rows = self._reader.execute("SELECT anonymous_id, customer_id, source, linked_at FROM links "
                                    "WHERE customer_id = ? ORDER BY linked_at, anonymous_id", (customer_id,)).fetchall()
        return [Link(*r) for r in rows]

    async def linked_visitors(self, anonymous_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(anonymous_ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):  # SQLite caps bound parameters
            chunk = ids[start:start + 500]
            found |= {r[0] for r in self._reader.execute(
                f"SELECT DISTINCT anonymous_id FROM links WHERE anonymous_id IN ({','.join('?' * len(chunk))})",
                chunk)}
        return found

    async def forget_customer(self, customer_id: str) -> tuple[int, int]:
        def do() -> tuple[int, int]:
            anons = [r[0] for r in self._db.execute("SELECT anonymous_id FROM links WHERE customer_id = ?",
                                                    (customer_id,))]
            links = self._db.execute("DELETE FROM links WHERE customer_id = ?", (customer_id,)).rowcount
            events = sum(self._db.execute("DELETE FROM events WHERE anonymous_id = ?", (a,)).rowcount for a in anons)
            return links, events
        return await self._run(self._tx, do)

    # -- embedding cache

    async def cache_get(self, key: str) -> bytes | None:
        hit = self._cache.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        self._cache.move_to_end(key)
        return hit[1]

    async def cache_put(self, key: str, value: bytes) -> None:
        self._cache[key] = (time.monotonic() + self.limits.cache_ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        if self._reader is not self._db:
            self._reader.close()
        await self._run(self._db.close)
