"""Shared fixtures: a small synthetic data directory generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.synthetic import GeneratorConfig, generate


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    generate(GeneratorConfig(visitors=2500, seed=11), out)
    return out


@pytest.fixture(scope="session")
def small_artifacts(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """featurizer.json + an untrained (seeded) encoder.pt + intent_head.json fitted on the hidden intents.

    Export and serving parity do not need a trained encoder, so this costs seconds, not a training run.
    """
    import torch

    from training.core.featurizer import Featurizer
    from training.encoder.inference import embed_sessions
    from training.encoder.train import TrainConfig, build_encoder, save_checkpoint
    from training.sessions import load_sessions, load_truth_intents
    from training.taxonomy.distill import fit_head

    out = tmp_path_factory.mktemp("serving_artifacts")
    sessions = load_sessions(small_data).sessions
    featurizer = Featurizer.fit(s.events for s in sessions)
    featurizer.save(out / "featurizer.json")
    torch.manual_seed(0)
    encoder = build_encoder(featurizer, TrainConfig()).eval()
    save_checkpoint(out / "encoder.pt", encoder, featurizer, TrainConfig(), {"epoch": 0})
    truth = load_truth_intents(small_data)
    labelled = [s for s in sessions if s.session_id in truth][:600]
    emb = embed_sessions(encoder, featurizer, labelled)
    y = [truth[s.session_id] for s in labelled]
    fit_head(emb[:400], y[:400], emb[400:], y[400:]).save(out / "intent_head.json")
    return out


@pytest.fixture(scope="session")
def exported_cpu(small_artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    """small_artifacts exported (ONNX, parity-checked) into a cpu model repository; an ExportResult."""
    from training.export.build import export
    from training.export.repository import ServingConfig

    out = tmp_path_factory.mktemp("exported")
    return export(small_artifacts, small_artifacts / "intent_head.json", out / "model_repository", ServingConfig(),
                  work_dir=out / "work")
