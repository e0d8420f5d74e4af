"""Pre-train the session encoder on featurized sessions; checkpoint every epoch, keep the best."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.core.featurizer import Featurizer
from training.encoder.inference import length_sorted_batches, session_lengths
from training.encoder.model import EncoderConfig, SessionEncoder
from training.encoder.objectives import ObjectiveConfig, PretrainingHeads, pretraining_loss

log = logging.getLogger(__name__)
Encoded = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 16
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 7
    d_model: int = 64
    embedding_dim: int = 64
    n_layers: int = 2
    dropout: float = 0.1
    """The encoder's dropout (EncoderConfig's default); 0 makes a data-parallel run reproduce this one exactly."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    device: str = "auto"
    """'auto' picks CUDA when present, else CPU."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_encoder(featurizer: Featurizer, cfg: TrainConfig) -> SessionEncoder:
    return SessionEncoder(EncoderConfig(
        cardinalities=tuple(featurizer.cardinalities), n_continuous=len(featurizer.to_dict()["continuous_columns"]),
        max_len=featurizer.config.max_len, d_model=cfg.d_model, embedding_dim=cfg.embedding_dim,
        n_layers=cfg.n_layers, dropout=cfg.dropout,
    ))


def optimizer_and_schedule(encoder: torch.nn.Module, heads: torch.nn.Module, cfg: TrainConfig, n_train: int
                           ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW over encoder and heads with a one-cycle schedule over every step of cfg.epochs (both trainers)."""
    optimizer = torch.optim.AdamW(list(encoder.parameters()) + list(heads.parameters()), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, n_train // cfg.batch_size + 1)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)


def epoch_batches(data: Encoded, cfg: TrainConfig, rng: np.random.Generator, groups: np.ndarray | None
                  ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """An epoch's length-bucketed batches and, with `groups` and "visitor" positives, each session's partner
    (drawn from `rng` in this order, which the single-process and distributed trainers share)."""
    batches = _shuffled_batches(session_lengths(data), cfg.batch_size, rng)
    by_visitor = groups is not None and cfg.objective.positives == "visitor"
    return batches, partner_index(groups, rng) if by_visitor else None


def _shuffled_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    jitter = np.asarray(lengths) + rng.uniform(0, 2, size=len(lengths))  # vary batch composition per epoch
    batches = length_sorted_batches(jitter.tolist(), batch_size)
    rng.shuffle(batches)
    return [b for b in batches if len(b) > 1]  # the contrastive loss needs negatives


def group_codes(keys: Sequence[str]) -> np.ndarray:
    """Integer code per row: rows with the same key (visitor) share one."""
    return np.unique(np.asarray(keys, dtype=str), return_inverse=True)[1].astype(np.int64)


def partner_index(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row, a uniformly drawn *other* row of the same group (the row itself when it is alone)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
    counts = np.searchsorted(sorted_groups, sorted_groups, side="right") - starts
    rank = np.arange(len(groups)) - starts
    draw = (rng.random(len(groups)) * np.maximum(counts - 1, 1)).astype(np.int64)
    pick = np.where(counts > 1, starts + draw + (draw >= rank), np.arange(len(groups)))
    out = np.empty(len(groups), np.int64)
    out[order] = order[pick]
    return out


def _run_epoch(encoder: SessionEncoder, heads: PretrainingHeads, data: Encoded, cfg: TrainConfig,
               rng: np.random.Generator, device: torch.device, desc: str,
               optimizer: torch.optim.Optimizer | None = None,
               scheduler: torch.optim.lr_scheduler.OneCycleLR | None = None,
               groups: np.ndarray | None = None) -> dict[str, float]:
    """One pass over `data`; trains when an optimizer is given, else only measures the losses. With `groups`
    (the visitor of each session) and "visitor" positives, each session is paired with another of its visitor."""
    training = optimizer is not None
    encoder.train(training)
    heads.train(training)
    sums: dict[str, float] = {}
    n = 0
    batches, partner = epoch_batches(data, cfg, rng, groups)
    by_visitor = partner is not None
    with torch.set_grad_enabled(training):
        for idx in (bar := tqdm(batches, desc=desc, unit="batch", leave=False)):
            partners = [data[i] for i in partner[idx]] if partner is not None else None
            losses = pretraining_loss(encoder, heads, [data[i] for i in idx], rng, cfg.objective, device,
                                      partners, groups[idx] if by_visitor else None)
            if optimizer is not None:
                optimizer.zero_grad()
                losses["loss"].backward()
                torch.nn.utils.clip_grad_norm_(list(encoder.parameters()) + list(heads.parameters()), 1.0)
                optimizer.step()
                if scheduler is not None and scheduler.last_epoch + 1 < scheduler.total_steps:
                    scheduler.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
            n += len(idx)
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}")
    return {k: v / max(n, 1) for k, v in sums.items()}


def train_encoder(featurizer: Featurizer, train: Encoded, val: Encoded, cfg: TrainConfig, out_dir: Path,
                  train_visitors: Sequence[str] | None = None, val_visitors: Sequence[str] | None = None
                  ) -> tuple[SessionEncoder, list[dict]]:
    """Returns the best encoder (lowest validation loss) and per-epoch metrics; writes checkpoints.
    `*_visitors` (the anonymous id of each session) enable the "visitor" positives of the objective."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = pick_device(cfg.device)
    encoder = build_encoder(featurizer, cfg).to(device)
    heads = PretrainingHeads(cfg.d_model, cfg.embedding_dim, featurizer.cardinalities[0],
                             featurizer.cardinalities[2]).to(device)
    optimizer, scheduler = optimizer_and_schedule(encoder, heads, cfg, len(train))
    train_groups = group_codes(train_visitors) if train_visitors is not None else None
    val_groups = group_codes(val_visitors) if val_visitors is not None else None
    history: list[dict] = []
    best = float("inf")
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("training on %s: %d train / %d validation sessions, %d parameters", device, len(train), len(val),
             sum(p.numel() for p in encoder.parameters()))
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_m = _run_epoch(encoder, heads, train, cfg, rng, device, f"epoch {epoch}/{cfg.epochs}",
                             optimizer, scheduler, train_groups)
        seconds = time.perf_counter() - t0
        val_m = _run_epoch(encoder, heads, val, cfg, np.random.default_rng(cfg.seed + 1), device,
                           "validate", groups=val_groups)
        row = {"epoch": epoch, "seconds": round(seconds, 2), "sessions_per_s": round(len(train) / seconds, 1),
               **{f"train_{k}": round(v, 4) for k, v in train_m.items()},
               **{f"val_{k}": round(v, 4) for k, v in val_m.items()}}
        history.append(row)
        log.info("epoch %d: train loss %.3f, val loss %.3f (mem url %.3f, contrastive %.3f), %.0f sessions/s",
                 epoch, train_m["loss"], val_m["loss"], val_m["mem_url"], val_m["contrastive"], row["sessions_per_s"])
        save_checkpoint(out_dir / "encoder_last.pt", encoder, featurizer, cfg, row)
        if val_m["loss"] < best:
            best = val_m["loss"]
            save_checkpoint(out_dir / "encoder.pt", encoder, featurizer, cfg, row)
    (out_dir / "train_metrics.json").write_text(json.dumps(history, indent=2))
    best_encoder, _ = load_checkpoint(out_dir / "encoder.pt", device)
    return best_encoder, history


def save_checkpoint(path: Path, encoder: SessionEncoder, featurizer: Featurizer, cfg: TrainConfig,
                    metrics: dict) -> None:
    torch.save({"encoder_config": encoder.cfg.to_dict(), "state_dict": encoder.state_dict(),
                "featurizer_version": featurizer.version, "train_config": asdict(cfg), "metrics": metrics}, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[SessionEncoder, dict]:
    """The encoder in eval mode, plus the checkpoint's metadata (featurizer version, metrics)."""
    doc = torch.load(path, map_location=device, weights_only=True)
    encoder = SessionEncoder(EncoderConfig.from_dict(doc["encoder_config"])).to(device)
    encoder.load_state_dict(doc["state_dict"])
    encoder.eval()
    return encoder, {k: v for k, v in doc.items() if k != "state_dict"}
