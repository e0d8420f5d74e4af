"""One dataset's evaluation: tile ranking on a later time window, conversion prediction, with seeds and CIs."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.evaluation.conversion import conversion_predictions
from training.evaluation.features import EvalData, ImpressionTable, conversion_table, impression_table, time_split
from training.evaluation.metrics import (
    bootstrap_replicates,
    log_loss,
    log_loss_rows,
    micro_f1,
    percentile_interval,
    rel_change_pct,
)
from training.evaluation.oracle import ORACLE_SIGNALS, Truth
from training.evaluation.ranking import (
    C_GRID,
    HALF_LIFE_GRID,
    KINDS,
    RANKERS,
    RankerRun,
    half_life_name,
    macro_from_hits,
    run_rankers,
)
from training.evaluation.signals import llm_sample, session_signals
from training.sessions import data_world

log = logging.getLogger(__name__)
MAIN_RANKERS = ("baseline", "embedding", "embedding_need", "embedding_no_recency", "embedding_crosses", "distilled")
"""On every population; `embedding_no_recency` (plain mean, no recency features: format 2) and
`embedding_crosses` (format 1) are the previous served designs, kept for before/after."""
LLM_SAMPLE_RANKERS = ("baseline", "embedding_need", "llm_labels", "distilled")
"""The need design for all three signals: on ~150 customers' impressions, D x T crosses would only overfit."""
ORACLE_RANKERS = ("oracle_session_intents", "oracle_intent", "oracle_intent_all", "click_model_no_intent",
                  "click_model")
"""Diagnostics from truth/ (synthetic data only)."""
CONVERSION_METHODS = ("embedding", "llm_labels", "distilled", "bag_of_pages")


@dataclass(frozen=True)
class EvalConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    test_share: float = 0.3
    """The latest share of impressions (by time) is the test window."""
    lookback_days: float = 21.0
    llm_customers: int = 150
    """LLM-labelled customers (all their linked sessions); 0 skips LLM labels."""
    n_boot: int = 200
    """Bootstrap resamples per seed (customers drawn with replacement); intervals pool all seeds."""
    subsample: float = 0.9
    """Share of training customers each seed's ranker is trained on."""
    c_grid: tuple[float, ...] = C_GRID
    """Ranker L2 strengths tried on a validation slice of the training window (one value: no search)."""
    half_life_grid: tuple[float | None, ...] = HALF_LIFE_GRID
    """Recency half-lives (days; None: the plain mean) tried with C for the recency rankers."""
    oracles: bool = True
    """The diagnostic oracles where the data has the generator's truth/."""

    def __post_init__(self) -> None:
        if len(self.seeds) < 1 or not 0 < self.test_share < 1 or self.lookback_days <= 0:
            raise ValueError(f"bad evaluation config: {self}")


@dataclass
class DatasetResult:
    summary: dict
    test: ImpressionTable
    runs: list[RankerRun]
    head_labels: tuple[str, ...]
    distilled_test: np.ndarray
    """Mean distilled probabilities per test row ([N, K]; zeros without a session) for the confusion plot."""


def _ranking_population(test: ImpressionTable, runs: list[RankerRun], mask: np.ndarray, cfg: EvalConfig) -> dict:
    y = test.clicked[mask].astype(float)
    cls, clusters = test.tile[mask], test.customer[mask]
    by = {(r.name, r.seed): r for r in runs}
    names = sorted({r.name for r in runs}, key=RANKERS.index)
    out: dict = {"n_rows": int(mask.sum()), "n_visits": len(np.unique(test.visit[mask])),
                 "n_clicks": int(y.sum()), "n_customers": len(np.unique(clusters)), "rankers": {}}
    for name in names:
        per_seed, gain_reps, ll_reps = [], [], []
        for seed in cfg.seeds:
            run, base = by[(name, seed)], by[("baseline", seed)]
            ll_row, llb_row = log_loss_rows(y, run.scores[mask]), log_loss_rows(y, base.scores[mask])
            h, hb = run.hits[mask], base.hits[mask]
            rel = ~np.isnan(h)
            per_seed.append({"seed": seed, "macro_recall_at_1": macro_from_hits(h, cls),
                             "micro_recall_at_1": float(np.nanmean(h)) if rel.any() else float("nan"),
                             "log_loss": float(ll_row.mean())})
            if name != "baseline":
                gain_reps.append(bootstrap_replicates(
                    lambda ix, h=h, hb=hb: rel_change_pct(macro_from_hits(h[ix], cls[ix]),
                                                          macro_from_hits(hb[ix], cls[ix])),
                    clusters, cfg.n_boot, seed))
                ll_reps.append(bootstrap_replicates(
                    lambda ix, a=ll_row, b=llb_row: rel_change_pct(a[ix].mean(), b[ix].mean()),
                    clusters, cfg.n_boot, seed))
        mean = {k: float(np.mean([s[k] for s in per_seed])) for k in ("macro_recall_at_1", "micro_recall_at_1",
                                                                      "log_loss")}
        fitted = by[(name, cfg.seeds[0])].ranker
        entry = {"label": KINDS[name].label, "diagnostic": KINDS[name].diagnostic,
                 **({"c": fitted.meta.get("c"), "validation_log_loss": fitted.meta.get("validation_log_loss")}
                    if fitted is not None else {}),
                 **({"half_life_days": half_life_name(fitted.spec.half_life_days),
                     "validation_log_loss_by_half_life": fitted.meta.get("validation_log_loss_by_half_life")}
                    if fitted is not None and fitted.spec.recency else {}),
                 **{k: round(v, 5) for k, v in mean.items()},
                 "per_seed": [{k: round(v, 5) if isinstance(v, float) else v for k, v in s.items()}
                              for s in per_seed]}
        if name != "baseline":
            base_mean = {k: np.mean([s[k] for s in out["rankers"]["baseline"]["per_seed"]])
                         for k in ("macro_recall_at_1", "log_loss")}
            per_gain = [rel_change_pct(s["macro_recall_at_1"], b["macro_recall_at_1"])
                        for s, b in zip(per_seed, out["rankers"]["baseline"]["per_seed"], strict=True)]
            per_ll = [rel_change_pct(s["log_loss"], b["log_loss"])
                      for s, b in zip(per_seed, out["rankers"]["baseline"]["per_seed"], strict=True)]
            entry.update({
                "recall_at_1_rel_gain_pct": round(rel_change_pct(mean["macro_recall_at_1"],
                                                                 base_mean["macro_recall_at_1"]), 2),
                "recall_at_1_rel_gain_ci95": [round(v, 2) for v in percentile_interval(np.concatenate(gain_reps))],
                "recall_at_1_rel_gain_seed_sd": round(float(np.std(per_gain)), 2),
                "log_loss_rel_change_pct": round(rel_change_pct(mean["log_loss"], base_mean["log_loss"]), 2),
                "log_loss_rel_change_ci95": [round(v, 2) for v in percentile_interval(np.concatenate(ll_reps))],
                "log_loss_rel_change_seed_sd": round(float(np.std(per_ll)), 2),
            })
        out["rankers"][name] = entry
    return out


def _conversion_population(y: np.ndarray, preds: dict[str, list[np.ndarray]], customers: list[str],
                           cfg: EvalConfig) -> dict:
    out: dict = {"n_customers": len(y), "n_products": len(set(y)),
                 "majority_class_micro_f1": round(max(np.mean(y == v) for v in set(y)), 4) if len(y) else None,
                 "micro_f1": {}, "micro_f1_ci95": {}, "micro_f1_per_seed": {}}
    clusters = np.array(customers)
    for method, per_seed in preds.items():
        scores = [micro_f1(y, p) for p in per_seed]
        reps = np.concatenate([bootstrap_replicates(lambda ix, p=p: float(np.mean(y[ix] == p[ix])), clusters,
                                                    cfg.n_boot, s) for p, s in zip(per_seed, cfg.seeds, strict=True)])
        out["micro_f1"][method] = round(float(np.mean(scores)), 4)
        out["micro_f1_ci95"][method] = [round(v, 4) for v in percentile_interval(reps)]
        out["micro_f1_per_seed"][method] = [round(v, 4) for v in scores]
    f1 = out["micro_f1"]
    if "embedding" in f1 and "llm_labels" in f1:
        out["embedding_vs_llm_labels_rel_pct"] = round(rel_change_pct(f1["embedding"], f1["llm_labels"]), 2)
    if "distilled" in f1 and "llm_labels" in f1:
        out["distilled_vs_llm_labels_rel_pct"] = round(rel_change_pct(f1["distilled"], f1["llm_labels"]), 2)
    return out


def _baseline_sensitivity(data, train: ImpressionTable, test: ImpressionTable, cfg: EvalConfig) -> dict:
    """The baseline's test metrics at every C of the grid (mean of seeds): how much of a gain is regularization."""
    out = {}
    for c in sorted(set(cfg.c_grid) | {0.03, 0.3}):
        runs = run_rankers(data, train, test, None, ("baseline",), cfg.seeds, cfg.subsample, (c,))
        r1 = np.mean([macro_from_hits(r.hits, test.tile) for r in runs])
        out[str(c)] = {"macro_recall_at_1": round(float(r1), 5),
                       "log_loss": round(float(np.mean([log_loss(test.clicked, r.scores) for r in runs])), 5)}
    return out


def tiles_per_visit(visit: np.ndarray) -> dict:
    """Tiles shown per app visit (one customer, one timestamp), from the impressions' visit ids."""
    if len(visit) == 0:
        return {"median": None, "mode": None, "min": None, "max": None}
    counts = np.unique(visit, return_counts=True)[1]
    mode = Counter(counts.tolist()).most_common(1)[0][0]
    return {"median": float(np.median(counts)), "mode": int(mode), "min": int(counts.min()),
            "max": int(counts.max())}


def evaluate_dataset(data_dir: Path, artifacts: Path, head_path: Path, taxonomy_path: Path | None, cfg: EvalConfig,
                     llm_client=None, progress: bool = False) -> DatasetResult:
    data = EvalData.load(data_dir)
    table = impression_table(data, cfg.lookback_days)
    conv = conversion_table(data)
    sample = llm_sample(conv, cfg.llm_customers, seed=0) if cfg.llm_customers and taxonomy_path else []
    signals = session_signals(data, artifacts, head_path, taxonomy_path, sample, llm_client, progress)
    truth = Truth.load(data_dir) if cfg.oracles else None
    if truth is not None:
        signals.matrices["oracle_session_intents"] = truth.session_matrix(data)
        for name in ORACLE_SIGNALS:
            signals.row_signals[name] = lambda tb, name=name: truth.row_signal(name, tb)
            signals.row_dims[name] = 2 * len(truth.intents)
    train, test, cutoff = time_split(table, cfg.test_share)
    log.info("%s: %d training and %d test impressions (cut-off %s)", data_dir, len(train), len(test),
             datetime.fromtimestamp(cutoff / 1000, UTC).isoformat())

    main_rankers = MAIN_RANKERS + (ORACLE_RANKERS if truth is not None else ())
    fixed = {"click_model": truth.click_probability(data, test),
             "click_model_no_intent": truth.click_probability(data, test, intent=False)} if truth else None
    runs = run_rankers(data, train, test, signals, main_rankers, cfg.seeds, cfg.subsample, cfg.c_grid, conv, fixed,
                       cfg.half_life_grid)
    everyone = np.ones(len(test), bool)
    ever_linked = np.array([c in data.by_customer for c in test.customer])
    ranking = {"all": _ranking_population(test, runs, everyone, cfg),
               "with_session": _ranking_population(test, runs, test.linked, cfg),
               "no_session": _ranking_population(test, runs, ~test.linked, cfg),
               "linked_customers": _ranking_population(test, runs, ever_linked, cfg)}
    if sample:
        in_sample = set(sample)
        s_train = train.subset(np.array([c in in_sample for c in train.customer]))
        s_test_mask = np.array([c in in_sample for c in test.customer])
        s_runs = run_rankers(data, s_train, test.subset(s_test_mask), signals, LLM_SAMPLE_RANKERS, cfg.seeds,
                             cfg.subsample, cfg.c_grid, conv, half_life_grid=cfg.half_life_grid)
        ranking["llm_sample"] = _ranking_population(test.subset(s_test_mask), s_runs,
                                                    np.ones(int(s_test_mask.sum()), bool), cfg)
        ranking["llm_sample"]["note"] = ("all four rankers trained on the sampled customers' training impressions "
                                         "only and scored on their test impressions")

    ranking["baseline_c_sensitivity"] = _baseline_sensitivity(data, train, test, cfg)

    linked_conv = [c for c, rows in zip(conv.customer, conv.session_rows, strict=True) if rows]
    methods = [m for m in CONVERSION_METHODS if m != "llm_labels"]
    y, preds = conversion_predictions(data, conv, signals, linked_conv, methods, cfg.seeds)
    conversion = {"linked": _conversion_population(y, preds, linked_conv, cfg)}
    if sample:
        y, preds = conversion_predictions(data, conv, signals, sample, CONVERSION_METHODS, cfg.seeds)
        conversion["llm_sample"] = _conversion_population(y, preds, sample, cfg)
    llm = signals.matrices.get("llm_labels")
    emb_run = next((r for r in runs if r.name == "embedding"), None)
    summary = {
        "data": str(data_dir), "artifacts": str(artifacts), "head": str(head_path),
        "world": {**data_world(data_dir), "oracles": truth is not None,
                  "tiles_per_visit": tiles_per_visit(test.visit), "n_tiles": len(data.tiles)},
        "taxonomy": str(taxonomy_path) if taxonomy_path else None,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "split": {"cutoff": datetime.fromtimestamp(cutoff / 1000, UTC).isoformat(),
                  "n_train_impressions": len(train), "n_test_impressions": len(test),
                  "test_share_with_session": round(float(test.linked.mean()), 4),
                  "n_customers": len(data.customers), "n_linked_customers": len(data.by_customer)},
        "llm_sample": {"customers": len(sample),
                       "sessions_labelled": int((~np.isnan(llm[:, 0])).sum()) if llm is not None else 0},
        "tile_ranking": ranking,
        "click_model_reach": {"train": truth.need_stats(data, train), "test": truth.need_stats(data, test)}
        if truth is not None else None,
        "conversion": conversion,
        "recency": {"half_life_grid": [half_life_name(h) for h in cfg.half_life_grid],
                    "chosen_half_life_days": {r.name: half_life_name(r.ranker.spec.half_life_days) for r in runs
                                              if r.seed == cfg.seeds[0] and r.ranker is not None
                                              and r.ranker.spec.recency},
                    "embedding_validation_log_loss_by_half_life":
                        emb_run.ranker.meta.get("validation_log_loss_by_half_life") if emb_run else None},
    }
    dist, has = signals.pooled("distilled", test.session_rows)
    return DatasetResult(summary, test, runs, signals.names["distilled"], np.where(has[:, None], dist, 0))
