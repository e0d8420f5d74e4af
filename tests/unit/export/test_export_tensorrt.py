"""TensorRT engines (FP16 and FP32) vs onnxruntime. Needs tensorrt (the `gpu` extra) and an NVIDIA GPU."""

import numpy as np
import pytest

from training.export.tensorrt_build import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    EngineSpec,
    build_engine,
    encoder_profile,
    engine_parity,
    gpu_unavailable_reason,
    head_profile,
)

REASON = gpu_unavailable_reason()
skip_without_gpu = pytest.mark.skipif(REASON is not None, reason=f"TensorRT tests skipped: {REASON}")


def test_profiles_cover_batch_1_to_max_and_length_1_to_64():
    profile = encoder_profile(max_batch=64, max_len=64, n_categorical=9, n_continuous=6)
    assert profile["CATEGORICAL"].min == (1, 1, 9) and profile["CATEGORICAL"].max == (64, 64, 9)
    assert head_profile(64, 64)["EMBEDDING"].max == (64, 64)


@pytest.mark.gpu
@skip_without_gpu
@pytest.mark.parametrize("fp16", [True, False], ids=["fp16", "fp32"])
def test_encoder_engine_matches_onnxruntime(exported_cpu, small_artifacts, tmp_path, fp16):
    from training.core.featurizer import Featurizer
    from training.export.onnx_export import example_inputs

    featurizer = Featurizer.load(small_artifacts / "featurizer.json")
    cache = tmp_path / "timing.cache"
    spec = EngineSpec(exported_cpu.onnx["session_encoder"], tmp_path / "encoder.plan",
                      encoder_profile(64, 64, 9, 6), fp16=fp16, timing_cache=cache)
    plan = build_engine(spec)
    assert plan.stat().st_size > 0 and cache.stat().st_size > 0
    batches = [dict(zip(("CATEGORICAL", "CONTINUOUS"), example_inputs(featurizer.cardinalities, 6, b, n, seed=b),
                        strict=True)) for b, n in ((1, 1), (1, 64), (64, 12), (7, 33))]
    worst = engine_parity(plan, exported_cpu.onnx["session_encoder"], batches)
    assert worst["EMBEDDING"] <= (FP16_TOLERANCE["EMBEDDING"] if fp16 else FP32_TOLERANCE), worst
    build_engine(spec)  # a second build reuses (and rewrites) the timing cache


@pytest.mark.gpu
@skip_without_gpu
def test_head_engine_matches_onnxruntime(exported_cpu, tmp_path):
    plan = build_engine(EngineSpec(exported_cpu.onnx["intent_head"], tmp_path / "head.plan", head_profile(64, 64),
                                   fp16=False))
    rng = np.random.default_rng(0)
    batches = [{"EMBEDDING": rng.standard_normal((b, 64)).astype(np.float32)} for b in (1, 9, 64)]
    assert engine_parity(plan, exported_cpu.onnx["intent_head"], batches)["INTENT_PROBS"] <= FP32_TOLERANCE
