"""The need head: which product a customer's pre-login sessions point to, learned from app-side conversions.

The served ranker's signal block (`ranker.FeatureSpec`, layout "need") is one feature per tile: the probability
that the customer's need is the tile's product. That probability comes from a multinomial logistic regression
on the pooled session signal, fitted on the *conversions* of the ranker's own training customers whose first
conversion falls before the end of the training rows (and whose linked sessions ended before it, as in the
conversion task). Conversions are outcomes the bank already records; they are another set of labels than the
clicks the ranker learns from, so the 64-wide embedding meets ~300 labelled customers through ~650 weights,
and the click model then spends one weight on the result instead of 64 x 13 crosses.

Training rows of the customers whose conversion trained the head would see an in-sample (too confident)
need probability, so those rows get an out-of-fold one (`cross_fit`), as in stacking. The head's L2 strength
is chosen by cross-validated log loss on its own training conversions, inside the training window.

Each customer's sessions are pooled with the ranker's recency weights (`ranker.pool_sessions` at the spec's
half-life), relative to the conversion time, as the ranker pools them relative to each impression.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from training.core.ranker import FeatureSpec, plain_mean, pool_sessions
from training.evaluation.features import ConversionTable

log = logging.getLogger(__name__)
HEAD_C_GRID = (0.03, 0.1, 0.3, 1.0)
FOLDS = 5


@dataclass(frozen=True)
class NeedExamples:
    """Pooled signal and converted product of the customers a need head may learn from."""

    customer: np.ndarray
    x: np.ndarray
    product: np.ndarray

    def subset(self, mask: np.ndarray) -> NeedExamples:
        return NeedExamples(self.customer[mask], self.x[mask], self.product[mask])


def need_examples(conv: ConversionTable, signal: np.ndarray, customers: Sequence[str] | set[str],
                  before_ts: int, end_ms: np.ndarray | None = None, half_life_days: float | None = None
                  ) -> NeedExamples:
    """The customers of `customers` whose first conversion is before `before_ts`, with `signal` pooled over
    their linked sessions that ended before it (`pool_sessions` at `half_life_days`, ages measured from the
    conversion; rows of `signal` that are NaN are skipped). `end_ms` (each session's end, aligned with the
    rows of `signal`) is needed unless the half-life is None/inf (the plain mean)."""
    if end_ms is None and not plain_mean(half_life_days):
        raise ValueError("recency pooling of the need examples needs the sessions' end times (end_ms)")
    keep = set(customers)
    cust, xs, ys = [], [], []
    for c, ts, product, rows in zip(conv.customer, conv.ts, conv.product, conv.session_rows, strict=True):
        if c not in keep or ts >= before_ts or not rows:
            continue
        ix = list(rows)
        ends = end_ms[ix] if end_ms is not None else np.zeros(len(ix), np.int64)
        pooled = pool_sessions(signal[ix], ends, int(ts), half_life_days)
        if pooled.has_session:
            cust.append(c)
            xs.append(pooled.signal)
            ys.append(product)
    dim = signal.shape[1]
    return NeedExamples(np.array(cust, dtype=object), np.array(xs, np.float32).reshape(-1, dim), np.array(ys))


@dataclass(frozen=True)
class NeedHead:
    products: tuple[str, ...]
    weights: np.ndarray
    """[P, D] on the raw pooled signal (the standardization is folded in)."""
    bias: np.ndarray
    c: float
    n_train: int

    def apply(self, spec: FeatureSpec) -> FeatureSpec:
        return replace(spec, need_products=self.products, need_weights=self.weights, need_bias=self.bias)


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit((x - mean) / scale, y)
    w = model.coef_ / scale
    b = model.intercept_ - w @ mean
    if len(model.classes_) == 2:  # sklearn's binary form: one row for the second class
        w, b = np.vstack([np.zeros_like(w[0]), w[0]]), np.array([0.0, b[0]])
    return tuple(str(v) for v in model.classes_), w.astype(np.float32), b.astype(np.float32)


def _choose_c(ex: NeedExamples, grid: Sequence[float], seed: int) -> float:
    """The C of `grid` with the best 5-fold cross-validated log loss on the head's own examples."""
    if len(grid) == 1:
        return grid[0]
    counts = Counter(ex.product.tolist())
    n_splits = min(FOLDS, max(counts.values()))
    if n_splits < 2:
        return grid[0]
    # products rarer than the fold count share one stratum (sklearn only warns about a small one)
    strat = np.array([p if counts[p] >= n_splits else "__rare__" for p in ex.product.tolist()])
    splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(ex.x, strat))
    losses = {}
    for c in grid:
        total = 0.0
        for tr, te in splits:
            if len(np.unique(ex.product[tr])) < 2:
                continue
            products, w, b = _fit(ex.x[tr], ex.product[tr], c, seed)
            p = _probs(ex.x[te], w, b)
            index = {q: i for i, q in enumerate(products)}
            got = np.array([p[k, index[q]] if q in index else 0.0 for k, q in enumerate(ex.product[te])])
            total -= float(np.log(np.clip(got, 1e-6, 1)).sum())
        losses[c] = total
    return min(losses, key=losses.get)


def _probs(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    logits = x @ w.T + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def fit_need_head(ex: NeedExamples, grid: Sequence[float] = HEAD_C_GRID, seed: int = 0,
                  c: float | None = None) -> NeedHead | None:
    """The need head on `ex`; None with fewer than two products (the need feature is then always 0)."""
    if len(ex.product) < 2 or len(np.unique(ex.product)) < 2:
        return None
    c = _choose_c(ex, grid, seed) if c is None else c
    products, w, b = _fit(ex.x, ex.product, c, seed)
    return NeedHead(products, w, b, c, len(ex.product))


def cross_fit(ex: NeedExamples, c: float, seed: int = 0, folds: int = FOLDS) -> dict[str, NeedHead | None]:
    """customer -> a head fitted without that customer's fold (for the customers of `ex` only)."""
    uniq = np.unique(ex.customer.astype(str))
    fold_of = dict(zip(np.random.default_rng(seed).permutation(uniq), np.arange(len(uniq)) % folds, strict=True))
    heads: dict[str, NeedHead | None] = {}
    for f in range(min(folds, len(uniq))):
        held = np.array([fold_of[str(x)] == f for x in ex.customer])
        head = fit_need_head(ex.subset(~held), seed=seed, c=c)
        heads.update({str(x): head for x in ex.customer[held]})
    return heads
