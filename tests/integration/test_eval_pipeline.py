"""End to end on the small synthetic bank: quickly trained encoder, head fitted on hidden intents, no LLM."""

import json

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from training.core.ranker import Ranker
from training.encoder.inference import embed_sessions
from training.encoder.train import TrainConfig
from training.evaluation.cli import Settings, parse
from training.evaluation.evaluate import EvalConfig, evaluate_dataset
from training.evaluation.metrics import recall_at_1
from training.evaluation.ranking import KINDS
from training.evaluation.report import plots, truth_customer_intents, write_report
from training.pipeline import load_artifacts, train
from training.sessions import load_sessions, load_truth_intents
from training.taxonomy.distill import fit_head


@pytest.fixture(scope="module")
def eval_artifacts(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_artifacts")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend
    try:
        train(small_data, out, TrainConfig(epochs=2, seed=3))
    finally:
        torch.set_num_threads(threads)
    featurizer, encoder, _ = load_artifacts(out)
    truth = load_truth_intents(small_data)
    sessions = [s for s in load_sessions(small_data).sessions if s.session_id in truth][:800]
    emb = embed_sessions(encoder, featurizer, sessions)
    y = [truth[s.session_id] for s in sessions]
    fit_head(emb[:600], y[:600], emb[600:], y[600:]).save(out / "intent_head.json")
    return out


@pytest.mark.slow  # needs eval_artifacts (20 s on 2 cores) and runs 20 s itself
def test_evaluation_end_to_end(small_data, eval_artifacts, tmp_path):
    cfg = EvalConfig(seeds=(0, 1, 2), llm_customers=0, n_boot=30, c_grid=(0.1,))
    with threadpool_limits(1):
        result = evaluate_dataset(small_data, eval_artifacts, eval_artifacts / "intent_head.json", None, cfg)
    files = plots(result, tmp_path, truth_customer_intents(small_data), prefix="eval_main")
    doc = write_report({"main": result}, tmp_path, {"main": files})

    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["tile_ranking"]["recall_at_1_rel_gain_pct"] == doc["tile_ranking"]["recall_at_1_rel_gain_pct"]
    assert isinstance(saved["tile_ranking"]["log_loss_rel_change_pct"], float)
    assert set(saved["conversion"]["micro_f1"]) == {"embedding", "llm_labels", "distilled", "bag_of_pages"}
    assert saved["conversion"]["micro_f1"]["llm_labels"] is None  # no LLM in this test
    for key in ("embedding", "distilled", "bag_of_pages"):
        assert 0 <= saved["conversion"]["micro_f1"][key] <= 1
    pops = saved["datasets"]["main"]["tile_ranking"]
    assert {"all", "with_session", "no_session", "linked_customers"} <= set(pops)
    emb = pops["all"]["rankers"]["embedding"]
    low, high = emb["recall_at_1_rel_gain_ci95"]
    assert low <= high and len(emb["per_seed"]) == 3
    md = (tmp_path / "eval.md").read_text()
    assert md.count(f"| {KINDS['embedding'].label} |") >= 4 and md.count(f"| {KINDS['embedding_crosses'].label} |") >= 4
    # the diagnostic oracles from truth/: reported apart, never as a product ranker
    oracle = saved["oracle"]["main"]["rankers"]
    assert {"oracle_session_intents", "oracle_intent", "oracle_intent_all", "click_model",
            "click_model_no_intent"} == set(oracle)
    assert all(pops["all"]["rankers"][n]["diagnostic"] for n in oracle)
    assert not pops["all"]["rankers"]["embedding"]["diagnostic"]
    assert "Diagnostic upper bounds" in md
    # capture: the embedding ranker's relative change over the click model's, on all test impressions
    cap = saved["capture"]
    assert cap["dataset"] == "main" and cap["world"] == "bank" and cap["target"] == 0.6
    click = pops["all"]["rankers"]["click_model"]
    assert cap["log_loss"] == pytest.approx(emb["log_loss_rel_change_pct"] / click["log_loss_rel_change_pct"], abs=1e-3)
    assert cap["oracle"]["log_loss_rel_change_pct"] == click["log_loss_rel_change_pct"]
    assert cap["paper"] == {"recall_at_1_rel_gain_pct": 1.88, "log_loss_rel_change_pct": -13.38}
    assert set(cap["met"]) == {"log_loss", "recall_at_1", "recall_at_1_ci95_excludes_zero", "all"}
    assert saved["datasets"]["main"]["capture"] == cap["datasets"]["main"]
    assert cap["conversion"]["embedding_above_bag_of_pages"] in (True, False)
    # the report describes the data it ran on
    world = saved["datasets"]["main"]["world"]
    assert world["name"] == "bank" and world["synthetic"] and world["tiles_per_visit"]["mode"] == 4
    assert "the synthetic `bank` world" in md and "A test app visit shows 4 tiles" in md
    assert "## Headline" in md and "| R@1 capture |" in md.split("## Definitions")[0]
    assert saved["tile_ranking"]["before"]["all"]["recall_at_1_rel_gain_pct"] == \
        pops["all"]["rankers"]["embedding_crosses"]["recall_at_1_rel_gain_pct"]
    # knowing the hidden intent and need window helps more than the embedding on the clicks' own terms
    assert oracle["click_model"]["all"]["log_loss_rel_change_pct"] < emb["log_loss_rel_change_pct"]
    assert {"eval_main_lift_per_tile.png", "eval_main_calibration.png", "eval_main_intent_confusion.png"} <= set(files)
    assert all((tmp_path / f).stat().st_size > 1000 for f in files)

    # the embedding ranker beats a random ranker on the same test window
    test = result.test
    rng = np.random.default_rng(0)
    random_r1 = np.mean([recall_at_1(test.visit, rng.random(len(test)), test.clicked, test.tile, test.position)
                         for _ in range(5)])
    assert emb["macro_recall_at_1"] > random_r1 + 0.05, (emb["macro_recall_at_1"], random_r1)

    # the served artifact scores exactly like the evaluated ranker, through the numpy-only module; its input is
    # the pooled embedding (signal_dim = the embedding's width), as the gateway passes it
    run = next(r for r in result.runs if r.name == "embedding" and r.seed == 0)
    assert run.ranker.spec.signal_block == KINDS["embedding"].block and run.ranker.spec.signal_dim == 64
    if run.ranker.spec.signal_block == "need":
        assert run.ranker.spec.need_weights.shape == (len(run.ranker.spec.need_products), 64)
    run.ranker.save(tmp_path / "ranker.json")
    loaded = Ranker.load(tmp_path / "ranker.json")
    np.testing.assert_allclose(loaded.score(np.eye(len(loaded.weights), dtype=np.float32)[:5]),
                               run.ranker.score(np.eye(len(run.ranker.weights), dtype=np.float32)[:5]), rtol=1e-6)


@pytest.mark.slow  # needs eval_artifacts
def test_report_without_truth(small_data, eval_artifacts, tmp_path):
    """A user's directory (no truth/): no oracle section, no capture, no synthetic-bank wording; the tiles per
    visit come from its impressions."""
    import shutil

    data = tmp_path / "mybank"
    shutil.copytree(small_data, data, ignore=shutil.ignore_patterns("truth"))
    cfg = EvalConfig(seeds=(0,), llm_customers=0, n_boot=10, c_grid=(0.1,), half_life_grid=(3.0,))
    with threadpool_limits(1):
        result = evaluate_dataset(data, eval_artifacts, eval_artifacts / "intent_head.json", None, cfg)
    files = plots(result, tmp_path / "reports", truth_customer_intents(data), prefix="eval_main")
    doc = write_report({"main": result}, tmp_path / "reports", {"main": files})
    md = (tmp_path / "reports" / "eval.md").read_text()
    assert "oracle" not in doc and doc["capture"]["log_loss"] is None and doc["capture"]["recall_at_1"] is None
    assert "truth" in doc["capture"]["reason"] and doc["capture"]["met"] is None
    assert doc["datasets"]["main"]["world"] == {**doc["datasets"]["main"]["world"], "name": "mybank",
                                                "synthetic": False, "oracles": False}
    lowered = md.lower()
    for phrase in ("diagnostic upper bounds", "synthetic bank", "click model", "capture", "oracle"):
        assert phrase not in lowered, phrase
    assert "`mybank`" in md
    counts = np.unique(result.test.visit, return_counts=True)[1]
    assert f"A test app visit shows {int(np.bincount(counts).argmax())} tiles" in md
    assert not any("intent_confusion" in f for f in files)


def test_cli_flags_and_environment():
    s = parse(["--seeds", "3,4,5", "--no-robustness"], env={"INTENT_LLM_CUSTOMERS": "7", "INTENT_ARTIFACTS": "a"})
    assert isinstance(s, Settings)
    assert s.seeds == (3, 4, 5) and s.llm_customers == 7 and not s.robustness
    assert str(s.head) == "a/intent_head.json" and str(s.ranker_out) == "a/ranker.json"
    assert parse(["--llm-customers", "9"], env={"INTENT_LLM_CUSTOMERS": "7"}).llm_customers == 9
    with pytest.raises(SystemExit):
        parse(["--seeds", "x"], env={})
    # the second world: on by default (credit_union into data/ and artifacts/credit_union), off by flag or env
    s = parse([], env={})
    assert s.second_world == "credit_union" and str(s.second_data) == "data/credit_union"
    assert str(s.second_artifacts) == "artifacts/credit_union" and str(s.robust_data) == "data/weak"
    assert parse(["--no-second-world"], env={}).second_world is None
    assert parse([], env={"INTENT_SECOND_WORLD": "0"}).second_world is None
    s = parse(["--second-world", "credit_union", "--second-data", "d2", "--second-artifacts", "a2"], env={})
    assert (str(s.second_data), str(s.second_artifacts)) == ("d2", "a2")
    with pytest.raises(SystemExit):
        parse(["--second-world", "atlantis"], env={})


class FirstCandidateBackend:
    """A stand-in LLM that always picks the first label the schema allows (no model, no network)."""

    def __init__(self, config=None) -> None:
        self.calls = 0

    def identity(self) -> str:
        return "first-candidate:v1"

    def chat(self, messages, json_schema, max_tokens, *, seed=None) -> str:
        self.calls += 1
        prop = json_schema["properties"]["label"]
        return json.dumps({"label": prop["enum"][0] if "enum" in prop else prop["const"]})


@pytest.mark.slow  # needs eval_artifacts and runs 20 s itself
def test_llm_label_path_with_a_stand_in_llm(small_data, eval_artifacts, tmp_path):
    from training.bank import INTENTS
    from training.taxonomy.llm import LLMClient, LLMConfig
    from training.taxonomy.taxonomy import Label, Taxonomy

    taxonomy = Taxonomy(tuple(Label(i.name, i.description, tuple(i.pages)[:4]) for i in INTENTS), "pinned")
    taxonomy.save(tmp_path / "taxonomy.yaml")
    backend = FirstCandidateBackend()
    client = LLMClient(LLMConfig(backend="first-candidate", cache_dir=None), backend=backend)
    cfg = EvalConfig(seeds=(0, 1, 2), llm_customers=15, n_boot=10, c_grid=(0.1,))
    with threadpool_limits(1):
        result = evaluate_dataset(small_data, eval_artifacts, eval_artifacts / "intent_head.json",
                                  tmp_path / "taxonomy.yaml", cfg, llm_client=client)
    s = result.summary
    assert s["llm_sample"]["customers"] == 15 and s["llm_sample"]["sessions_labelled"] == backend.calls > 0
    from training.evaluation.evaluate import LLM_SAMPLE_RANKERS

    assert set(s["tile_ranking"]["llm_sample"]["rankers"]) == set(LLM_SAMPLE_RANKERS)
    assert {"llm_labels", "distilled"} <= set(LLM_SAMPLE_RANKERS)
    assert s["tile_ranking"]["llm_sample"]["rankers"]["llm_labels"]["label"] == "+ llm_labels (need head)"
    f1 = s["conversion"]["llm_sample"]["micro_f1"]
    assert set(f1) == {"embedding", "llm_labels", "distilled", "bag_of_pages"}
    assert all(0 <= v <= 1 for v in f1.values())
    assert "embedding_vs_llm_labels_rel_pct" in s["conversion"]["llm_sample"]
