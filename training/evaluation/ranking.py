"""Tile ranking: a logistic ranker on app-side features (the production baseline), and the same ranker with a
pre-login signal (embedding, LLM labels, distilled labels), trained on earlier impressions and scored on a
later time window.

Why logistic regression: the gateway scores it with a dot product in numpy (`scoring.Ranker`), its click
probabilities are calibrated enough to compare log loss honestly, and with explicit crosses (segment x
product, signal x tile) it expresses what matters here: which tile a customer's need points to. A GBDT
would find the crosses itself but needs a tree runtime at serving time; on ~30k training rows it would
mostly add variance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression

from training.evaluation.features import EvalData, ImpressionTable, SessionSignals
from training.evaluation.metrics import log_loss, recall_at_1, top1_hits
from training.evaluation.scoring import FeatureSpec, Ranker

log = logging.getLogger(__name__)
C_GRID = (0.03, 0.3)
"""Inverse L2 strengths tried per ranker on a validation slice (the last fifth of the training window)."""


def fit_spec(spec: FeatureSpec, table: ImpressionTable, signals: SessionSignals | None) -> FeatureSpec:
    """Set the signal's z-score from the training rows that have a session."""
    if spec.signal_dim == 0:
        return spec
    vec, has = signals.pooled(spec.signal, table.session_rows)
    if not has.any():
        return replace(spec, signal_mean=np.zeros(spec.signal_dim, np.float32),
                       signal_scale=np.ones(spec.signal_dim, np.float32))
    scale = vec[has].std(axis=0)
    return replace(spec, signal_mean=vec[has].mean(axis=0).astype(np.float32),
                   signal_scale=np.where(scale > 1e-6, scale, 1.0).astype(np.float32))


def fit_ranker(table: ImpressionTable, spec: FeatureSpec, signals: SessionSignals | None, c: float,
               seed: int = 0) -> Ranker:
    spec = fit_spec(spec, table, signals)
    x, y = table.features(spec, signals), table.clicked.astype(int)
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x, y)
    return Ranker(spec, model.coef_[0].astype(np.float32), float(model.intercept_[0]),
                  {"c": c, "seed": seed, "n_train_rows": len(y)})


def choose_c(train: ImpressionTable, spec: FeatureSpec, signals: SessionSignals | None,
             grid: tuple[float, ...] = C_GRID) -> float:
    """The C of `grid` with the best validation log loss, training on the first 80% of the window."""
    if len(grid) == 1:
        return grid[0]
    cut = np.quantile(train.ts, 0.8)
    fit_part, val_part = train.subset(train.ts < cut), train.subset(train.ts >= cut)
    losses = {}
    for c in grid:
        ranker = fit_ranker(fit_part, spec, signals, c)
        losses[c] = log_loss(val_part.clicked, ranker.score(val_part.features(ranker.spec, signals)))
    return min(losses, key=losses.get)


@dataclass
class RankerRun:
    """One ranker's scores on the test window for one seed."""

    name: str
    seed: int
    ranker: Ranker
    scores: np.ndarray
    hits: np.ndarray
    """Per test row: 1/0 for a clicked tile ranked first / not first, NaN for unclicked tiles."""


def spec_for(data: EvalData, name: str, signals: SessionSignals | None) -> FeatureSpec:
    if name == "baseline":
        return data.feature_spec()
    return data.feature_spec(name, signals.matrices[name].shape[1])


def run_rankers(data: EvalData, train: ImpressionTable, test: ImpressionTable, signals: SessionSignals,
                names: tuple[str, ...], seeds: tuple[int, ...], subsample: float = 0.9,
                c_grid: tuple[float, ...] = C_GRID) -> list[RankerRun]:
    """Each ranker, per seed trained on a seeded `subsample` of the training customers, scored on `test`."""
    runs = []
    customers = np.unique(train.customer)
    for name in names:
        spec = spec_for(data, name, signals)
        c = choose_c(train, spec, signals, c_grid)
        for seed in seeds:
            rng = np.random.default_rng(seed)
            keep = set(rng.choice(customers, size=round(subsample * len(customers)), replace=False))
            part = train.subset(np.array([x in keep for x in train.customer]))
            ranker = fit_ranker(part, spec, signals, c, seed)
            scores = ranker.score(test.features(ranker.spec, signals))
            runs.append(RankerRun(name, seed, ranker, scores, top1_hits(test.visit, scores, test.clicked,
                                                                        test.position)))
            log.info("ranker %s seed %d (C=%g): macro R@1 %.4f, log loss %.4f", name, seed, c,
                     recall_at_1(test.visit, scores, test.clicked, test.tile, test.position),
                     log_loss(test.clicked, scores))
    return runs


def macro_from_hits(hits: np.ndarray, classes: np.ndarray) -> float:
    """Macro Recall@1 from per-row hits (see metrics): the mean over classes of the mean hit."""
    rel = ~np.isnan(hits)
    if not rel.any():
        return float("nan")
    _, inv = np.unique(classes[rel], return_inverse=True)
    sums, counts = np.bincount(inv, hits[rel]), np.bincount(inv)
    return float(np.mean(sums / counts))
