"""reports/eval.json, reports/eval.md (the paper's tables: relative change against the baseline) and PNG plots.

Every sentence of eval.md that describes the data is taken from it: the world's name (truth/generator_config.json,
else the directory's name), the tiles shown per app visit (the impressions), the counts; the diagnostic oracle
sections and the capture ratios exist only where the data has the generator's truth/.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from training.evaluation.evaluate import DatasetResult
from training.evaluation.metrics import metric_definition_md, rel_change_pct, tiles_phrase
from training.evaluation.ranking import KINDS

CAPTURE_TARGETS = {"bank": 0.60, "credit_union": 0.50}
"""Minimum capture (ranker's relative change / the click model's) in log loss and macro Recall@1, by world; the
other worlds (`weak`) are reported without a target."""
CAPTURE_ORACLE = "click_model"
CAPTURE_RANKER = "embedding"
CONVERSION_VS_LLM_TARGET = 4.3
TARGETS = {"capture": CAPTURE_TARGETS, "recall_at_1_ci95_excludes_zero": True,
           "embedding_vs_llm_labels_rel_pct": CONVERSION_VS_LLM_TARGET, "embedding_above_bag_of_pages": True}
PAPER = {"recall_at_1_rel_gain_pct": 1.88, "log_loss_rel_change_pct": -13.38, "embedding_vs_llm_labels_rel_pct": 4.3}


def describe_data(summary: dict) -> str:
    """"the synthetic `bank` world (`data/synthetic`)" or "`mybank` (`/logs/mybank`)"."""
    world = summary.get("world") or {}
    name = world.get("name") or Path(summary["data"]).name
    if world.get("synthetic"):
        return f"the synthetic `{name}` world (`{summary['data']}`)"
    return f"`{name}` (`{summary['data']}`)"


def _ratio(ranker: float | None, oracle: float | None, improves) -> float | None:
    if ranker is None or oracle is None or not np.isfinite(ranker) or not np.isfinite(oracle) or not improves(oracle):
        return None
    return round(ranker / oracle, 3)


def conversion_check(summary: dict) -> dict:
    """Embedding vs LLM labels (on the LLM sample, where one exists) and vs bag-of-pages (linked customers)."""
    conv = summary["conversion"]
    sample = conv.get("llm_sample")
    vs_llm = sample.get("embedding_vs_llm_labels_rel_pct") if sample else None
    f1 = conv["linked"].get("micro_f1", {})
    emb, bag = f1.get("embedding"), f1.get("bag_of_pages")
    return {
        "embedding_vs_llm_labels_rel_pct": vs_llm,
        "target_vs_llm_labels_rel_pct": CONVERSION_VS_LLM_TARGET,
        "met_vs_llm_labels": None if vs_llm is None else bool(vs_llm >= CONVERSION_VS_LLM_TARGET),
        "llm_sample_customers": sample["n_customers"] if sample else 0,
        **({} if sample else {"reason_vs_llm_labels": "no LLM-labelled sample (--llm-customers 0 or no taxonomy)"}),
        "embedding_micro_f1": emb, "bag_of_pages_micro_f1": bag,
        "embedding_vs_bag_of_pages_rel_pct": round(rel_change_pct(emb, bag), 2) if emb is not None and bag else None,
        "embedding_above_bag_of_pages": None if emb is None or bag is None else bool(emb > bag),
        "population_vs_bag_of_pages": "linked customers who converted after a linked session",
    }


def capture_entry(summary: dict) -> dict:
    """One dataset's capture: the embedding ranker's relative change against the app-only baseline divided by
    the click model's (`click_model`, the generator's own click probability), on all test impressions, with
    both relative changes, the paper's, the world's target and whether it is met; ratios None with a reason
    where there is no oracle (no truth/) or the oracle does not improve on the baseline."""
    world = summary.get("world") or {}
    name = world.get("name") or Path(summary["data"]).name
    rankers = summary["tile_ranking"]["all"]["rankers"]
    emb, oracle = rankers[CAPTURE_RANKER], rankers.get(CAPTURE_ORACLE)
    target = CAPTURE_TARGETS.get(name) if world.get("synthetic", True) else None
    ci = emb["recall_at_1_rel_gain_ci95"]
    out: dict = {
        "world": name, "synthetic": bool(world.get("synthetic", oracle is not None)), "data": summary["data"],
        "population": "all test impressions", "log_loss": None, "recall_at_1": None,
        "ranker": {"name": CAPTURE_RANKER, **_change(emb)},
        "oracle": None, "paper": {k: PAPER[k] for k in ("recall_at_1_rel_gain_pct", "log_loss_rel_change_pct")},
        "target": target,
        "recall_at_1_ci95_excludes_zero": bool(ci[0] > 0 or ci[1] < 0),
    }
    if oracle is None:
        out["reason"] = (f"no generator truth/ in {summary['data']}: the click-model oracle needs the hidden needs, "
                         "so there is nothing to divide by")
    else:
        out["oracle"] = {"name": CAPTURE_ORACLE, "recall_at_1_rel_gain_pct": oracle["recall_at_1_rel_gain_pct"],
                         "log_loss_rel_change_pct": oracle["log_loss_rel_change_pct"]}
        out["log_loss"] = _ratio(emb["log_loss_rel_change_pct"], oracle["log_loss_rel_change_pct"], lambda o: o < 0)
        out["recall_at_1"] = _ratio(emb["recall_at_1_rel_gain_pct"], oracle["recall_at_1_rel_gain_pct"],
                                    lambda o: o > 0)
        if out["log_loss"] is None or out["recall_at_1"] is None:
            out["reason"] = "the click model does not improve on the baseline here: a ratio to it means nothing"
    if target is not None and out["log_loss"] is not None and out["recall_at_1"] is not None:
        met = {"log_loss": out["log_loss"] >= target, "recall_at_1": out["recall_at_1"] >= target,
               "recall_at_1_ci95_excludes_zero": bool(ci[0] > 0)}
        out["met"] = {**met, "all": all(met.values())}
    else:
        out["met"] = None
    out["conversion"] = conversion_check(summary)
    return out


def capture_doc(summaries: dict[str, dict]) -> dict:
    """eval.json `capture`: the main dataset's entry at the top (`capture.log_loss`, `capture.recall_at_1`), every
    dataset's under `datasets`."""
    entries = {name: capture_entry(s) for name, s in summaries.items()}
    main = next(iter(entries))
    return {**entries[main], "dataset": main, "datasets": entries}


def notes_md(summaries: dict[str, dict]) -> str:
    """What the numbers mean, from the figures of this run (nothing here describes a generator's mechanics)."""
    lines = ["## What the numbers mean", ""]
    caps = {n: capture_entry(s) for n, s in summaries.items()}
    with_oracle = {n: c for n, c in caps.items() if c["oracle"]}
    if with_oracle:
        parts = [f"{n} (`{c['world']}`): the click model changes log loss by "
                 f"{c['oracle']['log_loss_rel_change_pct']:+.2f}% and macro Recall@1 by "
                 f"{c['oracle']['recall_at_1_rel_gain_pct']:+.2f}%, the embedding ranker by "
                 f"{c['ranker']['log_loss_rel_change_pct']:+.2f}% and {c['ranker']['recall_at_1_rel_gain_pct']:+.2f}%"
                 for n, c in with_oracle.items()]
        lines.append("- **Capture, not absolute figures, are the targets.** On a synthetic world the absolute gain "
                     "says as much about the world (how strongly its clicks depend on intent) as about the model; the "
                     "generator's own click probability bounds what any session signal can reach. Measured here: "
                     + "; ".join(parts) + ".")
    no_oracle = [n for n, c in caps.items() if not c["oracle"]]
    if no_oracle:
        lines.append("- **Data without generator truth/**: " + ", ".join(f"{n} (`{summaries[n]['data']}`)"
                                                                   for n in no_oracle)
                     + ". Its tables are the product comparison against the app-only baseline, nothing else.")
    main = next(iter(summaries.values()))
    all_pop = main["tile_ranking"]["all"]
    n_tiles = (main.get("world") or {}).get("n_tiles")
    lines.append(f"- **Recall@1 vs log loss.** On the main dataset Recall@1 counts only the {all_pop['n_clicks']} "
                 f"clicked test tiles" + (f" over {n_tiles} tiles" if n_tiles else "") + " (a macro mean moves by "
                 f"several percent from a handful of visits: see the intervals); log loss uses all {all_pop['n_rows']} "
                 "shown tiles and is the steadier read of a signal.")
    lines.append("- **No-session customers** get an explicit no-session indicator (and its tile cross). It can carry "
                 "information of its own, which is why the rankers with a signal also differ from the baseline on "
                 "impressions without a session.")
    lines.append("- **Seeds** change each ranker's training sample (90% of training customers), its need head, and "
                 "the bootstrap draws; the encoder and distilled head are the ones in the artifacts (one training "
                 "run each, per dataset).")
    chosen = (main.get("recency") or {}).get("chosen_half_life_days", {}).get("embedding")
    label = all_pop["rankers"].get(CAPTURE_RANKER, {}).get("label", CAPTURE_RANKER)
    lines.append("- **Served ranker**: `ranker.json` (format intent-ranker/3) is the main dataset's embedding ranker "
                 f"(`{label}`, first seed) evaluated above, numpy-only (`training/core/ranker.py`). Its "
                 "input is the linked sessions' embeddings pooled with recency weights (`pool_sessions`, half-life "
                 + (f"{chosen} days" if chosen not in (None, "inf") else "infinite: the plain mean")
                 + ", chosen with C on the validation slice) plus the days since the last session and the decayed "
                 "session count.")
    return "\n".join(lines) + "\n"


def _change(entry: dict) -> dict:
    return {k: entry[k] for k in ("recall_at_1_rel_gain_pct", "recall_at_1_rel_gain_ci95", "log_loss_rel_change_pct",
                                  "log_loss_rel_change_ci95")}


HEADLINE_POPS = ("all", "linked_customers", "with_session")


def oracle_summary(summary: dict) -> dict | None:
    """The diagnostic rankers' changes against the baseline per population (None without truth/)."""
    tr = summary["tile_ranking"]
    names = [n for n, e in tr["all"]["rankers"].items() if e.get("diagnostic")]
    if not names:
        return None
    return {"note": "diagnostic upper bounds from the generator's hidden truth, not product results",
            "rankers": {n: {"label": tr["all"]["rankers"][n]["label"],
                            **{pop: _change(tr[pop]["rankers"][n]) for pop in HEADLINE_POPS}} for n in names},
            "click_model_reach": summary.get("click_model_reach")}


def headline(summary: dict) -> dict:
    """The contract keys of eval.json, from one dataset's summary."""
    tr = summary["tile_ranking"]
    emb = tr["all"]["rankers"]["embedding"]
    conv = summary["conversion"].get("llm_sample") or summary["conversion"]["linked"]
    f1 = conv["micro_f1"]
    out = {
        "tile_ranking": {**_change(emb),
                         "population": "all test impressions (embedding ranker vs app-only baseline)",
                         "ranker": emb["label"],
                         "by_population": {pop: _change(tr[pop]["rankers"]["embedding"]) for pop in HEADLINE_POPS}},
        "conversion": {"micro_f1": {k: f1.get(k) for k in ("embedding", "llm_labels", "distilled", "bag_of_pages")},
                       "embedding_vs_llm_labels_rel_pct": conv.get("embedding_vs_llm_labels_rel_pct"),
                       "population": "llm_sample" if "llm_sample" in summary["conversion"] else "linked"},
    }
    if "embedding_crosses" in tr["all"]["rankers"]:
        out["tile_ranking"]["before"] = {
            "ranker": tr["all"]["rankers"]["embedding_crosses"]["label"],
            **{pop: _change(tr[pop]["rankers"]["embedding_crosses"]) for pop in HEADLINE_POPS}}
    return out


def _fmt_ci(ci: list[float]) -> str:
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def ranking_table(pop: dict, diagnostic: bool = False) -> list[str]:
    lines = ["| ranker | macro R@1 | micro R@1 | log loss | R@1 rel. change % [95% CI] | log loss rel. change % "
             "[95% CI] |", "|---|---|---|---|---|---|"]
    for name, r in pop["rankers"].items():
        if r.get("diagnostic") != diagnostic and name != "baseline":
            continue
        if name == "baseline":
            lines.append(f"| baseline (app features) | {r['macro_recall_at_1']:.4f} | {r['micro_recall_at_1']:.4f} "
                         f"| {r['log_loss']:.4f} | - | - |")
            continue
        lines.append(f"| {r.get('label') or '+ ' + name} | {r['macro_recall_at_1']:.4f} "
                     f"| {r['micro_recall_at_1']:.4f} | {r['log_loss']:.4f}"
                     f" | {r['recall_at_1_rel_gain_pct']:+.2f} {_fmt_ci(r['recall_at_1_rel_gain_ci95'])}"
                     f" | {r['log_loss_rel_change_pct']:+.2f} {_fmt_ci(r['log_loss_rel_change_ci95'])} |")
    return lines


def conversion_table_md(pop: dict) -> list[str]:
    lines = ["| representation | micro F1 | 95% CI | per seed |", "|---|---|---|---|"]
    for m, v in pop["micro_f1"].items():
        ci = pop["micro_f1_ci95"][m]
        seeds = ", ".join(f"{x:.3f}" for x in pop["micro_f1_per_seed"][m])
        lines.append(f"| {m} | {v:.4f} | [{ci[0]:.3f}, {ci[1]:.3f}] | {seeds} |")
    return lines


POP_TITLES = {
    "all": "all customers' test impressions",
    "with_session": "impressions with a linked pre-login session in the lookback",
    "no_session": "impressions without one (explicit no-session input)",
    "linked_customers": "customers with any linked web identity",
    "llm_sample": "the LLM-labelled customer sample",
}


def dataset_md(name: str, summary: dict) -> list[str]:
    s, cfg = summary["split"], summary["config"]
    world = summary.get("world") or {}
    tiles = world.get("tiles_per_visit")
    lines = [f"## {name}: {describe_data(summary)}", "",
             f"Data `{summary['data']}`, encoder `{summary['artifacts']}`, head `{summary['head']}`"
             + (f"; {world['n_tiles']} tiles, a test app visit {tiles_phrase(tiles)}" if tiles else "")
             + ("" if world.get("oracles", True) else "; no generator truth/ (not synthetic data)") + ". "
             f"Time split at {s['cutoff']}: {s['n_train_impressions']} training and {s['n_test_impressions']} test "
             f"impressions; {100 * s['test_share_with_session']:.1f}% of test impressions have a linked pre-login "
             f"session in the {cfg['lookback_days']:g}-day lookback; {s['n_linked_customers']} of {s['n_customers']} "
             f"customers have a linked web identity. Seeds {cfg['seeds']}; LLM sample: "
             f"{summary['llm_sample']['customers']} customers, {summary['llm_sample']['sessions_labelled']} "
             "sessions labelled.", "", "### Tile ranking (relative change against the app-only baseline)", ""]
    for pop, res in summary["tile_ranking"].items():
        if pop == "baseline_c_sensitivity":
            continue
        lines += [f"**{POP_TITLES.get(pop, pop)}** ({res['n_visits']} visits, {res['n_clicks']} clicks, "
                  f"{res['n_customers']} customers)" + (f" — {res['note']}" if res.get("note") else ""), ""]
        lines += [*ranking_table(res), ""]
    oracle = oracle_summary(summary)
    if oracle:
        lines += ["### Diagnostic upper bounds (generator truth; not product results)", "",
                  "The same baseline and test window; each row is a ranker that is given what no product has: "
                  "see `training/evaluation/oracle.py`.", "",
                  *oracle_table(summary["tile_ranking"]), ""]
        reach = oracle.get("click_model_reach")
        if reach:
            tr_, te_ = reach["train"], reach["test"]
            lines += [f"Reach of the click model's intent term: a customer's need is active at "
                      f"{100 * tr_['active_need_share']:.1f}% of training and {100 * te_['active_need_share']:.1f}% "
                      f"of test impressions ({100 * te_['active_need_share_with_session']:.1f}% of test impressions "
                      f"with a session); {te_['clicks_on_active_need_tiles']} of {te_['clicks']} test clicks "
                      f"({100 * te_['share_of_clicks_on_active_need_tiles']:.1f}%) are on a tile of an active need "
                      f"(training: {100 * tr_['share_of_clicks_on_active_need_tiles']:.1f}%). Every other click is "
                      "driven by app-side features and a per-customer propensity.", ""]
    sens = summary["tile_ranking"].get("baseline_c_sensitivity")
    if sens:
        lines += ["Baseline sensitivity to its L2 strength (all test impressions, mean of seeds; the tables use the C "
                  "chosen on a validation slice of the training window by log loss, the same rule for every ranker): "
                  + "; ".join(f"C={c}: macro R@1 {v['macro_recall_at_1']:.4f}, log loss {v['log_loss']:.4f}"
                              for c, v in sens.items()), ""]
        same_c = [f"{e['label']} (C={e['c']:g}) "
                  f"{rel_change_pct(e['macro_recall_at_1'], sens[str(e['c'])]['macro_recall_at_1']):+.2f}%"
                  for n, e in summary["tile_ranking"]["all"]["rankers"].items()
                  if n != "baseline" and not e.get("diagnostic") and str(e.get("c")) in sens]
        if same_c:
            lines += ["Macro Recall@1 against the baseline fitted with the ranker's own C (so that only the signal "
                      "differs): " + "; ".join(same_c) + ".", ""]
    lines += ["### Conversion prediction (micro F1, 5-fold CV over customers, mean of seeds)", ""]
    for pop, res in summary["conversion"].items():
        title = {"linked": "linked customers who converted after a linked session",
                 "llm_sample": "the LLM-labelled sample (same customers for all four)"}.get(pop, pop)
        extra = ""
        if "embedding_vs_llm_labels_rel_pct" in res:
            extra = (f"; embedding vs LLM labels {res['embedding_vs_llm_labels_rel_pct']:+.2f}%, distilled vs LLM "
                     f"labels {res['distilled_vs_llm_labels_rel_pct']:+.2f}%")
        lines += [f"**{title}** ({res['n_customers']} customers, {res['n_products']} products, majority class "
                  f"{res['majority_class_micro_f1']:.3f}{extra})", "", *conversion_table_md(res), ""]
    return lines


def oracle_table(tile_ranking: dict) -> list[str]:
    """Relative change against the baseline per population: the served ranker, the previous one, the bounds."""
    lines = ["| ranker | all: R@1 % [95% CI] | all: log loss % [95% CI] | linked customers: R@1 % | linked customers: "
             "log loss % | with a session: R@1 % | with a session: log loss % |", "|---|---|---|---|---|---|---|"]
    entries = tile_ranking["all"]["rankers"]
    names = [n for n in ("embedding", "embedding_crosses") if n in entries]
    names += [n for n, e in entries.items() if e.get("diagnostic")]
    for name in names:
        a, lk, ws = (tile_ranking[pop]["rankers"][name] for pop in HEADLINE_POPS)
        lines.append(f"| {a['label']} | {a['recall_at_1_rel_gain_pct']:+.2f} {_fmt_ci(a['recall_at_1_rel_gain_ci95'])} "
                     f"| {a['log_loss_rel_change_pct']:+.2f} {_fmt_ci(a['log_loss_rel_change_ci95'])} "
                     f"| {lk['recall_at_1_rel_gain_pct']:+.2f} | {lk['log_loss_rel_change_pct']:+.2f} "
                     f"| {ws['recall_at_1_rel_gain_pct']:+.2f} | {ws['log_loss_rel_change_pct']:+.2f} |")
    return lines


PLOTTED = ("baseline", "embedding", "embedding_crosses", "distilled", "llm_labels", "oracle_intent")
"""Rankers drawn in the plots (the other diagnostics are in the tables)."""


def _legend(name: str) -> str:
    return f"{name} (diagnostic)" if KINDS[name].diagnostic else name


def truth_customer_intents(data_dir: Path | str) -> dict[str, str]:
    """customer_id -> hidden intent from the generator's truth/ (plots only; empty for real data)."""
    path = Path(data_dir) / "truth" / "customers.jsonl"
    if not path.exists():
        return {}
    with path.open() as fh:
        return {row["customer_id"]: row["intent"] for row in map(json.loads, fh)}


def plots(result: DatasetResult, out_dir: Path, truth_intents: dict[str, str] | None, prefix: str = "eval"
          ) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.evaluation.metrics import top1_hits

    out_dir.mkdir(parents=True, exist_ok=True)
    test, written = result.test, []
    seed0 = {r.name: r for r in result.runs if r.seed == min(x.seed for x in result.runs) and r.name in PLOTTED}
    # lift per tile: Recall@1 per tile on impressions with a session
    mask = test.linked
    tiles = sorted(set(test.tile))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(seed0)
    for k, (name, run) in enumerate(seed0.items()):
        h = top1_hits(test.visit[mask], run.scores[mask], test.clicked[mask], test.position[mask])
        vals = [np.nanmean(h[test.tile[mask] == t]) if (~np.isnan(h[test.tile[mask] == t])).any() else 0
                for t in tiles]
        ax.bar(np.arange(len(tiles)) + k * width, vals, width, label=_legend(name))
    ax.set_xticks(np.arange(len(tiles)) + 0.4 - width / 2, [t.removeprefix("tile_") for t in tiles], rotation=45,
                  ha="right")
    ax.set_ylabel("Recall@1 of the tile")
    ax.set_ylim(0, 1.0)
    ax.set_title("Recall@1 per tile, test impressions with a linked pre-login session (seed 0)")
    ax.legend(ncol=3, fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_dir / f"{prefix}_lift_per_tile.png", dpi=110)
    plt.close(fig)
    written.append(f"{prefix}_lift_per_tile.png")
    # calibration
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, run in seed0.items():
        edges = np.quantile(run.scores, np.linspace(0, 1, 11))
        b = np.clip(np.searchsorted(edges, run.scores, side="right") - 1, 0, 9)
        xs = [run.scores[b == i].mean() for i in range(10) if (b == i).any()]
        ys = [test.clicked[b == i].mean() for i in range(10) if (b == i).any()]
        ax.plot(xs, ys, marker="o", label=_legend(name))
    hi = float(max(r.scores.max() for r in seed0.values()))
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set_xlabel("predicted click probability (decile mean)")
    ax.set_ylabel("observed click rate")
    ax.set_title("Calibration on the test window (seed 0)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"{prefix}_calibration.png", dpi=110)
    plt.close(fig)
    written.append(f"{prefix}_calibration.png")
    # intent confusion: hidden intent of the customer vs the distilled head's top label
    if truth_intents:
        rows = [(truth_intents.get(c), result.head_labels[int(np.argmax(p))])
                for c, p, has in zip(test.customer, result.distilled_test, test.linked, strict=True) if has]
        rows = [r for r in rows if r[0]]
        if rows:
            intents = sorted({a for a, _ in rows})
            labels = [lb for lb, _ in Counter(b for _, b in rows).most_common()]
            m = np.zeros((len(intents), len(labels)))
            for a, b in rows:
                m[intents.index(a), labels.index(b)] += 1
            m = m / m.sum(axis=1, keepdims=True)
            fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(labels), 1.5 + 0.4 * len(intents)))
            ax.imshow(m, cmap="Blues", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
            ax.set_yticks(range(len(intents)), intents, fontsize=8)
            ax.set_xlabel("distilled head's top label (LLM taxonomy)")
            ax.set_ylabel("hidden intent (generator truth)")
            ax.set_title("Intent confusion, test visits with a session (row-normalized)", fontsize=9)
            fig.tight_layout()
            fig.savefig(out_dir / f"{prefix}_intent_confusion.png", dpi=110)
            plt.close(fig)
            written.append(f"{prefix}_intent_confusion.png")
    return written


def _pct(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "-"
    return f"{v:+.2f}%" + (f" {_fmt_ci(ci)}" if ci else "")


def _ratio_md(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def capture_table(capture: dict) -> list[str]:
    """The headline table, one row per dataset; the oracle and capture columns only where some dataset has one."""
    oracle = any(c["oracle"] for c in capture["datasets"].values())
    cols = ["dataset", "world", "macro R@1: ranker [95% CI]"]
    cols += ["R@1: click model", "R@1 capture"] if oracle else []
    cols += ["log loss: ranker [95% CI]"]
    cols += ["log loss: click model", "log loss capture", "capture target", "met"] if oracle else []
    cols += ["conversion: embedding vs LLM labels (>= +4.3%)", "embedding vs bag-of-pages micro F1"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, c in capture["datasets"].items():
        r, o, conv = c["ranker"], c["oracle"] or {}, c["conversion"]
        met = "-" if c["met"] is None else ("met" if c["met"]["all"] else "NOT met")
        vs_llm = conv["embedding_vs_llm_labels_rel_pct"]
        llm_met = "" if vs_llm is None else (" met" if conv["met_vs_llm_labels"] else " NOT met")
        vs_bag = "-" if conv["embedding_micro_f1"] is None or conv["bag_of_pages_micro_f1"] is None else (
            f"{conv['embedding_micro_f1']:.3f} vs {conv['bag_of_pages_micro_f1']:.3f} "
            f"({'above' if conv['embedding_above_bag_of_pages'] else 'NOT above'})")
        cells = [name, c["world"], _pct(r["recall_at_1_rel_gain_pct"], r["recall_at_1_rel_gain_ci95"])]
        cells += [_pct(o.get("recall_at_1_rel_gain_pct")), _ratio_md(c["recall_at_1"])] if oracle else []
        cells += [_pct(r["log_loss_rel_change_pct"], r["log_loss_rel_change_ci95"])]
        cells += [_pct(o.get("log_loss_rel_change_pct")), _ratio_md(c["log_loss"]),
                  "-" if c["target"] is None else f">= {c['target']:.2f}", met] if oracle else []
        cells += [_pct(vs_llm) + llm_met, vs_bag]
        lines.append("| " + " | ".join(cells) + " |")
    paper = ["paper (production)", "-", f"{PAPER['recall_at_1_rel_gain_pct']:+.2f}%"]
    paper += ["-", "-"] if oracle else []
    paper += [f"{PAPER['log_loss_rel_change_pct']:+.2f}%"]
    paper += ["-", "-", "-", "-"] if oracle else []
    lines.append("| " + " | ".join([*paper, "+4.3%", "-"]) + " |")
    return lines


def capture_sentences(capture: dict) -> list[str]:
    out = []
    for name, c in capture["datasets"].items():
        if c["log_loss"] is None:
            out.append(f"- {name}: no capture ({c['reason']}).")
            continue
        text = (f"- {name} (`{c['world']}`): the embedding ranker captures {100 * c['log_loss']:.0f}% of the click "
                f"model's log-loss gain and {100 * c['recall_at_1']:.0f}% of its macro Recall@1 gain; its Recall@1 "
                f"interval {'excludes' if c['recall_at_1_ci95_excludes_zero'] else 'includes'} zero.")
        if c["met"] is not None:
            text += (f" Target >= {100 * c['target']:.0f}% in both with the interval above zero: "
                     f"{'met' if c['met']['all'] else 'NOT met'} (log loss {'met' if c['met']['log_loss'] else 'not'}"
                     f", Recall@1 {'met' if c['met']['recall_at_1'] else 'not'}, interval "
                     f"{'above zero' if c['met']['recall_at_1_ci95_excludes_zero'] else 'not above zero'}).")
        else:
            text += " No target on this world."
        out.append(text)
    return out


def write_report(results: dict[str, DatasetResult], out_dir: Path, plot_files: dict[str, list[str]],
                 extra: dict | None = None) -> dict:
    summaries = {name: r.summary for name, r in results.items()}
    main_name = next(iter(results))
    main = summaries[main_name]
    capture = capture_doc(summaries)
    for name, s in summaries.items():
        s["capture"] = capture["datasets"][name]
    oracles = {name: o for name, s in summaries.items() if (o := oracle_summary(s))}
    doc = {**headline(main), "capture": capture, "targets": TARGETS, "paper": PAPER,
           **({"oracle": oracles} if oracles else {}), "datasets": summaries, "plots": plot_files, **(extra or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(doc, indent=2))

    tr, bound = doc["tile_ranking"], oracles.get(main_name, {}).get("rankers", {})
    others = [f"{n}: {describe_data(s)}" for n, s in summaries.items() if n != main_name]
    lines = ["# Evaluation: tile ranking and conversion prediction", "",
             "Reproduces the two tasks of \"From Clicks to Intent\" (arXiv 2606.26277) on " + describe_data(main)
             + (" and on " + "; ".join(others) if others else "") + ". Written by `make eval` "
             "(`python -m training.evaluation`).", "",
             "## Headline", "",
             "Relative change against the app-only baseline on all test impressions of the held-out later window."
             + (" Capture = the embedding ranker's relative change / the click model's (the generator's own click "
                "probability: a diagnostic from its hidden truth, not a product result)." if oracles else ""), "",
             *capture_table(capture), "", *(capture_sentences(capture) if oracles else []), ""]

    def cell(entry: dict | None, key: str, ci: bool = False) -> str:
        if not entry:
            return "-"
        return _pct(entry[key], entry[key.replace("_pct", "_ci95")] if ci else None)

    before = tr.get("before", {})
    lines += [f"### Main dataset by population ({main_name})", "",
              "| metric | embedding ranker [95% CI] | before: signal x tile crosses [95% CI] |"
              + (" oracle: hidden intent + need window | the click model itself |" if bound else "") + " paper |",
              "|---|---|---|" + ("---|---|" if bound else "") + "---|"]
    for pop, title in (("all", "all customers"), ("linked_customers", "linked customers")):
        for key, metric, paper in (("recall_at_1_rel_gain_pct", "macro Recall@1", "+1.88%"),
                                   ("log_loss_rel_change_pct", "log loss", "-13.38%")):
            row = (f"| {metric}, {title} | {cell(tr['by_population'][pop], key, True)} "
                   f"| {cell(before.get(pop), key, True)} |")
            if bound:
                row += (f" {cell(bound.get('oracle_intent', {}).get(pop), key)} "
                        f"| {cell(bound.get('click_model', {}).get(pop), key)} |")
            lines.append(row + f" {paper} |")
    conv = doc["conversion"]
    lines += ["", "Conversion micro F1 (" + conv["population"] + "): " +
              ", ".join(f"{k} {v:.4f}" for k, v in conv["micro_f1"].items() if v is not None), "",
              metric_definition_md((main.get("world") or {}).get("tiles_per_visit"), main["config"]["n_boot"],
                                   capture=bool(oracles)), ""]
    for name, r in results.items():
        lines += dataset_md(name, r.summary)
        for f in plot_files.get(name, []):
            lines += [f"![{f}]({f})", ""]
    lines += [notes_md(summaries), ""]
    (out_dir / "eval.md").write_text("\n".join(lines))
    return doc
