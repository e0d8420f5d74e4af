"""Does pre-training pay? The pre-trained encoder against its two baselines on the three downstream tasks.

Representations of every session, all of the same width:
- **pretrained**: the trained encoder's embedding (`artifacts/encoder.pt`);
- **untrained**: an encoder of the same shape with seeded random weights (what the architecture gives free);
- **bag_of_pages**: TF-IDF over the session's normalized pages reduced by truncated SVD, fitted on the training
  visitors' sessions only (a pooled sum of URL embeddings *is* a bag of pages: the floor an encoder must clear).

Tasks, each scored with a paired bootstrap 95% interval (the same resamples for all three representations, so
the interval of a difference is the interval of a paired difference):
- **probe_macro_f1**: a linear probe of the hidden session intent, trained on training visitors' sessions,
  scored on held-out visitors' sessions, visitors resampled (synthetic data only: it needs truth/);
- **conversion_micro_f1**: which product a linked customer converts to, from the sessions before it
  (`conversion.py`: 5-fold CV over customers), customers resampled;
- **ranking_log_loss**: the served tile ranker (recency-pooled signal x tile crosses that fade with the days since
  the last session) with each representation as its pre-login signal, trained on the earlier impressions and
  scored on the later window, customers resampled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from training.encoder.inference import embed_encoded
from training.encoder.train import TrainConfig, build_encoder
from training.evaluation.conversion import conversion_predictions
from training.evaluation.features import EvalData, SessionSignals, conversion_table, impression_table, time_split
from training.evaluation.metrics import bootstrap_replicates, log_loss_rows, percentile_interval
from training.evaluation.ranking import run_rankers
from training.pipeline import load_artifacts
from training.probe import bag_of_documents, probe_predict
from training.sessions import SessionTable, load_session_table, load_truth_intents
from training.splits import is_holdout

log = logging.getLogger(__name__)
REPRESENTATIONS = ("pretrained", "untrained", "bag_of_pages")
BASELINES = ("untrained", "bag_of_pages")


@dataclass(frozen=True)
class SessionVectors:
    """One [N, D] matrix per representation, aligned with `sessions`."""

    sessions: SessionTable
    matrices: dict[str, np.ndarray]


def session_vectors(sessions: SessionTable, is_train: Sequence[bool], featurizer, encoder,
                    seed: int = 0) -> SessionVectors:
    """The three representations of `sessions`; bag-of-pages and nothing else is fitted, on `is_train` rows.
    Every session goes through its columns (SessionTable.encoded, .documents), not Event objects."""
    encoded = sessions.encoded(featurizer)
    dim = encoder.cfg.embedding_dim
    torch.manual_seed(seed)
    twin = build_encoder(featurizer, TrainConfig(d_model=encoder.cfg.d_model, embedding_dim=dim,
                                                 n_layers=encoder.cfg.n_layers)).eval()
    docs = sessions.documents()
    train_ix = np.flatnonzero(np.asarray(is_train, bool))
    _, bag_all = bag_of_documents([docs[i] for i in train_ix], docs, dim, seed)
    return SessionVectors(sessions, {"pretrained": embed_encoded(encoder, encoded),
                                     "untrained": embed_encoded(twin, encoded),
                                     "bag_of_pages": bag_all.astype(np.float32)})


def paired_summary(stats: Mapping[str, Callable[[np.ndarray], float]], clusters: np.ndarray, n_boot: int,
                   seed: int = 0, higher_is_better: bool = True) -> dict:
    """{rep: {"value", "ci95"}} for each statistic `stats[rep](row_index)` on all rows and on `n_boot` cluster
    resamples shared by every representation, plus "vs_best_baseline": the paired difference pretrained minus
    the better baseline (its interval excluding zero in the good direction is what "beats" means here)."""
    rows = np.arange(len(clusters))
    out: dict = {}
    reps: dict[str, np.ndarray] = {}
    for name, stat in stats.items():
        reps[name] = bootstrap_replicates(stat, clusters, n_boot, seed)  # same seed: the same resamples
        out[name] = {"value": round(float(stat(rows)), 5),
                     "ci95": [round(v, 5) for v in percentile_interval(reps[name])]}
    baselines = [b for b in BASELINES if b in out]
    if "pretrained" in out and baselines:
        sign = 1 if higher_is_better else -1
        best = max(baselines, key=lambda b: sign * out[b]["value"])
        n = min(len(reps["pretrained"]), len(reps[best]))
        diff = reps["pretrained"][:n] - reps[best][:n]
        value = out["pretrained"]["value"] - out[best]["value"]
        lo, hi = percentile_interval(diff)
        beats = bool(lo > 0) if higher_is_better else bool(hi < 0)
        out["vs_best_baseline"] = {"baseline": best, "difference": round(value, 5),
                                   "ci95": [round(lo, 5), round(hi, 5)], "pretrained_better": beats}
    return out


def probe_task(vectors: SessionVectors, truth: Mapping[str, str], holdout: Sequence[bool], n_boot: int,
               seed: int = 0) -> dict | None:
    """probe_macro_f1 on the held-out visitors' labelled sessions; None without hidden intents."""
    ids = vectors.sessions.session_ids
    labelled = [i for i, sid in enumerate(ids) if sid in truth]
    if not labelled:
        return None
    tr = np.array([i for i in labelled if not holdout[i]])
    te = np.array([i for i in labelled if holdout[i]])
    y_tr = np.array([truth[ids[i]] for i in tr])
    y_te = np.array([truth[ids[i]] for i in te])
    preds = {name: probe_predict(m[tr], y_tr, m[te], seed) for name, m in vectors.matrices.items()}
    visitors = np.array([vectors.sessions.anonymous_ids[i] for i in te])
    stats = {name: (lambda ix, p=p: float(f1_score(y_te[ix], p[ix], average="macro"))) for name, p in preds.items()}
    return {**paired_summary(stats, visitors, n_boot, seed), "n_train": len(tr), "n_test": len(te),
            "n_intents": len(set(y_tr) | set(y_te)),
            "accuracy": {name: round(float(np.mean(p == y_te)), 5) for name, p in preds.items()}}


def conversion_task(data: EvalData, vectors: SessionVectors, n_boot: int, seeds: Sequence[int] = (0, 1, 2)
                    ) -> dict | None:
    """conversion_micro_f1 of linked customers who converted after a linked session (mean over `seeds` of the
    CV predictions); None when there are fewer than 20 such customers."""
    conv = conversion_table(data)
    customers = [c for c, rows in zip(conv.customer, conv.session_rows, strict=True) if rows]
    if len(customers) < 20:
        log.warning("conversion task skipped: %d linked customers converted after a linked session", len(customers))
        return None
    signals = SessionSignals({k: vectors.matrices[k] for k in ("pretrained", "untrained")})
    y, preds = conversion_predictions(data, conv, signals, customers, REPRESENTATIONS, seeds)
    correct = {m: np.mean([y == p for p in per_seed], axis=0) for m, per_seed in preds.items()}
    stats = {m: (lambda ix, c=c: float(c[ix].mean())) for m, c in correct.items()}
    return {**paired_summary(stats, np.array(customers), n_boot, seeds[0]), "n_customers": len(customers),
            "n_products": len(set(y))}


def ranking_task(data: EvalData, vectors: SessionVectors, n_boot: int, seeds: Sequence[int] = (0,),
                 lookback_days: float = 21.0, test_share: float = 0.3) -> dict:
    """ranking_log_loss of the served ranker design (`ranking.KINDS["embedding"]`: decayed signal x tile crosses,
    C and half-life chosen on the validation slice) with each representation as the session signal, on the
    latest `test_share` of impressions; the app-only baseline's log loss beside it."""
    train, test, _ = time_split(impression_table(data, lookback_days), test_share)
    conv = conversion_table(data)
    losses: dict[str, np.ndarray] = {}
    chosen: dict[str, dict] = {}
    for rep in ("baseline", *REPRESENTATIONS):
        signals = SessionSignals({"embedding": vectors.matrices[rep]} if rep != "baseline" else {},
                                 end_ms=data.session_end_ms())
        name = "baseline" if rep == "baseline" else "embedding"
        runs = run_rankers(data, train, test, signals, (name,), tuple(seeds), conv=conv)
        losses[rep] = log_loss_rows(test.clicked, np.mean([r.scores for r in runs], axis=0))
        meta = runs[0].ranker.meta if runs[0].ranker is not None else {}
        chosen[rep] = {"c": meta.get("c"), "half_life_days": meta.get("half_life_days")}
    stats = {rep: (lambda ix, v=v: float(v[ix].mean())) for rep, v in losses.items() if rep != "baseline"}
    base = float(losses["baseline"].mean())
    return {**paired_summary(stats, test.customer, n_boot, seeds[0], higher_is_better=False),
            "app_only_baseline": round(base, 5), "chosen": chosen, "n_test_impressions": len(test),
            "n_test_customers": len(np.unique(test.customer))}


def downstream_report(data_dir: Path, artifacts: Path, n_boot: int = 200, seed: int = 0) -> dict:
    """The three tasks for the three representations on one data directory (tasks whose inputs the directory
    lacks are left out: the probe without truth/, ranking and conversion without impressions/customers)."""
    featurizer, encoder, _ = load_artifacts(artifacts)
    try:
        data: EvalData | None = EvalData.load(data_dir)
    except ValueError as exc:
        log.warning("ranking and conversion tasks skipped: %s", exc)
        data = None
    sessions = data.sessions if data is not None else load_session_table(data_dir)
    holdout = [is_holdout(visitor) for visitor in sessions.anonymous_ids]
    vectors = session_vectors(sessions, [not h for h in holdout], featurizer, encoder, seed)
    out: dict = {}
    probe = probe_task(vectors, load_truth_intents(data_dir), holdout, n_boot, seed)
    if probe is not None:
        out["probe_macro_f1"] = probe
    if data is not None:
        conversion = conversion_task(data, vectors, n_boot)
        if conversion is not None:
            out["conversion_micro_f1"] = conversion
        out["ranking_log_loss"] = ranking_task(data, vectors, n_boot)
    return out
