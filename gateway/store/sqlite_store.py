"""The embedded store: SQLite in WAL mode.

Writes go through one connection behind a lock in a worker thread (they fsync). Reads use a second
connection directly on the event loop: in WAL mode readers never wait for the writer, and a lookup of a
customer's few sessions takes tens of microseconds, less than a hop to a thread.

Deletion is real: `secure_delete` overwrites deleted rows with zeros in the database file, and every forget
ends with `wal_checkpoint(TRUNCATE)`, so the WAL (which still held the deleted rows' pages) is emptied too.
Every id here is a pseudonym (gateway/privacy.py).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.store.base import (
    Appended,
    Forgot,
    Forgotten,
    Link,
    LinkSourceName,
    Pruned,
    StoreLimits,
    StoreUnavailable,
    event_key,
    from_json,
    to_json,
    tombstone_id,
)
from training.core.contract import Event

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,              -- anonymous_id|ts|event_type|url: deduplicates retries
    anonymous_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL,                -- the contract's Event as JSON (its ids are pseudonyms)
    customer_id TEXT                   -- set when the event carries one (a login): forgotten with the customer
);
CREATE INDEX IF NOT EXISTS events_by_visitor ON events (anonymous_id, ts);
CREATE INDEX IF NOT EXISTS events_by_ts ON events (ts);
CREATE TABLE IF NOT EXISTS links (
    anonymous_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    source TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (anonymous_id, customer_id)
);
CREATE INDEX IF NOT EXISTS links_by_customer ON links (customer_id, linked_at);
CREATE TABLE IF NOT EXISTS tombstones (
    id TEXT PRIMARY KEY,               -- tombstone_id() of a forgotten customer's or visitor's pseudonym
    until INTEGER NOT NULL             -- epoch ms: refused until then, pruned after
);
"""
CACHE_ENTRIES = 100_000
"""The embedding cache lives in memory: an embedded store serves one replica, and a cache needs no fsync."""


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _unavailable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """sqlite3.OperationalError (locked, I/O, disk full) as StoreUnavailable, with SQLite's own message (it
    names no row)."""
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from None
    return wrapper


class SqliteStore:
    def __init__(self, path: str | Path, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        timeout = max(self.limits.timeout_s, 0.05)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged write is on disk
        self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
        self._migrate()
        self._db.executescript(SCHEMA)
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=timeout) \
            if self.path != ":memory:" else self._db
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._cache_by_visitor: dict[str, set[str]] = {}

    def _migrate(self) -> None:
        """A database from before events.customer_id gets the column (its old rows carry none)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(events)")}
        if columns and "customer_id" not in columns:
            self._db.execute("ALTER TABLE events ADD COLUMN customer_id TEXT")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)
        return await asyncio.to_thread(locked)

    def _tx(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn inside one transaction (all or nothing)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(*args)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    def _tombstoned(self, db: sqlite3.Connection, ids: Iterable[str], now_ms: int) -> set[str]:
        """Those of the pseudonyms `ids` whose tombstone is in force at now_ms."""
        by_digest = {tombstone_id(i): i for i in ids}
        digests = list(by_digest)
        found: set[str] = set()
        for start in range(0, len(digests), 500):  # SQLite caps bound parameters
            chunk = digests[start:start + 500]
            found |= {by_digest[r[0]] for r in db.execute(
                f"SELECT id FROM tombstones WHERE until > ? AND id IN ({','.join('?' * len(chunk))})",
                [now_ms, *chunk])}
        return found

    # -- events

    @_unavailable
    async def append(self, events: Sequence[Event], now_ms: int | None = None) -> Appended:
        now_ms = _wall_ms() if now_ms is None else now_ms
        return await self._run(self._tx, self._append, events, now_ms)

    def _append(self, events: Sequence[Event], now_ms: int) -> Appended:
        dead = self._tombstoned(self._db, [e.anonymous_id for e in events] +
                                [e.customer_id for e in events if e.customer_id], now_ms)
        kept = [e for e in events if e.anonymous_id not in dead and (e.customer_id or "") not in dead]
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                             [(event_key(e), e.anonymous_id, e.ts, to_json(e), e.customer_id) for e in kept])
        added = self._db.total_changes - before
        cap, evicted = self.limits.max_events_per_visitor, 0
        for anon in {e.anonymous_id for e in kept}:
            evicted += self._db.execute(
                "DELETE FROM events WHERE anonymous_id = ? AND key NOT IN (SELECT key FROM events "
                "WHERE anonymous_id = ? ORDER BY ts DESC LIMIT ?)", (anon, anon, cap)).rowcount
        return Appended(added, evicted, len(events) - len(kept))

    @_unavailable
    async def events(self, anonymous_id: str, since_ms: int = 0) -> list[Event]:
        rows = self._reader.execute("SELECT body FROM events WHERE anonymous_id = ? AND ts >= ? ORDER BY ts",
                                    (anonymous_id, since_ms)).fetchall()
        return [from_json(r[0]) for r in rows]

    @_unavailable
    async def customer_events(self, customer_id: str, since_ms: int = 0) -> list[Event]:
        rows = self._reader.execute(
            "SELECT e.body FROM links l JOIN events e ON e.anonymous_id = l.anonymous_id "
            "WHERE l.customer_id = ? AND e.ts >= ? ORDER BY e.ts", (customer_id, since_ms)).fetchall()
        return [from_json(r[0]) for r in rows]

    @_unavailable
    async def prune(self, now_ms: int) -> Pruned:
        cutoff = self.limits.retention_cutoff(now_ms)

        def do() -> Pruned:
            events = self._db.execute("DELETE FROM events WHERE ts < ?", (cutoff,)).rowcount
            links = self._db.execute(
                "DELETE FROM links WHERE linked_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM events e WHERE e.anonymous_id = links.anonymous_id)", (cutoff,)).rowcount
            tombstones = self._db.execute("DELETE FROM tombstones WHERE until <= ?", (now_ms,)).rowcount
            return Pruned(events, links, 0, tombstones)
        pruned = await self._run(self._tx, do)
        if pruned.total():
            await self._run(self._checkpoint)
        return Pruned(pruned.events, pruned.links, self._prune_cache(), pruned.tombstones)

    # -- links

    @_unavailable
    async def link(self, anonymous_id: str, customer_id: str, source: LinkSourceName, at_ms: int
                   ) -> tuple[Link, bool]:
        def do() -> tuple[Link, bool]:
            if self._tombstoned(self._db, [anonymous_id, customer_id], at_ms):
                raise Forgotten("the customer or the visitor was forgotten")
            created = self._db.execute("INSERT OR IGNORE INTO links VALUES (?, ?, ?, ?)",
                                       (anonymous_id, customer_id, source, at_ms)).rowcount == 1
            row = self._db.execute("SELECT source, linked_at FROM links WHERE anonymous_id = ? AND customer_id = ?",
                                   (anonymous_id, customer_id)).fetchone()
            return Link(anonymous_id, customer_id, row[0], row[1]), created
        return await self._run(self._tx, do)

    @_unavailable
    async def unlink(self, anonymous_id: str, customer_id: str) -> bool:
        return await self._run(lambda: self._db.execute(
            "DELETE FROM links WHERE anonymous_id = ? AND customer_id = ?", (anonymous_id, customer_id)).rowcount == 1)

    @_unavailable
    async def links(self, customer_id: str) -> list[Link]:
        rows = self._reader.execute("SELECT anonymous_id, customer_id, source, linked_at FROM links "
                                    "WHERE customer_id = ? ORDER BY linked_at, anonymous_id", (customer_id,)).fetchall()
        return [Link(*r) for r in rows]

    @_unavailable
    async def linked_visitors(self, anonymous_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(anonymous_ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):  # SQLite caps bound parameters
            chunk = ids[start:start + 500]
            found |= {r[0] for r in self._reader.execute(
                f"SELECT DISTINCT anonymous_id FROM links WHERE anonymous_id IN ({','.join('?' * len(chunk))})",
                chunk)}
        return found

    @_unavailable
    async def forget_customer(self, customer_ids: Sequence[str], now_ms: int) -> Forgot:
        until = self.limits.tombstone_until(now_ms)

        carriers: list[str] = []  # visitors unlinked earlier whose login events carry the customer

        def do() -> Forgot:
            links = events = 0
            visitors: list[str] = []
            for customer in customer_ids:
                carriers.extend(r[0] for r in self._db.execute(
                    "SELECT DISTINCT anonymous_id FROM events WHERE customer_id = ?", (customer,)))
                anons = [r[0] for r in self._db.execute("SELECT anonymous_id FROM links WHERE customer_id = ?",
                                                        (customer,))]
                visitors += anons
                links += self._db.execute("DELETE FROM links WHERE customer_id = ?", (customer,)).rowcount
                events += sum(self._db.execute("DELETE FROM events WHERE anonymous_id = ?", (a,)).rowcount
                              for a in anons)
                # login events of visitors unlinked earlier still carry the customer
                events += self._db.execute("DELETE FROM events WHERE customer_id = ?", (customer,)).rowcount
            self._db.executemany("INSERT OR REPLACE INTO tombstones VALUES (?, ?)",
                                 [(tombstone_id(i), until) for i in dict.fromkeys([*customer_ids, *visitors])])
            return Forgot(links, events, tuple(dict.fromkeys(visitors)))

        forgot = await self._run(self._tx, do)
        for visitor in dict.fromkeys([*forgot.visitors, *carriers]):  # embeddings of sessions with those events
            self._drop_cached(visitor)
        await self._run(self._checkpoint)
        return forgot

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it: the WAL's copies of deleted rows go with it."""
        if self.path != ":memory:":
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- embedding cache (in memory, indexed by visitor so a forget finds every entry)

    async def cache_get(self, visitor: str, key: str) -> bytes | None:
        hit = self._cache.get((visitor, key))
        if hit is None or hit[0] < time.monotonic():
            return None
        self._cache.move_to_end((visitor, key))
        return hit[1]

    @_unavailable
    async def cache_put(self, visitor: str, key: str, value: bytes) -> None:
        if self._tombstoned(self._reader, [visitor], -(2**62)):  # any tombstone, whatever the clock says
            return
        self._cache[(visitor, key)] = (time.monotonic() + self.limits.cache_ttl_s, value)
        self._cache.move_to_end((visitor, key))
        self._cache_by_visitor.setdefault(visitor, set()).add(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._forget_entry(*self._cache.popitem(last=False)[0])

    def _forget_entry(self, visitor: str, key: str) -> None:
        keys = self._cache_by_visitor.get(visitor)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._cache_by_visitor[visitor]

    def _drop_cached(self, visitor: str) -> int:
        keys = self._cache_by_visitor.pop(visitor, set())
        for key in keys:
            self._cache.pop((visitor, key), None)
        return len(keys)

    def _prune_cache(self) -> int:
        now = time.monotonic()
        expired = [k for k, (deadline, _) in self._cache.items() if deadline < now]
        for visitor, key in expired:
            del self._cache[(visitor, key)]
            self._forget_entry(visitor, key)
        return len(expired)

    def cached_items(self) -> list[tuple[str, str, bytes]]:
        """Every in-memory cache entry as (visitor, key, value): for the privacy scan."""
        return [(v, k, value) for (v, k), (_, value) in self._cache.items()]

    @_unavailable
    async def ping(self) -> None:
        """One trivial read: the health probe's (gateway/health.py)."""
        self._reader.execute("SELECT 1 FROM tombstones LIMIT 1").fetchall()

    async def close(self) -> None:
        if self._reader is not self._db:
            self._reader.close()
        await self._run(self._db.close)
