"""What only a Redis Cluster can show: one visitor's or customer's keys share a slot, the data spreads over the
three nodes, every node's append-only file is rewritten after forgets, an unreachable cluster is
StoreUnavailable. (The store conformance suite runs against the same cluster, tests/integration/
test_store_conformance.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import grpc
import pytest
import redis

from gateway.api import pb, pb_grpc
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from gateway.store import Forgot, Forgotten, StoreLimits, StoreUnavailable, open_store
from gateway.store.base import tombstone_id
from gateway.store.redis_store import parse_cluster_url
from harness.processes import manifest_of
from training.core.contract import Event

pytestmark = pytest.mark.anyio
T0 = 1_790_000_000_000


def ev(anon: str, i: int, customer: str | None = None) -> Event:
    if customer:
        return Event(anonymous_id=anon, ts=T0 + i * 1000, event_type="login", url="/login", customer_id=customer)
    return Event(anonymous_id=anon, ts=T0 + i * 1000, event_type="page_view", url="/mortgage")


def node_keys(cluster) -> dict[int, dict[str, int]]:
    """Every key on every node: port -> {key: its slot as the node computes it}."""
    found = {}
    for port in cluster.ports:
        client = redis.Redis(host="127.0.0.1", port=port)
        found[port] = {k.decode(): client.cluster("keyslot", k) for k in client.scan_iter("*")}
        client.close()
    return found


async def test_one_visitors_or_customers_keys_share_a_slot_and_the_data_spreads_over_every_node(redis_cluster):
    redis_cluster.flush()
    store = open_store(redis_cluster.url, StoreLimits(cache_ttl_s=600))
    visitors, customers = [f"V{i}" for i in range(30)], [f"C{i}" for i in range(6)]
    for i, anon in enumerate(visitors):
        customer = customers[i % len(customers)]
        await store.append([ev(anon, 1), ev(anon, 2), ev(anon, 3, customer)], T0)
        await store.link(anon, customer, "login", T0)
        await store.cache_put(anon, "s:1", b"x")
    await store.forget_customer(["C5"], T0)  # its visitors V5, V11, ... leave tombstones only
    assert len(await store.customer_events("C0")) == 15  # five visitors, wherever their slots live
    await store.close()

    found = node_keys(redis_cluster)
    where = {key: (port, slot) for port, keys in found.items() for key, slot in keys.items()}
    for subject in visitors + customers:
        named = {k for k in where if k.endswith(f":{subject}")}
        tombs = {k for k in where if k.startswith("intent:tomb:") and tombstone_id(subject) in k}
        forgotten = subject == "C5" or (subject in visitors and visitors.index(subject) % 6 == 5)
        kinds = {k.split(":")[1] for k in named}
        if forgotten:
            assert named == set() and len(tombs) == 1, (subject, named, tombs)
        else:
            assert kinds == ({"ev", "evb", "linkedto", "cache"} if subject in visitors else {"link", "cev"}), kinds
        assert len({where[k] for k in named | tombs}) == 1, (subject, {k: where[k] for k in named | tombs})
    per_node = {port: {k.split(":")[-1] for k in keys if k.startswith("intent:ev:")} for port, keys in found.items()}
    assert all(per_node.values()), per_node  # every node holds some visitor's events
    linked_to_c0 = {where[f"intent:ev:{{v:{tombstone_id(v)}}}:{v}"][0] for v in visitors[::6]}
    assert len(linked_to_c0) > 1, "C0's visitors live on one node only: the cross-node read went untested"
    for port in redis_cluster.ports:  # every key carries a TTL, on every node
        client = redis.Redis(host="127.0.0.1", port=port)
        assert all(client.ttl(k) > 0 for k in found[port]), port
        client.close()
    store = open_store(redis_cluster.url, StoreLimits(retention_days=1, tombstone_days=1))
    pruned = await store.prune(T0 + 400 * 86_400_000)  # retention reaches every node's keys
    assert (pruned.events, pruned.links, pruned.tombstones) == (25 * 3, 25, 6), pruned
    await store.close()
    assert not any(k.startswith(("intent:ev", "intent:link:", "intent:tomb:")) for keys in node_keys(
        redis_cluster).values() for k in keys)


async def test_a_burst_of_forgets_rewrites_every_primarys_aof_and_leaves_no_trace(redis_cluster):
    clients = [redis.Redis(host="127.0.0.1", port=p) for p in redis_cluster.ports]
    before = [c.info("persistence")["aof_rewrites"] for c in clients]
    store = open_store(redis_cluster.url, StoreLimits(aof_rewrite_interval_s=1.0))
    for i in range(5):
        await store.append([ev(f"BURST-A{i}", 1), ev(f"BURST-A{i}", 2, f"BURST-C{i}")], T0)
        await store.link(f"BURST-A{i}", f"BURST-C{i}", "api", T0)
        await store.forget_customer([f"BURST-C{i}"], T0)
    deadline = time.monotonic() + 30
    while await store.rewrite_pending() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not await store.rewrite_pending()
    await store.close()
    for client, was in zip(clients, before, strict=True):
        info = client.info("persistence")
        assert info["aof_last_bgrewrite_status"] == "ok" and 1 <= info["aof_rewrites"] - was <= 2, info
        client.close()
    files = [p for p in redis_cluster.directory.rglob("*.aof*") if p.is_file()]
    assert {p.relative_to(redis_cluster.directory).parts[0] for p in files} == {
        f"node-{p}" for p in redis_cluster.ports}
    assert not any(b"BURST-" in p.read_bytes() for p in files)


async def test_a_dead_or_hung_cluster_is_store_unavailable_without_its_address():
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens: connection refused
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # accepts and never answers: only the socket timeout ends a call
    try:
        for port in (dead_port, hung.getsockname()[1]):
            store = open_store(f"redis+cluster://127.0.0.1:{port}", StoreLimits(timeout_s=0.2))
            calls = [lambda s=store: s.append([ev("A1", 1)], T0), lambda s=store: s.events("A1"),
                     lambda s=store: s.link("A1", "C1", "api", T0), lambda s=store: s.forget_customer(["C1"], T0),
                     lambda s=store: s.prune(T0), lambda s=store: s.ping()]
            for call in calls:
                with pytest.raises(StoreUnavailable) as info:
                    await asyncio.wait_for(call(), 30)  # a TimeoutError here would be a hang
                assert "127.0.0.1" not in str(info.value) and str(port) not in str(info.value)
            await store.close()
    finally:
        hung.close()


def test_a_cluster_url_names_its_startup_nodes_and_credentials():
    nodes, user, password = parse_cluster_url("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001/0")
    assert [(n.host, n.port) for n in nodes] == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert (user, password) == ("app", "s@cret")
    assert parse_cluster_url("redis+cluster://:pw@h:1")[1:] == (None, "pw")
    for bad in ("redis+cluster://h:1/2", "redis+cluster://"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_url(request, store_url_for):
    return store_url_for(request.param)


async def test_a_forget_racing_logins_and_links_leaves_nothing_of_the_customer(redis_url):
    """The multi-slot steps interleave at every await: whatever the order, after the forget no link, login
    event or linkedto entry of the customer is left (module docstring of gateway/store/redis_store.py)."""
    store = open_store(redis_url, StoreLimits(timeout_s=5.0))  # twelve first connections on a busy machine
    visitors = [f"RACE-V{i}" for i in range(12)]

    refused: list[int] = []
    linked: list[str] = []
    forgot: list[Forgot] = []

    async def visit(anon: str, rounds: int) -> None:
        for r in range(rounds):
            refused.append((await store.append([ev(anon, 2 * r), ev(anon, 2 * r + 1, "RACE-C")], T0)).refused)
            with contextlib.suppress(Forgotten):
                await store.link(anon, "RACE-C", "login", T0 + r)
                linked.append(anon)
            await asyncio.sleep(0)

    async def forget_midway() -> None:
        while len(set(linked)) < len(visitors) // 2:  # half of them linked: traffic before and after it
            await asyncio.sleep(0)
        forgot.append(await store.forget_customer(["RACE-C"], T0))

    await asyncio.gather(*(visit(v, 8) for v in visitors), forget_midway())
    assert forgot[0].links > 0 and sum(refused) > 0, (forgot, refused)  # the forget landed mid-traffic
    assert await store.links("RACE-C") == [] and await store.customer_events("RACE-C") == []
    for anon in visitors:
        assert not [e for e in await store.events(anon) if e.customer_id == "RACE-C"], anon
    assert await store.linked_visitors(visitors) == set()
    await store.close()
    for url_port in _ports(redis_url):
        client = redis.Redis(host="127.0.0.1", port=url_port)
        for key in client.scan_iter("*"):
            assert b"RACE-C" not in key, key
            if client.type(key) == b"set":
                assert b"RACE-C" not in client.smembers(key), key
        client.close()


def _ports(url: str) -> list[int]:
    hosts = url.split("://", 1)[1].split("/", 1)[0]
    return [int(h.rsplit(":", 1)[1]) for h in hosts.split(",")]


async def test_a_gateway_on_the_cluster_records_links_ranks_and_forgets(redis_cluster, gw_artifacts, triton,
                                                                       visitor, tiles, tmp_path):
    """The gateway itself on `redis+cluster://`: RecordEvents, LinkIdentity, GetSessions, RankTiles with the
    customer's sessions (not degraded) and ForgetCustomer, then nothing of the customer left."""
    redis_cluster.flush()
    _, events = visitor
    as_of = events[-1].ts + 86_400_000
    cfg = GatewayConfig(listen="127.0.0.1:0", store=redis_cluster.url, artifacts=str(gw_artifacts),
                        manifest=str(manifest_of(triton)), triton_url=triton.grpc_url, triton_timeout_s=5.0,
                        as_of=str(as_of), auth="none", pki_dir=str(tmp_path / "pki"), log_level="WARNING", drain_s=0)
    server = GatewayServer(cfg)
    port = await server.start()
    start = events[-1].ts - 3_600_000
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.IntentGatewayServiceStub(channel)
            batch = [pb.WebEvent(anonymous_id=f"GW-V{v}", ts=str(start + i * 60_000), event_type="page_view",
                                 url=f"/loans/{i}") for v in range(4) for i in range(6)]
            recorded = await stub.RecordEvents(pb.RecordEventsRequest(events=batch), timeout=30)
            assert recorded.accepted == 24, recorded
            for v in range(3):
                await stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=f"GW-V{v}", customer_id="GW-C"),
                                        timeout=10)
            sessions = await stub.GetSessions(pb.GetSessionsRequest(customer_id="GW-C"), timeout=30)
            assert len(sessions.sessions) == 3 and not sessions.degraded, sessions
            ranked = await stub.RankTiles(pb.RankTilesRequest(customer_id="GW-C", tile_ids=tiles[:4]), timeout=30)
            assert ranked.sessions_used == 3 and not ranked.degraded, ranked
            forgot = await stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id="GW-C"), timeout=30)
            assert (forgot.links_deleted, forgot.events_deleted) == (3, 18), forgot
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await stub.GetSessions(pb.GetSessionsRequest(customer_id="GW-C"), timeout=30)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND  # no linked visitor left
            late = await stub.RecordEvents(pb.RecordEventsRequest(events=batch), timeout=30)
            assert (late.accepted, late.refused_forgotten) == (0, 18), late  # GW-V3's 6 were stored already
        ids = server.app.gateway.ids
        names = [*ids.customer_all("GW-C"), *(p for v in range(3) for p in ids.visitor_all(f"GW-V{v}"))]
    finally:
        await server.stop()
    keys = [k for per_node in node_keys(redis_cluster).values() for k in per_node]
    assert any(ids.visitor("GW-V3") in k for k in keys)  # the unlinked visitor stays
    assert not [k for k in keys if any(name in k for name in names)]
