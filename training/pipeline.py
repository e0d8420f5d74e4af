"""The offline stages as functions (the CLI is a thin layer over these; tests call them directly)."""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from training.encoder.inference import embed_encoded
from training.encoder.train import TrainConfig, build_encoder, load_checkpoint, train_encoder
from training.featurizer import Featurizer, FeaturizerConfig
from training.probe import bag_of_pages, probe
from training.sessions import load_sessions, load_truth_intents
from training.splits import is_holdout

log = logging.getLogger(__name__)
VALIDATION_PCT = 30
"""Visitors in hash buckets [HOLDOUT_PCT, VALIDATION_PCT) validate pre-training; the rest train."""


@dataclass(frozen=True)
class TrainResult:
    history: list[dict]
    n_train: int
    n_validation: int
    featurizer_version: str
    checkpoint: str


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig, feat_cfg: FeaturizerConfig | None = None,
          strict: bool = False) -> TrainResult:
    """Fit the featurizer on training visitors, pre-train the encoder, save both into `out_dir`."""
    data = load_sessions(data_dir, strict=strict, report_dir=out_dir)
    pool = data.part(holdout=False)
    train_s = [s for s in pool if not is_holdout(s.anonymous_id, VALIDATION_PCT)]
    val_s = [s for s in pool if is_holdout(s.anonymous_id, VALIDATION_PCT)]
    featurizer = Featurizer.fit((s.events for s in train_s), feat_cfg)
    featurizer.save(out_dir / "featurizer.json")
    log.info("featurizer %s: %s", featurizer.version,
             ", ".join(f"{k}={len(v)}" for k, v in featurizer.vocabs.items()))
    _, history = train_encoder(featurizer, [featurizer.encode(s.events) for s in train_s],
                               [featurizer.encode(s.events) for s in val_s], cfg, out_dir)
    return TrainResult(history, len(train_s), len(val_s), featurizer.version, str(out_dir / "encoder.pt"))


def load_artifacts(artifacts: Path, device: str = "cpu") -> tuple[Featurizer, torch.nn.Module, dict]:
    """Featurizer + best encoder, refusing a featurizer the encoder was not trained with."""
    featurizer = Featurizer.load(artifacts / "featurizer.json")
    encoder, meta = load_checkpoint(artifacts / "encoder.pt", device)
    if meta["featurizer_version"] != featurizer.version:
        raise ValueError(f"encoder was trained with featurizer {meta['featurizer_version']}, "
                         f"but {artifacts / 'featurizer.json'} is {featurizer.version}")
    return featurizer, encoder, meta


def probe_report(data_dir: Path, artifacts: Path, report_path: Path, seed: int = 0) -> dict:
    """Linear-probe accuracy of the embedding vs bag-of-pages (and an untrained encoder) on held-out visitors."""
    truth = load_truth_intents(data_dir)
    if not truth:
        raise ValueError(f"{data_dir}/truth/sessions.jsonl is missing: the probe needs hidden intents")
    data = load_sessions(data_dir)
    labelled = [(s, h) for s, h in zip(data.sessions, data.holdout, strict=True) if s.session_id in truth]
    train_s = [s for s, h in labelled if not h]
    test_s = [s for s, h in labelled if h]
    y_train, y_test = [truth[s.session_id] for s in train_s], [truth[s.session_id] for s in test_s]
    featurizer, encoder, meta = load_artifacts(artifacts)
    enc_train = [featurizer.encode(s.events) for s in train_s]
    enc_test = [featurizer.encode(s.events) for s in test_s]
    dim = encoder.cfg.embedding_dim
    scores = {"embedding": probe(embed_encoded(encoder, enc_train), y_train, embed_encoded(encoder, enc_test),
                                 y_test, seed)}
    torch.manual_seed(seed)
    untrained = build_encoder(featurizer, TrainConfig(d_model=encoder.cfg.d_model, embedding_dim=dim,
                                                      n_layers=encoder.cfg.n_layers))
    scores["untrained_encoder"] = probe(embed_encoded(untrained, enc_train), y_train,
                                        embed_encoded(untrained, enc_test), y_test, seed)
    bag_train, bag_test = bag_of_pages(train_s, test_s, dim, seed)
    scores["bag_of_pages"] = probe(bag_train, y_train, bag_test, y_test, seed)
    report = {
        "probe_accuracy": {k: round(v.accuracy, 4) for k, v in scores.items()},
        "probe_macro_f1": {k: round(v.macro_f1, 4) for k, v in scores.items()},
        "n_sessions": len(labelled),
        "n_probe_train": len(train_s),
        "n_probe_test": len(test_s),
        "n_intents": len(set(truth.values())),
        "embedding_dim": dim,
        "featurizer_version": featurizer.version,
        "encoder_epoch": meta["metrics"].get("epoch"),
        "data": str(data_dir),
        "machine": machine_info(),
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    return report


def machine_info() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info
