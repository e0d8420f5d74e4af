import subprocess
import sys

import numpy as np
import pytest

from training.core.contract import Event
from training.core.featurizer import (
    CONTINUOUS,
    MASK,
    OOV,
    PAD,
    Featurizer,
    FeaturizerConfig,
    normalize_referrer,
    normalize_url,
    query_tokens,
)


@pytest.mark.parametrize(("url", "expected"), [
    ("/", "/"),
    ("", "/"),
    ("/credit-cards/", "/credit-cards"),
    ("https://WWW.Bank.com/Credit-Cards/?utm_source=x#top", "/credit-cards"),
    ("/careers/jobs/123456", "/careers/jobs/:id"),
    ("/support/article/4521/", "/support/article/:id"),
    ("/x/550e8400-e29b-41d4-a716-446655440000/y", "/x/:id/y"),
    ("/doc/3f2a9c1b7d4e5f60", "/doc/:id"),
    ("/mortgage/30-year-fixed", "/mortgage/30-year-fixed"),
    ("/search?q=cd+rates", "/search"),
    ("//double//slash", "/slash"),
    ("checking", "/checking"),
])
def test_normalize_url_golden(url, expected):
    assert normalize_url(url) == expected


@pytest.mark.parametrize(("ref", "expected"), [
    (None, "direct"), ("", "direct"), ("https://www.google.com/search?q=x", "google.com"), ("bing.com/x", "bing.com"),
])
def test_normalize_referrer_golden(ref, expected):
    assert normalize_referrer(ref) == expected


def test_query_tokens():
    assert query_tokens("Best CD-rates, 12 month!") == ["best", "cd", "rates", "12", "month"]
    assert query_tokens(None) == []


def session(n: int, start: int = 0, url: str = "/checking") -> list[Event]:
    return [Event(anonymous_id="a", ts=start + i * 10_000, event_type="page_view", url=url, dwell_ms=5000,
                  device="desktop", query="cd rates" if i == 0 else None) for i in range(n)]


@pytest.fixture
def featurizer() -> Featurizer:
    return Featurizer.fit([session(3), session(4, url="/savings")], FeaturizerConfig(max_len=5, min_count=1))


def test_encode_shapes_ids_and_most_recent_truncation(featurizer):
    events = session(2, url="/never-seen") + session(6, start=100_000)
    cat, cont = featurizer.encode(events)
    assert cat.shape == (5, 5 + 4) and cat.dtype == np.int64
    assert cont.shape == (5, len(CONTINUOUS)) and cont.dtype == np.float32
    assert (cat[:, 0] == featurizer.vocabs["url"].id("/checking")).all()  # the 5 most recent, not the unseen ones
    assert featurizer.encode(session(1, url="/never-seen"))[0][0, 0] == OOV
    assert cat.min() >= 0 and MASK not in cat[:, :5] and PAD not in cat[:, 0]


def test_continuous_values(featurizer):
    events = session(2)
    events[1] = events[1].model_copy(update={"dwell_ms": None})
    cont = featurizer.encode(events)[1]
    dwell_missing = CONTINUOUS.index("dwell_missing")
    assert cont[:, dwell_missing].tolist() == [0.0, 1.0]
    assert cont[1, CONTINUOUS.index("log_dwell")] == 0.0  # missing -> the mean
    mean, std = featurizer.stats["log_gap"]
    assert cont[1, CONTINUOUS.index("log_gap")] == pytest.approx((np.log1p(10.0) - mean) / std, rel=1e-5)


def test_batch_pads_to_longest_on_the_right(featurizer):
    batch = featurizer.batch([session(2), session(4)])
    assert batch.categorical.shape[:2] == (2, 4)
    assert batch.lengths.tolist() == [2, 4]
    assert (batch.categorical[0, 2:] == PAD).all() and (batch.continuous[0, 2:] == 0).all()
    with pytest.raises(ValueError, match="shorter"):
        featurizer.batch([session(4)], pad_to=3)
    with pytest.raises(ValueError, match="empty session"):
        featurizer.encode([])


def test_artifact_round_trip_and_tamper_detection(featurizer, tmp_path):
    path = featurizer.save(tmp_path / "featurizer.json")
    loaded = Featurizer.load(path)
    assert loaded.version == featurizer.version
    events = session(3, url="/savings")
    for a, b in zip(loaded.encode(events), featurizer.encode(events), strict=True):
        np.testing.assert_array_equal(a, b)
    path.write_text(path.read_text().replace('"/savings"', '"/tampered"'))
    with pytest.raises(ValueError, match="fingerprint"):
        Featurizer.load(path)


def test_featurizer_does_not_import_torch():
    code = "import sys, training.core.featurizer, training.core.contract; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
