"""The taxonomy stage end to end with the real local LLM (SmolLM2 via xllamacpp) on a small sample."""

from __future__ import annotations

import json

import pytest

from training.encoder.train import TrainConfig
from training.pipeline import train
from training.taxonomy.distill import IntentHead
from training.taxonomy.evidence import evidence_words
from training.taxonomy.generate import TaxonomyConfig
from training.taxonomy.llm import LLMClient, LLMConfig
from training.taxonomy.stage import StageConfig, run_taxonomy
from training.taxonomy.taxonomy import Taxonomy
from training.taxonomy.validate import shares_word

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage(small_data, tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("tax_artifacts")
    train(small_data, artifacts, TrainConfig(epochs=2, seed=5))
    client = LLMClient(LLMConfig(cache_dir=str(tmp_path_factory.mktemp("llm_cache"))))
    cfg = StageConfig(pool=800, label_train=40, label_eval=20, taxonomy=TaxonomyConfig(clusters=8))
    report = run_taxonomy(small_data, artifacts, artifacts / "taxonomy.json", cfg, client=client, progress=False)
    return artifacts, report, client


def test_report_has_the_agreed_shape(stage):
    artifacts, report, _ = stage
    on_disk = json.loads((artifacts / "taxonomy.json").read_text())
    assert on_disk["taxonomy_size"] == report["taxonomy_size"]
    assert 0 <= on_disk["distill"]["llm_vs_head_micro_f1"] <= 1
    for key in ("drop_pct", "downstream_micro_f1"):
        assert key in on_disk["distill"]
    for key in ("nmi_llm", "nmi_head", "ari_head"):
        assert -1 <= on_disk["truth"][key] <= 1
    assert on_disk["latency"]["llm_s_per_session"] > 0 and on_disk["latency"]["head_us_per_session"] > 0


def test_taxonomy_file_and_head_belong_together(stage):
    artifacts, report, _ = stage
    taxonomy = Taxonomy.load(artifacts / "taxonomy.yaml")
    head = IntentHead.load(artifacts / "intent_head.json")
    assert 2 <= len(taxonomy.labels) <= 20 and report["taxonomy_size"] == len(taxonomy.labels)
    assert set(head.labels) <= set(taxonomy.names) and len(head.labels) >= 2
    assert head.taxonomy_version == taxonomy.version == report["taxonomy"]["version"]
    assert all(len(label.description) >= 10 and label.pages for label in taxonomy.labels), taxonomy.labels
    rows = [json.loads(line) for line in (artifacts / "llm_labels.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and {r["split"] for r in rows} == {"train", "eval"}
    assert all(r["label"] is None or r["label"] in r["candidates"] for r in rows)


def test_labels_carry_the_hidden_intents_and_the_head_is_fast(stage):
    _, report, client = stage
    # Random labels over ~500 held-out sessions give an NMI near 0.01; the LLM-named, distilled intents carry
    # real signal even from a 135M model and 40 labels.
    assert report["truth"]["nmi_head_all_held_out"] > 0.15, report["truth"]
    assert report["latency"]["head_speedup_over_llm"] >= 10_000
    # one call per labelled session, plus a re-ask for each reply that failed validation
    assert client.stats.calls >= report["llm"]["labelling_calls"] == 60 + report["llm"]["labelling_retries"]


def test_a_pinned_taxonomy_is_reused_without_renaming(stage, small_data, tmp_path):
    artifacts, report, client = stage
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text((artifacts / "taxonomy.yaml").read_text())
    calls_before, hits_before = client.stats.calls, client.stats.cache_hits
    cfg = StageConfig(pool=800, label_train=40, label_eval=20, pinned=pinned)
    again = run_taxonomy(small_data, artifacts, tmp_path / "again.json", cfg, client=client, progress=False)
    assert again["taxonomy"]["version"] == report["taxonomy"]["version"]
    # same sessions, same prompts: every label replays from the cache (timing uses its own uncached client)
    assert client.stats.calls == calls_before
    assert client.stats.cache_hits - hits_before == report["llm"]["labelling_calls"]
    assert again["distill"]["llm_vs_head_micro_f1"] == report["distill"]["llm_vs_head_micro_f1"]


def test_every_label_is_grounded_in_its_evidence_and_the_naming_is_reported(stage):
    artifacts, report, _ = stage
    taxonomy = Taxonomy.load(artifacts / "taxonomy.yaml")
    for label in taxonomy.labels:
        # the one relation accepted between a name and its evidence: a shared word (or stem, loan ~ loans)
        vocabulary = evidence_words(label.pages, label.searches, label.events)
        assert shares_word(label.name.split("_"), vocabulary), (label.name, sorted(vocabulary))
        assert label.source in ("llm", "evidence")
    quality = report["quality"]
    assert quality["names"] == list(taxonomy.names) and quality["model"].startswith("local:")
    assert 0 <= quality["accepted_first_try_pct"] <= 100 and 0 <= quality["evidence_fallback_pct"] <= 100
    assert quality["clusters_named"] == 8 and quality["s_per_label"] >= 0
