"""reports/eval.json, reports/eval.md (the paper's tables: relative change against the baseline) and PNG plots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from training.evaluation.evaluate import DatasetResult
from training.evaluation.metrics import METRIC_DEFINITION_MD, rel_change_pct
from training.evaluation.ranking import KINDS

TARGETS = {"recall_at_1_rel_gain_pct": 10.0, "log_loss_rel_change_pct": -20.0, "embedding_vs_llm_labels_rel_pct": 4.3}
PAPER = {"recall_at_1_rel_gain_pct": 1.88, "log_loss_rel_change_pct": -13.38, "embedding_vs_llm_labels_rel_pct": 4.3}


NOTES_MD = """## What the numbers mean

- **The targets are out of reach on this bank, for any session signal.** In the generator a click depends on
  pre-login intent only through one term: while a customer's latent need is active (three weeks), the one or
  two tiles of that need get a higher click logit. Everything else is segment, products held, position and a
  per-customer propensity, which the app-only baseline already sees or nobody can see. Needs start uniformly
  over the first 39 of 60 days, so the later test window holds far fewer active needs than the training window
  ("Reach of the click model's intent term" above): only about a tenth of test clicks are on a tile of an
  active need. The diagnostic section bounds what can be gained: the generator's *own* click probability (the
  truth, nothing learned) improves log loss by only a few percent on either dataset (target -20%), and its
  Recall@1 gain, just over the +10% target, includes the few percent that its app-side part alone reaches
  (the baseline's estimation noise), so no learned ranker can be expected to reach it. A ranker told the
  hidden intent *and* whether the need is active, where a session exists, gets roughly half of the click
  model's gains; a ranker given perfect labels of every linked session (all that a session's pages can reveal:
  the generator draws them from the session's intent alone) gets about what the embedding ranker gets. The
  paper's -13% log loss came from production data where intent explains far more of the click
  variance. The generator was not changed to hit the targets.
- **What changed in the ranker (before -> after).** Before, the pooled 64-wide embedding was z-scored and
  crossed with each of the 13 tiles: 832 weights learned from the ~2k training clicks, of which only the clicks
  of visits with a linked session inform them. Its validation pick was the strongest L2 (C=0.03), which also
  shrinks the app features, and that alone moves the baseline's Recall@1 by a few percent (baseline
  sensitivity line): about half of the old Recall@1 gain was regularization, not intent, and its log loss did
  not improve. Now the signal enters through a *need head* (`training/evaluation/need.py`): a softmax over
  products on the pooled embedding, fitted on the training window's conversions (labels the bank already has,
  other than the clicks), and the ranker gets one number per tile, the probability that the need is that
  tile's product, with one weight (plus the no-session indicator and its tile cross, as before). The head's L2
  is chosen by cross-validation on its own conversions, the ranker's C on the validation slice of the training
  window (never the test window); customers whose conversion trained the head are scored with an out-of-fold
  head, in training and test, so no one's own conversion leaks into their need probability. On the main
  dataset log loss now improves with an interval that excludes zero and the ranker matches the
  perfect-session-label bound; on the smaller robustness dataset (half the conversions for the head) it turns
  the old ranker's loss into a small gain and gets about half of that bound. Its Recall@1 gain is the
  signal's own (its C equals the baseline's): see the same-C line under each dataset.
- **Not adopted, and how the design was chosen.** Side experiments (not part of `make eval`) tried the
  distilled head's probabilities crossed with tiles (10 x 13), PCA projections of the embedding (4 to 16
  dimensions) crossed with tiles with a separately tuned L2 on the signal block, and recency-weighted pooling
  (exponential in session age). Some matched or slightly beat the need head on validation log loss (PCA-8
  crosses did), none beat it on both datasets' test windows, which those experiments also showed: the choice
  of design is therefore not a clean held-out selection, and the robustness dataset is the second look.
  Recency weighting moved validation log loss by under 0.1% (and in opposite directions on the two datasets
  for a decay that shrinks old sessions), so the served signal stays the plain mean the gateway already
  computes. A GBDT would need a tree runtime in the gateway, and the bounds above leave it little to find.
  Every ranker's validation log loss per C is in eval.json (`validation_log_loss`).
- **Recall@1 vs log loss.** Recall@1 counts only the ~900 clicked test tiles, and a macro mean over 13 tiles
  of ~70 clicks each moves by several percent from a handful of visits (see the intervals, and the app-side
  click model's own +3%). Log loss uses all ~14k shown tiles and is the steadier read of a signal.
- **No-session customers** get an explicit no-session indicator (and its tile cross). It carries information of
  its own (no recent web research -> less likely an active need), which is why the rankers with a signal also
  differ from the baseline on impressions without a session.
- **Robustness.** The second configuration (half the data, a mortgage-heavy intent mix) has half the clicks;
  its tables read the same way with wider intervals.
- **Conversion.** The product a customer converts to is the product of their latent need, which their web
  sessions reveal: the embedding carries it best; the distilled head compresses it into the taxonomy's labels
  (the head's loss against the embedding is the cost of interpretability); LLM labels are one label per
  session from a 135M-parameter local model (shortlisted), on a bounded sample; bag-of-pages misses dwell,
  event types and order.
- **Seeds** change each ranker's training sample (90% of training customers), its need head, and the
  bootstrap draws; the encoder and distilled head are the ones in the artifacts (one training run each, per
  dataset).
- **Served ranker**: `ranker.json` (format intent-ranker/2) is the embedding ranker (seed 0) evaluated above,
  with its need head, in a numpy-only format (`training/evaluation/scoring.py`: `FeatureSpec.features(...)`
  then `Ranker.score`); its input is still the mean linked-session embedding and the no-session flag, so the
  gateway needs neither torch nor sklearn, and no change, to score it.
"""


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
    lines = [f"## {name}", "",
             f"Data `{summary['data']}`, encoder `{summary['artifacts']}`, head `{summary['head']}`. "
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


def write_report(results: dict[str, DatasetResult], out_dir: Path, plot_files: dict[str, list[str]],
                 extra: dict | None = None) -> dict:
    main_name = next(iter(results))
    oracles = {name: o for name, r in results.items() if (o := oracle_summary(r.summary))}
    doc = {**headline(results[main_name].summary), "targets": TARGETS, "paper": PAPER,
           **({"oracle": oracles} if oracles else {}),
           "datasets": {name: r.summary for name, r in results.items()}, "plots": plot_files, **(extra or {})}
    tr = doc["tile_ranking"]
    bound = oracles.get(main_name, {}).get("rankers", {})
    if "click_model" in bound:
        ceiling = bound["click_model"]["all"]
        doc["targets_reachable"] = {
            "recall_at_1_rel_gain_pct": ceiling["recall_at_1_rel_gain_pct"] >= TARGETS["recall_at_1_rel_gain_pct"],
            "log_loss_rel_change_pct": ceiling["log_loss_rel_change_pct"] <= TARGETS["log_loss_rel_change_pct"],
            "by": "the generator's own click probability (click_model) on all test impressions of the main dataset"}
        learned = {n: v["all"] for n, v in bound.items() if n.startswith("oracle_")}
        if learned:
            best = max(learned, key=lambda n: learned[n]["recall_at_1_rel_gain_pct"])
            doc["targets_reachable"]["best_learned_oracle"] = {
                "ranker": best, "recall_at_1_rel_gain_pct": learned[best]["recall_at_1_rel_gain_pct"],
                "log_loss_rel_change_pct": min(v["log_loss_rel_change_pct"] for v in learned.values())}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(doc, indent=2))

    def cell(entry: dict | None, key: str, ci: bool = False) -> str:
        if not entry:
            return "-"
        return f"{entry[key]:+.2f}%" + (f" {_fmt_ci(entry[key.replace('_pct', '_ci95')])}" if ci else "")

    lines = ["# Evaluation: tile ranking and conversion prediction", "",
             "Reproduces the two tasks of \"From Clicks to Intent\" (arXiv 2606.26277) on the synthetic bank. "
             "Written by `make eval` (`python -m training.evaluation`).", "",
             "## Headline (main dataset)", "",
             "| metric | embedding ranker [95% CI] | before: 64 x 13 crosses [95% CI] | oracle: hidden intent + need "
             "window | the click model itself | target | paper |", "|---|---|---|---|---|---|---|"]
    before = tr.get("before", {})
    for pop, title in (("all", "all customers"), ("linked_customers", "linked customers")):
        for key, metric, target, paper in (("recall_at_1_rel_gain_pct", "macro Recall@1", ">= +10%", "+1.88%"),
                                           ("log_loss_rel_change_pct", "log loss", "<= -20%", "-13.38%")):
            lines.append(f"| {metric}, {title} | {cell(tr['by_population'][pop], key, True)} "
                         f"| {cell(before.get(pop), key, True)} "
                         f"| {cell(bound.get('oracle_intent', {}).get(pop), key)} "
                         f"| {cell(bound.get('click_model', {}).get(pop), key)} | {target} | {paper} |")
    conv = doc["conversion"]
    if conv.get("embedding_vs_llm_labels_rel_pct") is not None:
        gain = conv["embedding_vs_llm_labels_rel_pct"]
        lines.append(f"| conversion micro F1, embedding vs LLM labels | {gain:+.2f}% | - | - | - | >= +4.3% | +4.3% |")
    met = {"macro Recall@1 gain >= +10%": tr["recall_at_1_rel_gain_pct"] >= TARGETS["recall_at_1_rel_gain_pct"],
           "log loss change <= -20%": tr["log_loss_rel_change_pct"] <= TARGETS["log_loss_rel_change_pct"]}
    if conv.get("embedding_vs_llm_labels_rel_pct") is not None:
        met["embedding >= +4.3% micro F1 over LLM labels"] = (conv["embedding_vs_llm_labels_rel_pct"]
                                                               >= TARGETS["embedding_vs_llm_labels_rel_pct"])
    lines += ["", "Relative change against the app-only baseline on the held-out later window. The oracle and the "
              "click model are diagnostics from the generator's hidden truth (section \"Diagnostic upper bounds\" "
              "below), not product results.", "",
              "Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items()) + "."]
    if "targets_reachable" in doc:
        reach, ceiling = doc["targets_reachable"], bound["click_model"]["all"]
        lines += ["", "Reachable on this bank at all? The generator's own click probability — hidden intent and need "
                  "window known exactly, nothing to learn — changes macro Recall@1 by "
                  f"{ceiling['recall_at_1_rel_gain_pct']:+.2f}% and log loss by "
                  f"{ceiling['log_loss_rel_change_pct']:+.2f}% on all test impressions: the Recall@1 target is "
                  f"{'within' if reach['recall_at_1_rel_gain_pct'] else 'beyond'} that ceiling, the log loss target "
                  f"{'within' if reach['log_loss_rel_change_pct'] else 'beyond'} it. No session signal can do "
                  "better than the click model that generated the clicks."]
        best = reach.get("best_learned_oracle")
        if best:
            lines[-1] += (f" Rankers *learned* from these impressions with the hidden intent and need window get at "
                          f"most {best['recall_at_1_rel_gain_pct']:+.2f}% Recall@1 and "
                          f"{best['log_loss_rel_change_pct']:+.2f}% log loss.")
    lines += ["", "Conversion micro F1 (" + conv["population"] + "): " +
              ", ".join(f"{k} {v:.4f}" for k, v in conv["micro_f1"].items() if v is not None), "",
              METRIC_DEFINITION_MD, ""]
    for name, r in results.items():
        lines += dataset_md(name, r.summary)
        for f in plot_files.get(name, []):
            lines += [f"![{f}]({f})", ""]
    lines += [NOTES_MD, ""]
    (out_dir / "eval.md").write_text("\n".join(lines))
    return doc
