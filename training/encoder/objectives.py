"""Self-supervised objectives: masked event modelling (MEM) and a contrastive loss between two views.

MEM hides the url, area and event type of ~15% of a session's events and predicts the url and the
event type back from context: it teaches the encoder what typically follows what. The contrastive
loss (NT-Xent) pulls two augmented views of the same session together and pushes other sessions
apart: it shapes the pooled embedding itself, which MEM alone does not train.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.encoder.model import SessionEncoder
from training.featurizer import MASK, FeatureBatch, pad_batch

MASKED_COLUMNS = (0, 1, 2)  # url, area, event_type


@dataclass(frozen=True)
class ObjectiveConfig:
    mask_prob: float = 0.15
    event_drop: float = 0.15
    crop_min: float = 0.6
    noise: float = 0.1
    temperature: float = 0.2
    contrastive_weight: float = 1.0


def augment(cat: np.ndarray, cont: np.ndarray, rng: np.random.Generator, cfg: ObjectiveConfig
            ) -> tuple[np.ndarray, np.ndarray]:
    """A random view of one encoded session: a contiguous crop, dropped events, noisy continuous values."""
    n = len(cat)
    keep_len = max(1, int(np.ceil(n * rng.uniform(cfg.crop_min, 1.0))))
    start = int(rng.integers(0, n - keep_len + 1))
    idx = np.arange(start, start + keep_len)
    kept = idx[rng.random(keep_len) >= cfg.event_drop]
    if kept.size == 0:
        kept = idx[[int(rng.integers(keep_len))]]
    noisy = cont[kept] + rng.normal(0, cfg.noise, size=cont[kept].shape).astype(np.float32)
    return cat[kept], noisy


def mask_events(batch: FeatureBatch, rng: np.random.Generator, mask_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Returns (masked categorical, boolean [B, L] of masked positions); at least one per session."""
    cat = batch.categorical.copy()
    real = cat[..., 0] != 0
    chosen = (rng.random(real.shape) < mask_prob) & real
    for i, length in enumerate(batch.lengths):
        if not chosen[i].any():
            chosen[i, int(rng.integers(length))] = True
    for col in MASKED_COLUMNS:
        cat[..., col][chosen] = MASK
    return cat, chosen


class PretrainingHeads(nn.Module):
    """Heads used only during pre-training: MEM classifiers and the contrastive projection."""

    def __init__(self, d_model: int, embedding_dim: int, n_urls: int, n_event_types: int) -> None:
        super().__init__()
        self.url = nn.Linear(d_model, n_urls)
        self.event_type = nn.Linear(d_model, n_event_types)
        self.projection = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.GELU(),
                                        nn.Linear(embedding_dim, embedding_dim))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE over a batch: row i of `a` should match row i of `b`."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def pretraining_loss(encoder: SessionEncoder, heads: PretrainingHeads, sessions: list[tuple[np.ndarray, np.ndarray]],
                     rng: np.random.Generator, cfg: ObjectiveConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """MEM on a masked first view + NT-Xent between the two views' pooled embeddings."""
    view1 = pad_batch([augment(c, x, rng, cfg) for c, x in sessions])
    view2 = pad_batch([augment(c, x, rng, cfg) for c, x in sessions])
    masked, chosen = mask_events(view1, rng, cfg.mask_prob)
    cat1 = torch.from_numpy(masked).to(device)
    h1, m1 = encoder.hidden(cat1, torch.from_numpy(view1.continuous).to(device))
    where = torch.from_numpy(chosen).to(device)
    target = torch.from_numpy(view1.categorical).to(device)[where]
    mem_url = F.cross_entropy(heads.url(h1[where]), target[:, 0])
    mem_event = F.cross_entropy(heads.event_type(h1[where]), target[:, 2])
    z1 = heads.projection(encoder.pool(h1, m1))
    z2 = heads.projection(encoder(torch.from_numpy(view2.categorical).to(device),
                                  torch.from_numpy(view2.continuous).to(device)))
    contrastive = nt_xent(z1, z2, cfg.temperature)
    total = mem_url + mem_event + cfg.contrastive_weight * contrastive
    return {"loss": total, "mem_url": mem_url, "mem_event": mem_event, "contrastive": contrastive}
