"""The shared store for several gateway replicas: Redis, with each write one atomic Lua script.

Keys (prefix configurable; every id is a pseudonym, gateway/privacy.py; every key carries a TTL):
    ev:{anonymous_id}        sorted set of event keys by event time            TTL retention, from the last write
    evb:{anonymous_id}       hash event key -> event JSON                      TTL retention, from the last write
    link:{customer_id}       hash anonymous_id -> {"source", "linked_at"}      TTL retention, from the last link
                                                                               or event of a linked visitor
    linkedto:{anonymous_id}  set of the customers the visitor is linked to     as link:
    cev:{customer_id}        set of the keys of events carrying the customer   TTL retention
                             (login events: forgotten with the customer, even from visitors unlinked since)
    cache:{anonymous_id}     hash cache key -> cached session embedding        TTL cache_ttl_s, from the last put
    tomb:{tombstone_id}      a forgotten customer or visitor (SHA-1 of its     TTL tombstone_days
                             pseudonym, never the pseudonym): epoch ms until
                             which its events and links are refused
`prune` trims older events inside, links past retention whose visitor has no event left and tombstones past
their time.

Deleted data stays in the append-only file until Redis rewrites it (Redis' persistence docs): after forgets the
store asks for BGREWRITEAOF, at most once per `aof_rewrite_interval_s` (a burst of forgets, one rewrite), and
once more at close if one is still due (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
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

_DEAD = """
local function dead(id)
  local u = redis.call('GET', ARGV[1] .. 'tomb:' .. redis.sha1hex(id))
  return u and tonumber(u) > tonumber(ARGV[2])
end
"""

APPEND = _DEAD + """
local prefix, anon, cap, ttl = ARGV[1], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ev, evb = KEYS[1], KEYS[2]
if dead(anon) then return {0, 0, (#ARGV - 5) / 4} end
local added, evicted, refused = 0, 0, 0
for i = 6, #ARGV, 4 do
  local cust = ARGV[i + 3]
  if cust ~= '' and dead(cust) then
    refused = refused + 1
  elseif redis.call('HSETNX', evb, ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', ev, tonumber(ARGV[i + 1]), ARGV[i])
    added = added + 1
    if cust ~= '' then
      redis.call('SADD', prefix .. 'cev:' .. cust, ARGV[i])
      redis.call('EXPIRE', prefix .. 'cev:' .. cust, ttl)
    end
  end
end
local extra = redis.call('ZCARD', ev) - cap
if extra > 0 then
  local old = redis.call('ZRANGE', ev, 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', ev, 0, extra - 1)
  redis.call('HDEL', evb, unpack(old))
  evicted = #old
end
redis.call('EXPIRE', ev, ttl)
redis.call('EXPIRE', evb, ttl)
local lt = prefix .. 'linkedto:' .. anon
if redis.call('EXPIRE', lt, ttl) == 1 then  -- a linked visitor's links live as long as its events
  for _, c in ipairs(redis.call('SMEMBERS', lt)) do redis.call('EXPIRE', prefix .. 'link:' .. c, ttl) end
end
return {added, evicted, refused}
"""

LINK = _DEAD + """
if dead(ARGV[3]) or dead(ARGV[4]) then return {-1, ''} end
local created = redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
return {created, redis.call('HGET', KEYS[1], ARGV[3])}
"""

FORGET = """
local prefix, untilms, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local links, events, visitors = 0, 0, {}
for i = 4, #ARGV do
  local c = ARGV[i]
  local lk = prefix .. 'link:' .. c
  for _, a in ipairs(redis.call('HKEYS', lk)) do
    links = links + 1
    events = events + redis.call('ZCARD', prefix .. 'ev:' .. a)
    redis.call('DEL', prefix .. 'ev:' .. a, prefix .. 'evb:' .. a, prefix .. 'cache:' .. a)
    redis.call('SREM', prefix .. 'linkedto:' .. a, c)
    visitors[#visitors + 1] = a
  end
  redis.call('DEL', lk)
  local cev = prefix .. 'cev:' .. c
  for _, k in ipairs(redis.call('SMEMBERS', cev)) do
    local a = string.match(k, '^([^|]*)|')
    if a then
      events = events + redis.call('ZREM', prefix .. 'ev:' .. a, k)
      redis.call('HDEL', prefix .. 'evb:' .. a, k)
    end
  end
  redis.call('DEL', cev)
  redis.call('SET', prefix .. 'tomb:' .. redis.sha1hex(c), untilms, 'EX', ttl)
end
for _, a in ipairs(visitors) do redis.call('SET', prefix .. 'tomb:' .. redis.sha1hex(a), untilms, 'EX', ttl) end
return {links, events, visitors}
"""

PRUNE_EVENTS = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('HDEL', KEYS[2], unpack(old))
end
return #old
"""

PRUNE_LINKS = """
local n, rows = 0, redis.call('HGETALL', KEYS[1])
for i = 1, #rows, 2 do
  local a = rows[i]
  local at = tonumber(cjson.decode(rows[i + 1])['linked_at'])
  if at < tonumber(ARGV[3]) and redis.call('EXISTS', ARGV[1] .. 'ev:' .. a) == 0 then
    redis.call('HDEL', KEYS[1], a)
    redis.call('SREM', ARGV[1] .. 'linkedto:' .. a, ARGV[2])
    n = n + 1
  end
end
return n
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


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _unavailable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Connection errors and timeouts as StoreUnavailable, named by class only (a redis error message can
    carry the server's address; never its credentials, but the class is all a caller needs)."""
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from None
    return wrapper


class RedisStore:
    def __init__(self, url: str, limits: StoreLimits | None = None, prefix: str = "intent:") -> None:
        self.limits = limits or StoreLimits()
        self.prefix = prefix
        timeout = self.limits.timeout_s
        self._redis = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self._append = self._redis.register_script(APPEND)
        self._link = self._redis.register_script(LINK)
        self._forget = self._redis.register_script(FORGET)
        self._prune_events = self._redis.register_script(PRUNE_EVENTS)
        self._prune_links = self._redis.register_script(PRUNE_LINKS)
        self._prune_tombstone = self._redis.register_script(PRUNE_TOMBSTONE)
        self._cache_put = self._redis.register_script(CACHE_PUT)
        self._rewrite_due = False
        self._last_rewrite = float("-inf")
        self._rewriter: asyncio.Task | None = None

    def _k(self, kind: str, ident: str) -> str:
        return f"{self.prefix}{kind}:{ident}"

    @property
    def _ttl_s(self) -> int:
        return self.limits.retention_days * DAY_MS // 1000

    @_unavailable
    async def append(self, events: Sequence[Event], now_ms: int | None = None) -> Appended:
        now_ms = _wall_ms() if now_ms is None else now_ms
        by_visitor: dict[str, list[Event]] = {}
        for e in events:
            by_visitor.setdefault(e.anonymous_id, []).append(e)
        added = evicted = refused = 0
        for anon, group in by_visitor.items():  # one atomic script per visitor
            args: list = [self.prefix, now_ms, anon, self.limits.max_events_per_visitor, self._ttl_s]
            for e in group:
                args += [event_key(e), e.ts, to_json(e), e.customer_id or ""]
            a, ev, r = await self._append(keys=[self._k("ev", anon), self._k("evb", anon)], args=args)
            added, evicted, refused = added + int(a), evicted + int(ev), refused + int(r)
        return Appended(added, evicted, refused)

    @_unavailable
    async def events(self, anonymous_id: str, since_ms: int = 0) -> list[Event]:
        keys = await self._redis.zrangebyscore(self._k("ev", anonymous_id), since_ms, "+inf")
        if not keys:
            return []
        bodies = await self._redis.hmget(self._k("evb", anonymous_id), keys)
        return sorted((from_json(b) for b in bodies if b is not None), key=lambda e: e.ts)

    @_unavailable
    async def customer_events(self, customer_id: str, since_ms: int = 0) -> list[Event]:
        anons = [a.decode() for a in await self._redis.hkeys(self._k("link", customer_id))]
        events: list[Event] = []
        for anon in anons:
            events += await self.events(anon, since_ms)
        return sorted(events, key=lambda e: e.ts)

    @_unavailable
    async def prune(self, now_ms: int) -> Pruned:
        cutoff = self.limits.retention_cutoff(now_ms)
        events = links = tombstones = 0
        async for key in self._redis.scan_iter(match=self._k("ev", "*")):
            anon = key.decode().removeprefix(self._k("ev", ""))
            events += await self._prune_events(keys=[key, self._k("evb", anon)], args=[cutoff])
        async for key in self._redis.scan_iter(match=self._k("link", "*")):
            customer = key.decode().removeprefix(self._k("link", ""))
            links += await self._prune_links(keys=[key], args=[self.prefix, customer, cutoff])
        async for key in self._redis.scan_iter(match=self._k("tomb", "*")):
            tombstones += await self._prune_tombstone(keys=[key], args=[now_ms])
        if events or links or tombstones:
            self._rewrite_soon()
        return Pruned(events, links, 0, tombstones)  # cache entries expire by their TTL

    @_unavailable
    async def link(self, anonymous_id: str, customer_id: str, source: LinkSourceName, at_ms: int
                   ) -> tuple[Link, bool]:
        created, body = await self._link(
            keys=[self._k("link", customer_id), self._k("linkedto", anonymous_id)],
            args=[self.prefix, at_ms, anonymous_id, customer_id,
                  json.dumps({"source": source, "linked_at": at_ms}), self._ttl_s])
        if int(created) < 0:
            raise Forgotten("the customer or the visitor was forgotten")
        doc = json.loads(body)
        return Link(anonymous_id, customer_id, doc["source"], doc["linked_at"]), bool(created)

    @_unavailable
    async def unlink(self, anonymous_id: str, customer_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hdel(self._k("link", customer_id), anonymous_id)
            tx.srem(self._k("linkedto", anonymous_id), customer_id)
            removed, _ = await tx.execute()
        return bool(removed)

    @_unavailable
    async def links(self, customer_id: str) -> list[Link]:
        rows = await self._redis.hgetall(self._k("link", customer_id))
        links = [Link(a.decode(), customer_id, d["source"], d["linked_at"])
                 for a, d in ((a, json.loads(v)) for a, v in rows.items())]
        return sorted(links, key=lambda lk: (lk.linked_at_ms, lk.anonymous_id))

    @_unavailable
    async def linked_visitors(self, anonymous_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(anonymous_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for anon in ids:
                pipe.exists(self._k("linkedto", anon))
            found = await pipe.execute()
        return {anon for anon, n in zip(ids, found, strict=True) if n}

    @_unavailable
    async def forget_customer(self, customer_ids: Sequence[str], now_ms: int) -> Forgot:
        ttl = max(1, int(self.limits.tombstone_days * 86_400))
        links, events, visitors = await self._forget(
            keys=[], args=[self.prefix, self.limits.tombstone_until(now_ms), ttl, *customer_ids])
        self._rewrite_soon()
        return Forgot(int(links), int(events), tuple(dict.fromkeys(v.decode() for v in visitors)))

    # -- the append-only file: deleted data leaves it only when Redis rewrites it

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
        """Ask Redis for BGREWRITEAOF now, whatever the rate limit (close does when one is due)."""
        self._rewrite_due = False
        self._last_rewrite = time.monotonic()
        try:
            await self._redis.bgrewriteaof()
        except RedisError as exc:  # already in progress (it may predate the deletes): try again next time
            self._rewrite_due = "in progress" in str(exc)
            if not self._rewrite_due:
                log.warning("BGREWRITEAOF after a forget failed: %s", type(exc).__name__)

    async def rewrite_pending(self) -> bool:
        """Whether a rewrite is due or Redis is still running one (the privacy scan waits for it)."""
        info = await self._redis.info("persistence")
        return self._rewrite_due or bool(info.get("aof_rewrite_in_progress")) or \
            bool(info.get("aof_rewrite_scheduled"))

    # -- embedding cache: one hash per visitor, so a forget deletes every entry with one DEL

    @_unavailable
    async def cache_get(self, visitor: str, key: str) -> bytes | None:
        return await self._redis.hget(self._k("cache", visitor), key)

    @_unavailable
    async def cache_put(self, visitor: str, key: str, value: bytes) -> None:
        await self._cache_put(keys=[self._k("cache", visitor), self._k("tomb", tombstone_id(visitor))],
                              args=[key, value, self.limits.cache_ttl_s])

    @_unavailable
    async def ping(self) -> None:
        """One round trip: the health probe's (gateway/health.py)."""
        await self._redis.ping()

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
