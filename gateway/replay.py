"""`python -m gateway.replay`: the main job's serving half, on one machine.

Starts the real Triton (CPU, from the wheel) on the exported repository and the gateway on the embedded
SQLite store, replays the synthetic bank's web traffic and logins through the gateway's RecordEvents (in
batches, as a collector would), ranks the homepage tiles of some linked customers through RankTiles, prints
the rankings with the intents that drove them, and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from core.contract import Customer, Event, LoadReport, load_events, read_rows
from gateway.api import pb, pb_grpc
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from training.export.triton_server import TritonServer

log = logging.getLogger("gateway.replay")


def to_message(e: Event) -> pb.WebEvent:
    msg = pb.WebEvent(anonymous_id=e.anonymous_id, ts=str(e.ts), event_type=e.event_type, url=e.url,
                      device=e.device or "", referrer=e.referrer or "", query=e.query or "",
                      customer_id=e.customer_id or "")
    if e.dwell_ms is not None:
        msg.dwell_ms = e.dwell_ms
    return msg


def pick_visitors(events: Sequence[Event], visitors: int) -> list[Event]:
    """The first `visitors` visitors (by id) who logged in at least once, with all their events, in time order."""
    logged_in = sorted({e.anonymous_id for e in events if e.customer_id})[:visitors]
    keep = set(logged_in)
    return sorted((e for e in events if e.anonymous_id in keep), key=lambda e: e.ts)


async def replay(stub: pb_grpc.IntentGatewayServiceStub, events: Sequence[Event], batch: int) -> tuple[int, int]:
    accepted = links = 0
    for start in range(0, len(events), batch):
        reply = await stub.RecordEvents(pb.RecordEventsRequest(events=[to_message(e) for e in
                                                                       events[start:start + batch]]), timeout=30)
        accepted, links = accepted + reply.accepted, links + reply.links_created
    return accepted, links


async def rank_customers(stub, customers: Sequence[Customer], tiles: Sequence[str]) -> list[tuple]:
    out = []
    for c in customers:
        ctx = pb.CustomerContext(segment=c.segment, tenure_months=c.tenure_months, products_held=c.products)
        reply = await stub.RankTiles(pb.RankTilesRequest(customer_id=c.customer_id, tile_ids=tiles, context=ctx),
                                     timeout=10)
        out.append((c, reply))
    return out


def print_rankings(rows: Sequence[tuple], shown: int = 4) -> None:
    print(f"\n{'customer':<10} {'segment':<15} {'sessions':>8}  {'intents (head probability)':<52} top tiles")
    for c, r in rows:
        intents = ", ".join(f"{i.label} {i.probability:.2f}" for i in r.intents) or "(no linked session)"
        tiles = " > ".join(t.tile_id.removeprefix("tile_") for t in r.tiles[:shown])
        flag = "  [degraded]" if r.degraded else ""
        print(f"{c.customer_id:<10} {c.segment:<15} {r.sessions_used:>8}  {intents:<52} {tiles}{flag}")
    if rows:
        print(f"model {rows[0][1].model_version}")


async def main_async(args: argparse.Namespace) -> int:
    events = pick_visitors(load_events(args.data), args.visitors)
    if not events:
        raise ValueError(f"{args.data}: no visitor ever logged in; nothing links web sessions to customers")
    customers_by_id = {c.customer_id: c for c in read_rows(args.data / "customers.jsonl", Customer, LoadReport())}
    tiles = [json.loads(line)["tile_id"] for line in (args.data / "tiles.jsonl").read_text().splitlines()]
    workdir = Path(tempfile.mkdtemp(prefix="intent-run-"))
    with TritonServer(args.repository, workdir=workdir / "triton") as triton:
        log.info("Triton ready on %s (log %s)", triton.grpc_url, triton.log_path)
        cfg = GatewayConfig.load(overrides={
            "listen": "127.0.0.1:0", "store": f"sqlite://{workdir / 'gateway.db'}", "artifacts": str(args.artifacts),
            "triton_url": triton.grpc_url, "as_of": str(events[-1].ts + 1), "triton_timeout_s": 2.0})
        server = GatewayServer(cfg)
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.IntentGatewayServiceStub(channel)
                started = time.perf_counter()
                accepted, links = await replay(stub, events, args.batch)
                log.info("replayed %d events of %d visitors in %.1f s: %d accepted, %d identity links",
                         len(events), args.visitors, time.perf_counter() - started, accepted, links)
                last_login = {e.customer_id: e.ts for e in events if e.customer_id in customers_by_id}
                recent = sorted(last_login, key=last_login.__getitem__, reverse=True)[: args.customers]
                rows = await rank_customers(stub, [customers_by_id[c] for c in recent], tiles)
        finally:
            await server.stop()
    print_rankings(rows)
    print(f"store {workdir / 'gateway.db'}; Triton log {workdir / 'triton' / 'tritonserver.log'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"),
                        help="data directory (default: %(default)s)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"),
                        help="featurizer.json + ranker.json (default: %(default)s)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="exported Triton repository, TARGET=cpu (default: %(default)s)")
    parser.add_argument("--visitors", type=int, default=400, help="logged-in visitors to replay (default: %(default)s)")
    parser.add_argument("--customers", type=int, default=8,
                        help="most recently logged-in customers to rank tiles for (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=500, help="events per RecordEvents call (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(main_async(args))
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
