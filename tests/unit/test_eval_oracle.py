"""The diagnostic oracles (training/evaluation/oracle.py): signals by hand, and the click model (the generator's own
`click_logit` with the hidden needs) checked against freshly generated data per need-strength bucket, per world."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from training.bank import INTENTS
from training.evaluation.features import DAY_MS, EvalData, ImpressionTable, impression_table
from training.evaluation.oracle import Truth


def table(customers, ts, tiles, positions, linked) -> ImpressionTable:
    n = len(customers)
    return ImpressionTable(np.array(customers), np.array(ts, dtype=np.int64), np.arange(n), np.array(tiles),
                           np.array(positions), np.zeros(n, bool), ["mass"] * n, np.zeros(n), [()] * n,
                           [[0] if x else [] for x in linked])


def truth() -> Truth:
    return Truth(tuple(i.name for i in INTENTS), {"A": "credit_card_shopping", "B": "refinance"},
                 {"A": 10 * DAY_MS, "B": 0}, {"s1": "refinance"}, 21.0)


def test_oracle_signal_is_intent_split_by_need_window():
    t = truth()
    k = len(t.intents)
    cc, rf = t.intents.index("credit_card_shopping"), t.intents.index("refinance")
    tb = table(["A", "A", "A", "B", "Z"], [10 * DAY_MS - 1, 10 * DAY_MS, 31 * DAY_MS, 5 * DAY_MS, 0],
               ["t"] * 5, [0] * 5, [True, True, False, False, True])
    np.testing.assert_array_equal(t.need_active(tb.customer, tb.ts), [False, True, False, True, False])
    vec, has = t.row_signal("oracle_intent", tb)
    assert vec.shape == (5, 2 * k) and vec.sum(axis=1).tolist() == [1, 1, 1, 1, 0]
    assert vec[0, k + cc] == 1 and vec[1, cc] == 1 and vec[2, k + cc] == 1 and vec[3, rf] == 1
    assert has.tolist() == [True, True, False, False, False]  # where a session exists (Z: no truth)
    assert t.row_signal("oracle_intent_all", tb)[1].tolist() == [True, True, True, True, False]
    with pytest.raises(ValueError):
        t.row_signal("oracle_nothing", tb)


def test_click_probability_by_hand():
    t = truth()
    data = SimpleNamespace(customers={"A": SimpleNamespace(segment="mass", products=["checking"])},
                           tiles={"tile_cash_back_card": "credit_card", "tile_open_checking": "checking"})
    tb = table(["A", "A", "A"], [11 * DAY_MS, 40 * DAY_MS, 11 * DAY_MS],
               ["tile_cash_back_card", "tile_cash_back_card", "tile_open_checking"], [1, 1, 0], [True] * 3)
    # mass has credit_card affinity 0.6; A's need (cash back card) is active on day 11, over by day 40;
    # A holds checking (-1.0)
    logits = np.array([-2.4 + 0.8 * 0.6 - 0.35 + 2.2, -2.4 + 0.8 * 0.6 - 0.35 + 0.4, -2.4 - 1.0])
    z = np.random.default_rng(0).normal(0, 0.5, 400_000)
    want = [np.mean(1 / (1 + np.exp(-(x + z)))) for x in logits]
    np.testing.assert_allclose(t.click_probability(data, tb), want, atol=2e-3)
    no_intent = t.click_probability(data, tb, intent=False)
    assert no_intent[0] == pytest.approx(no_intent[1]) and no_intent[0] < want[1] < want[0]


def test_session_matrix_one_hot_per_session():
    t = truth()
    data = SimpleNamespace(sessions=SimpleNamespace(session_ids=["s1", "s2"]))
    m = t.session_matrix(data)
    assert m[0, t.intents.index("refinance")] == 1 and m[0].sum() == 1 and np.isnan(m[1]).all()


def _check_buckets(p: np.ndarray, y: np.ndarray, masks: dict[str, np.ndarray], min_rows: int = 200) -> None:
    for name, mask in masks.items():
        assert mask.sum() > min_rows, name
        # standard error with customers' propensities correlated: generous 4.5 sigma of the binomial one
        se = np.sqrt(p[mask].mean() * (1 - p[mask].mean()) / mask.sum()) * 1.5
        assert abs(p[mask].mean() - y[mask].mean()) < 3 * se + 0.005, (name, p[mask].mean(), y[mask].mean())


def test_click_model_matches_the_generator_per_strength_bucket(small_data):
    t = Truth.load(small_data)
    assert t is not None and t.world_name == "bank" and t.needs
    data = EvalData.load(small_data)
    tb = impression_table(data, 21.0)
    p, y = t.click_probability(data, tb), tb.clicked.astype(float)
    assert abs(p.sum() - y.sum()) < 0.06 * y.sum()
    on_need, strength = t.tile_need(tb)
    held = np.array([data.tiles[x] in data.customers[c].products for c, x in zip(tb.customer, tb.tile, strict=True)])
    _check_buckets(p, y, {
        "need tile, strength >= 0.6": on_need & (strength >= 0.6),
        "need tile, strength 0.25..0.6": on_need & (strength >= 0.25) & (strength < 0.6),
        "need tile, strength 0.02..0.25": on_need & (strength > 0.02) & (strength < 0.25),
        "need tile, no strength": on_need & (strength <= 0.02),
        "held product": held & ~on_need, "position 3": (tb.position == 3) & ~on_need})
    s = t.need_strength(tb.customer, tb.ts)
    assert s.min() >= 0 and s.max() <= 1 and t.need_stats(data, tb)["world"] == "bank"
    web = {c["customer_id"] for c in map(json.loads, (small_data / "truth" / "customers.jsonl").open())
           if c["web"]}
    app_only = np.array([c not in web for c in tb.customer])
    assert app_only.any() and (s[app_only] == 0).all()  # intent shows up on the web
    assert Truth.load(small_data / "nowhere") is None


@pytest.mark.parametrize("world", ["weak", "credit_union"])
def test_click_model_matches_the_generator_in_other_worlds(tmp_path, world):
    from training.synthetic import GeneratorConfig, generate

    generate(GeneratorConfig(visitors=2000, seed=13, world=world), tmp_path)
    t = Truth.load(tmp_path)
    assert t.world_name == world
    data = EvalData.load(tmp_path)
    tb = impression_table(data, 21.0)
    p, y = t.click_probability(data, tb), tb.clicked.astype(float)
    assert abs(p.sum() - y.sum()) < 0.08 * y.sum()
    on_need, strength = t.tile_need(tb)
    _check_buckets(p, y, {"active need tile": on_need & (strength >= 0.5), "other": ~on_need}, min_rows=150)


def test_old_data_without_a_world_is_the_weak_world(tmp_path):

    from training.synthetic import GeneratorConfig, generate

    generate(GeneratorConfig(visitors=150, seed=1, world="weak"), tmp_path)
    cfg_path = tmp_path / "truth" / "generator_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["world"]
    cfg_path.write_text(json.dumps(cfg))
    rows = [json.loads(x) for x in (tmp_path / "truth" / "customers.jsonl").open()]
    (tmp_path / "truth" / "customers.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "needs"}) + "\n" for r in rows))
    t = Truth.load(tmp_path)
    assert t.world_name == "weak" and not t.needs and t.need_days == 21
    c = rows[0]["customer_id"]
    start = rows[0]["need_start_ms"]
    np.testing.assert_array_equal(t.need_active(np.array([c, c]), np.array([start, start + 21 * DAY_MS])),
                                  [True, False])
