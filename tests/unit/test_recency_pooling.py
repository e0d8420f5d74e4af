"""Recency pooling (`ranker.pool_sessions`), the one function the evaluation and the gateway pool with, by hand."""

import math

import numpy as np
import pytest

from training.core.ranker import DAY_MS, RECENCY_FEATURES, pool_sessions, recency_weights
from training.evaluation.features import SessionSignals

NOW = 100 * DAY_MS


def test_two_sessions_seven_days_apart_with_a_seven_day_half_life():
    x = np.array([[1.0, 0.0, 2.0], [0.0, 4.0, -2.0]], np.float32)
    ends = [NOW, NOW - 7 * DAY_MS]  # 0 and 7 days old
    np.testing.assert_allclose(recency_weights(ends, NOW, 7.0), [1.0, 0.5])
    p = pool_sessions(x, ends, NOW, 7.0)
    np.testing.assert_allclose(p.signal, (x[0] + 0.5 * x[1]) / 1.5, rtol=1e-6)
    assert p.has_session and p.n_sessions == 2
    assert RECENCY_FEATURES == ("log1p_days_since_last", "log1p_decayed_sessions")
    np.testing.assert_allclose(p.recency, [math.log1p(0.0), math.log1p(1.5)])


def test_days_since_last_and_decayed_count():
    x = np.ones((3, 2), np.float32)
    ends = [NOW - 2 * DAY_MS, NOW - 5 * DAY_MS, NOW - 9 * DAY_MS]  # listed in any order
    p = pool_sessions(x, ends[::-1], NOW, 3.0)
    weights = [0.5 ** (2 / 3), 0.5 ** (5 / 3), 0.5 ** 3]
    np.testing.assert_allclose(p.recency, [math.log1p(2.0), math.log1p(sum(weights))])
    np.testing.assert_allclose(p.signal, [1.0, 1.0], rtol=1e-6)
    # a half day old session: days since last is fractional
    assert pool_sessions(x[:1], [NOW - DAY_MS // 2], NOW, 3.0).recency[0] == pytest.approx(math.log1p(0.5))
    # a session that ends after the scoring time counts as age 0 (weight 1), never as a negative age
    assert pool_sessions(x[:1], [NOW + DAY_MS], NOW, 3.0).recency[0] == 0.0


def test_empty_and_nan_rows():
    p = pool_sessions(np.zeros((0, 4), np.float32), [], NOW, 7.0)
    assert not p.has_session and p.n_sessions == 0
    np.testing.assert_array_equal(p.signal, np.zeros(4))
    np.testing.assert_array_equal(p.recency, [0, 0])
    rows = np.array([[np.nan, np.nan], [2.0, 4.0]], np.float32)
    p = pool_sessions(rows, [NOW, NOW - 7 * DAY_MS], NOW, 7.0)  # the NaN (newer) session is skipped
    np.testing.assert_allclose(p.signal, [2.0, 4.0])
    np.testing.assert_allclose(p.recency, [math.log1p(7.0), math.log1p(0.5)])
    assert p.n_sessions == 1
    assert not pool_sessions(rows[:1], [NOW], NOW, 7.0).has_session
    with pytest.raises(ValueError, match="rows"):
        pool_sessions(rows, [NOW], NOW, 7.0)
    with pytest.raises(ValueError, match="half_life"):
        recency_weights([NOW], NOW, -1.0)


def test_infinite_half_life_is_the_plain_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    ends = NOW - rng.integers(0, 20 * DAY_MS, 5)
    for half_life in (None, math.inf):
        p = pool_sessions(x, ends, NOW, half_life)
        np.testing.assert_array_equal(p.signal, x[np.argsort(ends, kind="stable")].mean(axis=0))
        np.testing.assert_allclose(p.signal, x.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(p.recency, [math.log1p((NOW - ends.max()) / DAY_MS), math.log1p(5.0)])
    # a long half-life tends to the mean, a short one to the most recent session
    np.testing.assert_allclose(pool_sessions(x, ends, NOW, 1e9).signal, x.mean(axis=0), rtol=1e-5)
    newest = x[np.argmax(ends)]
    np.testing.assert_allclose(pool_sessions(x, ends, NOW, 1e-3).signal, newest, atol=1e-5)


def test_session_signals_pool_each_row_at_its_own_time():
    m = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]], np.float32)
    signals = SessionSignals({"embedding": m}, end_ms=np.array([0, 7 * DAY_MS, 7 * DAY_MS]))
    vec, has, rec = signals.pool("embedding", [[0, 1], [0, 1], [], [2]], [7 * DAY_MS, 14 * DAY_MS, 0, 0], 7.0)
    np.testing.assert_allclose(vec[0], [0.5 / 1.5, 1 / 1.5], rtol=1e-6)  # ages 7 and 0 days
    np.testing.assert_allclose(vec[1], [0.25 / 0.75, 0.5 / 0.75], rtol=1e-6)  # ages 14 and 7: same ratio
    np.testing.assert_allclose(rec[1], [math.log1p(7.0), math.log1p(0.75)])
    assert has.tolist() == [True, True, False, False] and not rec[2:].any()
    mean, has_mean = signals.pooled("embedding", [[0, 1], []])
    np.testing.assert_allclose(mean[0], [0.5, 0.5])
    assert has_mean.tolist() == [True, False]
    with pytest.raises(ValueError, match="end_ms"):
        SessionSignals({"embedding": m}).pool("embedding", [[0]], [0], 7.0)
    vec, _, rec = SessionSignals({"embedding": m}).pool("embedding", [[0, 1]], [0], None)  # no times: mean only
    np.testing.assert_allclose(vec[0], [0.5, 0.5])
    assert np.isnan(rec).all()
