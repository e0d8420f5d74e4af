"""`python -m harness.reliability` (`make reliability`): every piece of issue 16's evidence in one run, one report.

In order, with one real Triton on --repository (killed and restarted by the fault runs) and real gateway
processes on fresh stores:

1. the fuzz (harness/fuzz.py, >= 10,000 generated requests plus raw bodies): UNKNOWN + INTERNAL answers;
2. the auth matrix on the embedded default (mtls+jwt): every RPC without credentials, without its scope, with
   an expired token, with a token of another signing key, and granted, plus a client without a certificate:
   cases whose status was not the expected one;
3. the forget residue scan, on SQLite and on Redis: a customer with linked visitors (one by a login event,
   one by LinkIdentity, one unlinked earlier), ranked (their embeddings cached), forgotten; then everything
   the store and the gateway's log hold is searched for their ids, their pseudonyms and their events' URLs,
   and the gateway is asked for them again (a late login must not re-link);
4. the fault runs (harness/faults.py): Triton started late and SIGKILLed under load (down 3 s, then once more
   down --long-outage-s: the reconnect backoff must be reset whatever the outage's length), the gateway (with and
   without Redis) SIGKILLed after acknowledged writes, Redis restarted under load;
5. the load (harness/bench_load.py): --load-requests RankTiles at concurrency 32 on the shipped path.

reports/reliability.json holds exactly the issue's figures plus "machine" and "generated_at"; the details of
each step are printed (and the fuzz's, with its failures, go to --fuzz-out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from gateway.api import pb, pb_grpc
from harness import client
from harness.bench_load import bench
from harness.faults import (
    RedisProcess,
    ensure_triton,
    fault_gateway,
    gateway_before_triton,
    gateway_kill_after_writes,
    kill_triton,
    redis_restart_under_load,
    seed_customer,
    triton_kill,
    visitor_events,
)
from harness.footprint import machine
from harness.fuzz import FuzzContext, fuzz_gateway, ranker_tiles, run_fuzz
from harness.processes import GatewayProcess, manifest_of
from harness.workload import add_paths
from training.export.triton_server import TritonServer

FIELDS = ("fuzz_cases", "fuzz_unknown_or_internal", "auth_cases", "auth_failures", "forget_residue_items",
          "triton_kill_answered_pct", "triton_recovery_s", "acknowledged_events_lost", "load_requests",
          "load_errors", "rss_growth_pct")
"""The report's figures, as issue 16 names them (plus "machine" and "generated_at")."""


# -- the auth matrix -------------------------------------------------------------------------------------


def auth_requests(ctx: FuzzContext) -> dict[str, object]:
    """One well-formed request per RPC (answered OK or NOT_FOUND once authorized; no login event)."""
    anon, customer = "auth-anon", "auth-customer"
    return {"RecordEvents": pb.RecordEventsRequest(events=visitor_events(anon, ctx.now_ms, 3)),
            "LinkIdentity": pb.LinkIdentityRequest(anonymous_id=anon, customer_id=customer),
            "UnlinkIdentity": pb.UnlinkIdentityRequest(anonymous_id=anon, customer_id=customer),
            "GetSessions": pb.GetSessionsRequest(anonymous_id=anon),
            "RankTiles": pb.RankTilesRequest(customer_id=customer, tile_ids=list(ctx.tiles[:2])),
            "ForgetCustomer": pb.ForgetCustomerRequest(customer_id="auth-forgotten")}


def _status(channel: grpc.Channel, method: str, request, metadata=None) -> str:
    try:
        getattr(pb_grpc.IntentGatewayServiceStub(channel), method)(request, timeout=10, metadata=metadata)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


def auth_matrix(gateway: GatewayProcess, ctx: FuzzContext, work: Path) -> dict:
    """Every RPC x {no credentials, missing scope, expired token, another key's token, granted}, and a client
    without a certificate: {cases, failures, failed: [(method, case, status)]}."""
    from gateway.auth import SCOPES
    from gateway.pki import LocalPKI

    expected = {"no_credentials": {"UNAUTHENTICATED"}, "missing_scope": {"PERMISSION_DENIED"},
                "expired_token": {"UNAUTHENTICATED"}, "wrong_signing_key": {"UNAUTHENTICATED"},
                "granted": {"OK", "NOT_FOUND"}}
    requests, failed, cases = auth_requests(ctx), [], 0
    own, other = LocalPKI(gateway.pki_dir), LocalPKI(work / "other-pki").ensure()
    tls = grpc.secure_channel(gateway.address, client.transport_credentials(gateway.pki_dir, gateway.auth))
    with tls:
        for method, scope in SCOPES.items():
            request = requests[method]
            tokens = {"no_credentials": None, "expired_token": own.mint_token(client.ALL_SCOPES, ttl_s=-3600),
                      "wrong_signing_key": other.mint_token(client.ALL_SCOPES)}
            for case in expected:
                if case in tokens:
                    token = tokens[case]
                    status = _status(tls, method, request, None if token is None else
                                     (("authorization", f"Bearer {token}"),))
                else:
                    scopes = [scope] if case == "granted" else [s for s in client.ALL_SCOPES if s != scope]
                    with gateway.new_channel(scopes=scopes) as channel:
                        status = _status(channel, method, request)
                cases += 1
                if status not in expected[case]:
                    failed.append((method, case, status))
    bare = grpc.secure_channel(gateway.address, client.transport_credentials(gateway.pki_dir, gateway.auth, False))
    with bare:
        status = _status(bare, "RankTiles", requests["RankTiles"])
    cases += 1
    if status != "UNAVAILABLE" and gateway.auth == "mtls+jwt":  # the TLS handshake is refused
        failed.append(("*", "no_client_certificate", status))
    return {"cases": cases, "failures": len(failed), "failed": failed, "auth": gateway.auth}


# -- the forget residue scan -----------------------------------------------------------------------------


def _pseudonyms(gateway: GatewayProcess, customer: str, visitors: Sequence[str]) -> list[str]:
    """The store keys of the forgotten ids (empty when the gateway has no pseudonyms)."""
    try:
        from gateway.config import GatewayConfig
        from gateway.privacy import Pseudonymizer
    except ImportError:
        return []
    names = Pseudonymizer.from_config(GatewayConfig(pki_dir=str(gateway.pki_dir)))
    return [names.customer(customer), *(names.visitor(v) for v in visitors)]


def _redis_text(url: str) -> bytes:
    """Every key and value of a Redis database, as bytes to search."""
    import redis

    r = redis.Redis.from_url(url)
    out = bytearray()
    for key in r.scan_iter(count=1000):
        out += key + b" " + repr(_redis_value(r, key)).encode() + b"\n"
    r.close()
    return bytes(out)


def _redis_value(r, key: bytes) -> object:
    kind = r.type(key).decode()
    if kind == "string":
        return r.get(key)
    if kind == "hash":
        return r.hgetall(key)
    if kind == "list":
        return r.lrange(key, 0, -1)
    if kind == "set":
        return r.smembers(key)
    if kind == "zset":
        return r.zrange(key, 0, -1, withscores=True)
    return r.xrange(key) if kind == "stream" else b""


def _scan(places: Sequence[Path], redis_url: str, needles: dict[str, str]) -> set[tuple[str, str]]:
    """(file or "redis keys", what) for every needle found in the files under `places` (the PKI left out) or in
    the Redis database."""
    blobs = {p.name: p.read_bytes() for place in places for p in sorted(place.rglob("*"))
             if p.is_file() and "pki" not in p.parts}
    if redis_url:
        blobs["redis keys"] = _redis_text(redis_url)
    return {(where, what) for where, blob in blobs.items() for what, needle in needles.items()
            if needle.encode() in blob}


def forget_residue(make_gateway, ctx: FuzzContext, places: Sequence[Path], redis_url: str = "") -> dict:
    """Forget a ranked customer and search for what is left: {items, found: [(where, what)], seen_before: the
    needles the same scan found before the forget (the scan can see them)}."""
    tag = secrets.token_hex(4)
    customer, anons = f"C-forget-{tag}", [f"A-forget-{tag}-{k}" for k in range(3)]
    urls = [f"/residue-{tag}-{k}" for k in range(3)]
    tiles = list(ctx.tiles[:3])
    gateway = make_gateway().start()
    found: set[tuple[str, str]] = set()
    try:
        stub = gateway.stub
        for k, anon in enumerate(anons):  # 0 and 2 log in, 1 is linked by the API, 2 is unlinked before
            events = visitor_events(anon, ctx.now_ms, 6, customer_id=customer if k != 1 else "")
            for e in events:
                e.url = urls[k] if e.event_type != "login" else "/login"
            stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10)
        stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=anons[1], customer_id=customer), timeout=10)
        stub.RankTiles(pb.RankTilesRequest(customer_id=customer, tile_ids=tiles), timeout=10)
        stub.UnlinkIdentity(pb.UnlinkIdentityRequest(anonymous_id=anons[2], customer_id=customer), timeout=10)
        time.sleep(0.5)  # write-behind embedding of the linked visitors
        needles = {"customer id": customer, **{f"visitor id {k}": a for k, a in enumerate(anons[:2])},
                   **{f"url {k}": u for k, u in enumerate(urls[:2])},
                   **{f"pseudonym {k}": p for k, p in enumerate(_pseudonyms(gateway, customer, anons[:2]))}}
        seen_before = _scan(places, redis_url, needles)
        stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id=customer), timeout=10)
        if stub.RankTiles(pb.RankTilesRequest(customer_id=customer, tile_ids=tiles), timeout=10).sessions_used:
            found.add(("RankTiles", "sessions used after the forget"))
        for k, anon in enumerate(anons[:2]):
            try:
                stub.GetSessions(pb.GetSessionsRequest(anonymous_id=anon), timeout=10)
                found.add(("GetSessions", f"visitor {k}'s sessions after the forget"))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    found.add(("GetSessions", exc.code().name))
        time.sleep(1.5)  # a Redis AOF rewrite after the forget
        found |= _scan(places, redis_url, needles)
        late = visitor_events(anons[0], ctx.now_ms, 2, customer_id=customer)
        if stub.RecordEvents(pb.RecordEventsRequest(events=late), timeout=10).refused_forgotten < 1:
            found.add(("RecordEvents", "a late login event accepted"))
        if stub.RankTiles(pb.RankTilesRequest(customer_id=customer, tile_ids=tiles), timeout=10).sessions_used:
            found.add(("RankTiles", "re-linked by a late login event"))
    finally:
        gateway.stop()
    log = gateway.log_path.read_bytes()  # with its shutdown lines
    found |= {(gateway.log_path.name, what) for what, needle in needles.items() if needle.encode() in log}
    return {"items": len(found), "found": sorted(found), "seen_before": sorted(seen_before)}


# -- the run ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> tuple[dict, dict]:
    ctx = FuzzContext(ranker_tiles(args.artifacts), int(time.time() * 1000))
    details: dict = {}
    with TritonServer(args.repository, workdir=work / "triton") as triton:
        manifest = manifest_of(triton)

        def gateway(name: str, store: str = "", **flags) -> GatewayProcess:
            store = store or f"sqlite://{work / name / 'gw.db'}"
            (work / name).mkdir(exist_ok=True)
            return GatewayProcess(args.artifacts, store, triton.grpc_url, ctx.now_ms, log=work / name / "gw.log",
                                  manifest=manifest, **flags)

        print("fuzz ...", flush=True)
        (work / "fuzz").mkdir()
        fz = fuzz_gateway(args.artifacts, manifest, f"sqlite://{work / 'fuzz' / 'fuzz.db'}", triton.grpc_url,
                          ctx.now_ms, work / "fuzz" / "gw.log").start()
        try:
            fuzz = run_fuzz(fz, ctx, args.fuzz_cases, args.fuzz_raw_cases, args.seed)
        finally:
            fz.stop()
        details["fuzz"] = fuzz.to_json()
        if args.fuzz_out:
            args.fuzz_out.write_text(json.dumps({**details["fuzz"], "machine": machine()}, indent=2) + "\n")

        print("auth matrix ...", flush=True)
        with gateway("auth") as gw:
            details["auth"] = auth_matrix(gw, ctx, work / "auth")

        print("forget residue ...", flush=True)
        sqlite_dir = work / "forget-sqlite"
        residue = {"sqlite": forget_residue(lambda: gateway("forget-sqlite"), ctx, [sqlite_dir])}
        redis = RedisProcess(work / "forget-redis" / "data").start()
        try:
            residue["redis"] = forget_residue(lambda: gateway("forget-redis", redis.url), ctx,
                                              [work / "forget-redis"], redis.url)
        finally:
            redis.stop()
        details["forget"] = residue

        print("faults ...", flush=True)
        details["faults"] = faults(args, ctx, triton, work)

        print("load ...", flush=True)
        ensure_triton(triton)
        (work / "load").mkdir()
        details["load"] = bench(args.artifacts, triton, args.data, args.load_requests, 32, args.visitors,
                                work / "load")
    return summary(details), details


def faults(args: argparse.Namespace, ctx: FuzzContext, triton: TritonServer, work: Path) -> dict:
    manifest, tiles = manifest_of(triton), list(ctx.tiles[:6])

    def fault(name: str, store: str = "", **flags) -> GatewayProcess:
        (work / name).mkdir(exist_ok=True)
        return fault_gateway(args.artifacts, manifest, store or f"sqlite://{work / name / 'gw.db'}",
                             triton.grpc_url, ctx.now_ms, work / name / f"gw.{secrets.token_hex(2)}.log", **flags)

    out: dict = {}
    kill_triton(triton)
    with fault("triton") as gw:
        seed_customer(gw, "C-fault", ctx.now_ms)
        out["gateway_before_triton"] = gateway_before_triton(gw, triton, "C-fault", tiles)
        ensure_triton(triton)
        out["triton_kill"] = triton_kill(gw, triton, "C-fault", tiles)
        if args.long_outage_s > 0:  # the backoff must be reset whatever the outage's length
            out["triton_kill_long"] = triton_kill(gw, triton, "C-fault", tiles, down_s=args.long_outage_s)
    sqlite = f"sqlite://{work / 'kill-sqlite' / 'gw.db'}"
    out["gateway_kill_sqlite"] = gateway_kill_after_writes(lambda: fault("kill-sqlite", sqlite), ctx.now_ms)
    redis = RedisProcess(work / "kill-redis" / "data").start()
    try:
        out["gateway_kill_redis"] = gateway_kill_after_writes(lambda: fault("kill-redis", redis.url), ctx.now_ms,
                                                              store=redis)
    finally:
        redis.stop()
    redis = RedisProcess(work / "restart-redis" / "data").start()
    try:
        with fault("restart-redis", redis.url) as gw:
            seed_customer(gw, "C-redis", ctx.now_ms)
            out["redis_restart"] = redis_restart_under_load(gw, redis, "C-redis", tiles, ctx.now_ms)
    finally:
        redis.stop()
    return out


def summary(details: dict) -> dict:
    """The issue's figures from the steps' details (of the two Triton kills, the worse answered share and
    recovery)."""
    fuzz, faults_, load = details["fuzz"], details["faults"], details["load"]
    kills = [faults_[k] for k in ("triton_kill", "triton_kill_long") if k in faults_]
    recoveries = [k["recovery_s"] for k in kills]
    return {"fuzz_cases": fuzz["cases"] + fuzz["raw_cases"],
            "fuzz_unknown_or_internal": fuzz["unknown"] + fuzz["internal"],
            "auth_cases": details["auth"]["cases"], "auth_failures": details["auth"]["failures"],
            "forget_residue_items": sum(r["items"] for r in details["forget"].values()),
            "triton_kill_answered_pct": min(k["answered_pct"] for k in kills),
            "triton_recovery_s": None if None in recoveries else max(recoveries),
            "acknowledged_events_lost": faults_["gateway_kill_sqlite"]["lost_events"]
            + faults_["gateway_kill_redis"]["lost_events"],
            "load_requests": load["requests"], "load_errors": load["errors"],
            "rss_growth_pct": load["rss_growth_pct"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reliability", description=__doc__.split("\n\n")[0])
    add_paths(parser)
    parser.add_argument("--fuzz-cases", type=int, default=10_000, help="generated requests (default: %(default)s)")
    parser.add_argument("--fuzz-raw-cases", type=int, default=3_000, help="raw bodies (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the fuzz's hypothesis seed (default: %(default)s)")
    parser.add_argument("--load-requests", type=int, default=100_000, help="RankTiles (default: %(default)s)")
    parser.add_argument("--visitors", type=int, default=300, help="replayed for the load (default: %(default)s)")
    parser.add_argument("--long-outage-s", type=float, default=60.0,
                        help="a second, long Triton kill (0: none); the report keeps the worse (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("reports/reliability.json"), help="(default: %(default)s)")
    parser.add_argument("--fuzz-out", type=Path, default=None, help="also write the fuzz's own report here")
    parser.add_argument("--details-out", type=Path, default=None, help="also write every step's details here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="intent-reliability-") as tmp:
        figures, details = run(args, Path(tmp))
    report = {**figures, "machine": machine(),
              "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.details_out:
        args.details_out.write_text(json.dumps(details, indent=2, default=str) + "\n")
    brief = {k: v for k, v in details.items() if k != "fuzz"}
    print(json.dumps(brief, indent=1, default=str)[:20_000])
    for failure in details["fuzz"]["failures"]:
        print(f"fuzz {failure['status']:<18} {failure['kind']:<5} {failure['method']:<15} {failure['message'][:150]}")
    print(json.dumps(figures, indent=1))
    print(f"{time.monotonic() - started:.0f} s -> {args.out}")
    losses = ("fuzz_unknown_or_internal", "auth_failures", "forget_residue_items", "acknowledged_events_lost",
              "load_errors")
    alive = not details["fuzz"]["crashed"] and details["fuzz"]["healthy_after"]
    return 0 if alive and all(figures[k] == 0 for k in losses) and figures["triton_kill_answered_pct"] == 100.0 else 1


if __name__ == "__main__":
    sys.exit(main())
