"""One conformance suite for every session store: the embedded SQLite and a real redis-server."""

from __future__ import annotations

import pytest

from gateway.store import StoreLimits, open_store
from gateway.store.base import DAY_MS
from training.core.contract import Event

pytestmark = pytest.mark.anyio
T0 = 1_790_000_000_000


def ev(anon: str, i: int, url: str = "/mortgage", **kw) -> Event:
    return Event(anonymous_id=anon, ts=T0 + i * 1000, event_type="page_view", url=url, **kw)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'gateway.db'}"
    else:
        yield request.getfixturevalue("redis_server").url


async def test_events_round_trip_in_time_order_and_retries_are_not_stored_twice(store_url):
    store = open_store(store_url)
    batch = [ev("A1", 2, dwell_ms=40), ev("A1", 1, query="refi rates"), ev("A2", 1)]
    assert await store.append(batch) == 3
    assert await store.append(batch) == 0
    got = await store.events("A1")
    assert [e.ts for e in got] == [T0 + 1000, T0 + 2000]
    assert got[0].query == "refi rates" and got[1].dwell_ms == 40
    assert [e.ts for e in await store.events("A1", since_ms=T0 + 1500)] == [T0 + 2000]
    assert await store.events("nobody") == []
    await store.close()


async def test_a_visitor_keeps_only_the_newest_events_beyond_the_cap(store_url):
    store = open_store(store_url, StoreLimits(max_events_per_visitor=3))
    assert await store.append([ev("A1", i) for i in range(5)]) == 5
    assert [e.ts for e in await store.events("A1")] == [T0 + i * 1000 for i in (2, 3, 4)]
    await store.close()


async def test_prune_drops_events_past_retention(store_url):
    store = open_store(store_url, StoreLimits(retention_days=1))
    await store.append([ev("A1", 0), ev("A1", 2 * 86_400)])  # the second is two days later
    assert await store.prune(now_ms=T0 + 2 * DAY_MS) == 1
    assert [e.ts for e in await store.events("A1")] == [T0 + 2 * DAY_MS]
    await store.close()


async def test_links_are_idempotent_and_unlink_and_forget_really_delete(store_url):
    store = open_store(store_url)
    await store.append([ev("A1", 1), ev("A1", 2), ev("A2", 1), ev("A3", 1)])
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
    assert await store.forget_customer("C1") == (1, 2)
    assert await store.links("C1") == [] and await store.events("A1") == []
    assert await store.linked_visitors(["A1"]) == {"A1"}  # still C9's
    await store.unlink("A1", "C9")
    assert await store.linked_visitors(["A1", "A3"]) == {"A3"}
    assert len(await store.events("A3")) == 1 and len(await store.links("C2")) == 1
    assert await store.forget_customer("C1") == (0, 0)
    await store.close()


async def test_embedding_cache(store_url):
    store = open_store(store_url)
    assert await store.cache_get("s1:v1") is None
    await store.cache_put("s1:v1", b"\x00\x01")
    assert await store.cache_get("s1:v1") == b"\x00\x01"
    await store.close()


async def test_acknowledged_writes_survive_a_restart(store_url, request):
    store = open_store(store_url)
    await store.append([ev("A1", 1)])
    await store.link("A1", "C1", "api", T0)
    await store.close()
    if store_url.startswith("redis"):
        server = request.getfixturevalue("redis_server")
        server.stop()
        server.start()
    reopened = open_store(store_url)
    assert len(await reopened.events("A1")) == 1 and len(await reopened.links("C1")) == 1
    await reopened.close()
