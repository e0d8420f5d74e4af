"""SessionEncoder: multi-modal event embedding -> Transformer -> pooled session embedding.

Inputs are exactly the featurizer's arrays (see training/core/featurizer.py):
    categorical int64 [B, L, F]   url, area, event_type, device, referrer, query_0..query_{Q-1}
    continuous  float32 [B, L, C]
Output: embedding float32 [B, E]. Padding (url id 0) is masked out of attention and pooling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

N_FIELD_COLUMNS = 5
"""Categorical columns before the query-token columns: url, area, event_type, device, referrer."""


@dataclass(frozen=True)
class EncoderConfig:
    cardinalities: tuple[int, ...]
    """Vocabulary size per categorical column, from Featurizer.cardinalities."""
    n_continuous: int
    max_len: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.1
    embedding_dim: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> EncoderConfig:
        return cls(**{**doc, "cardinalities": tuple(doc["cardinalities"])})


class EventEmbedding(nn.Module):
    """Sum of per-field embeddings, the mean query-token embedding, a continuous projection and position."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.fields = nn.ModuleList(nn.Embedding(n, d, padding_idx=0) for n in cfg.cardinalities[:N_FIELD_COLUMNS])
        self.query = nn.Embedding(cfg.cardinalities[N_FIELD_COLUMNS], d, padding_idx=0)
        self.continuous = nn.Linear(cfg.n_continuous, d)
        self.position = nn.Embedding(cfg.max_len, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, categorical: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        x = self.continuous(continuous)
        for i, table in enumerate(self.fields):
            x = x + table(categorical[..., i])
        q_ids = categorical[..., N_FIELD_COLUMNS:]
        q_count = (q_ids != 0).sum(-1, keepdim=True).clamp(min=1).to(x.dtype)
        x = x + self.query(q_ids).sum(-2) / q_count
        positions = torch.arange(categorical.shape[1], device=categorical.device)
        x = x + self.position(positions).unsqueeze(0)
        return self.dropout(self.norm(x))


class SessionEncoder(nn.Module):
    """Encodes a padded batch of sessions into one embedding per session (masked mean pooling)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = EventEmbedding(cfg)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.project = nn.Linear(cfg.d_model, cfg.embedding_dim)

    def hidden(self, categorical: torch.Tensor, continuous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-event hidden states [B, L, D] and the mask of real events [B, L]."""
        mask = categorical[..., 0] != 0
        h = self.transformer(self.embed(categorical, continuous), src_key_padding_mask=~mask)
        return self.final_norm(h), mask

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.project(mean)

    def forward(self, categorical: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        hidden, mask = self.hidden(categorical, continuous)
        return self.pool(hidden, mask)
