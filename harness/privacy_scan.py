"""What is left of a forgotten customer: a scan of every place a store keeps data, and the forget scenario.

`forget_residue` drives a real gateway (an in-process `GatewayServer`, so its in-memory cache can be read too):
it records events and links for a customer with distinctive ids (two linked visitors, one logged in and unlinked
earlier, and an unrelated control customer), fills the caches (GetSessions with embeddings, RankTiles,
write-behind), checks that the scan finds them, calls ForgetCustomer and scans again:

- SQLite: every row of every table, and the raw bytes of the database, its WAL and its shared-memory file;
- Redis: every key and every value (strings, hashes, sets, sorted sets, lists), and the bytes of every file in
  its data directory (the append-only file after the rewrite the store asked for);
- the SQLite store's in-memory embedding cache (visitor, key and value).

The needles are the raw ids (which must never be stored at all), their pseudonyms under the gateway's key, the
distinctive search queries and URL paths of their events and the first floats of their session embeddings.
Tombstones are kept on purpose (they hold a SHA-1 of the pseudonym, never the pseudonym): after their period a
retention pass removes them, and a last scan with their digests as needles must find nothing either.
The result is a count of items (rows, keys, files, cache entries) with a residue, and where, never what.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from gateway.api import pb, pb_grpc
from gateway.privacy import Pseudonymizer
from gateway.store.base import DAY_MS, tombstone_id


def _contains(blob: bytes, needles: Sequence[bytes]) -> bool:
    return any(n in blob for n in needles)


def _bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def scan_sqlite(path: str | Path, needles: Sequence[bytes]) -> list[str]:
    """Where in the database (table rows) and its files (db, -wal, -shm bytes) a needle appears."""
    found: list[str] = []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                if any(_contains(_bytes(v), needles) for v in row):
                    found.append(f"sqlite row of {table}")
    finally:
        db.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        file = Path(f"{path}{suffix}")
        if file.exists() and _contains(file.read_bytes(), needles):
            found.append(f"sqlite file *{suffix or '.db'}")
    return found


def _redis_values(client: redis.Redis, key: bytes) -> Iterable[bytes]:
    kind = client.type(key).decode()
    if kind == "string":
        yield client.get(key) or b""
    elif kind == "hash":
        for k, v in client.hgetall(key).items():
            yield k
            yield v
    elif kind == "set":
        yield from client.smembers(key)
    elif kind == "zset":
        yield from client.zrange(key, 0, -1)
    elif kind == "list":
        yield from client.lrange(key, 0, -1)


def scan_redis(url: str, needles: Sequence[bytes], data_dir: str | Path | None = None) -> list[str]:
    """Where in Redis (keys, values) and in its data directory's files a needle appears."""
    found: list[str] = []
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter("*"):
            if _contains(key, needles):
                found.append("redis key")
            elif any(_contains(v, needles) for v in _redis_values(client, key)):
                found.append("redis value")
        directory = Path(data_dir or client.config_get("dir")["dir"])
    finally:
        client.close()
    for file in directory.rglob("*"):
        if file.is_file() and file.suffix != ".log" and _contains(file.read_bytes(), needles):
            found.append(f"redis file {file.name.split('.')[-1]}")
    return found


def scan_memory_cache(items: Iterable[tuple[str, str, bytes]], needles: Sequence[bytes]) -> list[str]:
    """Entries of an in-memory cache ((visitor, key, value)) that hold a needle."""
    return ["memory cache entry" for v, k, value in items if _contains(f"{v}\0{k}".encode() + value, needles)]


@dataclass
class ForgetResult:
    """What the scenario found: `before` proves the scan sees the data, `after` is the residue (0 is the goal),
    `after_tombstones` the residue once the tombstones' period is over and retention ran."""

    before: list[str] = field(default_factory=list)
    raw_before: list[str] = field(default_factory=list)
    """Where a raw id (not a pseudonym) was found before the forget: never anywhere, the store holds none."""
    after: list[str] = field(default_factory=list)
    after_tombstones: list[str] = field(default_factory=list)
    control_kept: bool = False
    forget: tuple[int, int] = (0, 0)
    named_visitors: bool = False
    """GetSessions by customer named the linked visitors by their pseudonyms (the store knows no other name)."""

    @property
    def residue_items(self) -> int:
        return len(self.after) + len(self.after_tombstones)


def _event(anon: str, ts: int, url: str, query: str = "", customer: str = "", kind: str = "page_view") -> pb.WebEvent:
    return pb.WebEvent(anonymous_id=anon, ts=str(ts), event_type=kind, url=url, query=query, customer_id=customer)


async def forget_residue(server, store_url: str, events_ts: Sequence[int], tiles: Sequence[str],
                         channel, redis_dir: str | Path | None = None) -> ForgetResult:
    """The forget scenario on a started in-process `GatewayServer` reached through `channel` (grpc.aio, with
    every scope), its store at `store_url`; `events_ts`: event times inside its lookback (at least 6)."""
    stub = pb_grpc.IntentGatewayServiceStub(channel)
    gw = server.app.gateway
    ids: Pseudonymizer = gw.ids
    tag = secrets.token_hex(4)
    customer, control = f"CUST-privacy-{tag}", f"CUST-control-{tag}"
    linked = [f"ANON-login-{tag}", f"ANON-api-{tag}"]
    unlinked, other = f"ANON-unlinked-{tag}", f"ANON-control-{tag}"
    paths = [f"/privacy-{tag}/{i}" for i in range(3)]
    queries = [f"zz9 plural z alpha {tag} {i}" for i in range(3)]

    batch = []
    for i, anon in enumerate([*linked, unlinked]):
        batch += [_event(anon, ts, paths[i], queries[i]) for ts in events_ts[:-1]]
    batch += [_event(linked[0], events_ts[-1], "/login", customer=customer, kind="login"),
              _event(unlinked, events_ts[-1], "/login", customer=customer, kind="login")]
    batch += [_event(other, ts, "/checking") for ts in events_ts]
    await stub.RecordEvents(pb.RecordEventsRequest(events=batch), timeout=30)
    await stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=linked[1], customer_id=customer), timeout=10)
    await stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=other, customer_id=control), timeout=10)
    await stub.UnlinkIdentity(pb.UnlinkIdentityRequest(anonymous_id=unlinked, customer_id=customer), timeout=10)
    sessions = await stub.GetSessions(pb.GetSessionsRequest(customer_id=customer, include_embedding=True), timeout=30)
    await stub.GetSessions(pb.GetSessionsRequest(anonymous_id=linked[0], include_embedding=True), timeout=30)
    await stub.RankTiles(pb.RankTilesRequest(customer_id=customer, tile_ids=list(tiles)), timeout=30)
    await stub.RankTiles(pb.RankTilesRequest(customer_id=control, tile_ids=list(tiles)), timeout=30)
    embedder = gw.embedder
    for _ in range(200):  # write-behind work settles
        if embedder is None or (not embedder.pending and not embedder.busy):
            break
        await asyncio.sleep(0.05)

    pseudonyms = [p for c in (customer,) for p in ids.customer_all(c)] + \
        [p for anon in linked for p in ids.visitor_all(anon)]
    embeddings = [struct.pack("<8f", *s.embedding[:8]) for s in sessions.sessions if len(s.embedding) >= 8]
    needles = [x.encode() for x in (customer, *linked, unlinked, other, control, *pseudonyms, *paths[:2],
                                    *queries[:2])] + embeddings
    store = server.app.store
    result = ForgetResult()
    result.before = _scan(store, store_url, needles, redis_dir)
    raw = [x.encode() for x in (customer, *linked, unlinked, other, control)]
    result.raw_before = _scan(store, store_url, raw, redis_dir)
    result.named_visitors = {s.anonymous_id for s in sessions.sessions} == {ids.visitor(v) for v in linked}
    reply = await stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id=customer), timeout=30)
    result.forget = (reply.links_deleted, reply.events_deleted)
    await _settle(store)
    result.after = _scan(store, store_url, needles, redis_dir)
    result.control_kept = bool((await stub.GetSessions(pb.GetSessionsRequest(customer_id=control),
                                                       timeout=30)).sessions)
    await store.prune(gw.now_ms() + int((gw.cfg.forget_tombstone_days + 1) * DAY_MS))
    await _settle(store, now=True)  # the rewrite this prune asked for, without waiting out the rate limit
    tombstones = [tombstone_id(p).encode() for p in pseudonyms]
    result.after_tombstones = _scan(store, store_url, needles + tombstones, redis_dir)
    return result


async def _settle(store, now: bool = False) -> None:
    """Wait for a Redis store's AOF rewrite (the one its forget asked for) to finish; `now`: start it at once."""
    pending = getattr(store, "rewrite_pending", None)
    if now and pending is not None:
        await store.rewrite_now()
    for _ in range(400):
        if pending is None or not await pending():
            return
        await asyncio.sleep(0.05)


def _scan(store, store_url: str, needles: Sequence[bytes], redis_dir: str | Path | None) -> list[str]:
    if store_url.startswith("redis"):
        return scan_redis(store_url, needles, redis_dir)
    found = scan_sqlite(store_url.removeprefix("sqlite://"), needles)
    cached = getattr(store, "cached_items", None)
    return found + (scan_memory_cache(cached(), needles) if cached else [])
