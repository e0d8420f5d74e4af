"""The gateway over real gRPC on loopback, as its own process, in front of the real Triton ensemble."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from gateway.api import pb
from gateway.errors import field_violations
from harness.processes import GatewayProcess, gateway_metric, manifest_of, metrics_env, wait_for_write_behind
from training.core.contract import Event
from training.core.featurizer import Featurizer
from training.core.ranker import Ranker
from training.core.sessionize import sessionize
from training.export.triton_server import free_port
from training.pipeline import load_artifacts

DAY_MS = 86_400_000


def gateway_process(artifacts: Path, manifest: Path, store: str, triton_url: str, as_of_ms: int,
                    env: dict | None = None, **flags: str) -> GatewayProcess:
    """The gateway under test (harness.processes.GatewayProcess), checked against `manifest`: this environment
    plus `env`, batches of at most 50 events and a 2 s Triton timeout unless `flags` say otherwise; a new one on
    the same store is a restart."""
    return GatewayProcess(artifacts, store, triton_url, as_of_ms, env={**os.environ, **(env or {})},
                          manifest=manifest, **{"max_batch_events": 50, "triton_timeout_s": 2.0, **flags})


@pytest.fixture(scope="module")
def gateway(gw_artifacts, triton, visitor, tmp_path_factory):
    as_of = visitor[1][-1].ts + DAY_MS
    store = f"sqlite://{tmp_path_factory.mktemp('gw_store') / 'gw.db'}"
    gw = gateway_process(gw_artifacts, manifest_of(triton), store, triton.grpc_url, as_of)
    yield gw.start()
    gw.stop()


def to_pb(e: Event, **override) -> pb.WebEvent:
    fields = {"anonymous_id": e.anonymous_id, "ts": str(e.ts), "event_type": e.event_type, "url": e.url,
              "device": e.device or "", "referrer": e.referrer or "", "query": e.query or ""}
    msg = pb.WebEvent(**{**fields, **override})
    if e.dwell_ms is not None:
        msg.dwell_ms = e.dwell_ms
    return msg


def code_and_fields(call, request) -> tuple[grpc.StatusCode, list[str]]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), [f for f, _ in field_violations(info.value)]


def test_record_link_and_rank_through_triton(gateway, visitor, gw_artifacts):
    anon, events = visitor
    stub = gateway.stub
    reply = stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e) for e in events[:50]]), timeout=10)
    assert reply.accepted == min(len(events), 50)
    assert stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e) for e in events[:50]]), timeout=10).accepted == 0
    login = pb.WebEvent(anonymous_id=anon, ts=str(events[-1].ts + 1), event_type="login", url="/login",
                        customer_id="C-test")
    assert stub.RecordEvents(pb.RecordEventsRequest(events=[login]), timeout=10).links_created == 1

    sessions = stub.GetSessions(pb.GetSessionsRequest(anonymous_id=anon, include_embedding=True), timeout=10)
    stored = sorted(sessionize([*events[:50], Event(anonymous_id=anon, ts=events[-1].ts + 1, event_type="login",
                                                     url="/login", customer_id="C-test")]), key=lambda s: s.start_ms)
    assert [s.session_id for s in sessions.sessions] == [s.session_id for s in stored] and not sessions.degraded
    featurizer, encoder, _ = load_artifacts(gw_artifacts)
    with torch.no_grad():
        expected = np.stack([encoder(*(torch.from_numpy(a[None]) for a in featurizer.encode(s.events)))[0].numpy()
                             for s in stored])
    np.testing.assert_allclose([list(s.embedding) for s in sessions.sessions], expected, atol=1e-4)
    assert all(len(s.intents) == 3 and s.intents[0].probability >= s.intents[1].probability for s in sessions.sessions)

    tiles = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan"]
    ranked = stub.RankTiles(pb.RankTilesRequest(customer_id="C-test", tile_ids=tiles, context=pb.CustomerContext(
        segment="mass", tenure_months=12, products_held=["checking"])), timeout=10)
    assert not ranked.degraded and ranked.sessions_used == len(stored) and len(ranked.intents) == 3
    ranker = Ranker.load(gw_artifacts / "ranker.json")
    features = ranker.spec.features(tiles, [0] * 4, ["mass"] * 4, [12] * 4, [["checking"]] * 4,
                                    np.tile(expected.mean(0), (4, 1)), [True] * 4)
    want = ranker.score(features)
    assert [t.tile_id for t in ranked.tiles] == [tiles[i] for i in np.argsort(-want, kind="stable")]
    np.testing.assert_allclose([t.score for t in ranked.tiles], np.sort(want)[::-1], atol=1e-4)


def test_every_rpc_names_the_bad_field(gateway, visitor):
    _, events = visitor
    stub = gateway.stub
    good = to_pb(events[0])
    cases = [
        (stub.RecordEvents, pb.RecordEventsRequest(events=[good, to_pb(events[1], ts="2026-09-01T10:00:00")]),
         ["events[1].ts"]),
        (stub.RecordEvents, pb.RecordEventsRequest(events=[to_pb(events[0], anonymous_id="", url="")]),
         ["events[0].anonymous_id", "events[0].url"]),
        (stub.RecordEvents, pb.RecordEventsRequest(events=[good] * 51), ["events"]),
        (stub.RecordEvents, pb.RecordEventsRequest(), ["events"]),
        (stub.LinkIdentity, pb.LinkIdentityRequest(anonymous_id="A1"), ["customer_id"]),
        (stub.UnlinkIdentity, pb.UnlinkIdentityRequest(customer_id="C1"), ["anonymous_id"]),
        (stub.ForgetCustomer, pb.ForgetCustomerRequest(), ["customer_id"]),
        (stub.GetSessions, pb.GetSessionsRequest(), ["subject"]),
        (stub.GetSessions, pb.GetSessionsRequest(anonymous_id="A1", max_sessions=500), ["max_sessions"]),
        (stub.RankTiles, pb.RankTilesRequest(customer_id="C1", tile_ids=["tile_auto_loan", "tile_nope"]),
         ["tile_ids[1]"]),
        (stub.RankTiles, pb.RankTilesRequest(customer_id="C1", tile_ids=["tile_auto_loan", "tile_auto_loan"]),
         ["tile_ids[1]"]),
        (stub.RankTiles, pb.RankTilesRequest(tile_ids=[]), ["customer_id", "tile_ids"]),
    ]
    for call, request, fields in cases:
        code, got = code_and_fields(call, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and got == fields, (request, got)
    for request in (pb.GetSessionsRequest(anonymous_id="nobody"), pb.GetSessionsRequest(customer_id="nobody")):
        assert code_and_fields(stub.GetSessions, request)[0] == grpc.StatusCode.NOT_FOUND
    # a rejected batch stored nothing, not even its valid first event
    assert stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(events[0], anonymous_id="fresh")]),
                             timeout=10).accepted == 1


def test_unknown_customer_gets_the_no_session_ranking_and_forget_deletes(gateway, visitor):
    _, events = visitor
    stub = gateway.stub
    tiles = ["tile_auto_loan", "tile_heloc"]
    nobody = stub.RankTiles(pb.RankTilesRequest(customer_id="C-none", tile_ids=tiles), timeout=10)
    assert nobody.sessions_used == 0 and not nobody.degraded and not nobody.intents
    stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e, anonymous_id="A-forget") for e in events[:5]]),
                      timeout=10)
    link = stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id="A-forget", customer_id="C-forget"), timeout=10)
    assert link.created and link.link.source == pb.LINK_SOURCE_API
    forgot = stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id="C-forget"), timeout=10)
    assert (forgot.links_deleted, forgot.events_deleted) == (1, 5)
    gone = code_and_fields(stub.GetSessions, pb.GetSessionsRequest(anonymous_id="A-forget"))
    assert gone[0] == grpc.StatusCode.NOT_FOUND
    # late events of the forgotten visitor, and a login as the forgotten customer, are refused and counted
    late = stub.RecordEvents(pb.RecordEventsRequest(events=[
        to_pb(events[0], anonymous_id="A-forget"),
        to_pb(events[1], anonymous_id="A-other", event_type="login", customer_id="C-forget"),
        to_pb(events[2], anonymous_id="A-other")]), timeout=10)
    assert (late.accepted, late.links_created, late.refused_forgotten) == (1, 0, 2)
    with pytest.raises(grpc.RpcError) as info:
        stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id="A-other", customer_id="C-forget"), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "C-forget" not in info.value.details()
    assert code_and_fields(stub.GetSessions, pb.GetSessionsRequest(customer_id="C-forget"))[0] == \
        grpc.StatusCode.NOT_FOUND


def test_the_per_visitor_cap_reports_what_it_evicts(gw_artifacts, triton, visitor, tmp_path):
    _, events = visitor
    gw = gateway_process(gw_artifacts, manifest_of(triton), f"sqlite://{tmp_path / 'cap.db'}", triton.grpc_url,
                         events[-1].ts + DAY_MS, max_events_per_visitor="5").start()
    try:
        first = gw.stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e, anonymous_id="A-cap")
                                                                    for e in events[:4]]), timeout=10)
        assert (first.accepted, first.evicted) == (4, 0)
        more = gw.stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e, anonymous_id="A-cap")
                                                                   for e in events[4:8]]), timeout=10)
        assert (more.accepted, more.evicted) == (4, 3)
        got = gw.stub.GetSessions(pb.GetSessionsRequest(anonymous_id="A-cap"), timeout=10)
        assert sum(s.n_events for s in got.sessions) == 5 and all(s.anonymous_id == "A-cap" for s in got.sessions)
    finally:
        gw.stop()


def test_nothing_accepted_is_lost_across_a_restart(gw_artifacts, triton, visitor, tmp_path):
    anon, events = visitor
    store = f"sqlite://{tmp_path / 'gw.db'}"
    gw = gateway_process(gw_artifacts, manifest_of(triton), store, triton.grpc_url, events[-1].ts + DAY_MS).start()
    accepted = gw.stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e) for e in events[:20]]), timeout=10).accepted
    gw.stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=anon, customer_id="C-restart"), timeout=10)
    assert gw.stop() == 0
    gw = gateway_process(gw_artifacts, manifest_of(triton), store, triton.grpc_url, events[-1].ts + DAY_MS).start()
    try:
        got = gw.stub.GetSessions(pb.GetSessionsRequest(customer_id="C-restart"), timeout=10)
        assert sum(s.n_events for s in got.sessions) == accepted == 20
    finally:
        gw.stop()


def test_write_behind_embedding_fills_the_cache_before_the_app_asks(gw_artifacts, triton, visitor, tmp_path):
    """Sessions written and linked are embedded in the background; RankTiles then calls Triton for none of
    them and answers as the read path would (the same embeddings, so the same ranking)."""
    anon, events = visitor
    metrics_port = free_port()
    env = metrics_env(metrics_port)
    store = f"sqlite://{tmp_path / 'wb.db'}"
    tiles = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan"]
    request = pb.RankTilesRequest(customer_id="C-wb", tile_ids=tiles, context=pb.CustomerContext(segment="mass"))
    gw = gateway_process(gw_artifacts, manifest_of(triton), store, triton.grpc_url, events[-1].ts + DAY_MS,
                         env=env).start()
    try:
        half = min(len(events), 50) // 2
        gw.stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e) for e in events[:half]]), timeout=10)
        assert wait_for_write_behind(metrics_port, 30) == 0  # nobody linked yet: nothing worth embedding
        gw.stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=anon, customer_id="C-wb"), timeout=10)
        gw.stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e) for e in events[half:50]]), timeout=10)
        n_sessions = len(sessionize(events[:50]))
        assert wait_for_write_behind(metrics_port, 30) >= n_sessions
        ranked = gw.stub.RankTiles(request, timeout=10)
        assert not ranked.degraded and ranked.sessions_used == n_sessions
        assert gateway_metric(metrics_port, "gateway_sessions_embedded_total", path="read") == 0
    finally:
        gw.stop()
    cold = gateway_process(gw_artifacts, manifest_of(triton), store, triton.grpc_url, events[-1].ts + DAY_MS,
                           cache_embeddings="false").start()
    try:  # same store, no cache: every session embedded on the read path
        again = cold.stub.RankTiles(request, timeout=10)
    finally:
        cold.stop()
    assert [t.tile_id for t in again.tiles] == [t.tile_id for t in ranked.tiles]
    np.testing.assert_allclose([t.score for t in again.tiles], [t.score for t in ranked.tiles], atol=1e-5)


def test_a_dead_model_server_degrades_to_the_baseline_never_an_error(gw_artifacts, gw_repository, visitor, tmp_path):
    anon, events = visitor
    gw = gateway_process(gw_artifacts, gw_repository / "manifest.json", f"sqlite://{tmp_path / 'gw.db'}",
                         f"127.0.0.1:{free_port()}", events[-1].ts + DAY_MS, triton_timeout_s="0.3").start()
    try:
        gw.stub.RecordEvents(pb.RecordEventsRequest(events=[to_pb(e) for e in events[:10]]), timeout=10)
        gw.stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=anon, customer_id="C1"), timeout=10)
        tiles = ["tile_auto_loan", "tile_heloc", "tile_open_checking"]
        started = time.monotonic()
        ranked = gw.stub.RankTiles(pb.RankTilesRequest(customer_id="C1", tile_ids=tiles), timeout=10)
        assert ranked.degraded and ranked.degraded_reason and time.monotonic() - started < 5
        assert sorted(t.tile_id for t in ranked.tiles) == sorted(tiles) and ranked.sessions_used == 0
    finally:
        gw.stop()


def test_gateway_never_imports_torch():
    out = subprocess.run([sys.executable, "-c", "import gateway.server, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_featurizer_is_the_training_one(gw_artifacts):
    assert Featurizer.load(gw_artifacts / "featurizer.json").version.startswith("1-")
