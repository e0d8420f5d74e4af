"""Capture ratios, conversion checks and the data description of the evaluation report, on hand-made summaries."""

import json

import numpy as np
import pytest

from training.evaluation.evaluate import tiles_per_visit
from training.evaluation.metrics import metric_definition_md, tiles_phrase
from training.evaluation.report import capture_doc, capture_entry, capture_table, conversion_check
from training.sessions import data_world


def _entry(r1: float, ll: float, ci=(-1.0, 5.0)) -> dict:
    return {"recall_at_1_rel_gain_pct": r1, "recall_at_1_rel_gain_ci95": list(ci), "log_loss_rel_change_pct": ll,
            "log_loss_rel_change_ci95": [ll - 1, ll + 1]}


def _summary(world="bank", synthetic=True, oracle=(40.0, -16.0), emb=(24.0, -10.0), ci=(2.0, 40.0),
             conv=None) -> dict:
    rankers = {"baseline": {}, "embedding": _entry(*emb, ci=ci)}
    if oracle is not None:
        rankers["click_model"] = _entry(*oracle)
    return {"data": f"data/{world}", "world": {"name": world, "synthetic": synthetic, "oracles": oracle is not None},
            "tile_ranking": {"all": {"rankers": rankers}},
            "conversion": conv or {"linked": {"micro_f1": {"embedding": 0.8, "bag_of_pages": 0.75}}}}


def test_capture_is_the_ratio_of_relative_changes_with_the_world_target():
    c = capture_entry(_summary())
    assert c["log_loss"] == pytest.approx(10 / 16, abs=1e-3) and c["recall_at_1"] == pytest.approx(0.6, abs=1e-3)
    assert c["target"] == 0.6 and c["world"] == "bank" and c["population"] == "all test impressions"
    assert c["ranker"]["log_loss_rel_change_pct"] == -10.0 and c["oracle"]["recall_at_1_rel_gain_pct"] == 40.0
    assert c["paper"] == {"recall_at_1_rel_gain_pct": 1.88, "log_loss_rel_change_pct": -13.38}
    assert c["met"] == {"log_loss": True, "recall_at_1": True, "recall_at_1_ci95_excludes_zero": True, "all": True}
    assert c["recall_at_1_ci95_excludes_zero"]


def test_capture_targets_by_world_and_misses():
    cu = capture_entry(_summary("credit_union", emb=(16.0, -9.0), ci=(-2.0, 30.0)))
    assert cu["target"] == 0.5 and cu["recall_at_1"] == pytest.approx(0.4)
    assert cu["met"]["log_loss"] and not cu["met"]["recall_at_1"] and not cu["met"]["all"]
    assert not cu["recall_at_1_ci95_excludes_zero"] and not cu["met"]["recall_at_1_ci95_excludes_zero"]
    weak = capture_entry(_summary("weak", oracle=(12.0, -3.6), emb=(3.0, -0.7)))
    assert weak["target"] is None and weak["met"] is None and weak["log_loss"] == pytest.approx(0.194, abs=1e-3)


def test_capture_without_an_oracle_or_a_useless_one_is_null_with_a_reason():
    c = capture_entry(_summary("mybank", synthetic=False, oracle=None))
    assert c["log_loss"] is None and c["recall_at_1"] is None and c["oracle"] is None and c["met"] is None
    assert "truth" in c["reason"] and c["target"] is None
    assert c["ranker"]["recall_at_1_rel_gain_pct"] == 24.0  # the product comparison stays
    flat = capture_entry(_summary(oracle=(-1.0, 0.5)))
    assert flat["log_loss"] is None and flat["recall_at_1"] is None and "does not improve" in flat["reason"]


def test_conversion_checks():
    conv = {"linked": {"micro_f1": {"embedding": 0.70, "bag_of_pages": 0.72}},
            "llm_sample": {"n_customers": 40, "embedding_vs_llm_labels_rel_pct": 5.1}}
    c = conversion_check({"conversion": conv})
    assert c["embedding_vs_llm_labels_rel_pct"] == 5.1 and c["met_vs_llm_labels"] and c["llm_sample_customers"] == 40
    assert c["embedding_above_bag_of_pages"] is False and c["embedding_vs_bag_of_pages_rel_pct"] == pytest.approx(-2.78)
    c = conversion_check({"conversion": {"linked": {"micro_f1": {"embedding": 0.8, "bag_of_pages": 0.7}}}})
    assert c["embedding_vs_llm_labels_rel_pct"] is None and c["met_vs_llm_labels"] is None
    assert "reason_vs_llm_labels" in c and c["embedding_above_bag_of_pages"] is True


def test_capture_doc_puts_the_main_dataset_on_top_and_every_dataset_below():
    doc = capture_doc({"main": _summary(), "second_world": _summary("credit_union"),
                       "robustness": _summary("weak")})
    assert doc["dataset"] == "main" and doc["log_loss"] == doc["datasets"]["main"]["log_loss"]
    assert list(doc["datasets"]) == ["main", "second_world", "robustness"]
    assert [d["target"] for d in doc["datasets"].values()] == [0.6, 0.5, None]
    table = capture_table(doc)
    assert len(table) == 2 + 3 + 1 and "| R@1 capture |" in table[0] and table[-1].startswith("| paper")
    json.dumps(doc)  # serializable
    no_oracle = capture_table(capture_doc({"main": _summary("mybank", synthetic=False, oracle=None)}))
    assert "capture" not in no_oracle[0] and "click model" not in no_oracle[0]


def test_tiles_per_visit_and_its_sentence():
    visits = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    t = tiles_per_visit(visits)
    assert t == {"median": 6.0, "mode": 6, "min": 4, "max": 6}
    assert tiles_phrase(t) == "shows 4-6 tiles (usually 6, median 6)"
    assert tiles_phrase(tiles_per_visit(np.repeat(np.arange(5), 6))) == "shows 6 tiles"
    md = metric_definition_md(tiles_per_visit(np.repeat(np.arange(5), 6)), n_boot=20, capture=False)
    assert "A test app visit shows 6 tiles" in md and "20 resamples" in md and "Capture" not in md
    assert "4 tiles" not in md and "Capture" in metric_definition_md(None)


def test_data_world(tmp_path):
    (tmp_path / "gen" / "truth").mkdir(parents=True)
    (tmp_path / "gen" / "truth" / "generator_config.json").write_text(json.dumps({"world": "credit_union"}))
    assert data_world(tmp_path / "gen") == {"name": "credit_union", "synthetic": True}
    (tmp_path / "old" / "truth").mkdir(parents=True)
    (tmp_path / "old" / "truth" / "generator_config.json").write_text(json.dumps({"visitors": 10}))
    assert data_world(tmp_path / "old") == {"name": "weak", "synthetic": True}
    (tmp_path / "mybank").mkdir()
    assert data_world(tmp_path / "mybank") == {"name": "mybank", "synthetic": False}


def test_credit_union_impressions_show_six_tiles(tmp_path):
    from training.evaluation.features import EvalData, impression_table
    from training.synthetic import GeneratorConfig, generate

    generate(GeneratorConfig(world="credit_union", visitors=300, seed=3), tmp_path)
    table = impression_table(EvalData.load(tmp_path), 21)
    assert tiles_per_visit(table.visit)["mode"] == 6
    assert "A test app visit shows 6 tiles" in metric_definition_md(tiles_per_visit(table.visit))


def test_served_ranker_meta_names_its_recency_pooling():
    from training.core.ranker import FeatureSpec
    from training.evaluation.cli import signal_pooling

    spec = FeatureSpec(("t",), ("p",), ("s",), signal="embedding", signal_dim=4, signal_block="need",
                       half_life_days=3.0, recency=True)
    text = signal_pooling(spec)
    assert "recency-weighted" in text and "0.5 ** (age days / 3)" in text and "days since the last session" in text
    assert signal_pooling(FeatureSpec(("t",), ("p",), ("s",), signal="embedding", signal_dim=4,
                                      signal_block="need")).startswith("mean")
    assert signal_pooling(FeatureSpec(("t",), ("p",), ("s",))).startswith("none")


def test_prepare_skips_what_exists_and_refuses_another_world(tmp_path):
    from training.evaluation.robustness import WorldPlan, prepare, robust_generator

    assert robust_generator(100).world == "weak"
    data, art = tmp_path / "data", tmp_path / "art"
    (data / "truth").mkdir(parents=True)
    art.mkdir()
    (data / "truth" / "generator_config.json").write_text(json.dumps({"world": "credit_union"}))
    for path in (data / "events.jsonl", art / "encoder.pt", art / "intent_head.json"):
        path.write_text("")
    plan = WorldPlan("credit_union", data, art)
    assert prepare(plan) == art / "intent_head.json" and plan.taxonomy_out == art / "taxonomy.yaml"
    with pytest.raises(ValueError, match="credit_union"):
        prepare(WorldPlan("weak", data, art))
