import numpy as np
import pytest

from training.taxonomy.distill import IntentHead, fit_head


def blobs(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centers = {"refinance": [3, 0], "fraud": [0, 3], "savings": [-3, -3]}
    names = rng.choice(list(centers), size=n)
    x = np.array([centers[k] for k in names], dtype=np.float32) + rng.normal(0, 1.2, size=(n, 2)).astype(np.float32)
    return x, list(names)


def test_head_learns_labels_and_calibrates(tmp_path):
    x, y = blobs(600, 0)
    cal_x, cal_y = blobs(300, 1)
    test_x, test_y = blobs(300, 2)
    head = fit_head(x, y, cal_x, cal_y)
    acc = np.mean(np.array(head.predict(test_x)) == np.array(test_y))
    assert acc > 0.9
    p = head.probabilities(test_x)
    assert p.shape == (300, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    # calibrated: mean confidence close to accuracy (well-separated blobs, so both high)
    assert abs(p.max(1).mean() - acc) < 0.05
    head.save(tmp_path / "head.json")
    loaded = IntentHead.load(tmp_path / "head.json")
    np.testing.assert_allclose(loaded.probabilities(test_x), p, atol=1e-6)


def test_head_needs_two_labels():
    with pytest.raises(ValueError, match="two distinct labels"):
        fit_head(np.zeros((4, 2)), ["a"] * 4)
