"""The shared store for several gateway replicas: Redis, one node or a Redis Cluster; each write a Lua script
that declares every key it touches and stays inside one hash slot.

Keys (prefix configurable; every id is a pseudonym, gateway/privacy.py; every key carries a TTL), single node
(`redis://`) / cluster (`redis+cluster://`), with T = SHA-1 of the pseudonym (`tombstone_id`):
    ev:A        / ev:{v:T}:A        sorted set of event keys by event time     TTL retention, from the last write
    evb:A       / evb:{v:T}:A       hash event key -> event JSON               TTL retention, from the last write
    linkedto:A  / linkedto:{v:T}:A  set of the customers the visitor is        as link:
                                    linked to
    cache:A     / cache:{v:T}:A     hash cache key -> cached embedding         TTL cache_ttl_s, from the last put
    tomb:T      / tomb:{v:T}        a forgotten visitor: epoch ms until which  TTL tombstone_days
                                    its events and links are refused
    link:C      / link:{c:T}:C      hash anonymous_id -> {"source",            TTL retention, from the last link
                                    "linked_at"}                               or event of a linked visitor
    cev:C       / cev:{c:T}:C       set of the keys of events carrying the     TTL retention
                                    customer (login events: forgotten with the customer, even from visitors
                                    unlinked since)
    tomb:T      / tomb:{c:T}        a forgotten customer, as a visitor's
The single-node names are today's (a running deployment keeps its data). On a cluster the hash tag {v:T}
puts all of a visitor's keys in one slot, {c:T} all of a customer's; the tag is the pseudonym's SHA-1, not
the pseudonym, so the tombstone shares the slot (a write checks it in the same script) and still holds no
pseudonym. A step that spans a visitor and a customer is two scripts, ordered so a crash between them leaves
nothing a forgotten customer could be found or re-linked by:
- append: the visitor's script stores the events (refusing a tombstoned visitor), then each customer's script
  notes its login events in cev: (refusing a tombstoned customer: then the events are taken back out).
- link: the customer's script (tombstone check, link:) before the visitor's (tombstone check, linkedto:);
  unlink and prune remove linkedto: before link:. A link: entry without its linkedto: is harmless (forget finds
  the visitor through link:), the reverse would leave a customer's pseudonym behind a forget.
- forget: tombstone every customer first (from then no link or login event of theirs lands), read their
  link: and cev:, run one script per visitor (tombstone, delete its events, cache and linkedto: entries), take
  their login events out of other visitors, and delete link: and cev: last. A forget that fails half-way is
  retried by its caller and finds what is left.
`prune` (every primary's keys) trims older events, links past retention whose visitor has no event left and
tombstones past their time.

Deleted data stays in the append-only file until Redis rewrites it (Redis' persistence docs): after forgets the
store asks every primary for BGREWRITEAOF, at most once per `aof_rewrite_interval_s` (a burst of forgets, one
rewrite), and once more at close if one is still due (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store.base import (
    DAY_MS,
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

log = logging.getLogger("gateway")
CLUSTER_SCHEME = "redis+cluster://"

_DEAD = """
local function dead(key, now)
  local u = redis.call('GET', key)
  return u and tonumber(u) > tonumber(now)
end
"""

STORE = _DEAD + """
-- KEYS ev, evb, visitor tomb, linkedto; ARGV now, cap, ttl, then (event key, ts, json) per event
if dead(KEYS[3], ARGV[1]) then return {-1, 0, {}} end
local cap, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local added, evicted = 0, 0
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[i + 1]), ARGV[i])
    added = added + 1
  end
end
local extra = redis.call('ZCARD', KEYS[1]) - cap
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[1], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1)
  redis.call('HDEL', KEYS[2], unpack(old))
  evicted = #old
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
local linked = {}  -- a linked visitor's links live as long as its events: the caller extends them
if redis.call('EXPIRE', KEYS[4], ttl) == 1 then linked = redis.call('SMEMBERS', KEYS[4]) end
return {added, evicted, linked}
"""

NOTE = _DEAD + """
-- KEYS cev, customer tomb; ARGV now, ttl, event keys...
if dead(KEYS[2], ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

UNSTORE = """
-- KEYS ev, evb; ARGV event keys: how many were stored
local n = redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
return n
"""

LINK_CUSTOMER = _DEAD + """
-- KEYS link, customer tomb; ARGV now, anonymous id, link JSON, ttl
if dead(KEYS[2], ARGV[1]) then return {-1, ''} end
local created = redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {created, redis.call('HGET', KEYS[1], ARGV[2])}
"""

LINK_VISITOR = _DEAD + """
-- KEYS linkedto, visitor tomb; ARGV now, customer, ttl
if dead(KEYS[2], ARGV[1]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

FORGET_VISITOR = """
-- KEYS ev, evb, cache, linkedto, visitor tomb; ARGV until ms, tombstone ttl, forgotten customers...
local n = redis.call('ZCARD', KEYS[1])
redis.call('SET', KEYS[5], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for i = 3, #ARGV do redis.call('SREM', KEYS[4], ARGV[i]) end
return n
"""

PRUNE_EVENTS = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('HDEL', KEYS[2], unpack(old))
end
return #old
"""

PRUNE_VISITOR_LINK = """
-- KEYS ev, linkedto; ARGV customer: drop the visitor's side of a link when it has no event left
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

PRUNE_TOMBSTONE = """
local u = redis.call('GET', KEYS[1])
if u and tonumber(u) <= tonumber(ARGV[1]) then return redis.call('DEL', KEYS[1]) end
return 0
"""

CACHE_PUT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


class Keys:
    """The single-node key names (today's): `<prefix><kind>:<pseudonym>`, tombstones `<prefix>tomb:<T>`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def visitor(self, kind: str, anon: str) -> str:
        return f"{self.prefix}{kind}:{anon}"

    def customer(self, kind: str, customer: str) -> str:
        return f"{self.prefix}{kind}:{customer}"

    def visitor_tomb(self, anon: str) -> str:
        return f"{self.prefix}tomb:{tombstone_id(anon)}"

    def customer_tomb(self, customer: str) -> str:
        return f"{self.prefix}tomb:{tombstone_id(customer)}"

    def ident(self, key: str, kind: str) -> str:
        """The pseudonym a visitor's or customer's key is named by."""
        return key.removeprefix(f"{self.prefix}{kind}:")


class ClusterKeys(Keys):
    """Hash-tagged names: one slot per visitor ({v:T}) and per customer ({c:T}), tombstone included."""

    def visitor(self, kind: str, anon: str) -> str:
        return f"{self.prefix}{kind}:{{v:{tombstone_id(anon)}}}:{anon}"

    def customer(self, kind: str, customer: str) -> str:
        return f"{self.prefix}{kind}:{{c:{tombstone_id(customer)}}}:{customer}"

    def visitor_tomb(self, anon: str) -> str:
        return f"{self.prefix}tomb:{{v:{tombstone_id(anon)}}}"

    def customer_tomb(self, customer: str) -> str:
        return f"{self.prefix}tomb:{{c:{tombstone_id(customer)}}}"

    def ident(self, key: str, kind: str) -> str:
        return key.split("}:", 1)[1]


def parse_cluster_url(url: str) -> tuple[list[ClusterNode], str | None, str | None]:
    """`redis+cluster://[user:password@]host:port[,host:port...][/0]`: the startup nodes and credentials (a
    cluster has database 0 only)."""
    netloc, _, path = url.removeprefix(CLUSTER_SCHEME).partition("/")
    if path.split("?", 1)[0] not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only")
    username = password = None
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        user, _, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    nodes = []
    for hostport in filter(None, netloc.split(",")):
        host, _, port = hostport.rpartition(":")
        nodes.append(ClusterNode(host.strip("[]") or "127.0.0.1", int(port or 6379)))
    if not nodes:
        raise ValueError("redis+cluster:// needs at least one host:port")
    return nodes, username, password


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _unavailable(fn: Callable[..., Any], prepare: bool = True) -> Callable[..., Any]:
    """Connection errors and timeouts (a cluster that is down or cannot be reached among them) as
    StoreUnavailable, named by class only (a redis error message can carry the server's address; never its
    credentials, but the class is all a caller needs). `prepare`: make the store ready first (a cluster's
    scripts loaded; the health probe only needs the nodes)."""
    @functools.wraps(fn)
    async def wrapper(store: RedisStore, *args: Any, **kwargs: Any) -> Any:
        try:
            if prepare:
                await store.ready()
            return await fn(store, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError, ClusterDownError,
                RedisClusterException) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from None
    return wrapper


class RedisStore:
    def __init__(self, url: str, limits: StoreLimits | None = None, prefix: str = "intent:") -> None:
        self.limits = limits or StoreLimits()
        self.prefix = prefix
        timeout = self.limits.timeout_s
        self.cluster = url.startswith(CLUSTER_SCHEME)
        self._redis: Any
        if self.cluster:
            nodes, username, password = parse_cluster_url(url)
            self._redis = RedisCluster(startup_nodes=nodes, username=username, password=password,
                                       socket_connect_timeout=timeout, socket_timeout=timeout)
            self.keys: Keys = ClusterKeys(prefix)
        else:
            self._redis = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
            self.keys = Keys(prefix)
        script = self._redis.register_script
        self._store, self._note, self._unstore = script(STORE), script(NOTE), script(UNSTORE)
        self._link_customer, self._link_visitor = script(LINK_CUSTOMER), script(LINK_VISITOR)
        self._forget_visitor = script(FORGET_VISITOR)
        self._prune_events, self._prune_visitor_link = script(PRUNE_EVENTS), script(PRUNE_VISITOR_LINK)
        self._prune_tombstone, self._cache_put = script(PRUNE_TOMBSTONE), script(CACHE_PUT)
        self._scripts = (STORE, NOTE, UNSTORE, LINK_CUSTOMER, LINK_VISITOR, FORGET_VISITOR, PRUNE_EVENTS,
                         PRUNE_VISITOR_LINK, PRUNE_TOMBSTONE, CACHE_PUT)
        self._ready = not self.cluster
        self._ready_lock = asyncio.Lock()
        self._rewrite_due = False
        self._last_rewrite = float("-inf")
        self._rewriter: asyncio.Task | None = None

    async def ready(self) -> None:
        """A cluster: learn its nodes and load every script on every primary once, before concurrent calls
        would each hit NOSCRIPT and reload them across the nodes at once (seen to break redis-py's connections
        under load). One node needs nothing: a script missing there is loaded by the call that misses it."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await self._redis.initialize()
                for text in self._scripts:
                    await self._redis.script_load(text)  # SCRIPT LOAD goes to every primary
                self._ready = True

    @property
    def _ttl_s(self) -> int:
        return self.limits.retention_days * DAY_MS // 1000

    def _events_keys(self, anon: str) -> list[str]:
        return [self.keys.visitor("ev", anon), self.keys.visitor("evb", anon)]

    def _pipeline(self) -> Any:
        return self._redis.pipeline() if self.cluster else self._redis.pipeline(transaction=False)

    async def _customers_dead(self, customers: Sequence[str], now_ms: int) -> set[str]:
        """Of `customers`, those tombstoned at now_ms (a read ahead of the writes: most refusals cost no write)."""
        dead = set()
        for customer in customers:
            until = await self._redis.get(self.keys.customer_tomb(customer))
            if until is not None and int(until) > now_ms:
                dead.add(customer)
        return dead

    @_unavailable
    async def append(self, events: Sequence[Event], now_ms: int | None = None) -> Appended:
        now_ms = _wall_ms() if now_ms is None else now_ms
        by_visitor: dict[str, list[Event]] = {}
        for e in events:
            by_visitor.setdefault(e.anonymous_id, []).append(e)
        total = Appended(0, 0, 0)
        for anon, group in by_visitor.items():  # one atomic script per visitor
            got = await self._append_visitor(anon, group, now_ms)
            total = Appended(total.accepted + got.accepted, total.evicted + got.evicted,
                             total.refused + got.refused)
        return total

    async def _append_visitor(self, anon: str, group: list[Event], now_ms: int) -> Appended:
        """Store one visitor's events, then note its login events with their customers (module docstring)."""
        dead = await self._customers_dead(list(dict.fromkeys(e.customer_id for e in group if e.customer_id)),
                                          now_ms)
        kept = [e for e in group if e.customer_id not in dead]
        args: list = [now_ms, self.limits.max_events_per_visitor, self._ttl_s]
        for e in kept:
            args += [event_key(e), e.ts, to_json(e)]
        keys = [*self._events_keys(anon), self.keys.visitor_tomb(anon), self.keys.visitor("linkedto", anon)]
        added, evicted, linked = await self._store(keys=keys, args=args)
        refused = len(group) - len(kept)
        if int(added) < 0:
            return Appended(0, 0, len(group))
        for customer in linked:
            await self._redis.expire(self.keys.customer("link", customer.decode()), self._ttl_s)
        by_customer: dict[str, list[str]] = {}
        for e in kept:
            if e.customer_id:
                by_customer.setdefault(e.customer_id, []).append(event_key(e))
        taken_back = 0
        for customer, event_keys in by_customer.items():
            noted = await self._note(keys=[self.keys.customer("cev", customer), self.keys.customer_tomb(customer)],
                                     args=[now_ms, self._ttl_s, *event_keys])
            if not int(noted):  # forgotten since the read above: its events go back out
                taken_back += int(await self._unstore(keys=self._events_keys(anon), args=event_keys))
                refused += len(event_keys)
        return Appended(int(added) - taken_back, int(evicted), refused)

    @_unavailable
    async def events(self, anonymous_id: str, since_ms: int = 0) -> list[Event]:
        ev, evb = self._events_keys(anonymous_id)
        keys = await self._redis.zrangebyscore(ev, since_ms, "+inf")
        if not keys:
            return []
        bodies = await self._redis.hmget(evb, keys)
        return sorted((from_json(b) for b in bodies if b is not None), key=lambda e: e.ts)

    @_unavailable
    async def customer_events(self, customer_id: str, since_ms: int = 0) -> list[Event]:
        anons = [a.decode() for a in await self._redis.hkeys(self.keys.customer("link", customer_id))]
        events: list[Event] = []
        for anon in anons:
            events += await self.events(anon, since_ms)
        return sorted(events, key=lambda e: e.ts)

    @_unavailable
    async def prune(self, now_ms: int) -> Pruned:
        cutoff = self.limits.retention_cutoff(now_ms)
        events = links = tombstones = 0
        ev_prefix = f"{self.prefix}ev:"
        async for key in self._redis.scan_iter(match=f"{ev_prefix}*"):  # a cluster: every primary's keys
            name = key.decode()
            evb = f"{self.prefix}evb:{name.removeprefix(ev_prefix)}"
            events += await self._prune_events(keys=[name, evb], args=[cutoff])
        async for key in self._redis.scan_iter(match=f"{self.prefix}link:*"):
            links += await self._prune_links(key.decode(), cutoff)
        async for key in self._redis.scan_iter(match=f"{self.prefix}tomb:*"):
            tombstones += await self._prune_tombstone(keys=[key], args=[now_ms])
        if events or links or tombstones:
            self._rewrite_soon()
        return Pruned(events, links, 0, tombstones)  # cache entries expire by their TTL

    async def _prune_links(self, key: str, cutoff: int) -> int:
        """One customer's links past retention whose visitor has no event left: the visitor's side first."""
        customer = self.keys.ident(key, "link")
        removed = 0
        for anon, body in (await self._redis.hgetall(key)).items():
            visitor = anon.decode()
            if int(json.loads(body)["linked_at"]) >= cutoff:
                continue
            keys = [self.keys.visitor("ev", visitor), self.keys.visitor("linkedto", visitor)]
            if int(await self._prune_visitor_link(keys=keys, args=[customer])):
                removed += int(await self._redis.hdel(key, visitor))
        return removed

    @_unavailable
    async def link(self, anonymous_id: str, customer_id: str, source: LinkSourceName, at_ms: int
                   ) -> tuple[Link, bool]:
        link_key = self.keys.customer("link", customer_id)
        created, body = await self._link_customer(
            keys=[link_key, self.keys.customer_tomb(customer_id)],
            args=[at_ms, anonymous_id, json.dumps({"source": source, "linked_at": at_ms}), self._ttl_s])
        if int(created) < 0:
            raise Forgotten("the customer or the visitor was forgotten")
        linked = await self._link_visitor(
            keys=[self.keys.visitor("linkedto", anonymous_id), self.keys.visitor_tomb(anonymous_id)],
            args=[at_ms, customer_id, self._ttl_s])
        if not int(linked):
            if int(created):
                await self._redis.hdel(link_key, anonymous_id)
            raise Forgotten("the customer or the visitor was forgotten")
        doc = json.loads(body)
        return Link(anonymous_id, customer_id, doc["source"], doc["linked_at"]), bool(created)

    @_unavailable
    async def unlink(self, anonymous_id: str, customer_id: str) -> bool:
        linkedto, link_key = self.keys.visitor("linkedto", anonymous_id), self.keys.customer("link", customer_id)
        if self.cluster:  # two slots: the visitor's side first (module docstring)
            await self._redis.srem(linkedto, customer_id)
            return bool(await self._redis.hdel(link_key, anonymous_id))
        async with self._redis.pipeline(transaction=True) as tx:
            tx.srem(linkedto, customer_id)
            tx.hdel(link_key, anonymous_id)
            _, removed = await tx.execute()
        return bool(removed)

    @_unavailable
    async def links(self, customer_id: str) -> list[Link]:
        rows = await self._redis.hgetall(self.keys.customer("link", customer_id))
        links = [Link(a.decode(), customer_id, d["source"], d["linked_at"])
                 for a, d in ((a, json.loads(v)) for a, v in rows.items())]
        return sorted(links, key=lambda lk: (lk.linked_at_ms, lk.anonymous_id))

    @_unavailable
    async def linked_visitors(self, anonymous_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(anonymous_ids))
        async with self._pipeline() as pipe:
            for anon in ids:
                pipe.exists(self.keys.visitor("linkedto", anon))
            found = await pipe.execute()
        return {anon for anon, n in zip(ids, found, strict=True) if n}

    @_unavailable
    async def forget_customer(self, customer_ids: Sequence[str], now_ms: int) -> Forgot:
        """In the order of the module docstring: tombstones first, the customers' link: and cev: last."""
        until, ttl = self.limits.tombstone_until(now_ms), max(1, int(self.limits.tombstone_days * 86_400))
        customers = list(dict.fromkeys(customer_ids))
        for customer in customers:
            await self._redis.set(self.keys.customer_tomb(customer), until, ex=ttl)
        links, visitors, carrying = 0, {}, {}
        for customer in customers:
            anons = [a.decode() for a in await self._redis.hkeys(self.keys.customer("link", customer))]
            links += len(anons)
            for anon in anons:
                visitors.setdefault(anon, []).append(customer)
            for key in await self._redis.smembers(self.keys.customer("cev", customer)):
                carrying.setdefault(key.decode().split("|", 1)[0], []).append(key.decode())
        events = 0
        for anon, linked in visitors.items():
            keys = [*self._events_keys(anon), self.keys.visitor("cache", anon), self.keys.visitor("linkedto", anon),
                    self.keys.visitor_tomb(anon)]
            events += int(await self._forget_visitor(keys=keys, args=[until, ttl, *linked]))
        for anon, event_keys in carrying.items():
            events += int(await self._unstore(keys=self._events_keys(anon), args=event_keys))
            await self._redis.delete(self.keys.visitor("cache", anon))  # embeddings of sessions with those events
        for customer in customers:  # one slot: one DEL
            await self._redis.delete(self.keys.customer("link", customer), self.keys.customer("cev", customer))
        self._rewrite_soon()  # after the deletes: a rewrite before them would keep them in the file
        return Forgot(links, events, tuple(visitors))

    # -- the append-only file: deleted data leaves it only when Redis rewrites it (every primary's own file)

    async def _nodes(self) -> list[Any]:
        """Where a server command goes: every primary of a cluster, or the one server (None)."""
        if not self.cluster:
            return [None]
        await self._redis.initialize()  # learns the nodes on first use; a no-op after
        return self._redis.get_primaries()

    async def _on(self, node: Any, command: str, *args: Any) -> Any:
        fn = getattr(self._redis, command)
        return await (fn(*args, target_nodes=node) if node is not None else fn(*args))

    def _rewrite_soon(self) -> None:
        """Ask for one BGREWRITEAOF, at most one per aof_rewrite_interval_s (later forgets join the next)."""
        self._rewrite_due = True
        if self._rewriter is None or self._rewriter.done():
            self._rewriter = asyncio.create_task(self._rewrite_loop(), name="redis-aof-rewrite")

    async def _rewrite_loop(self) -> None:
        while self._rewrite_due:
            await asyncio.sleep(max(0.0, self._last_rewrite + self.limits.aof_rewrite_interval_s - time.monotonic()))
            await self.rewrite_now()

    async def rewrite_now(self) -> None:
        """Ask every primary for BGREWRITEAOF now, whatever the rate limit (close does when one is due)."""
        self._rewrite_due = False
        self._last_rewrite = time.monotonic()
        for node in await self._nodes():
            try:
                await self._on(node, "bgrewriteaof")
            except RedisError as exc:  # already in progress (it may predate the deletes): try again next time
                if "in progress" in str(exc):
                    self._rewrite_due = True
                else:
                    log.warning("BGREWRITEAOF after a forget failed: %s", type(exc).__name__)

    async def rewrite_pending(self) -> bool:
        """Whether a rewrite is due or some primary is still running one (the privacy scan waits for it)."""
        if self._rewrite_due:
            return True
        for node in await self._nodes():
            info = await self._on(node, "info", "persistence")
            if self.cluster and node is not None and isinstance(info, dict) and node.name in info:
                info = info[node.name]
            if info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"):
                return True
        return False

    # -- embedding cache: one hash per visitor, so a forget deletes every entry with one DEL

    @_unavailable
    async def cache_get(self, visitor: str, key: str) -> bytes | None:
        return await self._redis.hget(self.keys.visitor("cache", visitor), key)

    @_unavailable
    async def cache_put(self, visitor: str, key: str, value: bytes) -> None:
        await self._cache_put(keys=[self.keys.visitor("cache", visitor), self.keys.visitor_tomb(visitor)],
                              args=[key, value, self.limits.cache_ttl_s])

    @functools.partial(_unavailable, prepare=False)
    async def ping(self) -> None:
        """One round trip to each primary: the health probe's (gateway/health.py)."""
        for node in await self._nodes():
            await self._on(node, "ping")

    async def close(self) -> None:
        if self._rewriter is not None and not self._rewriter.done():
            self._rewriter.cancel()
            await asyncio.gather(self._rewriter, return_exceptions=True)
        if self._rewrite_due:
            try:
                await self.rewrite_now()
            except Exception:  # closing anyway: the next start's rewrite or Redis' own will do it
                log.warning("BGREWRITEAOF at close failed")
        await self._redis.aclose()
