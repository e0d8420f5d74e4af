"""The evaluation's metric definitions on cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from training.core.ranker import FeatureSpec, Ranker
from training.evaluation.metrics import (
    bootstrap_ci,
    bootstrap_replicates,
    log_loss,
    micro_f1,
    percentile_interval,
    recall_at_1,
    rel_change_pct,
    top1_hits,
)
from training.evaluation.ranking import macro_from_hits

# Three visits of 2-3 tiles. Visit 0: tile a clicked, ranked first -> hit.
# Visit 1: tile b clicked but a scores higher -> miss. Visit 2: a and b both clicked, b ranked first ->
# b hit, a miss. Visit 3: nothing clicked -> not counted.
GROUPS = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])
TILES = np.array(["a", "b", "c", "a", "b", "a", "b", "a", "b"])
SCORES = np.array([0.9, 0.5, 0.1, 0.8, 0.3, 0.2, 0.7, 0.5, 0.4])
CLICKED = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0], dtype=bool)


def test_top1_hits_marks_clicked_rows_only():
    hits = top1_hits(GROUPS, SCORES, CLICKED)
    expected = [1, np.nan, np.nan, np.nan, 0, 0, 1, np.nan, np.nan]
    np.testing.assert_array_equal(hits, expected)


def test_macro_recall_at_1_by_hand():
    # tile a: relevant in visits 0 and 2 -> hits 1, 0 -> 0.5; tile b: visits 1 and 2 -> 0, 1 -> 0.5
    assert recall_at_1(GROUPS, SCORES, CLICKED, TILES) == pytest.approx(0.5)
    # micro: 2 hits of 4 relevant items
    assert recall_at_1(GROUPS, SCORES, CLICKED, TILES, average="micro") == pytest.approx(0.5)
    assert macro_from_hits(top1_hits(GROUPS, SCORES, CLICKED), TILES) == pytest.approx(0.5)


def test_macro_differs_from_micro_when_classes_are_unbalanced():
    # tile a: 3 relevant items, all hits; tile b: 1 relevant item, a miss -> macro (1 + 0) / 2, micro 3/4
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    tiles = np.array(["a", "b"] * 4)
    scores = np.array([0.9, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1])
    clicked = np.array([1, 0, 1, 0, 1, 0, 0, 1], dtype=bool)
    assert recall_at_1(groups, scores, clicked, tiles) == pytest.approx(0.5)
    assert recall_at_1(groups, scores, clicked, tiles, average="micro") == pytest.approx(0.75)


def test_ties_keep_the_apps_position_order():
    groups, tiles = np.array([0, 0]), np.array(["a", "b"])
    clicked = np.array([0, 1], dtype=bool)
    flat = np.array([0.5, 0.5])
    assert recall_at_1(groups, flat, clicked, tiles, positions=np.array([1, 0])) == 1.0
    assert recall_at_1(groups, flat, clicked, tiles, positions=np.array([0, 1])) == 0.0


def test_no_clicks_gives_nan_and_bad_average_raises():
    assert math.isnan(recall_at_1(GROUPS[-2:], SCORES[-2:], CLICKED[-2:], TILES[-2:]))
    with pytest.raises(ValueError, match="average"):
        recall_at_1(GROUPS, SCORES, CLICKED, TILES, average="weighted")
    with pytest.raises(ValueError, match="length"):
        top1_hits(GROUPS, SCORES[:-1], CLICKED)


def test_log_loss_by_hand():
    # -(ln 0.8 + ln 0.5 + ln(1 - 0.1)) / 3
    expected = -(math.log(0.8) + math.log(0.5) + math.log(0.9)) / 3
    assert log_loss([1, 1, 0], [0.8, 0.5, 0.1]) == pytest.approx(expected)
    assert log_loss([1], [1.0]) == pytest.approx(0.0, abs=1e-9)
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-12))  # clipped, finite
    with pytest.raises(ValueError):
        log_loss([1, 0], [0.5])


def test_micro_f1_and_relative_change():
    assert micro_f1(["x", "y", "z", "x"], ["x", "y", "x", "z"]) == 0.5
    assert rel_change_pct(0.55, 0.5) == pytest.approx(10.0)
    assert rel_change_pct(0.8, 1.0) == pytest.approx(-20.0)
    assert math.isnan(rel_change_pct(1.0, 0.0))


def test_bootstrap_resamples_whole_clusters():
    # two clusters with constant values: any resample's mean is 1, 2 or 3 (= 0/2, 1/2 or 2/2 of cluster b)
    values = np.array([1.0, 1.0, 3.0, 3.0])
    clusters = np.array(["a", "a", "b", "b"])
    reps = bootstrap_replicates(lambda ix: values[ix].mean(), clusters, n_boot=200, seed=0)
    assert set(np.round(reps, 9)) <= {1.0, 2.0, 3.0} and len(reps) == 200
    point, low, high = bootstrap_ci(lambda ix: values[ix].mean(), clusters, n_boot=200, seed=0)
    assert point == 2.0 and low == 1.0 and high == 3.0
    # identical across calls with the same seed (the paired comparison relies on it)
    np.testing.assert_array_equal(reps, bootstrap_replicates(lambda ix: values[ix].mean(), clusters, 200, 0))


def test_bootstrap_of_a_constant_and_nan_handling():
    point, low, high = bootstrap_ci(lambda ix: 0.25, np.arange(10), n_boot=50)
    assert (point, low, high) == (0.25, 0.25, 0.25)
    assert bootstrap_replicates(lambda ix: float("nan"), np.arange(3), n_boot=5).size == 0
    assert all(math.isnan(v) for v in percentile_interval(np.array([])))
    # the percentile interval of 0..100 is [2.5, 97.5]
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))


def test_served_ranker_scores_by_hand_and_round_trips(tmp_path):
    spec = FeatureSpec(("t1", "t2"), ("card", "loan"), ("mass",), positions=2, signal="embedding", signal_dim=1,
                       signal_mean=np.array([1.0], np.float32), signal_scale=np.array([2.0], np.float32))
    names = spec.feature_names()
    x = spec.features(["t1", "t2"], [0, 1], ["mass", "mass"], [0, np.e - 1], [("card",), ()],
                      signal=np.array([[3.0], [3.0]]), has_session=[True, False])
    assert x.shape == (2, len(names))
    row0 = dict(zip(names, x[0], strict=True))
    assert row0["tile=t1"] == 1 and row0["pos=0"] == 1 and row0["tile_product_held"] == 1
    assert row0["embedding[0]"] == 1.0 and row0["embedding[0]&tile=t1"] == 1.0 and row0["no_session"] == 0
    row1 = dict(zip(names, x[1], strict=True))
    assert row1["no_session"] == 1 and row1["no_session&tile=t2"] == 1 and row1["embedding[0]"] == 0
    assert row1["log1p_tenure"] == pytest.approx(1.0)
    weights = np.zeros(len(names), np.float32)
    weights[names.index("embedding[0]&tile=t1")] = 2.0
    ranker = Ranker(spec, weights, -1.0)
    np.testing.assert_allclose(ranker.score(x), [1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))], rtol=1e-6)
    ranker.save(tmp_path / "ranker.json")
    np.testing.assert_allclose(Ranker.load(tmp_path / "ranker.json").score(x), ranker.score(x))
    with pytest.raises(ValueError, match="features"):
        ranker.score(x[:, :-1])
