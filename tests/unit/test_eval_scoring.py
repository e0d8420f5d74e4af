"""The served ranker's need layout (training/core/ranker.py, intent-ranker/3 with and without recency), by hand, and
format 1 and 2 files."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from training.core.ranker import RECENCY_FEATURES, FeatureSpec, Ranker


def need_spec() -> FeatureSpec:
    # tiles t1 (card), t2 (loan), t3 (gold: a product the head does not know)
    return FeatureSpec(("t1", "t2", "t3"), ("card", "loan", "gold"), ("mass",), positions=2, signal="embedding",
                       signal_dim=2, signal_block="need", need_products=("card", "loan"),
                       need_weights=np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
                       need_bias=np.array([0.0, 0.5], np.float32))


def test_need_layout_by_hand(tmp_path):
    spec = need_spec()
    names = spec.feature_names()
    assert names[-5:] == ["no_session", "no_session&tile=t1", "no_session&tile=t2", "no_session&tile=t3",
                          "embedding:need_of_tile_product"]
    signal = np.array([[2.0, 1.0]] * 4)
    x = spec.features(["t1", "t2", "t3", "t1"], [0, 0, 1, 1], ["mass"] * 4, [0] * 4, [()] * 4, signal,
                      [True, True, True, False])
    # softmax over (card, loan) of (2.0, 1.5): card 1 / (1 + e^-0.5), loan e^-0.5 / (1 + e^-0.5)
    p_card = 1 / (1 + math.exp(-0.5))
    np.testing.assert_allclose(x[:, -1], [p_card, 1 - p_card, 0.0, 0.0], rtol=1e-6)
    assert x[3, names.index("no_session")] == 1 and x[3, names.index("no_session&tile=t1")] == 1
    assert x[:3, names.index("no_session")].sum() == 0
    weights = np.zeros(len(names), np.float32)
    weights[-1] = 2.0
    ranker = Ranker(spec, weights, -1.0, {"lookback_days": 21.0})
    np.testing.assert_allclose(ranker.score(x)[0], 1 / (1 + math.exp(-(2 * p_card - 1))), rtol=1e-6)
    ranker.save(tmp_path / "ranker.json")
    doc = json.loads((tmp_path / "ranker.json").read_text())
    assert doc["format"] == "intent-ranker/3" and doc["signal_block"] == "need" and doc["signal_dim"] == 2
    assert doc["half_life_days"] is None and doc["recency"] is False and doc["recency_features"] == []
    loaded = Ranker.load(tmp_path / "ranker.json")
    assert loaded.spec.need_products == ("card", "loan")
    np.testing.assert_allclose(loaded.score(loaded.spec.features(["t1", "t2", "t3", "t1"], [0, 0, 1, 1],
                                                                 ["mass"] * 4, [0] * 4, [()] * 4, signal,
                                                                 [True, True, True, False])), ranker.score(x))


def test_format_1_files_still_load_as_crosses(tmp_path):
    spec = FeatureSpec(("t1", "t2"), ("card", "loan"), ("mass",), positions=2, signal="embedding", signal_dim=1,
                       signal_mean=np.array([1.0], np.float32), signal_scale=np.array([2.0], np.float32))
    doc = Ranker(spec, np.arange(len(spec.feature_names()), dtype=np.float32), 0.5).to_dict()
    for key in ("signal_block", "need_products", "need_weights", "need_bias"):
        del doc[key]
    doc["format"] = "intent-ranker/1"
    (tmp_path / "v1.json").write_text(json.dumps(doc))
    loaded = Ranker.load(tmp_path / "v1.json")
    assert loaded.spec.signal_block == "crosses" and loaded.spec.need_products == ()
    x = spec.features(["t1", "t2"], [0, 1], ["mass", "mass"], [0, 1], [(), ("loan",)], np.array([[3.0], [3.0]]),
                      [True, True])
    np.testing.assert_allclose(loaded.score(x), Ranker(spec, loaded.weights, 0.5).score(x))
    doc["format"] = "intent-ranker/9"
    (tmp_path / "v9.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format"):
        Ranker.load(tmp_path / "v9.json")


def test_need_head_shapes_are_checked():
    with pytest.raises(ValueError, match="need head"):
        FeatureSpec(("t1",), ("card",), ("mass",), signal="embedding", signal_dim=2, signal_block="need",
                    need_products=("card",), need_weights=np.zeros((1, 3), np.float32),
                    need_bias=np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="signal_block"):
        FeatureSpec(("t1",), ("card",), ("mass",), signal_block="sideways")
    # no head yet (before fitting): the need feature is 0
    spec = FeatureSpec(("t1",), ("card",), ("mass",), signal="embedding", signal_dim=2, signal_block="need")
    assert spec.features(["t1"], [0], ["mass"], [0], [()], np.ones((1, 2)), [True])[0, -1] == 0


def test_unknown_tiles_segments_and_products_get_zero_one_hots():
    spec = need_spec()
    x = spec.features(["t9", "t2"], [0, 7], ["student", "mass"], [0, 0], [("zzz",), ("loan", "zzz")],
                      np.ones((2, 2)), [True, True])
    names = spec.feature_names()
    row0, row1 = dict(zip(names, x[0], strict=True)), dict(zip(names, x[1], strict=True))
    assert not any(v for k, v in row0.items() if k.startswith(("tile=", "segment="))) and row0["n_products"] == 1
    assert row0["embedding:need_of_tile_product"] == 0 and row0["tile_product_held"] == 0
    assert row1["pos=1"] == 1 and row1["tile_product_held"] == 1 and row1["n_products"] == 2


def test_format_2_files_load_and_score_exactly_as_before(tmp_path):
    spec = need_spec()
    weights = np.random.default_rng(0).normal(size=len(spec.feature_names())).astype(np.float32)
    doc = Ranker(spec, weights, -0.5).to_dict()
    for key in ("half_life_days", "recency", "recency_features"):
        del doc[key]
    doc["format"] = "intent-ranker/2"
    (tmp_path / "v2.json").write_text(json.dumps(doc))
    loaded = Ranker.load(tmp_path / "v2.json")
    assert loaded.spec.half_life_days is None and not loaded.spec.recency
    assert loaded.spec.feature_names() == doc["feature_names"]
    signal = np.array([[2.0, 1.0], [0.5, -1.0], [0.0, 0.0]])
    args = (["t1", "t2", "t3"], [0, 1, 0], ["mass"] * 3, [3, 0, 1], [(), ("card",), ()], signal, [True, True, False])
    x = loaded.spec.features(*args)
    # format 2's need block by hand: [no_session, no_session x tile (3), need of the tile's product]
    logits = signal[:2] @ np.array([[1.0, 0.0], [0.0, 1.0]]).T + [0.0, 0.5]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(x[:, -5:], [[0, 0, 0, 0, p[0, 0]], [0, 0, 0, 0, p[1, 1]], [1, 0, 0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(loaded.score(x), Ranker(spec, weights, -0.5).score(spec.features(*args)), rtol=0)


def test_recency_layout_by_hand_and_round_trip(tmp_path):
    spec = replace(need_spec(), half_life_days=7.0, recency=True)
    names = spec.feature_names()
    assert names[-4:] == ["embedding:need_of_tile_product", "embedding:need_of_tile_product&log1p_days_since_last",
                          "embedding:log1p_days_since_last", "embedding:log1p_decayed_sessions"]
    signal = np.array([[2.0, 1.0]] * 3)
    rec = np.array([[math.log1p(3.0), math.log1p(1.5)]] * 3)
    x = spec.features(["t1", "t3", "t1"], [0, 0, 0], ["mass"] * 3, [0] * 3, [()] * 3, signal, [True, True, False],
                      rec)
    p_card = 1 / (1 + math.exp(-0.5))
    np.testing.assert_allclose(x[0, -4:], [p_card, p_card * math.log1p(3.0), math.log1p(3.0), math.log1p(1.5)],
                               rtol=1e-6)
    np.testing.assert_allclose(x[1, -4:], [0, 0, math.log1p(3.0), math.log1p(1.5)], rtol=1e-6)  # product unknown
    np.testing.assert_allclose(x[2, -4:], 0)  # no session: zero recency features
    with pytest.raises(ValueError, match="recency"):
        spec.features(["t1"], [0], ["mass"], [0], [()], signal[:1], [True])
    weights = np.arange(len(names), dtype=np.float32) / 10
    Ranker(spec, weights, 0.1, {"half_life_days": 7.0}).save(tmp_path / "r3.json")
    doc = json.loads((tmp_path / "r3.json").read_text())
    assert doc["format"] == "intent-ranker/3" and doc["half_life_days"] == 7.0 and doc["recency"] is True
    assert doc["recency_features"] == list(RECENCY_FEATURES)
    loaded = Ranker.load(tmp_path / "r3.json")
    assert loaded.spec.half_life_days == 7.0 and loaded.spec.recency
    np.testing.assert_allclose(loaded.score(x), Ranker(spec, weights, 0.1).score(x), rtol=1e-7)
    with pytest.raises(ValueError, match="recency"):
        FeatureSpec(("t1",), ("card",), ("mass",), recency=True)  # no signal
    with pytest.raises(ValueError, match="half_life"):
        replace(need_spec(), half_life_days=0.0)


def test_decayed_crosses_layout_by_hand(tmp_path):
    """"crosses" with recency: z x tile fades by 0.5 ** (days since last / half-life); recency features and
    their tile crosses follow; no session zeroes all of it."""
    spec = FeatureSpec(("t1", "t2"), ("card", "loan"), ("mass",), positions=1, signal="embedding", signal_dim=2,
                       signal_block="crosses", signal_mean=np.array([1.0, 0.0], np.float32),
                       signal_scale=np.array([2.0, 1.0], np.float32), half_life_days=7.0, recency=True)
    names = spec.feature_names()
    tail = ["embedding[0]", "embedding[1]", "embedding[0]&tile=t1&decay", "embedding[0]&tile=t2&decay",
            "embedding[1]&tile=t1&decay", "embedding[1]&tile=t2&decay", "embedding:log1p_days_since_last",
            "embedding:log1p_decayed_sessions", "embedding:log1p_days_since_last&tile=t1",
            "embedding:log1p_days_since_last&tile=t2", "embedding:log1p_decayed_sessions&tile=t1",
            "embedding:log1p_decayed_sessions&tile=t2"]
    assert names[-len(tail):] == tail
    signal = np.array([[3.0, -1.0]] * 2)
    rec = np.array([[math.log1p(14.0), 0.5]] * 2)  # last session 14 days ago: two half-lives, decay 0.25
    x = spec.features(["t2", "t1"], [0, 0], ["mass"] * 2, [0] * 2, [()] * 2, signal, [True, False], rec)
    z = [1.0, -1.0]  # (3 - 1) / 2, (-1 - 0) / 1
    expected = [*z, 0, z[0] * 0.25, 0, z[1] * 0.25, math.log1p(14.0), 0.5, 0, math.log1p(14.0), 0, 0.5]
    np.testing.assert_allclose(x[0, -len(tail):], expected, rtol=1e-6)
    np.testing.assert_allclose(x[1, -len(tail):], 0)
    plain = replace(spec, half_life_days=None)  # the plain mean: the crosses do not fade
    np.testing.assert_allclose(plain.features(["t2"], [0], ["mass"], [0], [()], signal[:1], [True], rec[:1])[0, 5],
                               z[0])
    weights = np.linspace(-1, 1, len(names)).astype(np.float32)
    Ranker(spec, weights, 0.2).save(tmp_path / "crosses.json")
    loaded = Ranker.load(tmp_path / "crosses.json")
    assert loaded.spec.signal_block == "crosses" and loaded.spec.recency and loaded.spec.half_life_days == 7.0
    np.testing.assert_allclose(loaded.score(x), Ranker(spec, weights, 0.2).score(x), rtol=1e-7)
