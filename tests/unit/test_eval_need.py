"""The need head behind the served ranker's need feature (need.py) and its out-of-fold use (ranking.py)."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from training.core.ranker import FeatureSpec, Ranker
from training.evaluation.features import ConversionTable, ImpressionTable, SessionSignals
from training.evaluation.need import NeedExamples, cross_fit, fit_need_head, need_examples
from training.evaluation.ranking import FittedRanker, fit_ranker, need_head_specs


def test_need_head_folds_the_standardization_in():
    rng = np.random.default_rng(0)
    y = np.array(["card", "loan", "gold"] * 40)
    x = rng.normal(size=(120, 3)).astype(np.float32) * [1.0, 10.0, 0.1] + (y == "loan")[:, None] * [2.0, 0, 0]
    ex = NeedExamples(np.array([f"C{i}" for i in range(120)], dtype=object), x, y)
    head = fit_need_head(ex, c=0.5)
    scaler = StandardScaler().fit(x)
    want = LogisticRegression(C=0.5, max_iter=3000).fit(scaler.transform(x), y)
    spec = head.apply(FeatureSpec(("a", "b", "c"), ("card", "loan", "gold"), ("mass",), signal="embedding",
                                  signal_dim=3, signal_block="need"))
    np.testing.assert_allclose(spec.need_probabilities(x), want.predict_proba(scaler.transform(x)), atol=1e-4)
    assert head.products == tuple(want.classes_) and head.n_train == 120
    assert fit_need_head(ex.subset(y == "card")) is None  # one product: nothing to learn


def tiny_world():
    """Six customers, one linked session each whose 2-d signal points to their product; a conversion each."""
    products = ["card", "loan", "card", "loan", "card", "loan"]
    customers = [f"C{i}" for i in range(6)]
    signal = np.array([[1.0, 0.0] if p == "card" else [0.0, 1.0] for p in products], np.float32)
    signal += np.random.default_rng(1).normal(0, 0.1, signal.shape).astype(np.float32)
    signals = SessionSignals({"embedding": np.vstack([signal, np.full((1, 2), np.nan, np.float32)])})
    conv = ConversionTable(np.array(customers), np.array([100] * 5 + [10_000]), np.array(products),
                           [[i] for i in range(6)])
    n = 12  # two visits of two tiles each... one row per (customer, tile)
    table = ImpressionTable(np.array([c for c in customers for _ in range(2)]), np.arange(n) * 10 + 200,
                            np.repeat(np.arange(6), 2), np.array(["t_card", "t_loan"] * 6), np.array([0, 1] * 6),
                            np.array([p == t for p in products for t in ("card", "loan")]), ["mass"] * n,
                            np.zeros(n), [()] * n, [[i] for i in range(6) for _ in range(2)])
    spec = FeatureSpec(("t_card", "t_loan"), ("card", "loan"), ("mass",), signal="embedding", signal_dim=2,
                       signal_block="need")
    return customers, signals, conv, table, spec


def test_need_examples_use_only_conversions_before_the_cut():
    customers, signals, conv, _, _ = tiny_world()
    ex = need_examples(conv, signals.matrices["embedding"], set(customers[:5]) | {"C5"}, before_ts=1000)
    assert list(ex.customer) == customers[:5]  # C5 converted after the cut
    ex = need_examples(conv, signals.matrices["embedding"], {"C0", "C1"}, before_ts=1000)
    assert list(ex.customer) == ["C0", "C1"] and ex.x.shape == (2, 2)


def test_cross_fit_never_scores_a_customer_with_a_head_that_saw_them():
    customers, signals, conv, table, spec = tiny_world()
    ex = need_examples(conv, signals.matrices["embedding"], set(customers), before_ts=1000)
    heads = cross_fit(ex, c=1.0, folds=5)
    assert set(heads) == set(customers[:5])
    for head in {id(h): h for h in heads.values()}.values():
        fold = [c for c, h in heads.items() if h is head]  # the customers this head scores
        refit = fit_need_head(ex.subset(np.array([c not in fold for c in ex.customer])), c=1.0)
        np.testing.assert_allclose(refit.weights, head.weights)  # trained on everyone else, exactly

    full, oof, meta = need_head_specs(table, spec, signals, conv)
    assert set(oof) == set(customers[:5]) and meta["need_head_conversions"] == 5
    fitted = FittedRanker(Ranker(full, np.zeros(len(full.feature_names()), np.float32), 0.0), oof)
    x = fitted.features(table, signals)
    for i, c in enumerate(table.customer):
        spec_c = oof.get(c, full)
        want = spec_c.features([table.tile[i]], [table.position[i]], ["mass"], [0], [()],
                               signals.matrices["embedding"][[i // 2]], [True])
        np.testing.assert_allclose(x[i], want[0], rtol=1e-6)
    # C5 converted after the table's last row: scored by the full head, which it did not train
    assert "C5" not in oof


def test_fit_ranker_learns_a_positive_need_weight():
    _, signals, conv, table, spec = tiny_world()
    fitted = fit_ranker(table, spec, signals, c=10.0, conv=conv)
    assert fitted.ranker.spec.signal_block == "need" and fitted.ranker.meta["need_head_conversions"] == 5
    assert fitted.ranker.weights[-1] > 0
    with pytest.raises(ValueError, match="conversion table"):
        fit_ranker(table, spec, signals, c=1.0)


def test_need_examples_pool_with_recency_relative_to_the_conversion():
    day = 86_400_000
    signal = np.array([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0]], np.float32)
    end_ms = np.array([10 * day, 17 * day, 30 * day])
    conv = ConversionTable(np.array(["C0", "C1"]), np.array([17 * day, 31 * day]), np.array(["card", "loan"]),
                           [[0, 1], [2]])
    ex = need_examples(conv, signal, {"C0", "C1"}, before_ts=40 * day, end_ms=end_ms, half_life_days=7.0)
    # C0 converted at day 17: its sessions are 7 and 0 days old, weights 0.5 and 1
    np.testing.assert_allclose(ex.x[0], (0.5 * signal[0] + signal[1]) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(ex.x[1], signal[2])
    plain = need_examples(conv, signal, {"C0", "C1"}, before_ts=40 * day)  # no half-life: the plain mean
    np.testing.assert_allclose(plain.x[0], [0.5, 0.5])
    with pytest.raises(ValueError, match="end_ms"):
        need_examples(conv, signal, {"C0"}, before_ts=40 * day, half_life_days=7.0)


def test_fit_ranker_with_recency_records_the_half_life():
    _, signals, conv, table, spec = tiny_world()
    signals.end_ms = np.array([150] * 6 + [0])
    spec = replace(spec, half_life_days=3.0, recency=True)
    fitted = fit_ranker(table, spec, signals, c=10.0, conv=conv)
    assert fitted.ranker.meta["half_life_days"] == 3.0 and fitted.ranker.meta["recency"]
    assert len(fitted.ranker.weights) == len(spec.feature_names()) == len(FeatureSpec(
        spec.tiles, spec.tile_products, spec.segments, signal="embedding", signal_dim=2,
        signal_block="need").feature_names()) + 3
