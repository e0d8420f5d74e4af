"""Embedding many sessions efficiently: length-sorted batches, padded to the batch's longest session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from training.core.featurizer import Featurizer, pad_batch
from training.core.sessionize import Session
from training.encoder.model import SessionEncoder

if TYPE_CHECKING:
    from training.sessions import SessionTable


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar-length sessions (cuts padding, which dominates cost for short sessions)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def session_lengths(data: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    """Events per session; shard-backed data sets know them without building every session's arrays."""
    known = getattr(data, "lengths", None)
    return [int(n) for n in known] if known is not None else [len(c) for c, _ in data]


@torch.inference_mode()
def embed_encoded(encoder: SessionEncoder, encoded: Sequence[tuple[np.ndarray, np.ndarray]],
                  batch_size: int = 256, device: torch.device | None = None) -> np.ndarray:
    """Embeddings [N, E] for already-featurized sessions, in input order."""
    device = device or next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out = np.zeros((len(encoded), encoder.cfg.embedding_dim), dtype=np.float32)
    for idx in length_sorted_batches(session_lengths(encoded), batch_size):
        batch = pad_batch([encoded[i] for i in idx])
        emb = encoder(torch.from_numpy(batch.categorical).to(device), torch.from_numpy(batch.continuous).to(device))
        out[idx] = emb.cpu().numpy()
    encoder.train(was_training)
    return out


def embed_rows(encoder: SessionEncoder, featurizer: Featurizer, sessions: SessionTable, rows: np.ndarray,
               batch_size: int = 256) -> np.ndarray:
    """embed_sessions of sessions[rows] from the table's columns (no Event objects): the same embeddings."""
    from training.shards import Subset

    return embed_encoded(encoder, Subset(sessions.encoded(featurizer), np.asarray(rows, dtype=np.int64)), batch_size)


def embed_sessions(encoder: SessionEncoder, featurizer: Featurizer, sessions: Sequence[Session],
                   batch_size: int = 256) -> np.ndarray:
    """Embeddings [N, E] of sessions (featurized here with `featurizer`), in input order."""
    return embed_encoded(encoder, [featurizer.encode(s.events) for s in sessions], batch_size)
