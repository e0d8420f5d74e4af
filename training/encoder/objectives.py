"""Self-supervised objectives: masked event modelling (MEM) and a contrastive loss between two sessions.

MEM hides the url, area and event type of ~15% of a session's events and predicts the url and the
event type back from context: it teaches the encoder what typically follows what. The contrastive
loss (NT-Xent) pulls a positive pair together and pushes the batch's other sessions apart: it shapes the
pooled embedding itself, which MEM alone does not train.

The positive pair (`ObjectiveConfig.positives`):
- "visitor" (default): an augmented view of the session and an augmented view of *another session of the
  same visitor* (a view of the session itself when the visitor has only one). A visitor's sessions share
  their purpose far more than their pages, so the embedding learns what persists across a visitor's visits
  (the intent) and drops what does not (which noise pages, which crop). It needs only the anonymous id that
  every row of the data contract carries, no label.
- "view": two augmented views of one session (SimCLR-style). It teaches invariance to crops and dropped
  events only, so the embedding keeps everything that identifies a session, noise included; measured here it
  did not beat an untrained encoder of the same shape on the intent probe.
Other sessions of the same visitor in the batch are not used as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.core.featurizer import MASK, FeatureBatch, pad_batch
from training.encoder.model import SessionEncoder

MASKED_COLUMNS = (0, 1, 2)  # url, area, event_type


@dataclass(frozen=True)
class ObjectiveConfig:
    mask_prob: float = 0.15
    event_drop: float = 0.15
    crop_min: float = 0.6
    noise: float = 0.1
    temperature: float = 0.2
    contrastive_weight: float = 1.0
    mem_weight: float = 0.2
    """Masked event modelling beside the contrastive loss: 0.2 won on the validation visitors of both worlds at
    16 epochs (1.0 and 0.0 lost; docs/encoder.md)."""
    positives: str = "visitor"
    """"visitor" or "view" (see the module docstring)."""

    def __post_init__(self) -> None:
        if self.positives not in POSITIVES:
            raise ValueError(f"positives must be one of {POSITIVES}, got {self.positives!r}")


POSITIVES = ("visitor", "view")


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


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float, groups: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Symmetric InfoNCE over a batch: row i of `a` should match row i of `b`; with `groups` (int [B]), rows
    of the same group other than i are left out of i's negatives."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    if groups is not None:
        same = (groups[:, None] == groups[None, :]) & (target[:, None] != target[None, :])
        logits = logits.masked_fill(same, float("-inf"))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@dataclass(frozen=True)
class Views:
    """The two augmented views of a batch and the events masked in the first."""

    view1: FeatureBatch
    masked: np.ndarray
    chosen: np.ndarray
    view2: FeatureBatch


def make_views(sessions: list[tuple[np.ndarray, np.ndarray]], partners: list[tuple[np.ndarray, np.ndarray]] | None,
               rng: np.random.Generator, cfg: ObjectiveConfig) -> Views:
    """A batch's views, drawn from `rng` in one fixed order: the distributed trainer draws a global batch's views
    with this same function, so every rank sees the single-process draws."""
    view1 = pad_batch([augment(c, x, rng, cfg) for c, x in sessions])
    view2 = pad_batch([augment(c, x, rng, cfg) for c, x in (partners if partners is not None else sessions)])
    masked, chosen = mask_events(view1, rng, cfg.mask_prob)
    return Views(view1, masked, chosen, view2)


def pretraining_loss(encoder: SessionEncoder, heads: PretrainingHeads, sessions: list[tuple[np.ndarray, np.ndarray]],
                     rng: np.random.Generator, cfg: ObjectiveConfig, device: torch.device,
                     partners: list[tuple[np.ndarray, np.ndarray]] | None = None,
                     groups: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """MEM on a masked view of `sessions` + NT-Xent between its pooled embedding and a view of `partners`
    (each session's positive: another session of its visitor, or itself; default: itself). `groups` (int [B],
    the visitor of each row) keeps a visitor's other sessions out of its negatives."""
    views = make_views(sessions, partners, rng, cfg)
    view1, view2, chosen = views.view1, views.view2, views.chosen
    cat1 = torch.from_numpy(views.masked).to(device)
    h1, m1 = encoder.hidden(cat1, torch.from_numpy(view1.continuous).to(device))
    where = torch.from_numpy(chosen).to(device)
    target = torch.from_numpy(view1.categorical).to(device)[where]
    mem_url = F.cross_entropy(heads.url(h1[where]), target[:, 0])
    mem_event = F.cross_entropy(heads.event_type(h1[where]), target[:, 2])
    z1 = heads.projection(encoder.pool(h1, m1))
    z2 = heads.projection(encoder(torch.from_numpy(view2.categorical).to(device),
                                  torch.from_numpy(view2.continuous).to(device)))
    contrastive = nt_xent(z1, z2, cfg.temperature, None if groups is None else torch.from_numpy(groups).to(device))
    total = cfg.mem_weight * (mem_url + mem_event) + cfg.contrastive_weight * contrastive
    return {"loss": total, "mem_url": mem_url, "mem_event": mem_event, "contrastive": contrastive}
