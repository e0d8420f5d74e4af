"""The reloader's decisions (gateway/snapshot.py) and the one-snapshot-per-request rule, without servers.

Triton is a stand-in transport here (ServingApp's pluggable `transport`) that serves one manifest at a time, as
Triton's ensemble config does, and refuses calls pinned to another version with Triton's own message. This
tests the gateway's logic; tests/integration/test_hot_reload.py proves the swap on the real Triton.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.api import pb
from gateway.app import ServingApp
from gateway.config import GatewayConfig
from gateway.health import DependencyProbe
from gateway.snapshot import RELOADS
from gateway.triton_client import ModelMismatch
from training.core.contract import Event
from training.core.featurizer import Featurizer, FeaturizerConfig
from training.core.manifest import Component, Manifest, sha256_bytes
from training.core.ranker import FeatureSpec, Ranker

T0 = 1_700_000_000_000
LABELS = ("research", "apply")
ENCODER = sha256_bytes(b"encoder")


class StandInTriton:
    """One ensemble name, one served manifest (hash + version) at a time; outputs depend on the version."""

    def __init__(self) -> None:
        self.manifest: Manifest | None = None
        self.calls: list[str] = []
        self.down = False

    def serve(self, manifest: Manifest) -> None:
        self.manifest = manifest

    async def config(self, model, timeout_s):
        if self.down:
            raise ConnectionRefusedError("triton is down")
        m = self.manifest
        return {"max_batch_size": 8, "parameters": {k: {"string_value": v} for k, v in {
            "labels": ",".join(m.labels), "featurizer_version": "x", "manifest_hash": m.manifest_hash,
            "repository_version": str(m.repository_version)}.items()}}

    async def infer(self, model, categorical, continuous, timeout_s, headers, version=""):
        self.calls.append(version)
        if self.down:
            raise ConnectionRefusedError("triton is down")
        if version != str(self.manifest.repository_version):
            raise RuntimeError(f"[StatusCode.UNAVAILABLE] Request for unknown model: '{model}' version {version} "
                               "is not at ready state")
        n, v = categorical.shape[0], float(version)
        out = {"EMBEDDING": np.full((n, 4), v, np.float32), "INTENT_PROBS": np.tile([0.9, 0.1] if v == 1 else
                                                                                   [0.2, 0.8], (n, 1))}
        return SimpleNamespace(as_numpy=lambda name: out[name].astype(np.float32))

    async def close(self):
        pass


def write_set(root: Path, version: int, bias: float) -> Manifest:
    """featurizer.json + ranker.json (ranker `bias` tells the sets apart) and the manifest of `version`."""
    events = [Event(anonymous_id="a", ts=i * 10_000, event_type="page_view", url="/checking") for i in range(3)]
    if not (root / "featurizer.json").exists():
        Featurizer.fit([events], FeaturizerConfig(max_len=5, min_count=1)).save(root / "featurizer.json")
    spec = FeatureSpec(("t1", "t2"), ("card", "loan"), ("mass",), 2, "embedding", 4, np.zeros(4, np.float32),
                       np.ones(4, np.float32))
    weights = np.linspace(-1, 1, len(spec.feature_names())).astype(np.float32)
    Ranker(spec, weights, bias, {"encoder_sha256": ENCODER, "lookback_days": 3650}).save(root / "ranker.json")
    components = {"featurizer": Component.of(root / "featurizer.json", "f"),
                  "encoder": Component("encoder.pt", ENCODER, "enc"),
                  "intent_head": Component("intent_head.json", sha256_bytes(b"head"), "head"),
                  "taxonomy": Component("taxonomy.yaml", None, "tax"),
                  "ranker": Component.of(root / "ranker.json", "r")}
    m = Manifest(version, components, ENCODER, LABELS,
                 {"CATEGORICAL": (-1, 9), "CONTINUOUS": (-1, 6), "EMBEDDING": (4,), "INTENT_PROBS": (2,)})
    m.write(root / "manifest.json")
    return m


def reloads(result: str) -> float:
    return RELOADS.labels(result)._value.get()


@pytest.fixture
def world(tmp_path):
    triton = StandInTriton()
    v1 = write_set(tmp_path, 1, bias=-1.0)
    triton.serve(v1)
    cfg = GatewayConfig(artifacts=str(tmp_path), manifest=str(tmp_path / "manifest.json"), store="sqlite://:memory:",
                        embed_on_write=False, reload_poll_s=0, as_of=str(T0 + 3_600_000),
                        pki_dir=str(tmp_path / "pki"))
    return SimpleNamespace(root=tmp_path, triton=triton, v1=v1, cfg=cfg)


async def linked(app: ServingApp) -> pb.RankTilesRequest:
    """Visitor A1's events and its link to C1, stored as the gateway stores them (under pseudonyms)."""
    ids = app.gateway.ids
    visitor, customer = ids.visitor("A1"), ids.customer("C1")
    events = [Event(anonymous_id=visitor, ts=T0 + i * 60_000, event_type="page_view", url="/checking")
              for i in range(4)]
    await app.store.append(events, now_ms=T0 + 3_600_000)
    await app.store.link(visitor, customer, "api", T0)
    return pb.RankTilesRequest(customer_id="C1", tile_ids=["t1", "t2"], context=pb.CustomerContext(segment="mass"))


def test_start_up_refuses_a_triton_serving_another_manifest(world):
    async def start(served: Manifest) -> ServingApp:
        world.triton.serve(served)
        app = ServingApp(world.cfg, transport=lambda url: world.triton)
        try:
            await app.start()
        finally:
            await app.stop()
        return app

    app = asyncio.run(start(world.v1))  # the gateway's own set: accepted
    assert not app.snapshot.unserved and app.snapshot.max_batch == 8
    other = Manifest.from_dict({**world.v1.to_dict(), "repository_version": 7})
    with pytest.raises(ModelMismatch, match=r"serves intent_pipeline with manifest_hash .* load-triton"):
        asyncio.run(start(other))


def test_a_new_set_waits_for_triton_then_applies_and_a_mismatch_is_refused(world):
    async def scenario():
        app = ServingApp(world.cfg, transport=lambda url: world.triton)
        await app.start()
        request = await linked(app)
        first = await app.gateway.rank(request)
        assert first.model_version == world.v1.model_version and not first.degraded

        pending, applied, refused = reloads("pending"), reloads("applied"), reloads("refused")
        v2 = write_set(world.root, 2, bias=1.0)  # the export wrote v2 and its manifest; Triton still serves v1
        assert (await app.reload()).model_version == world.v1.model_version
        assert (await app.reload()).model_version == world.v1.model_version
        assert reloads("pending") == pending + 1  # counted once, however often it is checked
        still = await app.gateway.rank(request)
        assert still.model_version == world.v1.model_version and still.tiles == first.tiles

        world.triton.serve(v2)  # Triton loaded v2: its v1 is gone
        assert (await app.reload()).model_version == v2.model_version and reloads("applied") == applied + 1
        second = await app.gateway.rank(request)
        assert second.model_version == v2.model_version and not second.degraded
        assert second.tiles != first.tiles and second.intents[0][0] == "apply"  # v2's ranker and v2's head

        doc = json.loads((world.root / "manifest.json").read_text())
        doc["components"]["ranker"]["sha256"] = sha256_bytes(b"another ranker")
        doc["repository_version"] = 3
        Manifest.from_dict({k: v for k, v in doc.items() if k not in ("manifest_hash", "model_version")}).write(
            world.root / "manifest.json")
        for _ in range(2):
            assert (await app.reload()).model_version == v2.model_version  # keeps serving v2
        assert reloads("refused") == refused + 1
        assert (await app.gateway.rank(request)).tiles == second.tiles
        await app.stop()

    asyncio.run(scenario())


def test_a_request_whose_version_was_unloaded_is_retried_whole_on_the_new_set(world):
    async def scenario():
        app = ServingApp(world.cfg, transport=lambda url: world.triton)
        await app.start()
        request = await linked(app)
        v2 = write_set(world.root, 2, bias=1.0)
        world.triton.serve(v2)  # Triton swapped before any poll: the gateway still holds v1
        assert app.model_version == world.v1.model_version
        ranked = await app.gateway.rank(request)
        assert ranked.model_version == v2.model_version and not ranked.degraded
        assert ranked.intents[0][0] == "apply" and world.triton.calls == ["1", "2"]
        await app.stop()

    asyncio.run(scenario())


def test_a_triton_serving_neither_set_is_not_used(world):
    async def scenario():
        app = ServingApp(world.cfg, transport=lambda url: world.triton)
        await app.start()
        request = await linked(app)
        world.triton.serve(Manifest.from_dict({**world.v1.to_dict(), "labels": ["x", "y"]}))
        await app.reload()
        ranked = await app.gateway.rank(request)
        assert ranked.degraded and "Triton serves intent_pipeline" in ranked.reason
        assert ranked.model_version == world.v1.model_version and world.triton.calls == []
        world.triton.serve(world.v1)  # back to the gateway's set: model calls resume
        await app.reload()
        assert not (await app.gateway.rank(request)).degraded
        await app.stop()

    asyncio.run(scenario())


def test_cache_entries_of_another_set_or_a_bad_header_are_misses(world):
    async def scenario():
        app = ServingApp(world.cfg, transport=lambda url: world.triton)
        await app.start()
        request = await linked(app)
        await app.gateway.rank(request)
        await app.gateway.rank(request)
        assert world.triton.calls == ["1"]  # the second answer came from the cache
        visitor, key = next(iter(app.store._cache))
        assert key.startswith(world.v1.manifest_hash + ":")
        await app.store.cache_put(visitor, key, b"\x00" * 41)  # same key, a header that is not ours
        again = await app.gateway.rank(request)
        assert world.triton.calls == ["1", "1"] and not again.degraded
        v2 = write_set(world.root, 2, bias=1.0)
        world.triton.serve(v2)
        await app.reload()
        await app.gateway.rank(request)
        assert world.triton.calls == ["1", "1", "2"]  # v1's entry is not v2's
        await app.stop()

    asyncio.run(scenario())


def test_the_poll_and_a_reload_request_find_a_new_set_on_their_own(world):
    async def until(app: ServingApp, version: str, timeout_s: float = 5.0) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while app.model_version != version and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return app.model_version == version

    async def scenario(poll_s: float, nudge: bool):
        app = ServingApp(replace(world.cfg, reload_poll_s=poll_s), transport=lambda url: world.triton)
        await app.start()
        v2 = write_set(world.root, 2 + int(nudge), bias=1.0)
        world.triton.serve(v2)
        if nudge:
            app.request_reload()  # SIGHUP's handler
        assert await until(app, v2.model_version)
        await app.stop()

    asyncio.run(scenario(0.05, nudge=False))
    asyncio.run(scenario(0, nudge=True))  # no poll: only the request


def test_a_gateway_started_before_triton_uses_it_once_it_answers_without_any_poll(world):
    """The reloader does not poll (reload_poll_s 0): only the Triton probe noticing it can make answers whole."""

    async def scenario():
        world.triton.down = True
        app = ServingApp(world.cfg, transport=lambda url: world.triton)
        await app.start()
        request = await linked(app)
        before = await app.gateway.rank(request)
        assert before.degraded and before.model_version == world.v1.model_version
        assert app.triton_probe.up is False
        world.triton.down = False
        deadline = asyncio.get_running_loop().time() + 5
        while app.snapshot.unserved and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        after = await app.gateway.rank(request)
        assert not after.degraded and after.intents and after.model_version == world.v1.model_version
        assert app.triton_probe.up is True
        await app.stop()

    asyncio.run(scenario())


def test_the_probe_backs_off_to_its_cap_and_resets_when_the_dependency_answers():
    answers: list[bool] = []

    async def check():
        if not answers.pop(0):
            raise ConnectionError

    async def scenario() -> list[tuple[bool | None, float]]:
        probe = DependencyProbe("thing", check, interval_s=1.0, base_s=0.1, cap_s=1.0)
        seen: list[bool] = []

        async def listener(up: bool) -> None:
            seen.append(up)

        probe.listeners.append(listener)
        answers.extend([False] * 6 + [True, False])
        steps = []
        for _ in range(8):
            await probe.probe()
            steps.append((probe.up, round(probe.delay_s, 3)))
        assert seen == [False, True, False]  # told of changes only
        return steps

    assert asyncio.run(scenario()) == [(False, 0.1), (False, 0.2), (False, 0.4), (False, 0.8), (False, 1.0),
                                       (False, 1.0), (True, 1.0), (False, 0.1)]


def test_health_statuses_follow_the_probes_until_shutdown():
    from grpc_health.v1 import health_pb2

    from gateway.api import SERVICE_NAME
    from gateway.health import GatewayHealth

    up = {"answers": False}

    async def check():
        if not up["answers"]:
            raise ConnectionError

    async def status(health: GatewayHealth, name: str) -> int:
        reply = await health.servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
        return reply.status

    async def scenario() -> list[tuple[int, int]]:
        probe = DependencyProbe("thing", check)
        health = GatewayHealth({"svc/thing": probe})
        await health.start()
        seen = [(await status(health, SERVICE_NAME), await status(health, "svc/thing"))]
        await probe.probe()
        up["answers"] = True
        await probe.probe()
        seen.append((await status(health, ""), await status(health, "svc/thing")))
        await health.shutdown()
        up["answers"] = False
        await probe.probe()
        up["answers"] = True
        await probe.probe()  # a probe's change after shutdown does not bring anything back
        seen.append((await status(health, ""), await status(health, "svc/thing")))
        return seen

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert asyncio.run(scenario()) == [(serving, not_serving), (serving, serving), (not_serving, not_serving)]
