"""`intent taxonomy-drift` end to end on synthetic worlds whose intent mix differs.

The baseline world is the shared `small_data` (bank, 2,500 visitors) with `small_artifacts` (an untrained, seeded
encoder and a head fitted on the hidden intents: the drift verb only needs a head consistent with its encoder).
A control world of the same mix (another seed) must read stable; a world generated with another intent mix
(`GeneratorConfig.intent_mix`) must read drifted, on the intents whose weight changed. The generator is used
by the test only; the verb reads the data directories as any user's logs (no truth/).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from training.synthetic import GeneratorConfig, generate
from training.taxonomy.distill import IntentHead
from training.taxonomy.drift import BASELINE_FILE, PSI_STABLE, Baseline, record_baseline, run_drift
from training.taxonomy.taxonomy import Label, Taxonomy

DRIFTED_MIX = {"fraud_report": 5.0, "refinance": 4.0, "credit_card_shopping": 0.2, "casual_browsing": 0.3}


@pytest.fixture(scope="module")
def pinned(small_data: Path, small_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifacts as the taxonomy stage leaves them: taxonomy.yaml, the head distilled for it, the baseline."""
    from training.encoder.inference import embed_sessions
    from training.pipeline import load_artifacts
    from training.sessions import load_sessions

    out = tmp_path_factory.mktemp("drift_artifacts")
    for name in ("featurizer.json", "encoder.pt"):
        shutil.copy(small_artifacts / name, out / name)
    head = IntentHead.load(small_artifacts / "intent_head.json")
    taxonomy = Taxonomy(tuple(Label(n, f"Visitors about {n.replace('_', ' ')}.") for n in head.labels), "pinned")
    taxonomy.save(out / "taxonomy.yaml")
    head = dataclasses.replace(head, taxonomy_version=taxonomy.version)
    head.save(out / "intent_head.json")
    featurizer, encoder, _ = load_artifacts(out)
    held_out = load_sessions(small_data).part(holdout=True)
    emb = embed_sessions(encoder, featurizer, held_out)
    record_baseline(out, taxonomy, head, held_out, emb, small_data)  # the stage's own call
    return out


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift_worlds")
    out = {"control": root / "control", "drifted": root / "drifted"}
    generate(GeneratorConfig(visitors=1500, seed=12), out["control"])
    generate(GeneratorConfig(visitors=1500, seed=13, intent_mix=DRIFTED_MIX), out["drifted"])
    for path in out.values():  # what a user brings: the logs, no generator truth
        shutil.rmtree(path / "truth")
    return out


def test_a_changed_intent_mix_drifts_and_the_same_mix_stays_stable(pinned, worlds, tmp_path):
    control = run_drift(worlds["control"], pinned, tmp_path / "control.json")
    drifted = run_drift(worlds["drifted"], pinned, tmp_path / "drifted.json")
    c, d = control["distribution"], drifted["distribution"]
    assert c["psi"] < PSI_STABLE and c["status"] == "stable", control["table"]
    assert d["psi"] > 2 * c["psi"] and d["status"] != "stable", drifted["table"]
    assert d["js_distance"] > c["js_distance"]
    # the intents whose weight went up gained share, and the head's drift names at least one of them
    for name in ("fraud_report", "refinance"):
        assert d["labels"][name]["change_pp"] > 3, d["labels"][name]
    worst = max(d["labels"], key=lambda n: d["labels"][n]["psi"])
    assert worst in DRIFTED_MIX and d["labels"][worst]["psi"] > max(r["psi"] for r in c["labels"].values())
    on_disk = json.loads((tmp_path / "drifted.json").read_text())
    assert on_disk["distribution"]["psi"] == d["psi"] and on_disk["baseline"]["source"] == str(pinned / BASELINE_FILE)
    assert "candidate_intents" in on_disk and "table" not in on_disk


def test_missing_baseline_is_computed_from_baseline_data(pinned, worlds, small_data, tmp_path):
    moved = tmp_path / "pinned"
    shutil.copytree(pinned, moved)
    recorded = Baseline.load(moved / BASELINE_FILE)
    (moved / BASELINE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="--baseline-data"):
        run_drift(worlds["control"], moved, tmp_path / "r.json")
    report = run_drift(worlds["control"], moved, tmp_path / "r.json", baseline_data=small_data)
    assert report["baseline"]["source"] == f"computed from {small_data}"
    # the same sessions through the same encoder and head: the recorded baseline, recomputed
    assert report["baseline"]["n_sessions"] == recorded.n_sessions
    shares = {n: r["baseline_share"] for n, r in report["distribution"]["labels"].items()}
    assert shares == pytest.approx({n: round(s, 4) for n, s in recorded.shares.items()}, abs=1e-4)


def test_the_verb_prints_a_table_and_writes_the_report(pinned, worlds, tmp_path, capsys, monkeypatch):
    from training.cli import main

    monkeypatch.setenv("INTENT_MAX_SESSIONS", "2000")  # every flag also comes from the environment
    report = tmp_path / "taxonomy_drift.json"
    assert main(["taxonomy-drift", "--data", str(worlds["drifted"]), "--artifacts", str(pinned),
                 "--taxonomy", str(pinned / "taxonomy.yaml"), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "PSI" in out and "JS dist" in out and "fraud_report" in out and str(report) in out
    doc = json.loads(report.read_text())
    assert doc["n_sessions"] == 2000 and doc["distribution"]["status"] in ("watch", "drifted")
    # a taxonomy the head was not distilled for is refused
    other = Taxonomy((Label("something_else", "Another taxonomy."), Label("and_more", "Another label.")), "pinned")
    other.save(tmp_path / "other.yaml")
    assert main(["taxonomy-drift", "--data", str(worlds["control"]), "--artifacts", str(pinned),
                 "--taxonomy", str(tmp_path / "other.yaml"), "--report", str(report)]) == 2


class SchemaBackend:
    """An LLM backend that answers every labelling call with one of the schema's allowed labels (chosen by a hash
    of the prompt, so the head sees several): enough to run the taxonomy stage without a model."""

    def __init__(self, config) -> None:
        self.config = config

    def identity(self) -> str:
        return "fake:schema"

    def chat(self, messages, json_schema, max_tokens, *, seed=None) -> str:
        import hashlib

        allowed = json_schema["properties"]["label"]["enum"]
        pick = hashlib.sha1(messages[-1]["content"].encode()).digest()[0] % len(allowed)
        return json.dumps({"label": allowed[pick]})


def test_the_taxonomy_stage_records_the_baseline_the_verb_reads(pinned, small_data, tmp_path):
    from training.taxonomy.llm import LLMClient, LLMConfig
    from training.taxonomy.stage import StageConfig, run_taxonomy

    artifacts = tmp_path / "stage"
    artifacts.mkdir()
    for name in ("featurizer.json", "encoder.pt"):
        shutil.copy(pinned / name, artifacts / name)
    config = LLMConfig(backend="fake", cache_dir=None)
    client = LLMClient(config, backend=SchemaBackend(config))
    cfg = StageConfig(pool=300, label_train=60, label_eval=20, pinned=pinned / "taxonomy.yaml")
    report = run_taxonomy(small_data, artifacts, tmp_path / "taxonomy.json", cfg, client=client, progress=False)
    assert report["drift_baseline"] == str(artifacts / BASELINE_FILE)
    baseline = Baseline.load(artifacts / BASELINE_FILE)
    head = IntentHead.load(artifacts / "intent_head.json")
    assert baseline.taxonomy_version == head.taxonomy_version and baseline.labels == head.labels
    drift = run_drift(small_data, artifacts, tmp_path / "drift.json")
    assert drift["baseline"]["source"] == str(artifacts / BASELINE_FILE)
    # the logs the taxonomy was pinned on, all visitors against the held-out ones: no drift
    assert drift["distribution"]["status"] == "stable", drift["table"]
