"""Hot reload under load: the real Triton (explicit model control) and the real gateway over loopback gRPC swap
from repository version 1 to version 2 while 4 clients keep asking for rankings.

v2 is observably different: another encoder (another seed), another head (its weights negated) and another
ranker (seeded, with that encoder's fingerprint). Every answer is compared with the offline reference (PyTorch
encoder + head + the ranker) of the version it names: an answer that mixed v1 and v2 (v1's ranker on v2's
embeddings, v1's cached embeddings under v2, a v1 encoder step feeding a v2 head) would match neither. The
gateway finds v2 by itself without restarting: SIGHUP (or the poll) shows it the new manifest, and the first
call Triton refuses for v1 moves it to v2.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from gateway.api import pb
from gateway.service import select_sessions
from gateway.store.base import event_key
from harness.processes import GatewayProcess, gateway_metric, metrics_env
from training.bank import SEGMENTS, TILES
from training.core.contract import Event
from training.core.featurizer import Featurizer
from training.core.manifest import Manifest, sha256_file
from training.core.ranker import FeatureSpec, Ranker
from training.encoder.train import TrainConfig, build_encoder, load_checkpoint, save_checkpoint
from training.export.build import export
from training.export.repository import ServingConfig
from training.export.triton_server import TritonServer, free_port, load_version
from training.sessions import load_sessions
from training.taxonomy.distill import IntentHead

pytestmark = pytest.mark.slow
DAY_MS = 86_400_000
CUSTOMERS = 6
WORKERS = 4
PAUSE_S = 0.08
"""Between one worker's calls: a few hundred requests over the swap, and CPU left for the export beside them."""
MAX_REQUESTS = 3000
MAX_LOAD_S = 45.0
AFTER_SWAP = 120
"""Answers wanted after Triton serves v2 before the load stops."""
TILE_IDS = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan", "tile_heloc"]
CONTEXT = pb.CustomerContext(segment="mass", tenure_months=12, products_held=["checking"])


def model_set(source: Path, out: Path, seed: int) -> Path:
    """featurizer.json (shared), an encoder of this seed (0: the trained fixture's), a head, a ranker seeded on it."""
    out.mkdir(parents=True)
    shutil.copy(source / "featurizer.json", out / "featurizer.json")
    if seed == 0:
        shutil.copy(source / "encoder.pt", out / "encoder.pt")
        shutil.copy(source / "intent_head.json", out / "intent_head.json")
    else:
        featurizer = Featurizer.load(out / "featurizer.json")
        torch.manual_seed(seed)
        save_checkpoint(out / "encoder.pt", build_encoder(featurizer, TrainConfig()).eval(), featurizer,
                        TrainConfig(), {"epoch": 0})
        head = IntentHead.load(source / "intent_head.json")
        replace(head, weights=-head.weights).save(out / "intent_head.json")
    spec = FeatureSpec(tuple(TILES), tuple(TILES.values()), tuple(sorted(SEGMENTS)), 4, "embedding", 64,
                       np.zeros(64, np.float32), np.ones(64, np.float32))
    weights = np.random.default_rng(seed).normal(0, 0.5, len(spec.feature_names())).astype(np.float32)
    Ranker(spec, weights, -2.0, {"lookback_days": 3650.0, "encoder_sha256": sha256_file(out / "encoder.pt")}
           ).save(out / "ranker.json")
    return out


@dataclass
class Reference:
    """The offline answer of one model set for each customer: tile order, scores, top intents."""

    tiles: dict[str, list[str]]
    scores: dict[str, np.ndarray]
    intents: dict[str, list[str]]


def reference(artifacts: Path, events: dict[str, list[Event]], now_ms: int) -> Reference:
    featurizer = Featurizer.load(artifacts / "featurizer.json")
    encoder, _ = load_checkpoint(artifacts / "encoder.pt")
    head = IntentHead.load(artifacts / "intent_head.json")
    ranker = Ranker.load(artifacts / "ranker.json")
    spec = ranker.spec
    out = Reference({}, {}, {})
    for customer, evs in events.items():
        sessions = select_sessions(evs, now_ms, int(3650 * DAY_MS), 20)
        with torch.no_grad():
            emb = np.stack([encoder(*(torch.from_numpy(a[None]) for a in featurizer.encode(s.events)))[0].numpy()
                            for s in sessions])
        probs = head.probabilities(emb)
        pooled = spec.pool(np.hstack([emb, probs]), [s.end_ms for s in sessions], now_ms)
        n = len(TILE_IDS)
        features = spec.features(TILE_IDS, [0] * n, ["mass"] * n, [12] * n, [["checking"]] * n,
                                 np.tile(pooled.signal[:64], (n, 1)), [True] * n, np.tile(pooled.recency, (n, 1)))
        scores = ranker.score(features)
        order = np.argsort(-scores, kind="stable")
        out.tiles[customer] = [TILE_IDS[i] for i in order]
        out.scores[customer] = scores[order]
        out.intents[customer] = [head.labels[i] for i in np.argsort(-pooled.signal[64:])[:3]]
    return out


def matches(ref: Reference, customer: str, reply: pb.RankTilesResponse) -> bool:
    return ([t.tile_id for t in reply.tiles] == ref.tiles[customer]
            and np.allclose([t.score for t in reply.tiles], ref.scores[customer], atol=1e-4)
            and [i.label for i in reply.intents] == ref.intents[customer])


def start_gateway(live: Path, manifest: Path, triton: TritonServer, store: str, as_of: int, log: Path,
                  poll_s: float = 1.0, wait: bool = True) -> tuple[GatewayProcess, int]:
    """`python -m gateway.server` on `live`'s artifacts and `manifest`, its metrics on a port of its own: (the
    process, SERVING unless `wait` is False; its metrics port)."""
    metrics_port = free_port()
    gw = GatewayProcess(live, store, triton.grpc_url, as_of, env={**os.environ, **metrics_env(metrics_port)},
                        log=log, manifest=manifest, reload_poll_s=poll_s, triton_timeout_s=5, log_level="INFO")
    return (gw.start() if wait else gw.spawn()), metrics_port


def reloads(metrics_port: int, result: str) -> float:
    """How many reloads ended with `result` (pending, applied, refused) so far."""
    return gateway_metric(metrics_port, "gateway_model_reloads_total", result=result)


@pytest.fixture(scope="module")
def world(small_artifacts, small_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("hot_reload")
    v1, v2 = model_set(small_artifacts, root / "v1", 0), model_set(small_artifacts, root / "v2", 1)
    repo = root / "model_repository"
    first = export(v1, v1 / "intent_head.json", repo, ServingConfig(), work_dir=root / "work1")
    live = root / "live"  # the gateway's artifacts directory, as a deployment would update it
    live.mkdir()
    for name in ("featurizer.json", "ranker.json"):
        shutil.copy(v1 / name, live / name)
    sessions = load_sessions(small_data).sessions[:400]
    by_visitor: dict[str, list[Event]] = {}
    for s in sessions:
        by_visitor.setdefault(s.anonymous_id, []).extend(s.events)
    busiest = sorted(by_visitor, key=lambda a: -len(by_visitor[a]))[:CUSTOMERS + 1]
    events = {f"C-hot-{i}": sorted({event_key(e): e for e in by_visitor[a]}.values(), key=lambda e: e.ts)
              for i, a in enumerate(busiest)}
    as_of = max(e.ts for evs in events.values() for e in evs) + DAY_MS
    writer = events.pop(f"C-hot-{CUSTOMERS}")  # a visitor whose new events arrive during the load
    with TritonServer(repo, workdir=root / "triton", model_control="explicit") as triton:
        yield {"root": root, "v1": v1, "v2": v2, "repo": repo, "live": live, "first": first, "triton": triton,
               "events": events, "writer": writer, "as_of": as_of,
               "refs": (reference(v1, events, as_of), reference(v2, events, as_of))}


def test_start_up_refuses_a_manifest_its_artifacts_or_triton_do_not_match(world, tmp_path):
    """The served manifest with v2's ranker: exit 2 naming ranker.json; a manifest Triton does not serve: exit 2
    naming Triton's manifest hash."""
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(world["v1"] / "featurizer.json", wrong / "featurizer.json")
    shutil.copy(world["v2"] / "ranker.json", wrong / "ranker.json")
    gw, _ = start_gateway(wrong, world["repo"] / "manifest.json", world["triton"], f"sqlite://{tmp_path / 'a.db'}",
                          world["as_of"], tmp_path / "a.log", wait=False)
    assert gw.process.wait(timeout=60) == 2
    log = (tmp_path / "a.log").read_text()
    assert "ranker: expected sha256" in log and "featurizer: expected" not in log  # names only what disagrees

    other = Manifest.load(world["repo"] / "manifest.json")
    replace(other, repository_version=7).write(tmp_path / "manifest.json")  # pins the same files, not served
    gw, _ = start_gateway(world["live"], tmp_path / "manifest.json", world["triton"], f"sqlite://{tmp_path / 'b.db'}",
                          world["as_of"], tmp_path / "b.log", wait=False)
    assert gw.process.wait(timeout=60) == 2
    assert f"serves intent_pipeline with manifest_hash {other.manifest_hash}" in (tmp_path / "b.log").read_text()


def test_versions_swap_under_load_with_no_error_and_no_mixing(world, tmp_path):
    """4 clients rank the customers whose sessions are cached; a fifth records a new event for its own customer
    before each ranking, so its sessions always miss the cache and reach Triton. The poll is off (30 s): the
    gateway sees the new manifest on SIGHUP (pending), and moves to v2 when Triton, having loaded v2, refuses the
    writer's call pinned to v1 (VersionGone -> newest snapshot -> the request retried on v2)."""
    ref1, ref2 = world["refs"]
    m1 = world["first"].model_version
    for customer in world["events"]:  # the two sets answer observably differently, for every customer
        assert not np.allclose(ref1.scores[customer], ref2.scores[customer], atol=1e-3)
    gw, metrics = start_gateway(world["live"], world["repo"] / "manifest.json", world["triton"],
                                f"sqlite://{tmp_path / 'gw.db'}", world["as_of"], tmp_path / "gw.log", poll_s=30)
    try:
        stub = gw.stub
        writer_id, writer_events = "C-hot-writer", world["writer"]
        for customer, evs in [*world["events"].items(), (writer_id, writer_events)]:
            stub.RecordEvents(pb.RecordEventsRequest(events=[_message(e) for e in evs]), timeout=30)
            stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=evs[0].anonymous_id, customer_id=customer),
                              timeout=10)
        for customer in world["events"]:
            reply = stub.RankTiles(_request(customer), timeout=10)
            assert reply.model_version == m1 and not reply.degraded and matches(ref1, customer, reply), customer

        answers, written, stop, swapped_at = [], [], threading.Event(), {}

        def call(local, customer: str, tag) -> None:
            started = time.monotonic()
            try:
                reply = local.RankTiles(_request(customer), timeout=15)
                answers.append((started, time.monotonic(), customer, reply, "", tag))
            except grpc.RpcError as exc:
                answers.append((started, time.monotonic(), customer, None, f"{exc.code()}: {exc.details()}", tag))

        def reader(k: int) -> None:
            local, customers, n = gw.stub, list(world["events"]), k
            while not stop.is_set() and len(answers) < MAX_REQUESTS:
                call(local, customers[n % len(customers)], None)
                n += 1
                time.sleep(PAUSE_S)

        def writer() -> None:
            local, anon, url = gw.stub, writer_events[0].anonymous_id, writer_events[-1].url
            while not stop.is_set() and len(answers) < MAX_REQUESTS:
                event = Event(anonymous_id=anon, ts=world["as_of"] - 3_600_000 + 1000 * len(written),
                              event_type="page_view", url=url, dwell_ms=1000)
                local.RecordEvents(pb.RecordEventsRequest(events=[_message(event)]), timeout=15)
                written.append(event)
                call(local, writer_id, len(written))
                time.sleep(PAUSE_S)

        threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(WORKERS)]
        threads.append(threading.Thread(target=writer, daemon=True))
        began = time.monotonic()
        for t in threads:
            t.start()
        while len(answers) < 40:
            time.sleep(0.05)
        # a deployment's order: the new artifacts, then the new repository version and its manifest, then Triton
        for name in ("featurizer.json", "ranker.json"):
            shutil.copy(world["v2"] / name, world["live"] / f".{name}")
            os.replace(world["live"] / f".{name}", world["live"] / name)
        second = export(world["v2"], world["v2"] / "intent_head.json", world["repo"], ServingConfig(),
                        work_dir=tmp_path / "work2", version="next")
        assert second.version == 2 and second.model_version != m1
        exported_at = time.monotonic()
        gw.process.send_signal(signal.SIGHUP)  # check now: the new set is pending until Triton serves it
        deadline = exported_at + 15
        while reloads(metrics, "pending") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [reloads(metrics, r) for r in ("pending", "applied", "refused")] == [1, 0, 0]
        load_started = time.monotonic()
        load_version(world["triton"].grpc_url, Manifest.load(world["repo"] / "manifest.json"))
        swapped_at["t"] = time.monotonic()
        while (time.monotonic() - began < MAX_LOAD_S and len(answers) < MAX_REQUESTS
               and sum(a[0] > swapped_at["t"] for a in answers) < AFTER_SWAP):
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(30)
        load_s = time.monotonic() - began

        errors = [a[4] for a in answers if a[4]]
        assert errors == [], Counter(errors)
        assert not [a for a in answers if a[3].degraded], Counter(a[3].degraded_reason for a in answers)
        versions = Counter(a[3].model_version for a in answers)
        assert set(versions) == {m1, second.model_version}, versions
        refs = {m1: (world["v1"], ref1), second.model_version: (world["v2"], ref2)}
        wrong = [(a[2], a[3].model_version) for a in answers
                 if a[5] is None and not matches(refs[a[3].model_version][1], a[2], a[3])]
        for a in answers:  # the writer's answers, against its events at the time
            if a[5] is not None:
                artifacts = refs[a[3].model_version][0]
                mine = {writer_id: [*writer_events, *written[:a[5]]]}
                if not matches(reference(artifacts, mine, world["as_of"]), writer_id, a[3]):
                    wrong.append((writer_id, a[3].model_version))
        assert wrong == [], f"{len(wrong)} answers differ from their version's reference: {wrong[:5]}"
        early_v2 = [a for a in answers if a[3].model_version != m1 and a[1] < load_started]
        assert early_v2 == []  # v2 only once Triton serves it (its manifest was there before)
        late_v1 = [a for a in answers if a[3].model_version == m1 and a[0] > swapped_at["t"] + 3.0]
        assert late_v1 == []  # the writer's first refused call moved every request to v2, long before a poll
        writer_versions = Counter(a[3].model_version for a in answers if a[5] is not None)
        print(f"\n{len(answers)} answers in {load_s:.1f} s ({versions[m1]} v1, {versions[second.model_version]} v2; "
              f"the writer's {dict(writer_versions)}); v2 exported {exported_at - began:.1f} s into the load, "
              f"Triton's load of it {swapped_at['t'] - load_started:.1f} s")

        for customer in world["events"]:  # the gateway ends on v2
            reply = stub.RankTiles(_request(customer), timeout=10)
            assert reply.model_version == second.model_version and matches(ref2, customer, reply)
        assert [reloads(metrics, r) for r in ("pending", "applied", "refused")] == [1, 1, 0]
        served_after_the_swap(world)

        # a manifest the artifacts do not match is refused: counted once, logged, v2 keeps serving
        bad = Manifest.load(world["repo"] / "manifest.json")
        bad = replace(bad, repository_version=3,
                      components={**bad.components, "ranker": replace(bad.components["ranker"], sha256="0" * 64)})
        bad.write(world["repo"] / "manifest.json")
        for _ in range(2):
            gw.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while reloads(metrics, "refused") < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
        assert reloads(metrics, "refused") == 1
        reply = stub.RankTiles(_request(next(iter(world["events"]))), timeout=10)
        assert reply.model_version == second.model_version and not reply.degraded
        log = (tmp_path / "gw.log").read_text()
        assert "model reload to m3-" in log and "ranker: expected sha256 000000000000" in log
        assert not any(c in log for c in [*world["events"], writer_id])  # no customer id in the log
    finally:
        assert gw.stop() == 0


def served_after_the_swap(world) -> None:
    """What the swap left in Triton: v1 beside v2 (composing models keep 2), the ensemble serving v2 only, the
    manifest file at the repository root not taken for a model."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(world["triton"].grpc_url) as client:
        index = {(m["name"], m.get("version", ""), m.get("state", ""))
                 for m in client.get_model_repository_index(as_json=True)["models"]}
        config = client.get_model_config("intent_pipeline", as_json=True)["config"]
    assert {("session_encoder", "1", "READY"), ("session_encoder", "2", "READY"), ("intent_head", "1", "READY"),
            ("intent_head", "2", "READY"), ("intent_pipeline", "2", "READY")} <= index, index
    assert not any(name == "manifest.json" for name, _, _ in index)
    assert [int(s["model_version"]) for s in config["ensemble_scheduling"]["step"]] == [2, 2]


def _request(customer: str) -> pb.RankTilesRequest:
    return pb.RankTilesRequest(customer_id=customer, tile_ids=TILE_IDS, context=CONTEXT)


def _message(e: Event) -> pb.WebEvent:
    msg = pb.WebEvent(anonymous_id=e.anonymous_id, ts=str(e.ts), event_type=e.event_type, url=e.url,
                      device=e.device or "", referrer=e.referrer or "", query=e.query or "")
    if e.dwell_ms is not None:
        msg.dwell_ms = e.dwell_ms
    return msg
