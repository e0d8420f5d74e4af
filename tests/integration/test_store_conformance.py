"""One conformance suite for every session store: the embedded SQLite, a real redis-server and a real 3-node
Redis Cluster (the same test functions; the cluster is shared by the module and emptied before each test).

The stores hold pseudonyms only (the gateway maps ids before calling them), so the ids here are opaque strings.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time

import pytest

from gateway.store import Appended, Forgot, Forgotten, Pruned, StoreLimits, StoreUnavailable, open_store
from gateway.store.base import DAY_MS, tombstone_id
from training.core.contract import Event

pytestmark = pytest.mark.anyio
T0 = 1_790_000_000_000


def ev(anon: str, i: int, url: str = "/mortgage", **kw) -> Event:
    return Event(anonymous_id=anon, ts=T0 + i * 1000, event_type="page_view", url=url, **kw)


def login(anon: str, i: int, customer: str) -> Event:
    return Event(anonymous_id=anon, ts=T0 + i * 1000, event_type="login", url="/login", customer_id=customer)


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def store_url(request, store_url_for):
    return store_url_for(request.param)


async def test_events_round_trip_in_time_order_and_retries_are_not_stored_twice(store_url):
    store = open_store(store_url)
    batch = [ev("A1", 2, dwell_ms=40), ev("A1", 1, query="refi rates"), ev("A2", 1)]
    assert await store.append(batch, T0) == Appended(3, 0, 0)
    assert await store.append(batch, T0) == Appended(0, 0, 0)
    got = await store.events("A1")
    assert [e.ts for e in got] == [T0 + 1000, T0 + 2000]
    assert got[0].query == "refi rates" and got[1].dwell_ms == 40
    assert [e.ts for e in await store.events("A1", since_ms=T0 + 1500)] == [T0 + 2000]
    assert await store.events("nobody") == []
    await store.close()


async def test_a_visitor_keeps_only_the_newest_events_beyond_the_cap_and_says_how_many_it_dropped(store_url):
    store = open_store(store_url, StoreLimits(max_events_per_visitor=3))
    assert await store.append([ev("A1", i) for i in range(5)], T0) == Appended(5, 2, 0)
    assert [e.ts for e in await store.events("A1")] == [T0 + i * 1000 for i in (2, 3, 4)]
    assert await store.append([ev("A1", 9)], T0) == Appended(1, 1, 0)
    await store.close()


async def test_prune_drops_events_past_retention(store_url):
    store = open_store(store_url, StoreLimits(retention_days=1))
    await store.append([ev("A1", 0), ev("A1", 2 * 86_400)], T0)  # the second is two days later
    assert (await store.prune(now_ms=T0 + 2 * DAY_MS)).events == 1
    assert [e.ts for e in await store.events("A1")] == [T0 + 2 * DAY_MS]
    await store.close()


async def test_prune_drops_links_past_retention_whose_visitor_has_no_event_left(store_url):
    store = open_store(store_url, StoreLimits(retention_days=1))
    await store.append([ev("A-old", 0), ev("A-busy", 0), ev("A-busy", 2 * 86_400)], T0)
    await store.link("A-old", "C1", "api", T0)
    await store.link("A-busy", "C1", "api", T0)
    await store.link("A-new", "C1", "api", T0 + 2 * DAY_MS)  # no events yet, linked inside retention
    pruned = await store.prune(now_ms=T0 + 2 * DAY_MS)
    assert (pruned.events, pruned.links) == (2, 1)
    assert [lk.anonymous_id for lk in await store.links("C1")] == ["A-busy", "A-new"]
    assert await store.linked_visitors(["A-old", "A-busy"]) == {"A-busy"}
    await store.close()


async def test_links_are_idempotent_and_unlink_and_forget_really_delete(store_url):
    store = open_store(store_url)
    await store.append([ev("A1", 1), ev("A1", 2), ev("A2", 1), ev("A3", 1)], T0)
    link, created = await store.link("A1", "C1", "login", T0)
    again, created_again = await store.link("A1", "C1", "api", T0 + 5)
    assert created and not created_again and again == link and link.source == "login"
    await store.link("A2", "C1", "api", T0 + 1)
    await store.link("A3", "C2", "api", T0 + 1)
    assert [lk.anonymous_id for lk in await store.links("C1")] == ["A1", "A2"]
    assert await store.linked_visitors(["A1", "A2", "A3", "A4", "A1"]) == {"A1", "A2", "A3"}
    assert [(e.anonymous_id, e.ts) for e in await store.customer_events("C1", since_ms=T0 + 1500)] == [
        ("A1", T0 + 2000)]
    assert len(await store.customer_events("C1")) == 3 and await store.customer_events("nobody") == []
    assert await store.unlink("A2", "C1") and not await store.unlink("A2", "C1")
    assert [lk.anonymous_id for lk in await store.links("C1")] == ["A1"]
    assert await store.events("A2") != []  # unlinking keeps the anonymous traffic
    assert await store.linked_visitors(["A2"]) == set()
    await store.link("A1", "C9", "api", T0 + 2)  # one device, two customers (a shared laptop)
    assert await store.forget_customer(["C1"], T0) == Forgot(1, 2, ("A1",))
    assert await store.links("C1") == [] and await store.events("A1") == []
    assert await store.linked_visitors(["A1"]) == {"A1"}  # still C9's
    await store.unlink("A1", "C9")
    assert await store.linked_visitors(["A1", "A3"]) == {"A3"}
    assert len(await store.events("A3")) == 1 and len(await store.links("C2")) == 1
    assert await store.forget_customer(["C1"], T0) == Forgot(0, 0, ())
    await store.close()


async def test_forget_takes_every_pseudonym_and_the_login_events_of_visitors_unlinked_earlier(store_url):
    store = open_store(store_url)
    await store.append([ev("A-old-key", 1), ev("A-new-key", 1), ev("A-gone", 1), login("A-gone", 2, "C-new"),
                        ev("A-other", 1)], T0)
    await store.link("A-old-key", "C-old", "api", T0)  # the same customer under an earlier key
    await store.link("A-new-key", "C-new", "api", T0)
    await store.link("A-gone", "C-new", "login", T0)
    await store.cache_put("A-gone", "s-with-login:2", b"\x07")  # embedded while it was linked
    await store.unlink("A-gone", "C-new")  # unlinked, but its login event still carries the customer
    forgot = await store.forget_customer(["C-new", "C-old"], T0)
    assert (forgot.links, forgot.events, sorted(forgot.visitors)) == (2, 3, ["A-new-key", "A-old-key"])
    assert [e.event_type for e in await store.events("A-gone")] == ["page_view"]  # its anonymous traffic stays
    assert await store.cache_get("A-gone", "s-with-login:2") is None  # derived from the customer's login event
    assert await store.events("A-old-key") == [] and await store.events("A-new-key") == []
    assert len(await store.events("A-other")) == 1
    await store.close()


async def test_a_tombstone_refuses_late_events_and_links_until_it_expires_and_is_pruned(store_url):
    store = open_store(store_url, StoreLimits(tombstone_days=30))
    await store.append([ev("A1", 1)], T0)
    await store.link("A1", "C1", "api", T0)
    await store.forget_customer(["C1"], T0)
    late = T0 + DAY_MS
    # a forgotten visitor's events, and another visitor's login as the forgotten customer, are refused
    assert await store.append([ev("A1", 5), login("A7", 6, "C1"), ev("A7", 7)], late) == Appended(1, 0, 2)
    assert [e.ts for e in await store.events("A7")] == [T0 + 7000] and await store.events("A1") == []
    for anon, customer in (("A7", "C1"), ("A1", "C2")):
        with pytest.raises(Forgotten):
            await store.link(anon, customer, "api", late)
    assert await store.links("C1") == [] and await store.links("C2") == []
    assert (await store.prune(T0 + 10 * DAY_MS)).tombstones == 0  # still in force
    after = T0 + 31 * DAY_MS
    assert (await store.prune(after)).tombstones == 2
    assert (await store.append([ev("A1", 8)], after)).accepted == 1
    assert (await store.link("A7", "C1", "api", after))[1]
    await store.close()


async def test_embedding_cache_is_per_visitor_forgotten_with_it_and_refused_for_a_tombstoned_one(store_url):
    store = open_store(store_url)
    assert await store.cache_get("A1", "s1:v1") is None
    await store.cache_put("A1", "s1:v1", b"\x00\x01")
    await store.cache_put("A1", "s2:v1", b"\x02")
    await store.cache_put("A2", "s3:v1", b"\x03")
    assert await store.cache_get("A1", "s1:v1") == b"\x00\x01" and await store.cache_get("A2", "s1:v1") is None
    await store.append([ev("A1", 1)], T0)
    await store.link("A1", "C1", "api", T0)
    await store.forget_customer(["C1"], T0)
    assert await store.cache_get("A1", "s1:v1") is None and await store.cache_get("A1", "s2:v1") is None
    assert await store.cache_get("A2", "s3:v1") == b"\x03"
    await store.cache_put("A1", "s1:v1", b"\x09")  # an embedding that was in flight during the forget
    assert await store.cache_get("A1", "s1:v1") is None
    await store.close()


async def test_every_redis_key_carries_a_ttl(redis_server):
    import redis

    store = open_store(redis_server.url, StoreLimits(retention_days=90, tombstone_days=30, cache_ttl_s=600))
    await store.append([ev("A1", 1), login("A1", 2, "C1"), ev("A2", 1), login("A3", 1, "C3")], T0)
    await store.link("A1", "C1", "login", T0)
    await store.link("A2", "C2", "api", T0)
    await store.cache_put("A2", "s:1", b"x")
    await store.append([ev("A9", 1)], T0)
    await store.link("A9", "C9", "api", T0)
    await store.forget_customer(["C9"], T0)  # tombstones
    await store.close()
    client = redis.Redis.from_url(redis_server.url)
    keys = list(client.scan_iter("*"))
    kinds = {k.decode().split(":")[1] for k in keys}
    assert {"ev", "evb", "link", "linkedto", "cev", "cache", "tomb"} <= kinds, kinds
    ttls = {k.decode(): client.ttl(k) for k in keys}
    assert all(t > 0 for t in ttls.values()), ttls
    assert 0 < ttls[f"intent:tomb:{tombstone_id('C9')}"] <= 30 * 86_400 and 0 < ttls["intent:cache:A2"] <= 600
    client.close()


async def test_a_burst_of_forgets_is_followed_by_at_most_two_aof_rewrites_and_leaves_no_trace(redis_server):
    """The first forget's rewrite starts at once; the later ones of the burst share the next, one interval on."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    before = client.info("persistence")["aof_rewrites"]
    store = open_store(redis_server.url, StoreLimits(aof_rewrite_interval_s=1.0))
    for i in range(5):
        await store.append([ev(f"A{i}", 1)], T0)
        await store.link(f"A{i}", f"C{i}", "api", T0)
        await store.forget_customer([f"C{i}"], T0)
    deadline = time.monotonic() + 30
    while await store.rewrite_pending() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not await store.rewrite_pending()
    await store.close()
    info = client.info("persistence")
    assert info["aof_last_bgrewrite_status"] == "ok" and 1 <= info["aof_rewrites"] - before <= 2
    appendonly = b"".join(p.read_bytes() for p in redis_server.directory.rglob("*.aof*") if p.is_file())
    assert appendonly and not any(f"{kind}{i}".encode() in appendonly for kind in "AC" for i in range(5))
    client.close()


def every_call(store):
    """One coroutine factory per store operation."""
    return [lambda: store.append([ev("A1", 1)], T0), lambda: store.events("A1"), lambda: store.customer_events("C1"),
            lambda: store.link("A1", "C1", "api", T0), lambda: store.unlink("A1", "C1"), lambda: store.links("C1"),
            lambda: store.linked_visitors(["A1"]), lambda: store.cache_get("A1", "k"),
            lambda: store.cache_put("A1", "k", b"v"), lambda: store.forget_customer(["C1"], T0),
            lambda: store.prune(T0)]


async def test_a_dead_or_hung_redis_is_store_unavailable_not_a_hang():
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens: connection refused
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # accepts connections and never answers: only the socket timeout ends a call
    try:
        for port in (dead_port, hung.getsockname()[1]):
            store = open_store(f"redis://127.0.0.1:{port}/0", StoreLimits(timeout_s=0.2))
            for call in every_call(store):
                with pytest.raises(StoreUnavailable) as info:
                    await asyncio.wait_for(call(), 30)  # a TimeoutError here would be a hang
                assert "127.0.0.1" not in str(info.value) and str(port) not in str(info.value)
            await store.close()
    finally:
        hung.close()


async def test_a_locked_sqlite_database_is_store_unavailable(tmp_path):
    path = tmp_path / "gateway.db"
    store = open_store(f"sqlite://{path}", StoreLimits(timeout_s=0.05))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for call in every_call(store)[:1] + every_call(store)[3:5] + every_call(store)[-2:]:  # the writes
            with pytest.raises(StoreUnavailable):
                await call()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (await store.append([ev("A1", 1)], T0)).accepted == 1
    assert await store.prune(T0) == Pruned()
    await store.close()


async def test_acknowledged_writes_survive_a_restart(store_url, request):
    store = open_store(store_url)
    await store.append([ev("A1", 1)], T0)
    await store.link("A1", "C1", "api", T0)
    await store.close()
    if store_url.startswith("redis"):
        server = request.getfixturevalue("redis_cluster" if "cluster" in store_url else "redis_server")
        server.stop()
        server.start()
    reopened = open_store(store_url)
    assert len(await reopened.events("A1")) == 1 and len(await reopened.links("C1")) == 1
    await reopened.close()
