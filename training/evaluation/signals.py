"""Per-session signals for the evaluation: embeddings, distilled intent probabilities, and LLM labels.

Only linked sessions are ever used, so only they are embedded. LLM labels cost about a second of the local
model per session, so they are bounded: all linked sessions of a seeded sample of at most `llm_customers`
linked customers who converted after a linked session (the conversion task's population; their app visits
form the ranking task's LLM sample). Replies are cached on disk (`LLMConfig.cache_dir`), so reruns are free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.encoder.inference import embed_rows
from training.evaluation.features import ConversionTable, EvalData, SessionSignals
from training.pipeline import load_artifacts
from training.taxonomy.distill import IntentHead

log = logging.getLogger(__name__)


def llm_sample(conversions: ConversionTable, n: int, seed: int = 0) -> list[str]:
    """Up to n customers, seeded, among those with a linked session before their conversion."""
    pool = sorted({c for c, rows in zip(conversions.customer, conversions.session_rows, strict=True) if rows})
    rng = np.random.default_rng(seed)
    return sorted(pool[i] for i in rng.permutation(len(pool))[:n])


def session_signals(data: EvalData, artifacts: Path, head_path: Path, taxonomy_path: Path | None = None,
                    llm_customers: Sequence[str] = (), llm_client=None, progress: bool = False) -> SessionSignals:
    """Signal matrices aligned with `data.sessions`; unlinked (or, for LLM labels, unsampled) rows are NaN."""
    featurizer, encoder, _ = load_artifacts(artifacts)
    head = IntentHead.load(head_path)
    linked = sorted({i for rows in data.by_customer.values() for i in rows})
    emb = np.full((len(data.sessions), encoder.cfg.embedding_dim), np.nan, np.float32)
    if linked:
        emb[linked] = embed_rows(encoder, featurizer, data.sessions, np.asarray(linked))
    probs = np.full((len(data.sessions), len(head.labels)), np.nan, np.float32)
    if linked:
        probs[linked] = head.probabilities(emb[linked])
    matrices = {"embedding": emb, "distilled": probs}
    names = {"distilled": head.labels}
    if llm_customers:
        if taxonomy_path is None:
            raise ValueError("LLM labels need the taxonomy (taxonomy_path)")
        matrices["llm_labels"], names["llm_labels"] = _llm_matrix(data, taxonomy_path, llm_customers, llm_client,
                                                                  progress)
    return SessionSignals(matrices, names, end_ms=data.session_end_ms())


def _llm_matrix(data: EvalData, taxonomy_path: Path, customers: Sequence[str], client, progress: bool
                ) -> tuple[np.ndarray, tuple[str, ...]]:
    from training.taxonomy.labelling import Labeller
    from training.taxonomy.llm import LLMClient, LLMConfig
    from training.taxonomy.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(taxonomy_path)
    rows = sorted({i for c in customers for i in data.by_customer.get(c, [])})
    client = client or LLMClient(LLMConfig.from_env())
    log.info("LLM-labelling %d linked sessions of %d sampled customers", len(rows), len(customers))
    labelled = Labeller(taxonomy).label(client, [data.sessions[i] for i in rows], progress=progress)
    index = {name: k for k, name in enumerate(taxonomy.names)}
    out = np.full((len(data.sessions), len(index)), np.nan, np.float32)
    for i, x in zip(rows, labelled, strict=True):
        if x.label is not None:
            out[i] = 0
            out[i, index[x.label]] = 1
    log.info("LLM labels: %d valid of %d", int((~np.isnan(out[rows, 0])).sum()), len(rows))
    return out, tuple(taxonomy.names)
