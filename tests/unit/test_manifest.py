"""The manifest (training/core/manifest.py): round trip, a stable hash, every mismatch named; the cache entry header
(gateway/store/base.py); and the gateway refusing at start-up what its manifest does not pin."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.store import pack_cache_entry, unpack_cache_entry
from training.core.contract import Event
from training.core.featurizer import Featurizer, FeaturizerConfig
from training.core.manifest import FORMAT, Component, Manifest, ManifestError, sha256_bytes, sha256_file
from training.core.ranker import FeatureSpec, Ranker

SHA = {name: sha256_bytes(name.encode()) for name in ("featurizer", "encoder", "head", "taxonomy", "ranker")}
TENSORS = {"CATEGORICAL": (-1, 9), "CONTINUOUS": (-1, 6), "EMBEDDING": (4,), "INTENT_PROBS": (2,)}


def manifest(version: int = 1, **changes) -> Manifest:
    components = {"featurizer": Component("featurizer.json", SHA["featurizer"], "1-abc"),
                  "encoder": Component("encoder.pt", SHA["encoder"], "enc-1"),
                  "intent_head": Component("intent_head.json", SHA["head"], "head-1@tax-1"),
                  "taxonomy": Component("taxonomy.yaml", SHA["taxonomy"], "tax-1"),
                  "ranker": Component("ranker.json", SHA["ranker"], "intent-ranker/3:embedding-need")}
    base = Manifest(version, components, SHA["encoder"], ("research", "apply"), TENSORS)
    return replace(base, **changes)


def test_round_trip_keeps_content_and_hash(tmp_path):
    m = manifest(3)
    path = m.write(tmp_path / "manifest.json")
    loaded = Manifest.load(path)
    assert loaded == m and loaded.manifest_hash == m.manifest_hash
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT and doc["manifest_hash"] == m.manifest_hash
    assert doc["model_version"] == m.model_version == f"m3-{m.manifest_hash[:12]}"
    assert not list(tmp_path.glob(".manifest-*"))  # the temporary file of the atomic write is gone


def test_hash_is_stable_and_covers_the_content():
    m = manifest()
    # the canonical JSON's hash: independent of key order and formatting, and pinned here so that a change of
    # the canonical form (which would invalidate every cache entry and model_version) is a deliberate one
    shuffled = json.loads(json.dumps({**m.to_dict(), "manifest_hash": None}, indent=3, sort_keys=False))
    assert Manifest.from_dict(dict(reversed(list(shuffled.items())))).manifest_hash == m.manifest_hash
    assert m.manifest_hash == "af37859a36325594"
    assert len(m.manifest_hash) == 16 and m.embedding_dim == 4
    others = [manifest(2), manifest(labels=("apply", "research")), manifest(ranker_encoder_sha256=None),
              manifest(target="gpu"),
              manifest(components={**m.components, "ranker": Component("ranker.json", SHA["head"], "x")})]
    assert len({m.manifest_hash, *(o.manifest_hash for o in others)}) == 1 + len(others)


def test_a_hand_edited_or_invalid_manifest_is_refused(tmp_path):
    doc = {**manifest().to_dict(), "manifest_hash": "0" * 16}
    with pytest.raises(ManifestError, match="manifest_hash"):
        Manifest.from_dict(doc)
    with pytest.raises(ManifestError, match="format"):
        Manifest.from_dict({**manifest().to_dict(), "format": "intent-manifest/0"})
    bad = manifest().to_dict()
    bad["components"]["encoder"]["sha256"] = "abc"
    with pytest.raises(ManifestError, match="encoder: sha256 'abc'"):
        Manifest.from_dict(bad)
    missing = manifest().to_dict()
    missing["components"]["featurizer"] = None
    with pytest.raises(ManifestError, match="featurizer is required"):
        Manifest.from_dict(missing)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not JSON"):
        Manifest.load(tmp_path / "m.json")
    with pytest.raises(FileNotFoundError, match="make export"):
        Manifest.load(tmp_path / "none.json")


def test_check_names_every_file_that_disagrees(tmp_path):
    files = {}
    for name, content in (("featurizer", b"F"), ("ranker", b"R")):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_bytes(content)
    m = manifest(components={**manifest().components,
                             "featurizer": Component("featurizer.json", sha256_file(files["featurizer"]), "1-abc"),
                             "ranker": Component("ranker.json", sha256_file(files["ranker"]), "r")})
    assert m.check(files, require=("ranker",)) == []
    files["ranker"].write_bytes(b"another ranker")
    (found,) = m.check(files)
    assert found.component == "ranker" and sha256_file(files["ranker"])[:12] in found.found
    assert m.sha256("ranker")[:12] in found.expected
    files["featurizer"].unlink()
    assert [f.component for f in m.check(files)] == ["featurizer", "ranker"]
    assert "no file at" in str(m.check(files)[0])
    with pytest.raises(ManifestError, match=r"featurizer: .*; ranker: .*Deploy the featurizer.json"):
        m.require_match(files)


def test_check_names_the_missing_ranker_and_a_ranker_of_another_encoder():
    no_ranker = manifest(components={**manifest().components, "ranker": None})
    (found,) = no_ranker.check({}, require=("ranker",))
    assert found.component == "ranker" and "none in the manifest" in found.found
    other = manifest(ranker_encoder_sha256=SHA["head"])
    (found,) = other.check({})
    assert found.component == "ranker_encoder_sha256" and SHA["head"][:12] in found.found
    assert manifest(ranker_encoder_sha256=None).check({}) == []  # exported with --allow-unpinned-ranker


def test_check_served_names_hash_and_version():
    m = manifest(2)
    assert m.check_served({"manifest_hash": m.manifest_hash, "repository_version": "2"}) == []
    found = m.check_served({"manifest_hash": "f" * 16, "repository_version": "1"})
    assert [f.component for f in found] == ["manifest_hash", "repository_version"]
    assert "exported before manifests" in str(m.check_served({})[0])


# -- cache entries ------------------------------------------------------------------------------------------
def test_cache_entry_round_trip_and_every_mismatch_is_a_miss():
    tag = manifest().manifest_hash
    emb, probs = np.arange(4, dtype=np.float32), np.array([0.25, 0.75], np.float32)
    blob = pack_cache_entry(tag, emb, probs)
    got = unpack_cache_entry(blob, tag, 4, 2)
    assert got is not None and np.array_equal(got[0], emb) and np.array_equal(got[1], probs)
    assert len(blob) == 17 + 4 * 6
    other = manifest(2).manifest_hash
    assert unpack_cache_entry(blob, other, 4, 2) is None  # another model set
    assert unpack_cache_entry(blob, tag, 3, 3) is None  # same size, other layout
    assert unpack_cache_entry(blob[:-1], tag, 4, 2) is None  # truncated
    assert unpack_cache_entry(b"XXXX" + blob[4:], tag, 4, 2) is None  # not ours
    assert unpack_cache_entry(emb.tobytes() + probs.tobytes(), tag, 4, 2) is None  # the headerless old format
    assert unpack_cache_entry(None, tag, 4, 2) is None


# -- the gateway at start-up ------------------------------------------------------------------------------------
def _artifacts(root: Path) -> Manifest:
    """featurizer.json + ranker.json in `root` and a manifest pinning them (as the export writes it)."""
    events = [Event(anonymous_id="a", ts=i * 10_000, event_type="page_view", url="/checking") for i in range(3)]
    Featurizer.fit([events], FeaturizerConfig(max_len=5, min_count=1)).save(root / "featurizer.json")
    spec = FeatureSpec(("t1", "t2"), ("card", "loan"), ("mass",), 2, "embedding", 4, np.zeros(4, np.float32),
                       np.ones(4, np.float32))
    Ranker(spec, np.zeros(len(spec.feature_names()), np.float32), 0.0,
           {"encoder_sha256": SHA["encoder"]}).save(root / "ranker.json")
    m = manifest(components={**manifest().components,
                             "featurizer": Component.of(root / "featurizer.json", "1-x"),
                             "ranker": Component.of(root / "ranker.json", "r")})
    m.write(root / "manifest.json")
    return m


def test_the_gateway_refuses_to_start_on_artifacts_its_manifest_does_not_pin(tmp_path):
    from gateway.app import ServingApp
    from gateway.config import GatewayConfig

    m = _artifacts(tmp_path)
    cfg = GatewayConfig(artifacts=str(tmp_path), manifest=str(tmp_path / "manifest.json"),
                        store=f"sqlite://{tmp_path / 'gw.db'}", embed_on_write=False)
    app = ServingApp(cfg, transport=lambda url: None)  # agrees: builds (Triton is only checked in start())
    assert app.model_version == m.model_version and app.snapshot.unserved
    assert app.snapshot.triton_version == "1" and app.snapshot.cache_tag == m.manifest_hash
    asyncio.run(app.store.close())
    doc = json.loads((tmp_path / "ranker.json").read_text())
    doc["bias"] = 1.0  # another ranker
    (tmp_path / "ranker.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=r"ranker: expected sha256 .* found .* ranker.json") as info:
        ServingApp(cfg)
    assert "featurizer" not in str(info.value).split("):")[1].split(". Deploy")[0]  # only what disagrees
    with pytest.raises(FileNotFoundError, match="no model manifest"):
        ServingApp(GatewayConfig(artifacts=str(tmp_path), manifest=str(tmp_path / "nope.json")))
    manifest(components={**m.components, "ranker": None}).write(tmp_path / "no_ranker.json")
    with pytest.raises(ManifestError, match=r"ranker: expected a pinned ranker\.json"):
        ServingApp(GatewayConfig(artifacts=str(tmp_path), manifest=str(tmp_path / "no_ranker.json")))
