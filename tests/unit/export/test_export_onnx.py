"""ONNX export: parity with PyTorch (FP32, max abs diff <= 1e-4) at several (batch, length) pairs."""

import numpy as np
import pytest
import torch

from training.export.onnx_export import (
    CATEGORICAL,
    CONTINUOUS,
    FP32_TOLERANCE,
    PARITY_SHAPES,
    HeadModule,
    check_parity,
    example_inputs,
    onnx_session,
)
from training.pipeline import load_artifacts
from training.sessions import load_sessions
from training.taxonomy.distill import IntentHead


@pytest.fixture(scope="module")
def models(small_artifacts, exported_cpu):
    _, encoder, _ = load_artifacts(small_artifacts)
    head = IntentHead.load(small_artifacts / "intent_head.json")
    return encoder, head, exported_cpu


def test_parity_covers_batch_1_length_1_and_max_length():
    assert {(1, 1), (1, 64)} <= set(PARITY_SHAPES)
    assert any(b > 1 and 1 < n < 64 for b, n in PARITY_SHAPES)


def test_exported_models_match_pytorch_at_every_shape(models):
    encoder, head, exported = models
    report = check_parity(encoder, head, exported.onnx["session_encoder"], exported.onnx["intent_head"])
    assert report.ok, report.max_abs_diff
    assert report.worst <= FP32_TOLERANCE == 1e-4
    assert len(report.max_abs_diff) == 2 * len(PARITY_SHAPES)
    assert exported.onnx_parity == report.max_abs_diff  # what export checked before writing anything


def test_encoder_onnx_has_dynamic_batch_and_length(models):
    _, _, exported = models
    session = onnx_session(exported.onnx["session_encoder"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert [type(d) for d in shapes["CATEGORICAL"]] == [str, str, int]
    assert shapes["CATEGORICAL"][2] == 9 and shapes["CONTINUOUS"][2] == 6
    assert [o.name for o in session.get_outputs()] == ["EMBEDDING", "EMBEDDING_TO_HEAD"]


def test_encoder_onnx_on_real_sessions_padded_to_the_longest(small_artifacts, models, small_data):
    """Serving pads a batch to its longest session: ONNX must agree with PyTorch on that, too."""
    featurizer, encoder, _ = load_artifacts(small_artifacts)
    batch = featurizer.batch([s.events for s in load_sessions(small_data).sessions[:12]])
    with torch.no_grad():
        ref = encoder(torch.from_numpy(batch.categorical), torch.from_numpy(batch.continuous)).numpy()
    got = onnx_session(models[2].onnx["session_encoder"]).run(
        None, {CATEGORICAL: batch.categorical, CONTINUOUS: batch.continuous})[0]
    assert batch.lengths.min() < batch.lengths.max()
    np.testing.assert_allclose(got, ref, atol=FP32_TOLERANCE, rtol=0)


def test_head_module_is_the_calibrated_softmax():
    rng = np.random.default_rng(1)
    head = IntentHead(("a", "b", "c"), rng.standard_normal((3, 8)).astype(np.float32),
                      rng.standard_normal(3).astype(np.float32), temperature=1.7)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    got = HeadModule(head)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, head.probabilities(x), atol=1e-6)


def test_example_inputs_are_valid_featurizer_arrays():
    cat, cont = example_inputs([10, 4, 7], 6, batch=4, length=9, seed=3)
    assert cat.dtype == np.int64 and cont.dtype == np.float32
    assert (cat[:, 0, 0] >= 3).all()
    assert (cat < np.array([10, 4, 7])).all() and (cat >= 0).all()
    assert (cont[cat[..., 0] == 0] == 0).all()
