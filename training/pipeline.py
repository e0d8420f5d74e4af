"""The offline stages as functions (the CLI is a thin layer over these; tests call them directly)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from training.columnar.run import featurize_dir
from training.core.featurizer import Featurizer, FeaturizerConfig
from training.encoder.train import TrainConfig, load_checkpoint, train_encoder
from training.sessions import data_world
from training.shards import INVALID_ROWS, shard_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    history: list[dict]
    n_train: int
    n_validation: int
    featurizer_version: str
    checkpoint: str


def train(data_dir: Path, out_dir: Path, cfg: TrainConfig, feat_cfg: FeaturizerConfig | None = None,
          strict: bool = False, shards: Path | None = None) -> TrainResult:
    """Featurize `data_dir` into shards (columnar; the featurizer fitted on training visitors), pre-train the
    encoder over them, save both into `out_dir`. Given `shards` (a finished shard directory, from
    `make featurize` or the Spark job), train on it as it is and leave `data_dir` unread."""
    if shards is None:
        shards = out_dir / "shards"
        done = featurize_dir(data_dir, shards, config=feat_cfg, strict=strict)
        if done["invalid_rows"]:
            shutil.copyfile(shards / INVALID_ROWS, out_dir / INVALID_ROWS)
    split = shard_splits(shards)
    split.featurizer.save(out_dir / "featurizer.json")
    log.info("featurizer %s: %s", split.featurizer.version,
             ", ".join(f"{k}={len(v)}" for k, v in split.featurizer.vocabs.items()))
    _, history = train_encoder(split.featurizer, split.train, split.validation, cfg, out_dir, split.train_visitors,
                               split.validation_visitors)
    return TrainResult(history, len(split.train), len(split.validation), split.featurizer.version,
                       str(out_dir / "encoder.pt"))


def load_artifacts(artifacts: Path, device: str = "cpu") -> tuple[Featurizer, torch.nn.Module, dict]:
    """Featurizer + best encoder, refusing a featurizer the encoder was not trained with."""
    featurizer = Featurizer.load(artifacts / "featurizer.json")
    encoder, meta = load_checkpoint(artifacts / "encoder.pt", device)
    if meta["featurizer_version"] != featurizer.version:
        raise ValueError(f"encoder was trained with featurizer {meta['featurizer_version']}, "
                         f"but {artifacts / 'featurizer.json'} is {featurizer.version}")
    return featurizer, encoder, meta


def probe_report(data_dir: Path, artifacts: Path, report_path: Path, seed: int = 0, n_boot: int = 200) -> dict:
    """Does pre-training pay on this data? The encoder against an untrained twin and bag-of-pages on the
    downstream tasks the directory supports (`training.evaluation.downstream`), written into `report_path`
    under worlds.<world>.downstream; other worlds already in the report are kept, so one report holds all."""
    from training.evaluation.downstream import downstream_report

    _, encoder, meta = load_artifacts(artifacts)
    downstream = downstream_report(data_dir, artifacts, n_boot, seed)
    world = data_world(data_dir)["name"]
    old = json.loads(report_path.read_text()) if report_path.exists() else {}
    worlds = old.get("worlds", {}) if isinstance(old.get("worlds"), dict) else {}
    worlds[world] = {"data": str(data_dir), "artifacts": str(artifacts), "encoder_epoch": meta["metrics"].get("epoch"),
                     "featurizer_version": meta["featurizer_version"], "downstream": downstream}
    report: dict = {"world": world, "data": str(data_dir), "embedding_dim": encoder.cfg.embedding_dim,
                    "encoder_epoch": meta["metrics"].get("epoch"), "featurizer_version": meta["featurizer_version"]}
    probe = downstream.get("probe_macro_f1")
    if probe is not None:
        names = {"pretrained": "embedding", "untrained": "untrained_encoder", "bag_of_pages": "bag_of_pages"}
        report.update({"probe_accuracy": {names[k]: round(v, 4) for k, v in probe["accuracy"].items()},
                       "probe_macro_f1": {names[k]: round(probe[k]["value"], 4) for k in names},
                       "n_probe_train": probe["n_train"], "n_probe_test": probe["n_test"],
                       "n_intents": probe["n_intents"]})
    report.update({"worlds": worlds, "machine": machine_info()})
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    return report


def machine_info() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info
