"""End to end on a small synthetic bank: train lowers the loss; the probe report scores the embedding against its
baselines on every downstream task the data supports."""

import json
import shutil

import numpy as np
import pytest
import torch

from training.core.featurizer import Featurizer, Vocab
from training.encoder.train import TrainConfig
from training.pipeline import load_artifacts, probe_report, train
from training.sessions import load_sessions
from training.shards import read_success, shard_splits
from training.splits import VALIDATION_PCT, is_holdout

pytestmark = pytest.mark.slow  # every test needs `trained`: 40 s of training on 2 cores


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    result = train(small_data, out, TrainConfig(epochs=6, seed=3))
    return small_data, out, result


def test_training_lowers_the_loss_and_checkpoints(trained):
    _, out, result = trained
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.9
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert {"encoder.pt", "encoder_last.pt", "featurizer.json", "train_metrics.json"} <= {p.name for p in out.iterdir()}


def test_training_read_the_sessions_the_row_level_path_makes(trained):
    """train featurizes into <artifacts>/shards and streams them: the same featurizer, sessions, order and
    arrays as fitting and encoding the row-level reference's Event objects."""
    data, out, result = trained
    split = shard_splits(out / "shards")
    pool = load_sessions(data, columnar=False).part(holdout=False)
    train_s = [s for s in pool if not is_holdout(s.anonymous_id, VALIDATION_PCT)]
    featurizer = Featurizer.fit(s.events for s in train_s)
    assert split.featurizer.version == featurizer.version == result.featurizer_version
    assert (len(split.train), len(split.validation)) == (result.n_train, result.n_validation)
    assert result.n_train == len(train_s) and result.n_train + result.n_validation == len(pool)
    assert split.train_visitors == [s.anonymous_id for s in train_s]
    for i in range(0, len(train_s), 29):
        cat, cont = featurizer.encode(train_s[i].events)
        got_cat, got_cont = split.train[i]
        np.testing.assert_array_equal(got_cat, cat)
        np.testing.assert_array_equal(got_cont, cont)


def test_training_on_a_given_shard_directory_leaves_the_data_unread(trained, tmp_path):
    _, out, _ = trained
    result = train(tmp_path / "no_such_data", tmp_path / "from_shards", TrainConfig(epochs=1, seed=3),
                   shards=out / "shards")
    assert result.featurizer_version == read_success(out / "shards")["featurizer_version"]
    assert (tmp_path / "from_shards" / "encoder.pt").exists()
    assert not (tmp_path / "from_shards" / "shards").exists()


def test_probe_report_scores_three_representations_on_three_tasks(trained, tmp_path):
    data, out, _ = trained
    report = probe_report(data, out, tmp_path / "encoder.json", n_boot=20)
    assert json.loads((tmp_path / "encoder.json").read_text()) == report
    acc = report["probe_accuracy"]
    assert acc["embedding"] > acc["bag_of_pages"] + 0.01, acc
    assert acc["embedding"] > 0.6 and report["n_probe_test"] > 300
    downstream = report["worlds"][report["world"]]["downstream"]
    assert set(downstream) == {"probe_macro_f1", "conversion_micro_f1", "ranking_log_loss"}
    for task in downstream.values():
        for rep in ("pretrained", "untrained", "bag_of_pages"):
            lo, hi = task[rep]["ci95"]
            assert lo <= task[rep]["value"] <= hi
        assert task["vs_best_baseline"]["baseline"] in ("untrained", "bag_of_pages")
    # a second data directory adds its world beside the first instead of replacing it
    other = tmp_path / "other_bank"
    shutil.copytree(data, other, ignore=shutil.ignore_patterns("truth"))
    again = probe_report(other, out, tmp_path / "encoder.json", n_boot=5)
    assert set(again["worlds"]) == {report["world"], "other_bank"}
    assert "probe_macro_f1" not in again["worlds"]["other_bank"]["downstream"]  # no truth/: no probe
    assert "ranking_log_loss" in again["worlds"]["other_bank"]["downstream"]


def test_embeddings_do_not_depend_on_padding_or_batch_company(trained):
    """The serving path pads to the batch's longest session: a session's embedding must not change."""
    _, out, _ = trained
    featurizer, encoder, _ = load_artifacts(out)
    sessions = load_sessions(trained[0]).sessions[:6]
    singles = [featurizer.batch([s.events]) for s in sessions]
    alone = [encoder(torch.from_numpy(b.categorical), torch.from_numpy(b.continuous)) for b in singles]
    batch = featurizer.batch([s.events for s in sessions], pad_to=64)
    together = encoder(torch.from_numpy(batch.categorical), torch.from_numpy(batch.continuous))
    np.testing.assert_allclose(torch.cat(alone).detach().numpy(), together.detach().numpy(), atol=1e-5)


def test_mismatched_featurizer_is_refused(trained, tmp_path):
    _, out, _ = trained
    shutil.copytree(out, tmp_path / "a")
    original = Featurizer.load(out / "featurizer.json")
    vocabs = {**original.vocabs, "device": Vocab((*original.vocabs["device"].tokens, "smart_fridge"))}
    Featurizer(original.config, vocabs, original.stats).save(tmp_path / "a" / "featurizer.json")
    with pytest.raises(ValueError, match="trained with featurizer"):
        load_artifacts(tmp_path / "a")
