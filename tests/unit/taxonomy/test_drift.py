"""Taxonomy drift's pure parts on hand-made distributions and embeddings (values computed by hand)."""

import math

import numpy as np
import pytest

from training.core.sessionize import Session
from training.taxonomy.distill import IntentHead
from training.taxonomy.drift import (
    JS_DRIFTED,
    JS_STABLE,
    Baseline,
    band,
    candidate_intents,
    compare_shares,
    compute_baseline,
    distinctive,
    js_distance,
    knn_distance,
    novelty,
    path_tokens,
    psi,
    psi_terms,
    sampling_psi,
)


def test_identical_distributions_have_no_drift():
    p = [0.2, 0.3, 0.5]
    assert psi(p, p) == pytest.approx(0.0, abs=1e-12)
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-7)
    assert psi([2, 3, 5], [20, 30, 50]) == pytest.approx(0.0, abs=1e-12)  # counts are normalized first


def test_psi_known_value():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 2 + 0.25 ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, rel=1e-3)  # 0.2747 (eps moves it < 1e-3)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(psi([0.25, 0.75], [0.5, 0.5]), rel=1e-9)  # symmetric
    terms = psi_terms([0.5, 0.5], [0.25, 0.75])
    assert terms == pytest.approx([0.25 * math.log(2), 0.25 * math.log(1.5)], rel=1e-3)
    assert (terms >= 0).all()


def test_psi_stays_finite_on_an_empty_bin():
    # the empty bin gets EPS = 1e-4: (0.5 - 1e-4) ln(0.5 / 1e-4) + (0.5 - 0.9999) ln(0.5 / 0.9999) = 4.604
    value = psi([1.0, 0.0], [0.5, 0.5])
    assert value == pytest.approx(0.4999 * math.log(0.5 / 1e-4) - 0.4999 * math.log(0.5 / 0.9999), rel=1e-3)


def test_js_distance_known_values():
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint supports, base 2
    # m = (0.75, 0.25); KL(p||m) = 0.5 log2(2/3) + 0.5 log2 2 = 0.20752; KL(q||m) = log2(4/3) = 0.41504
    assert js_distance([0.5, 0.5], [1, 0]) == pytest.approx(math.sqrt(0.5 * (0.20752 + 0.41504)), abs=1e-4)
    assert js_distance([0.5, 0.5], [1, 0]) == pytest.approx(0.5579, abs=1e-4)


def test_bands_and_derived_js_thresholds():
    assert [band(x, 0.1, 0.25) for x in (0.0, 0.099, 0.1, 0.25, 0.2501)] == ["stable", "stable", "watch", "watch",
                                                                           "drifted"]
    assert (JS_STABLE, JS_DRIFTED) == (0.134, 0.212)  # sqrt(0.1 / 8 ln 2), sqrt(0.25 / 8 ln 2)
    # the derivation holds for a small drift: PSI and JS distance land in the same band
    p, q = [0.3, 0.3, 0.4], [0.25, 0.33, 0.42]
    assert band(psi(p, q), 0.1, 0.25) == band(js_distance(p, q), JS_STABLE, JS_DRIFTED) == "stable"
    assert js_distance(p, q) == pytest.approx(math.sqrt(psi(p, q) / (8 * math.log(2))), rel=0.05)


def test_compare_shares_overall_and_per_label():
    out = compare_shares(["a", "b", "c"], [50, 30, 20], [50, 30, 20], 100, 100)
    assert out["psi"] == 0 and out["status"] == "stable"
    assert all(r["status"] == "stable" for r in out["labels"].values())
    out = compare_shares(["a", "b", "c"], [50, 30, 20], [20, 30, 50], 1000, 1000)
    # by hand: (0.2 - 0.5) ln(0.2 / 0.5) + 0 + (0.5 - 0.2) ln(0.5 / 0.2) = 0.6 ln 2.5 = 0.5498
    assert out["psi"] == pytest.approx(0.6 * math.log(2.5), abs=1e-3) and out["status"] == "drifted"
    assert sum(r["psi_term"] for r in out["labels"].values()) == pytest.approx(out["psi"], abs=1e-3)
    assert out["labels"]["b"]["status"] == "stable" and out["labels"]["b"]["psi"] == pytest.approx(0, abs=1e-9)
    # one-vs-rest for a: e = (0.5, 0.5), a = (0.2, 0.8): 0.3 ln(2.5) + 0.3 ln(1.6) = 0.4159
    assert out["labels"]["a"]["psi"] == pytest.approx(0.3 * math.log(2.5) + 0.3 * math.log(1.6), abs=1e-3)
    assert out["labels"]["a"]["change_pp"] == -30.0 and out["sampling_psi"] == pytest.approx(2 * 0.002)


def test_sampling_psi_matches_simulated_noise():
    rng = np.random.default_rng(0)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    sims = [psi(rng.multinomial(500, p), rng.multinomial(800, p)) for _ in range(400)]
    assert np.mean(sims) == pytest.approx(sampling_psi(4, 500, 800), rel=0.15)


def test_path_tokens_and_distinctive_evidence():
    assert path_tokens("/Auto-Loans/Rates?utm_source=x") == {"auto", "loans", "rates"}
    assert path_tokens("/support/article/123456") == {"support", "article"}
    background = {"login": 100, "refinance": 12, "rates": 30}
    inside = {"login": 10, "refinance": 9, "rates": 4}
    rows = distinctive(inside, 10, __import__("collections").Counter(background), 100)
    # login: every session everywhere, lift 1: dropped; refinance: share 0.9, lift 7.5 first
    assert [r["term"] for r in rows] == ["refinance", "rates"]
    assert rows[0] == {"term": "refinance", "share": 0.9, "lift": 7.5}


def _head() -> IntentHead:
    # two labels on the plane: 'east' for x > 0, 'north' for y > x
    return IntentHead(("east", "north"), np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), np.zeros(2, np.float32),
                      taxonomy_version="tax-test")


def _around(angle_deg: float, n: int, rng: np.random.Generator, spread: float = 4.0) -> np.ndarray:
    a = np.deg2rad(angle_deg + rng.normal(0, spread, n))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32) * 3


def test_baseline_centroids_and_far_sessions(tmp_path):
    rng = np.random.default_rng(0)
    emb = np.vstack([_around(0, 300, rng), _around(90, 100, rng)])
    base = compute_baseline(_head(), emb, "tax-test", {"data": "x"})
    assert base.counts == {"east": 300, "north": 100} and base.shares["east"] == 0.75
    assert base.outlier_share <= 0.06  # outside its own label's 95% radius (here every other one), or 1% density
    again = Baseline.load(base.save(tmp_path / "b.json"))
    assert again == base
    # a new direction (225 degrees) is far from both labels; the labels' own directions are not
    nearest, ratio = novelty(np.asarray(base.centroids), np.asarray(base.radii),
                             np.vstack([_around(225, 50, rng), _around(0, 50, rng)]))
    assert (ratio[:50] > 1).all() and (ratio[50:] < 1).mean() > 0.9 and (nearest[50:] == 0).all()


def test_knn_distance_by_hand():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # (2, 0) normalizes to (1, 0): distances 0, sqrt 2, 2 to the three references
    assert knn_distance(ref, np.array([[2.0, 0.0]]), k=1) == pytest.approx([0.0], abs=1e-6)
    assert knn_distance(ref, np.array([[2.0, 0.0]]), k=2) == pytest.approx([math.sqrt(2)])
    assert knn_distance(ref, np.array([[2.0, 0.0]]), k=1, skip_self=True) == pytest.approx([math.sqrt(2)])
    assert knn_distance(ref, np.array([[0.0, -1.0]]), k=3) == pytest.approx([2.0])


def _session(i: int, pages: list[str], query: str | None = None):
    from training.core.contract import Event

    events = [Event(anonymous_id=f"A{i}", ts=1_700_000_000_000 + 1000 * j, event_type="page_view", url=u)
              for j, u in enumerate(pages)]
    if query:
        events.append(Event(anonymous_id=f"A{i}", ts=1_700_000_100_000, event_type="search", url="/search",
                            query=query))
    return Session(f"A{i}@0", f"A{i}", tuple(events))


def test_candidate_intents_cluster_far_sessions_with_their_evidence():
    rng = np.random.default_rng(1)
    known = [_session(i, ["/login", "/checking"]) for i in range(200)]
    new = [_session(1000 + i, ["/login", "/crypto/wallet"], "buy bitcoin") for i in range(40)]
    sessions = known + new
    emb = np.vstack([_around(0, 200, rng), _around(225, 40, rng)])
    base = compute_baseline(_head(), emb[:200], "tax-test")
    nearest, ratio = novelty(np.asarray(base.centroids), np.asarray(base.radii), emb)
    confidence = _head().probabilities(emb).max(axis=1)
    out = candidate_intents(sessions, emb, ratio > 1, nearest, ratio, confidence, ("east", "north"))
    # the baseline's own 5% beyond their label's radius cluster too, but with nothing distinct (/checking, lift
    # 1.2 < CANDIDATE_MIN_LIFT): one candidate, the new sessions
    assert len(out) == 1
    c = out[0]
    assert c["sessions"] >= 40 and c["share"] == pytest.approx(c["sessions"] / 240, abs=1e-4)
    tokens = [t["term"] for t in c["evidence"]["path_tokens"]]
    # every new session has /crypto/wallet and /search, no known one does; /login is everywhere: no evidence
    assert set(tokens[:3]) == {"crypto", "wallet", "search"} and "login" not in tokens
    assert c["evidence"]["searches"][0]["term"] == "buy bitcoin" and len(c["examples"]) == 3
