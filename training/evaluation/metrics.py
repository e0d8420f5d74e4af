"""Ranking and classification metrics of the evaluation, defined once and tested on hand-computed cases.

Macro Recall@1 (tile ranking). An app homepage visit (one customer, one timestamp) shows a few tiles; the
ranker orders them by score. Every clicked (visit, tile) pair is one relevant item whose class is the tile.
Its hit is 1 when that tile is the visit's top-ranked tile, else 0 (ties broken by the shown position, so a
ranker that scores all tiles alike keeps the app's order). Recall@1 of a tile is the mean hit over its
relevant items; macro Recall@1 is the unweighted mean over the tiles that have at least one relevant item.
With one click per visit this is exactly the macro recall of "predicted class = top-ranked tile". Visits
without a click carry no relevant item and do not count. Micro Recall@1 (the share of all relevant items
that are hits) is reported beside it.

Log loss is the mean binary cross-entropy of the predicted click probability over every shown tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

EPS = 1e-12


def top1_hits(groups: np.ndarray, scores: np.ndarray, clicked: np.ndarray, positions: np.ndarray | None = None
              ) -> np.ndarray:
    """Per row: 1.0 if the row is clicked and ranked first in its group, 0.0 if clicked and not first, NaN if not
    clicked. Ties are broken by the smaller `positions` value (the app's own order), then by row order."""
    groups, scores, clicked = np.asarray(groups), np.asarray(scores, dtype=float), np.asarray(clicked, dtype=bool)
    if not (len(groups) == len(scores) == len(clicked)):
        raise ValueError(f"groups, scores and clicked differ in length: {len(groups)}, {len(scores)}, {len(clicked)}")
    positions = np.arange(len(scores)) if positions is None else np.asarray(positions)
    order = np.lexsort((np.arange(len(scores)), positions, -scores, groups))
    first = np.ones(len(order), dtype=bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    is_top = np.zeros(len(scores), dtype=bool)
    is_top[order[first]] = True
    return np.where(clicked, is_top.astype(float), np.nan)


def recall_at_1(groups: np.ndarray, scores: np.ndarray, clicked: np.ndarray, classes: np.ndarray,
                positions: np.ndarray | None = None, average: str = "macro") -> float:
    """Recall@1 as defined in the module docstring; `classes` is each row's tile id. average: macro | micro."""
    hits = top1_hits(groups, scores, clicked, positions)
    rel = ~np.isnan(hits)
    if not rel.any():
        return float("nan")
    if average == "micro":
        return float(hits[rel].mean())
    if average != "macro":
        raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
    cls = np.asarray(classes)[rel]
    return float(np.mean([hits[rel][cls == c].mean() for c in np.unique(cls)]))


def log_loss_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each row (natural log), probabilities clipped to [1e-12, 1 - 1e-12]: what paired
    bootstraps resample."""
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    if len(y) != len(p):
        raise ValueError(f"need equal lengths, got {len(y)} and {len(p)}")
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log); probabilities are clipped to [1e-12, 1 - 1e-12]."""
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"need equal, non-zero lengths, got {len(y)} and {len(p)}")
    return float(np.mean(log_loss_rows(y, p)))


def micro_f1(y_true: Sequence, y_pred: Sequence) -> float:
    """Micro F1 of single-label multi-class predictions (equals accuracy when every row gets one label)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"need equal, non-zero lengths, got {len(y_true)} and {len(y_pred)}")
    return float(np.mean(y_true == y_pred))


def rel_change_pct(value: float, baseline: float) -> float:
    """100 * (value - baseline) / |baseline|: the paper's relative change against the baseline."""
    return float(100.0 * (value - baseline) / abs(baseline)) if baseline else float("nan")


def bootstrap_replicates(stat: Callable[[np.ndarray], float], clusters: np.ndarray, n_boot: int = 200,
                         seed: int = 0) -> np.ndarray:
    """`stat(row_index)` over `n_boot` resamples that draw whole clusters (e.g. customers) with replacement, so
    rows of one cluster are never treated as independent. Resamples where the statistic is NaN are dropped."""
    clusters = np.asarray(clusters)
    uniq, inverse = np.unique(clusters, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    members = [order[starts[k]: starts[k + 1]] for k in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), size=len(uniq))
        value = stat(np.concatenate([members[k] for k in pick]))
        if not np.isnan(value):
            values.append(value)
    return np.asarray(values, dtype=float)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval; (nan, nan) without replicates."""
    if len(replicates) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(replicates, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(stat: Callable[[np.ndarray], float], clusters: np.ndarray, n_boot: int = 200, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(point on all rows, low, high) with the percentile interval of `bootstrap_replicates`."""
    point = float(stat(np.arange(len(clusters))))
    return (point, *percentile_interval(bootstrap_replicates(stat, clusters, n_boot, seed), level))


def tiles_phrase(tiles_per_visit: dict | None) -> str:
    """"shows 6 tiles" (the mode), "shows 4-6 tiles (usually 6)" when visits differ; from the impressions."""
    if not tiles_per_visit or tiles_per_visit.get("mode") is None:
        return "shows a few tiles"
    lo, hi, mode = tiles_per_visit["min"], tiles_per_visit["max"], tiles_per_visit["mode"]
    if lo == hi:
        return f"shows {mode} tile" + ("s" if mode != 1 else "")
    return f"shows {lo}-{hi} tiles (usually {mode}, median {tiles_per_visit['median']:g})"


def metric_definition_md(tiles_per_visit: dict | None = None, n_boot: int = 200, capture: bool = True) -> str:
    """The definitions section of eval.md, with the data's own tiles per visit (`evaluate.tiles_per_visit`)."""
    capture_md = ("- **Capture** (synthetic worlds only) = the embedding ranker's relative change / the generator's "
                  "own click\n  model's relative change, on all test impressions: the share of the gain a perfect "
                  "intent signal gives\n  that the ranker gets.\n") if capture else ""
    return f"""## Definitions

- **Macro Recall@1.** A test app visit {tiles_phrase(tiles_per_visit)} (counted from the impressions); each
  ranker orders them by predicted click probability (ties keep the app's position order). Every clicked (visit,
  tile) pair is a relevant item of class *tile*; it is a hit when that tile is ranked first in its visit.
  Recall@1 of a tile = hits / relevant items of that tile; **macro Recall@1 = the unweighted mean over tiles**
  with at least one click. Visits without a click do not count. Micro Recall@1 (hits / all relevant items) is
  shown beside it.
- **Log loss**: mean binary cross-entropy of the click probability over every shown tile of the test window.
- **Relative change** = 100 x (ranker - baseline) / baseline; the baseline is the same logistic ranker on app
  features only (segment, tenure, products held, tile-product-held, position, tile, segment x product).
- **95% intervals**: percentile bootstrap of the paired relative change, resampling customers (all their
  visits) with replacement, {n_boot} resamples per seed, pooled over the seeds (so they include training-sample
  variation across seeds as well as test sampling). Each seed trains on a seeded 90% of training customers.
{capture_md}- **Conversion micro F1**: one predicted product per customer (accuracy), 5-fold stratified CV, mean over
  seeds.
"""
