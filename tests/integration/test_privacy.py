"""Privacy on a real gateway, real Triton and real stores: a forgotten customer leaves nothing behind (every table,
key, file and cache scanned), nothing is stored under a raw id, and no id or store credential reaches a log line
or a span, whatever RPC is called and however it fails."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import redis

import harness.otlp_receiver as otlp_receiver
from gateway.api import pb
from gateway.config import GatewayConfig
from gateway.privacy import Pseudonymizer, local_key
from gateway.server import GatewayServer
from gateway.store import open_store
from harness.otlp_receiver import OtlpReceiver
from harness.privacy_scan import forget_residue
from harness.processes import GatewayProcess, manifest_of
from harness.tracing_check import otel_env
from training.core.contract import Event
from training.export.triton_server import free_port

DAY_MS = 86_400_000
TILES = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan"]


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'gw.db'}"
    else:
        yield request.getfixturevalue("redis_server").url


@pytest.mark.anyio
async def test_a_forgotten_customer_leaves_no_residue_in_any_table_key_file_or_cache(
        store_url, gw_artifacts, triton, visitor, tmp_path):
    _, events = visitor
    as_of = events[-1].ts + DAY_MS
    cfg = GatewayConfig(listen="127.0.0.1:0", store=store_url, artifacts=str(gw_artifacts),
                        manifest=str(manifest_of(triton)), triton_url=triton.grpc_url, triton_timeout_s=5.0,
                        as_of=str(as_of), auth="none", pki_dir=str(tmp_path / "pki"), log_level="WARNING", drain_s=0)
    server = GatewayServer(cfg)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            times = [events[-1].ts - 3_600_000 + i * 60_000 for i in range(8)]
            result = await forget_residue(server, store_url, times, TILES, channel)
    finally:
        await server.stop()
    assert result.before, "the scan must see the customer's data before the forget"
    assert result.raw_before == [] and result.named_visitors  # stored, cached and answered under pseudonyms only
    assert result.forget[0] == 2 and result.forget[1] > 0
    assert result.after == [] and result.after_tombstones == [] and result.residue_items == 0
    assert result.control_kept


def distinctive(tag: str) -> dict[str, str]:
    return {"customer": f"CUST-secret-{tag}", "visitor": f"ANON-secret-{tag}", "other": f"ANON-other-{tag}",
            "password": f"pw-{tag}-redis"}


def drive_every_rpc(gw: GatewayProcess, ids: dict[str, str], ts: int) -> list[str]:
    """Every RPC of the typed service, ok and failing, with the distinctive ids; the error messages seen."""
    stub, c, v, o = gw.stub, ids["customer"], ids["visitor"], ids["other"]
    page = [pb.WebEvent(anonymous_id=v, ts=str(ts + i * 1000), event_type="page_view", url="/loans",
                        query=f"about {c}") for i in range(5)]
    login = pb.WebEvent(anonymous_id=v, ts=str(ts + 9000), event_type="login", url="/login", customer_id=c)
    calls = [
        lambda: stub.RecordEvents(pb.RecordEventsRequest(events=[*page, login]), timeout=30),
        lambda: stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=o, customer_id=c), timeout=10),
        lambda: stub.GetSessions(pb.GetSessionsRequest(customer_id=c, include_embedding=True), timeout=30),
        lambda: stub.GetSessions(pb.GetSessionsRequest(anonymous_id=v), timeout=30),
        lambda: stub.RankTiles(pb.RankTilesRequest(customer_id=c, tile_ids=TILES), timeout=30),
        # failing: bad fields beside the ids, unknown subjects, a scope missing, a forgotten customer
        lambda: stub.RecordEvents(pb.RecordEventsRequest(events=[pb.WebEvent(
            anonymous_id=v, ts="not a time", event_type="page_view", url="http://[", customer_id=c)]), timeout=10),
        lambda: stub.RecordEvents(pb.RecordEventsRequest(events=[pb.WebEvent(
            anonymous_id=v + "\x00", ts=str(ts), event_type="page_view", url="/x")]), timeout=10),
        lambda: stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=v + "x" * 200, customer_id=c), timeout=10),
        lambda: stub.GetSessions(pb.GetSessionsRequest(customer_id=c + "-nobody"), timeout=10),
        lambda: stub.GetSessions(pb.GetSessionsRequest(anonymous_id=v + "-nobody"), timeout=10),
        lambda: stub.RankTiles(pb.RankTilesRequest(customer_id=c, tile_ids=["tile_nope"]), timeout=10),
        lambda: stub.UnlinkIdentity(pb.UnlinkIdentityRequest(anonymous_id=o, customer_id=c), timeout=10),
        lambda: stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id=c), timeout=30),
        lambda: stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=o, customer_id=c), timeout=10),
        lambda: stub.RecordEvents(pb.RecordEventsRequest(events=[login]), timeout=10),
        lambda: stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id=c + "-nobody"), timeout=10),
    ]
    messages, codes = [], []
    for call in calls:
        try:
            call()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            messages.append(f"{exc.details()} {exc.trailing_metadata()}")
    with gw.new_channel(scopes=["events:write"]) as narrow:  # a login without identity:link: PERMISSION_DENIED
        try:
            type(stub)(narrow).RecordEvents(pb.RecordEventsRequest(events=[login]), timeout=10)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            messages.append(f"{exc.details()} {exc.trailing_metadata()}")
    assert codes[:5] == [grpc.StatusCode.OK] * 5, codes
    assert grpc.StatusCode.FAILED_PRECONDITION in codes and grpc.StatusCode.PERMISSION_DENIED in codes, codes
    assert grpc.StatusCode.UNKNOWN not in codes and grpc.StatusCode.INTERNAL not in codes, codes
    return messages


def test_no_id_or_store_credential_reaches_a_log_line_a_span_or_an_error(gw_artifacts, triton, visitor, redis_server,
                                                                         tmp_path, monkeypatch):
    _, events = visitor
    ids = distinctive(secrets.token_hex(4))
    admin = redis.Redis.from_url(redis_server.url)
    admin.config_set("requirepass", ids["password"])
    admin.close()
    store = f"redis://:{ids['password']}@127.0.0.1:{redis_server.port}/0"
    bodies: list[bytes] = []
    parse = otlp_receiver.spans_from_protobuf

    def keep(body: bytes):
        bodies.append(body)
        return parse(body)

    monkeypatch.setattr(otlp_receiver, "spans_from_protobuf", keep)
    log = tmp_path / "gateway.log"
    with OtlpReceiver() as rx:
        env = {**otel_env(rx.endpoint), "OTEL_TRACES_SAMPLER": "always_on"}
        gw = GatewayProcess(gw_artifacts, store, triton.grpc_url, events[-1].ts + DAY_MS, env=env, log=log,
                            manifest=manifest_of(triton), triton_timeout_s=5, log_level="DEBUG",
                            pki_dir=str(tmp_path / "pki")).start()
        try:
            messages = drive_every_rpc(gw, ids, events[-1].ts - 3_600_000)
        finally:
            assert gw.stop() == 0  # flushes the last spans
        rx.wait_for(lambda spans: len(spans) >= 17, timeout=30)
    pseudonyms = Pseudonymizer(local_key(tmp_path / "pki"))
    needles = [ids["customer"], ids["visitor"], ids["other"], ids["password"], pseudonyms.customer(ids["customer"]),
               pseudonyms.visitor(ids["visitor"]), pseudonyms.visitor(ids["other"])]
    logged = log.read_text()
    assert "gateway" in logged and bodies, "the run must have logged and exported spans"
    spans = b"".join(bodies)
    for needle in needles:
        assert needle not in logged, "an id or the store password is in the gateway's log"
        assert needle.encode() not in spans, "an id or the store password is in a span"
        assert not [m for m in messages if needle in m], "an id is in an error message"


def test_rank_tiles_degrades_and_writes_are_unavailable_when_the_store_is_down(gw_artifacts, triton, visitor,
                                                                               tmp_path):
    _, events = visitor
    gw = GatewayProcess(gw_artifacts, f"redis://127.0.0.1:{free_port()}/0", triton.grpc_url, events[-1].ts + DAY_MS,
                        env=dict(os.environ), log=tmp_path / "down.log", manifest=manifest_of(triton),
                        store_timeout_s=0.2, pki_dir=str(tmp_path / "pki")).start()
    try:
        ranked = gw.stub.RankTiles(pb.RankTilesRequest(customer_id="C-down", tile_ids=TILES), timeout=10)
        assert ranked.degraded and ranked.degraded_reason == "session store unavailable"
        assert sorted(t.tile_id for t in ranked.tiles) == sorted(TILES) and ranked.sessions_used == 0
        with pytest.raises(grpc.RpcError) as info:
            gw.stub.RecordEvents(pb.RecordEventsRequest(events=[pb.WebEvent(
                anonymous_id="A-down", ts=str(events[-1].ts), event_type="page_view", url="/loans")]), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        gw.stop()


def test_the_retention_verb_prunes_with_the_gateway_settings(tmp_path):
    db = tmp_path / "gw.db"
    t0 = 1_790_000_000_000

    async def seed() -> None:
        store = open_store(f"sqlite://{db}")
        await store.append([Event(anonymous_id="A1", ts=t0, event_type="page_view", url="/x"),
                            Event(anonymous_id="A1", ts=t0 + 10 * DAY_MS, event_type="page_view", url="/x")], t0)
        await store.close()

    asyncio.run(seed())
    out = subprocess.run([sys.executable, "-m", "gateway.retention", "--store", f"sqlite://{db}", "--as-of",
                          str(t0 + 12 * DAY_MS)], env={**os.environ, "GATEWAY_RETENTION_DAYS": "5"},
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"store": "sqlite", "events": 1, "links": 0, "cache": 0, "tombstones": 0}
    assert Path(db).exists()
