"""paired_summary: one set of cluster resamples for every representation, and the paired difference."""

import numpy as np

from training.evaluation.downstream import paired_summary


def _stats(values: dict[str, np.ndarray]):
    return {name: (lambda ix, v=v: float(v[ix].mean())) for name, v in values.items()}


def test_pretrained_against_the_better_baseline_higher_is_better():
    clusters = np.repeat(np.arange(50), 2)
    rng = np.random.default_rng(0)
    base = rng.random(100)
    values = {"pretrained": base + 0.2, "untrained": base + 0.1, "bag_of_pages": base}
    out = paired_summary(_stats(values), clusters, 100)
    assert out["pretrained"]["value"] == round(float(values["pretrained"].mean()), 5)
    lo, hi = out["pretrained"]["ci95"]
    assert lo < out["pretrained"]["value"] < hi
    d = out["vs_best_baseline"]
    assert d["baseline"] == "untrained"
    # the rows differ by exactly 0.1 in every resample: a paired interval has no width at all
    assert abs(d["difference"] - 0.1) < 1e-4 and abs(d["ci95"][0] - 0.1) < 1e-4 and abs(d["ci95"][1] - 0.1) < 1e-4
    assert d["pretrained_better"]


def test_lower_is_better_picks_the_lower_baseline_and_needs_the_whole_interval_below_zero():
    clusters = np.arange(80)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 80)
    values = {"pretrained": noise, "untrained": noise + rng.normal(0, 1, 80), "bag_of_pages": noise + 5}
    out = paired_summary(_stats(values), clusters, 200, higher_is_better=False)
    d = out["vs_best_baseline"]
    assert d["baseline"] == "untrained"
    assert d["pretrained_better"] == (d["ci95"][1] < 0)
    worse = paired_summary(_stats({"pretrained": noise + 1, "untrained": noise, "bag_of_pages": noise + 2}),
                           clusters, 50, higher_is_better=False)
    assert worse["vs_best_baseline"]["baseline"] == "untrained" and not worse["vs_best_baseline"]["pretrained_better"]
