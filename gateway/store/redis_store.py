"""The shared store for several gateway replicas: Redis, with each write one atomic Lua script.

Keys (prefix configurable):
    ev:{anonymous_id}    sorted set of event keys by event time
    evb:{anonymous_id}   hash event key -> event JSON
    link:{customer_id}   hash anonymous_id -> {"source", "linked_at"}
    linkedto:{anonymous_id}  set of the customer ids the visitor is linked to (the reverse of link:)
    cache:{key}          cached session embeddings (expire after cache_ttl_s)
A visitor's keys expire retention_days after their last write; `prune` trims older events inside.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis

from gateway.store.base import DAY_MS, Link, LinkSourceName, StoreLimits, event_key, from_json, to_json
from training.core.contract import Event

APPEND = """
local added = 0
local ev, evb, cap, ttl = KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  if redis.call('HSETNX', evb, ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', ev, tonumber(ARGV[i + 1]), ARGV[i])
    added = added + 1
  end
end
local extra = redis.call('ZCARD', ev) - cap
if extra > 0 then
  local old = redis.call('ZRANGE', ev, 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', ev, 0, extra - 1)
  redis.call('HDEL', evb, unpack(old))
end
redis.call('EXPIRE', ev, ttl)
redis.call('EXPIRE', evb, ttl)
return added
"""

FORGET = """
local anons = redis.call('HKEYS', KEYS[1])
local events = 0
for _, anon in ipairs(anons) do
  events = events + redis.call('ZCARD', ARGV[1] .. 'ev:' .. anon)
  redis.call('DEL', ARGV[1] .. 'ev:' .. anon, ARGV[1] .. 'evb:' .. anon)
  redis.call('SREM', ARGV[1] .. 'linkedto:' .. anon, ARGV[2])
end
redis.call('DEL', KEYS[1])
return {#anons, events}
"""

PRUNE = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('HDEL', KEYS[2], unpack(old))
end
return #old
"""


class RedisStore:
    def __init__(self, url: str, limits: StoreLimits | None = None, prefix: str = "intent:") -> None:
        self.limits = limits or StoreLimits()
        self.prefix = prefix
        self._redis = aioredis.from_url(url)
        self._append = self._redis.register_script(APPEND)
        self._forget = self._redis.register_script(FORGET)
        self._prune = self._redis.register_script(PRUNE)

    def _k(self, kind: str, ident: str) -> str:
        return f"{self.prefix}{kind}:{ident}"

    async def append(self, events: Sequence[Event]) -> int:
        by_visitor: dict[str, list[Event]] = {}
        for e in events:
            by_visitor.setdefault(e.anonymous_id, []).append(e)
        ttl = self.limits.retention_days * DAY_MS // 1000
        added = 0
        for anon, group in by_visitor.items():  # one atomic script per visitor
            args: list = [self.limits.max_events_per_visitor, ttl]
            for e in group:
                args += [event_key(e), e.ts, to_json(e)]
            added += await self._append(keys=[self._k("ev", anon), self._k("evb", anon)], args=args)
        return added

    async def events(self, anonymous_id: str, since_ms: int = 0) -> list[Event]:
        keys = await self._redis.zrangebyscore(self._k("ev", anonymous_id), since_ms, "+inf")
        if not keys:
            return []
        bodies = await self._redis.hmget(self._k("evb", anonymous_id), keys)
        return sorted((from_json(b) for b in bodies if b is not None), key=lambda e: e.ts)

    async def customer_events(self, customer_id: str, since_ms: int = 0) -> list[Event]:
        anons = [a.decode() for a in await self._redis.hkeys(self._k("link", customer_id))]
        events: list[Event] = []
        for anon in anons:
            events += await self.events(anon, since_ms)
        return sorted(events, key=lambda e: e.ts)

    async def prune(self, now_ms: int) -> int:
        cutoff = now_ms - self.limits.retention_days * DAY_MS
        removed = 0
        async for key in self._redis.scan_iter(match=self._k("ev", "*")):
            anon = key.decode().removeprefix(self._k("ev", ""))
            removed += await self._prune(keys=[key, self._k("evb", anon)], args=[cutoff])
        return removed

    async def link(self, anonymous_id: str, customer_id: str, source: LinkSourceName, at_ms: int
                   ) -> tuple[Link, bool]:
        key = self._k("link", customer_id)
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hsetnx(key, anonymous_id, json.dumps({"source": source, "linked_at": at_ms}))
            tx.sadd(self._k("linkedto", anonymous_id), customer_id)
            tx.hget(key, anonymous_id)
            created, _, body = await tx.execute()
        doc = json.loads(body)
        return Link(anonymous_id, customer_id, doc["source"], doc["linked_at"]), created

    async def unlink(self, anonymous_id: str, customer_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hdel(self._k("link", customer_id), anonymous_id)
            tx.srem(self._k("linkedto", anonymous_id), customer_id)
            removed, _ = await tx.execute()
        return bool(removed)

    async def links(self, customer_id: str) -> list[Link]:
        rows = await self._redis.hgetall(self._k("link", customer_id))
        links = [Link(a.decode(), customer_id, d["source"], d["linked_at"])
                 for a, d in ((a, json.loads(v)) for a, v in rows.items())]
        return sorted(links, key=lambda lk: (lk.linked_at_ms, lk.anonymous_id))

    async def linked_visitors(self, anonymous_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(anonymous_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for anon in ids:
                pipe.exists(self._k("linkedto", anon))
            found = await pipe.execute()
        return {anon for anon, n in zip(ids, found, strict=True) if n}

    async def forget_customer(self, customer_id: str) -> tuple[int, int]:
        links, events = await self._forget(keys=[self._k("link", customer_id)], args=[self.prefix, customer_id])
        return int(links), int(events)

    async def cache_get(self, key: str) -> bytes | None:
        return await self._redis.get(self._k("cache", key))

    async def cache_put(self, key: str, value: bytes) -> None:
        await self._redis.set(self._k("cache", key), value, ex=self.limits.cache_ttl_s)

    async def close(self) -> None:
        await self._redis.aclose()
