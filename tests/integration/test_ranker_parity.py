"""Parity: for one customer at one time, the evaluation's score equals the gateway's RankTiles score.

The same web events go both ways. The evaluation path: a data directory -> `EvalData` -> `impression_table`
-> `SessionSignals` -> `ImpressionTable.features` + `Ranker.score` (and `FittedRanker.score`). The gateway
path: `RecordEvents` into a real SQLite store -> `RankTiles` over gRPC on loopback (the real servicer and
`Gateway`, as-of the impression's time) -> store lookup -> sessionize -> embeddings -> `rank_with`. The model
server is the one stand-in: both sides get each session's embedding from the same deterministic function of
its events, so what is compared is session selection, pooling, features and scoring.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway import auth
from gateway.api import pb, pb_grpc
from gateway.config import GatewayConfig
from gateway.service import Gateway, GatewayServicer
from gateway.store import StoreLimits, open_store
from gateway.triton_client import SessionIntents
from harness import client
from training.core.contract import Event
from training.core.ranker import Ranker
from training.evaluation.features import EvalData, SessionSignals, impression_table
from training.evaluation.ranking import FittedRanker

DAY_MS = 86_400_000
MIN_MS = 60_000
DIM = 8
T0 = 1_700_000_000_000
NOW = T0 + 40 * DAY_MS
TILES = {"t_card": "card", "t_loan": "loan", "t_save": "savings", "t_gold": "gold"}
LABELS = ("research", "apply")


def embed(events: Sequence[Event]) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in model: a session's embedding and intent probabilities from its events, deterministically."""
    key = f"{events[0].url}|{events[0].ts}|{len(events)}|{events[-1].url}".encode()  # ids are pseudonyms here
    rng = np.random.default_rng(zlib.crc32(key))
    p = rng.dirichlet(np.ones(len(LABELS)))
    return rng.normal(0, 1, DIM).astype(np.float32), p.astype(np.float32)


class StandInModel:
    """The TritonIntentClient interface the gateway uses (labels, version, infer), without Triton."""

    labels = LABELS
    version = "stand-in:1"

    async def infer(self, sessions: Sequence[Sequence[Event]], timeout_s: float, snapshot=None) -> SessionIntents:
        rows = [embed(list(events)) for events in sessions]
        return SessionIntents(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]))


def session(anon: str, start: int, n: int, gap_ms: int = 5 * MIN_MS, login: str = "") -> list[dict]:
    out = [{"anonymous_id": anon, "ts": start + i * gap_ms, "event_type": "page_view", "url": f"/p/{anon}/{i}",
            "dwell_ms": 1000 + i} for i in range(n)]
    if login:
        out.append({"anonymous_id": anon, "ts": start + n * gap_ms, "event_type": "login", "url": "/login",
                    "customer_id": login})
    return out


def world() -> list[dict]:
    """Customer C1's two visitors, sessions at every edge of the 21-day lookback before NOW."""
    lookback_start = NOW - 21 * DAY_MS
    return [
        *session("v1", NOW - 30 * DAY_MS, 3, login="C1"),       # ended before the lookback: not used
        *session("v1", lookback_start - 20 * MIN_MS, 6),        # started before it, ended inside: used whole
        *session("v1", NOW - 10 * DAY_MS, 4),
        *session("v2", NOW - 5 * DAY_MS, 2),                    # before v2's login, which is known at NOW
        *session("v2", NOW - 3 * DAY_MS, 3, login="C1"),
        *session("v2", NOW - DAY_MS // 2, 5),
        *session("v1", NOW - 10 * MIN_MS, 5),                   # still going on at NOW: not used
        *session("v3", NOW - 2 * DAY_MS, 4, login="C2"),        # another customer's
    ]


def write_data(root: Path, events: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rows = {
        "events.jsonl": events,
        "customers.jsonl": [{"customer_id": "C1", "products": ["card"], "tenure_months": 30, "segment": "mass"},
                            {"customer_id": "C2", "products": [], "tenure_months": 2, "segment": "young"}],
        "tiles.jsonl": [{"tile_id": t, "product": p} for t, p in TILES.items()],
        "impressions.jsonl": [{"customer_id": c, "ts": ts, "tile_id": t, "position": 0, "clicked": False}
                              for c, ts in (("C1", NOW), ("C2", NOW - 20 * DAY_MS)) for t in TILES],
    }
    for name, docs in rows.items():
        (root / name).write_text("".join(json.dumps(d) + "\n" for d in docs))


def served_ranker(data: EvalData, half_life: float | None, recency: bool, seed: int = 0, block: str = "need"
                  ) -> Ranker:
    spec = data.feature_spec("embedding", DIM, block, half_life_days=half_life, recency=recency)
    rng = np.random.default_rng(seed)
    if block == "crosses":
        spec = replace(spec, signal_mean=rng.normal(0, 1, DIM).astype(np.float32),
                       signal_scale=rng.uniform(0.5, 2, DIM).astype(np.float32))
    products = ("card", "loan", "savings")
    spec = replace(spec, need_products=products, need_weights=rng.normal(0, 1, (3, DIM)).astype(np.float32),
                   need_bias=rng.normal(0, 1, 3).astype(np.float32))
    weights = rng.normal(0, 1, len(spec.feature_names())).astype(np.float32)
    return Ranker(spec, weights, -1.0, {"lookback_days": 21.0})


async def gateway_scores(store_path: Path, ranker: Ranker, events: list[dict], customer: pb.RankTilesRequest
                         ) -> pb.RankTilesResponse:
    cfg = GatewayConfig(store=f"sqlite://{store_path}", as_of=str(NOW), embed_on_write=False,
                        pki_dir=str(store_path.parent / "pki"))
    store = open_store(cfg.store, StoreLimits(cfg.retention_days, cfg.max_events_per_visitor))
    gw = Gateway(cfg, store, StandInModel(), ranker)
    server = grpc.aio.server(interceptors=auth.interceptors(cfg))
    pb_grpc.add_IntentGatewayServiceServicer_to_server(GatewayServicer(gw), server)
    port = server.add_secure_port("127.0.0.1:0", auth.server_credentials(cfg))
    await server.start()
    try:
        async with client.channel(f"127.0.0.1:{port}", pki_dir=cfg.pki_dir, asynchronous=True) as channel:
            stub = pb_grpc.IntentGatewayServiceStub(channel)
            for i in range(0, len(events), 50):
                batch = [pb.WebEvent(**{k: str(v) if k == "ts" else v for k, v in e.items()})
                         for e in events[i:i + 50]]
                await stub.RecordEvents(pb.RecordEventsRequest(events=batch), timeout=10)
            return await stub.RankTiles(customer, timeout=10)
    finally:
        await server.stop(None)
        await store.close()


@pytest.mark.parametrize(("half_life", "recency", "block"),
                         [(3.0, True, "need"), (None, True, "need"), (None, False, "need"), (7.0, True, "crosses")],
                         ids=["half-life-3d", "mean+recency", "format-2-mean", "decayed-crosses-7d"])
def test_evaluation_score_equals_rank_tiles_score(tmp_path, half_life, recency, block):
    events = world()
    write_data(tmp_path / "data", events)
    data = EvalData.load(tmp_path / "data")
    table = impression_table(data, 21.0)
    emb = np.full((len(data.sessions), DIM), np.nan, np.float32)
    for i, s in enumerate(data.sessions):
        emb[i] = embed(s.events)[0]
    signals = SessionSignals({"embedding": emb}, end_ms=data.session_end_ms())
    ranker = served_ranker(data, half_life, recency, block=block)

    mine = (table.customer == "C1") & (table.ts == NOW)
    assert mine.sum() == len(TILES)
    used = [data.sessions[i] for i in table.session_rows[int(np.flatnonzero(mine)[0])]]
    # the lookback's edges: whole straddling session in, older and still-going-on sessions out
    assert [(s.anonymous_id, len(s.events)) for s in used] == [("v1", 6), ("v1", 4), ("v2", 2), ("v2", 4),
                                                              ("v2", 5)]
    part = table.subset(mine)
    eval_scores = ranker.score(part.features(ranker.spec, signals))
    np.testing.assert_allclose(FittedRanker(ranker, {}).score(part, signals), eval_scores, rtol=0, atol=0)

    request = pb.RankTilesRequest(customer_id="C1", tile_ids=list(part.tile), context=pb.CustomerContext(
        segment="mass", tenure_months=30, products_held=["card"]))
    reply = asyncio.run(gateway_scores(tmp_path / "gw.db", ranker, events, request))
    assert not reply.degraded and reply.sessions_used == len(used)
    served = {t.tile_id: t.score for t in reply.tiles}
    np.testing.assert_allclose([served[t] for t in part.tile], eval_scores, rtol=0, atol=1e-6)
    assert len(set(np.round(eval_scores, 4))) > 1  # the tiles are told apart, the comparison is not vacuous
