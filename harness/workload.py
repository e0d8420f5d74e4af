"""The synthetic bank's traffic as the harnesses send it: which visitors, as which requests, replayed how.

`pick_visitors` and `replay` feed a gateway's store through RecordEvents as a collector would; `workload`
turns the replayed logged-in customers into RankTiles and reranker requests; `busiest_visitor` is the one
visitor the tracing check (and the integration tests) send. `add_paths` gives every harness the same
`--data/--artifacts/--repository` flags.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.api import pb, pb_grpc
from training.core.contract import Customer, Event, LoadReport, load_events, read_rows
from training.core.sessionize import Session, sessionize

DAY_MS = 86_400_000


def add_paths(parser: argparse.ArgumentParser) -> None:
    """--data, --artifacts and --repository, with the defaults `make` uses."""
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"),
                        help="generated data directory (default: %(default)s)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"),
                        help="featurizer.json + ranker.json (default: %(default)s)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="exported Triton repository, TARGET=cpu (default: %(default)s)")


def to_message(e: Event) -> pb.WebEvent:
    """One event as RecordEvents' WebEvent."""
    msg = pb.WebEvent(anonymous_id=e.anonymous_id, ts=str(e.ts), event_type=e.event_type, url=e.url,
                      device=e.device or "", referrer=e.referrer or "", query=e.query or "",
                      customer_id=e.customer_id or "")
    if e.dwell_ms is not None:
        msg.dwell_ms = e.dwell_ms
    return msg


def event_json(e: Event) -> str:
    """One event as the KServe transformer's EVENTS element (RecordEvents' JSON field names)."""
    doc = {"anonymous_id": e.anonymous_id, "ts": str(e.ts), "event_type": e.event_type, "url": e.url,
           "device": e.device or "", "referrer": e.referrer or "", "query": e.query or ""}
    if e.dwell_ms is not None:
        doc["dwell_ms"] = e.dwell_ms
    return json.dumps(doc, separators=(",", ":"))


def load_tiles(data: Path) -> list[str]:
    """The tile ids of a generated world (tiles.jsonl), in file order."""
    return [json.loads(line)["tile_id"] for line in (data / "tiles.jsonl").read_text().splitlines()]


def pick_visitors(events: Sequence[Event], visitors: int) -> list[Event]:
    """The first `visitors` visitors (by id) who logged in at least once, with all their events, in time order."""
    logged_in = sorted({e.anonymous_id for e in events if e.customer_id})[:visitors]
    keep = set(logged_in)
    return sorted((e for e in events if e.anonymous_id in keep), key=lambda e: e.ts)


def busiest_visitor(data: Path) -> list[Event]:
    """The events, in time order, of the visitor with the most sessions among the first 300 sessions' visitors."""
    sessions = sessionize(load_events(data))
    anon = max({s.anonymous_id for s in sessions[:300]}, key=lambda a: sum(s.anonymous_id == a for s in sessions))
    return sorted((e for s in sessions if s.anonymous_id == anon for e in s.events), key=lambda e: e.ts)


async def replay(stub: pb_grpc.IntentGatewayServiceStub, events: Sequence[Event], batch: int) -> tuple[int, int]:
    """RecordEvents, `batch` events a call, in order: (events accepted, identity links created)."""
    accepted = links = 0
    for start in range(0, len(events), batch):
        reply = await stub.RecordEvents(pb.RecordEventsRequest(events=[to_message(e) for e in
                                                                       events[start:start + batch]]), timeout=30)
        accepted, links = accepted + reply.accepted, links + reply.links_created
    return accepted, links


@dataclass
class Workload:
    events: list[Event]  # the replayed visitors' events (what the gateway's store gets)
    as_of: int
    customers: list[Customer]  # those with a session inside the ranker's lookback, by id
    customer_sessions: list[list[Session]]  # per customer: their most recent sessions in the lookback
    requests: list[dict]  # per customer: {"EVENTS": [...], "TILE_IDS": [...], "CONTEXT": [json]}
    tiles: list[str]

    @property
    def sessions(self) -> list[Session]:
        """Every customer's sessions, one list (the ensemble's one-session requests)."""
        return [s for mine in self.customer_sessions for s in mine]

    def rank_call(self, stub: pb_grpc.IntentGatewayServiceStub) -> Callable[[int], Awaitable[None]]:
        """RankTiles of customer `i` (round robin) with every tile, as a load generator's call; a degraded
        answer fails it (the benchmark would be measuring the fallback)."""

        async def call(i: int) -> None:
            reply = await stub.RankTiles(rank_request(self.customers[i % len(self.customers)], self.tiles),
                                         timeout=30)
            if reply.degraded:
                raise RuntimeError(f"degraded answer in the benchmark: {reply.degraded_reason}")

        return call


def workload(data: Path, artifacts: Path, visitors: int, max_events: int = 1000, max_sessions: int = 20) -> Workload:
    """The replayed visitors' logged-in customers with recent sessions (at most `max_sessions` each, the last
    `max_events` of their events in a reranker request), as RankTiles / reranker requests."""
    events = pick_visitors(load_events(data), visitors)
    as_of = events[-1].ts + 1
    customers = {c.customer_id: c for c in read_rows(data / "customers.jsonl", Customer, LoadReport())}
    tiles = load_tiles(data)
    lookback = float(json.loads((artifacts / "ranker.json").read_text())["meta"].get("lookback_days", 21))
    since = as_of - lookback * DAY_MS
    anon_of: dict[str, set[str]] = {}
    for e in events:
        if e.customer_id in customers:
            anon_of.setdefault(e.customer_id, set()).add(e.anonymous_id)
    recent = [s for s in sessionize(events) if s.start_ms >= since]
    rows, per_customer, requests = [], [], []
    for cid in sorted(anon_of):
        mine = [s for s in recent if s.anonymous_id in anon_of[cid]][-max_sessions:]
        if not mine:
            continue
        evs = sorted((e for s in mine for e in s.events), key=lambda e: e.ts)[-max_events:]
        c = customers[cid]
        rows.append(c)
        per_customer.append(mine)
        requests.append({"EVENTS": [event_json(e) for e in evs], "TILE_IDS": list(tiles),
                         "CONTEXT": [json.dumps({"segment": c.segment, "tenure_months": c.tenure_months,
                                                 "products_held": list(c.products)})]})
    if not rows:
        raise ValueError("no replayed customer has a session inside the ranker's lookback window")
    return Workload(events, as_of, rows, per_customer, requests, tiles)


def rank_request(customer: Customer, tiles: Sequence[str]) -> pb.RankTilesRequest:
    """RankTiles for a customer row, with its segment, tenure and products as the context."""
    ctx = pb.CustomerContext(segment=customer.segment, tenure_months=customer.tenure_months,
                             products_held=customer.products)
    return pb.RankTilesRequest(customer_id=customer.customer_id, tile_ids=list(tiles), context=ctx)
