"""The encoder on CUDA: same embeddings as on CPU, and a checkpoint trained on a GPU serves on a CPU-only
machine (Triton's CPU target, the gateway's hosts). Needs an NVIDIA GPU; skipped with the reason otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.core.featurizer import Featurizer
from training.encoder.inference import embed_encoded
from training.encoder.train import TrainConfig, build_encoder, load_checkpoint, train_encoder
from training.sessions import load_sessions

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA tests skipped: torch sees no CUDA device on this machine")]

# FP32 on both sides; kernels differ (cuBLAS, fused attention), so sums are ordered differently
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def encoded(small_data: Path) -> tuple[Featurizer, list]:
    sessions = load_sessions(small_data).sessions[:600]
    featurizer = Featurizer.fit(s.events for s in sessions)
    return featurizer, [featurizer.encode(s.events) for s in sessions]


def test_cuda_embeddings_match_cpu(encoded) -> None:
    featurizer, data = encoded
    torch.manual_seed(0)
    encoder = build_encoder(featurizer, TrainConfig()).eval()
    on_cpu = embed_encoded(encoder, data, batch_size=64)
    on_gpu = embed_encoded(encoder.to("cuda"), data, batch_size=64)
    assert np.abs(on_cpu - on_gpu).max() <= TOLERANCE


def test_a_checkpoint_trained_on_cuda_serves_on_cpu(encoded, tmp_path: Path) -> None:
    featurizer, data = encoded
    trained, history = train_encoder(featurizer, data[:500], data[500:], TrainConfig(epochs=2, device="cuda"),
                                     tmp_path)
    assert next(trained.parameters()).is_cuda
    losses = [row["train_loss"] for row in history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    served, meta = load_checkpoint(tmp_path / "encoder.pt", "cpu")
    assert not next(served.parameters()).is_cuda and meta["metrics"]["epoch"] >= 1
    gap = np.abs(embed_encoded(served, data[500:]) - embed_encoded(trained, data[500:])).max()
    assert gap <= TOLERANCE
