"""`python -m harness.replay` (the end of `make run`): the main job's serving half, on one machine.

Starts the real Triton (CPU, from the wheel) on the exported repository and the gateway on the embedded
SQLite store and the embedded default auth (mTLS and bearer tokens from a local PKI in the run directory),
replays the synthetic bank's web traffic and logins through the gateway's RecordEvents (in batches, as a
collector would), ranks the homepage tiles of some linked customers through RankTiles, prints
the rankings with the intents that drove them, and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.api import pb_grpc
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from harness import client
from harness.processes import manifest_of
from harness.workload import add_paths, load_tiles, pick_visitors, rank_request, replay
from training.core.contract import Customer, LoadReport, load_events, read_rows
from training.export.triton_server import TritonServer

log = logging.getLogger("harness.replay")


async def rank_customers(stub, customers: Sequence[Customer], tiles: Sequence[str]) -> list[tuple]:
    return [(c, await stub.RankTiles(rank_request(c, tiles), timeout=10)) for c in customers]


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
    tiles = load_tiles(args.data)
    workdir = Path(tempfile.mkdtemp(prefix="intent-run-"))
    with TritonServer(args.repository, workdir=workdir / "triton") as triton:
        log.info("Triton ready on %s (log %s)", triton.grpc_url, triton.log_path)
        cfg = GatewayConfig.load(overrides={
            "listen": "127.0.0.1:0", "store": f"sqlite://{workdir / 'gateway.db'}", "artifacts": str(args.artifacts),
            "manifest": str(manifest_of(triton)), "triton_url": triton.grpc_url, "as_of": str(events[-1].ts + 1),
            "triton_timeout_s": 2.0, "pki_dir": str(workdir / "pki"), "drain_s": 0})
        server = GatewayServer(cfg)
        port = await server.start()
        try:
            async with client.channel(f"127.0.0.1:{port}", pki_dir=cfg.pki_dir, auth=cfg.auth,
                                      asynchronous=True) as channel:
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
    parser = argparse.ArgumentParser(prog="python -m harness.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_paths(parser)
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
