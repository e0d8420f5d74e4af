"""Tile ranking: a logistic ranker on app-side features (the production baseline), and the same ranker with a
pre-login signal (embedding, LLM labels, distilled labels), trained on earlier impressions and scored on a
later time window; plus diagnostic oracles from the generator's truth (see `oracle.py`).

Why logistic regression: the gateway scores it with a dot product in numpy (`ranker.Ranker`), its click
probabilities are calibrated enough to compare log loss honestly, and with explicit features (segment x
product, no-session x tile, the need of the tile's product) it expresses what matters here: which tile a
customer's need points to. A GBDT would find interactions itself but needs a tree runtime at serving time,
and on ~30k training rows with ~2k clicks it would mostly add variance.

How the signal enters (`RankerKind.block`): "crosses" (served, `embedding`) crosses every z-scored dimension of
the pooled signal with every tile, and with recency those crosses fade with the time since the last session;
"need" (`embedding_need`, and the label signals) turns the pooled signal into the probability that the
customer's need is each tile's product with a small head fitted on training-window conversions (`need.py`), one
weight in the ranker. On the calibrated worlds the crosses win on the validation slice and on test: the need
head sees only the product, not which of a product's tiles, and not how strong the need is (the perfect
session-label oracle through the need head gets about what the embedding does through it).

Recency: a ranker on a session signal pools its sessions with exponential recency weights and gets the
recency features (`ranker.pool_sessions`); its half-life is chosen with its C on the validation slice (the
last fifth of the training window) from `HALF_LIFE_GRID` (None: the plain mean), and the validation log loss
of every half-life is kept in the ranker's meta. `embedding_no_recency` (need head, plain mean: format 2) and
`embedding_crosses` (crosses, plain mean: format 1) are the previous designs, kept for before/after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from sklearn.linear_model import LogisticRegression

from training.core.ranker import FeatureSpec, Ranker
from training.evaluation.features import ConversionTable, EvalData, ImpressionTable, SessionSignals
from training.evaluation.metrics import log_loss, recall_at_1, top1_hits
from training.evaluation.need import cross_fit, fit_need_head, need_examples

log = logging.getLogger(__name__)
C_GRID = (0.03, 0.3)
"""Inverse L2 strengths tried per ranker on a validation slice (the last fifth of the training window)."""
HALF_LIFE_GRID: tuple[float | None, ...] = (1.0, 3.0, 7.0, 14.0, None)
"""Recency half-lives (days) tried with C for the "need" rankers on session signals; None is the plain mean."""


@dataclass(frozen=True)
class RankerKind:
    signal: str
    """"none", a session signal of `SessionSignals.matrices`, or a row signal (the intent oracles)."""
    block: str = "need"
    label: str = ""
    diagnostic: bool = False
    """An oracle: reported apart, never a product result."""
    recency: bool = True
    """"need" on a session signal: recency pooling (half-life from the grid) and the recency features."""


KINDS: dict[str, RankerKind] = {
    "baseline": RankerKind("none", "need", "baseline (app features)"),
    "embedding": RankerKind("embedding", "crosses", "+ embedding x tile crosses, recency-decayed (served)"),
    "embedding_need": RankerKind("embedding", "need", "+ embedding through the need head, recency"),
    "embedding_no_recency": RankerKind("embedding", "need", "+ embedding, mean pooling, no recency (before)",
                                       recency=False),
    "embedding_crosses": RankerKind("embedding", "crosses", "+ embedding, signal x tile crosses, mean pooling "
                                    "(format 1)", recency=False),
    "llm_labels": RankerKind("llm_labels", "need", "+ llm_labels (need head)"),
    "distilled": RankerKind("distilled", "need", "+ distilled (need head)"),
    "oracle_session_intents": RankerKind("oracle_session_intents", "need",
                                         "oracle: perfect session labels (need head)", True),
    "oracle_intent": RankerKind("oracle_intent", "crosses",
                                "oracle: hidden intent + need window, where a session exists", True),
    "oracle_intent_all": RankerKind("oracle_intent_all", "crosses",
                                    "oracle: hidden intent + need window, every customer", True),
    "click_model_no_intent": RankerKind("none", "need", "reference: the generator's click probability without "
                                        "its intent term", True),
    "click_model": RankerKind("none", "need", "oracle: the generator's own click probability", True),
}
FIXED_SCORES = ("click_model_no_intent", "click_model")
"""Not fitted: their test scores are given (`run_rankers(fixed_scores=...)`)."""
RANKERS = tuple(KINDS)


def fit_spec(spec: FeatureSpec, table: ImpressionTable, signals: SessionSignals | None,
             zscore: bool = True) -> FeatureSpec:
    """"crosses": set the signal's z-score from the training rows that have a session (identity without
    `zscore`: the oracles' one-hots, where z-scoring would inflate the rare columns)."""
    if spec.signal_dim == 0 or spec.signal_block != "crosses":
        return spec
    vec, has, _ = signals.rows(spec.signal, table, spec.half_life_days)
    if not zscore or not has.any():
        return replace(spec, signal_mean=np.zeros(spec.signal_dim, np.float32),
                       signal_scale=np.ones(spec.signal_dim, np.float32))
    scale = vec[has].std(axis=0)
    return replace(spec, signal_mean=vec[has].mean(axis=0).astype(np.float32),
                   signal_scale=np.where(scale > 1e-6, scale, 1.0).astype(np.float32))


@dataclass
class FittedRanker:
    """A fitted ranker and, for the customers whose conversions trained its need head, the out-of-fold specs
    the evaluation scores them with (so no customer's own conversion leaks into their need probability, in
    training or at test time). The served artifact is `ranker` (all conversions, no folds)."""

    ranker: Ranker
    oof_specs: dict[str, FeatureSpec]

    def features(self, table: ImpressionTable, signals: SessionSignals | None) -> np.ndarray:
        x = table.features(self.ranker.spec, signals)
        if not self.oof_specs:
            return x
        customers = table.customer.tolist()
        groups: dict[int, tuple[FeatureSpec, list[int]]] = {}
        for i, c in enumerate(customers):
            spec = self.oof_specs.get(c)
            if spec is not None:
                groups.setdefault(id(spec), (spec, []))[1].append(i)
        for spec, rows in groups.values():
            mask = np.zeros(len(table), bool)
            mask[rows] = True
            x[mask] = table.subset(mask).features(spec, signals)
        return x

    def score(self, table: ImpressionTable, signals: SessionSignals | None) -> np.ndarray:
        return self.ranker.score(self.features(table, signals))


def need_head_specs(table: ImpressionTable, spec: FeatureSpec, signals: SessionSignals, conv: ConversionTable | None,
                    seed: int = 0) -> tuple[FeatureSpec, dict[str, FeatureSpec], dict]:
    """"need": the spec with the need head fitted on the conversions of `table`'s customers before its last
    row, and out-of-fold specs for the customers the head learned from."""
    if conv is None:
        raise ValueError(f"the need head of the {spec.signal!r} ranker needs the conversion table")
    ex = need_examples(conv, signals.matrices[spec.signal], set(table.customer.tolist()), int(table.ts.max()) + 1,
                       signals.end_ms, spec.half_life_days)
    head = fit_need_head(ex, seed=seed)
    if head is None:
        log.warning("%s: no need head (%d conversions); the need feature is 0", spec.signal, len(ex.product))
        return spec, {}, {"need_head_conversions": len(ex.product)}
    empty = replace(spec, need_products=(), need_weights=np.zeros((0, 0), np.float32),
                    need_bias=np.zeros(0, np.float32))
    specs: dict[int, FeatureSpec] = {}
    oof = {}
    for customer, fold_head in cross_fit(ex, head.c, seed).items():
        if id(fold_head) not in specs:
            specs[id(fold_head)] = fold_head.apply(spec) if fold_head is not None else empty
        oof[customer] = specs[id(fold_head)]
    return head.apply(spec), oof, {"need_head_c": head.c, "need_head_conversions": head.n_train}


def fit_ranker(table: ImpressionTable, spec: FeatureSpec, signals: SessionSignals | None, c: float,
               seed: int = 0, conv: ConversionTable | None = None, zscore: bool = True) -> FittedRanker:
    spec = fit_spec(spec, table, signals, zscore)
    meta: dict = {}
    oof: dict[str, FeatureSpec] = {}
    if spec.signal_dim and spec.signal_block == "need":
        spec, oof, meta = need_head_specs(table, spec, signals, conv, seed)
    y = table.clicked.astype(int)
    x = FittedRanker(Ranker(spec, np.zeros(0, np.float32), 0.0), oof).features(table, signals)
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(x, y)
    return FittedRanker(Ranker(spec, model.coef_[0].astype(np.float32), float(model.intercept_[0]),
                               {"c": c, "seed": seed, "n_train_rows": len(y), "half_life_days": spec.half_life_days,
                                "recency": spec.recency, **meta}), oof)


def validation_grid(train: ImpressionTable, spec: FeatureSpec, signals: SessionSignals | None,
                    grid: tuple[float, ...] = C_GRID, half_lives: tuple[float | None, ...] = (None,),
                    conv: ConversionTable | None = None, zscore: bool = True
                    ) -> dict[tuple[float, float | None], float]:
    """Log loss on the validation slice (the last fifth of the training window, by time) per (C, half-life) of
    `grid` x `half_lives`, fitting on the first four fifths; empty when there is only one pair (nothing to
    choose)."""
    if len(grid) * len(half_lives) == 1:
        return {}
    cut = np.quantile(train.ts, 0.8)
    fit_part, val_part = train.subset(train.ts < cut), train.subset(train.ts >= cut)
    losses = {}
    for half_life in half_lives:
        spec_h = replace(spec, half_life_days=half_life)
        for c in grid:
            fitted = fit_ranker(fit_part, spec_h, signals, c, conv=conv, zscore=zscore)
            losses[(c, half_life)] = log_loss(val_part.clicked, fitted.score(val_part, signals))
    return losses


def validation_losses(train: ImpressionTable, spec: FeatureSpec, signals: SessionSignals | None,
                      grid: tuple[float, ...] = C_GRID, conv: ConversionTable | None = None,
                      zscore: bool = True) -> dict[float, float]:
    """Log loss on the validation slice per C of `grid` at the spec's half-life (`validation_grid`); empty for
    a single-value grid."""
    losses = validation_grid(train, spec, signals, grid, (spec.half_life_days,), conv, zscore)
    return {c: v for (c, _), v in losses.items()}


def half_life_name(half_life: float | None) -> str:
    return "inf" if half_life is None else f"{half_life:g}"


def choose_c(train: ImpressionTable, spec: FeatureSpec, signals: SessionSignals | None,
             grid: tuple[float, ...] = C_GRID, conv: ConversionTable | None = None, zscore: bool = True) -> float:
    """The C of `grid` with the best validation log loss (`validation_losses`)."""
    losses = validation_losses(train, spec, signals, grid, conv, zscore)
    return min(losses, key=losses.get) if losses else grid[0]


@dataclass
class RankerRun:
    """One ranker's scores on the test window for one seed."""

    name: str
    seed: int
    ranker: Ranker | None
    """None for the click model (no fitted ranker)."""
    scores: np.ndarray
    hits: np.ndarray
    """Per test row: 1/0 for a clicked tile ranked first / not first, NaN for unclicked tiles."""


def spec_for(data: EvalData, name: str, signals: SessionSignals | None) -> FeatureSpec:
    kind = KINDS[name]
    if kind.signal == "none":
        return data.feature_spec()
    return data.feature_spec(kind.signal, signals.dim(kind.signal), kind.block,
                             recency=uses_recency(kind, signals))


def uses_recency(kind: RankerKind, signals: SessionSignals | None) -> bool:
    """Recency pooling and features: "need" rankers on a per-session signal (not the row-given oracles)."""
    return (kind.recency and signals is not None and kind.signal in signals.matrices
            and signals.end_ms is not None)


def run_rankers(data: EvalData, train: ImpressionTable, test: ImpressionTable, signals: SessionSignals,
                names: tuple[str, ...], seeds: tuple[int, ...], subsample: float = 0.9,
                c_grid: tuple[float, ...] = C_GRID, conv: ConversionTable | None = None,
                fixed_scores: dict[str, np.ndarray] | None = None,
                half_life_grid: tuple[float | None, ...] = HALF_LIFE_GRID) -> list[RankerRun]:
    """Each ranker, per seed trained on a seeded `subsample` of the training customers, scored on `test`.
    The `FIXED_SCORES` rankers take their test scores from `fixed_scores` (the same for every seed). C (and,
    for the recency rankers, the half-life from `half_life_grid`) is chosen on the validation slice."""
    runs = []
    customers = np.unique(train.customer)
    for name in names:
        if name in FIXED_SCORES:
            if name not in (fixed_scores or {}):
                raise ValueError(f"the {name} ranker needs its test scores in fixed_scores")
            scores = fixed_scores[name]
            hits = top1_hits(test.visit, scores, test.clicked, test.position)
            runs += [RankerRun(name, seed, None, scores, hits) for seed in seeds]
            continue
        spec, zscore = spec_for(data, name, signals), not KINDS[name].diagnostic
        half_lives = tuple(half_life_grid) if spec.recency else (None,)
        grid = validation_grid(train, spec, signals, c_grid, half_lives, conv, zscore)
        c, half_life = min(grid, key=grid.get) if grid else (c_grid[0], half_lives[0])
        spec = replace(spec, half_life_days=half_life)
        val = {k: v for (k, h), v in grid.items() if h == half_life}
        by_half_life = {half_life_name(h): min(v for (_, h2), v in grid.items() if h2 == h)
                        for h in half_lives} if grid and spec.recency else {}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            keep = set(rng.choice(customers, size=round(subsample * len(customers)), replace=False))
            part = train.subset(np.array([x in keep for x in train.customer]))
            fitted = fit_ranker(part, spec, signals, c, seed, conv, zscore)
            fitted.ranker.meta["validation_log_loss"] = {str(k): round(v, 5) for k, v in val.items()}
            if by_half_life:
                fitted.ranker.meta["validation_log_loss_by_half_life"] = {k: round(v, 5)
                                                                          for k, v in by_half_life.items()}
            scores = fitted.score(test, signals)
            runs.append(RankerRun(name, seed, fitted.ranker, scores, top1_hits(test.visit, scores, test.clicked,
                                                                        test.position)))
            log.info("ranker %s seed %d (C=%g, half-life %s): macro R@1 %.4f, log loss %.4f", name, seed, c,
                     half_life_name(half_life),
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
