"""`intent`: the offline platform's command line (data, train, probe, taxonomy, taxonomy-drift, report, run, ...).

Every flag can also come from the environment as INTENT_<FLAG> (e.g. INTENT_DATA=/logs/web). The LLM is
configured by INTENT_LLM_* variables (see training/taxonomy/llm.py): the bundled local SmolLM2 by default,
any OpenAI-compatible endpoint with INTENT_LLM_BACKEND=openai, INTENT_LLM_BASE_URL and INTENT_LLM_MODEL.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from training.flags import add_flag

log = logging.getLogger("intent")


def _parse_mix(text: str) -> dict[str, float]:
    """'fraud_report=3,casual_browsing=0.5' -> {...}."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--intent-mix: {part!r} is not NAME=WEIGHT") from None
    return mix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    from training.worlds import DEFAULT_WORLD, WORLD_NAMES

    p = sub.add_parser("data", help="generate a synthetic world's data directory",
                       description="Worlds: bank (calibrated, default), weak (the previous bank), credit_union "
                                   "(another site); docs/data.md describes them.")
    add_flag(p, "out", "data/synthetic", "output data directory", type=Path)
    add_flag(p, "world", DEFAULT_WORLD, f"synthetic world: {', '.join(WORLD_NAMES)}", choices=WORLD_NAMES)
    add_flag(p, "visitors", 6000, "number of web visitors", type=int)
    add_flag(p, "seed", 7, "random seed", type=int)
    add_flag(p, "days", 60, "days of traffic", type=int)
    add_flag(p, "intent-mix", "", "relative intent weights, NAME=W,...", type=_parse_mix)

    for name, text in (("train", "featurize and pre-train the session encoder"),
                       ("run", "the main job: data -> train -> probe -> taxonomy, with a summary")):
        p = sub.add_parser(name, help=text)
        add_flag(p, "data", "data/synthetic", "data directory in the contract's format", type=Path)
        add_flag(p, "artifacts", "artifacts", "where featurizer.json and encoder.pt go", type=Path)
        add_flag(p, "epochs", 16, "training epochs", type=int)
        add_flag(p, "batch-size", 128, "sessions per batch", type=int)
        add_flag(p, "lr", 2e-3, "peak learning rate", type=float)
        add_flag(p, "max-len", 64, "keep the most recent N events of a session", type=int)
        add_flag(p, "seed", 7, "random seed", type=int)
        add_flag(p, "device", "auto", "torch device: auto, cpu, cuda")
        add_flag(p, "positives", "visitor", "contrastive positive pair: visitor (another session of the same "
                 "visitor) or view (two crops of one session)", choices=("visitor", "view"))
        add_flag(p, "mem-weight", 0.2, "weight of masked event modelling beside the contrastive loss", type=float)
        p.add_argument("--strict", action="store_true", help="fail on the first invalid row instead of reporting")
        if name == "train":
            add_flag(p, "shards", None, "train on this finished shard directory (make featurize, the Spark job) "
                     "instead of featurizing --data into <artifacts>/shards", type=Path)
        if name == "run":
            add_flag(p, "visitors", 6000, "visitors to generate when --data does not exist yet", type=int)
            add_flag(p, "report", "reports/encoder.json", "probe report path", type=Path)
            add_flag(p, "second-world", "credit_union", "also generate this synthetic world into ./data/<world>, "
                     "train on it into <artifacts>/<world> and report it beside --data ('' skips it)",
                     choices=("", *WORLD_NAMES))
            add_flag(p, "n-boot", 200, "bootstrap resamples of the downstream intervals", type=int)
            _taxonomy_flags(p)

    p = sub.add_parser("taxonomy", help="LLM taxonomy, LLM labels on a sample, distilled intent head")
    add_flag(p, "data", "data/synthetic", "data directory", type=Path)
    add_flag(p, "artifacts", "artifacts", "trained featurizer + encoder; taxonomy.yaml and intent_head.json go here",
         type=Path)
    _taxonomy_flags(p)
    p.add_argument("--compare", action="store_true", help="also build the other method's taxonomy and score both")

    p = sub.add_parser("taxonomy-drift", help="the head's label mix on new logs against the pinned taxonomy's "
                       "baseline (PSI, Jensen-Shannon distance) and candidate new intents",
                       description="Thresholds: PSI < 0.1 stable, 0.1-0.25 watch, > 0.25 drifted (JS distance "
                                   "0.134 / 0.212); docs/taxonomy_drift.md.")
    add_flag(p, "data", "data/synthetic", "the new logs: a data directory in the contract's format", type=Path)
    add_flag(p, "artifacts", "artifacts", "featurizer + encoder + intent_head.json (+ taxonomy_baseline.json)",
             type=Path)
    add_flag(p, "taxonomy", None, "the pinned taxonomy YAML the head was distilled for "
             "(unset: <artifacts>/taxonomy.yaml)", type=Path)
    add_flag(p, "baseline", None, "the label mix recorded when the taxonomy was pinned "
             "(unset: <artifacts>/taxonomy_baseline.json)", type=Path)
    add_flag(p, "baseline-data", None, "if the baseline file is missing or stale, compute it from this data "
             "directory (the logs the taxonomy was pinned on)", type=Path)
    add_flag(p, "report", "reports/taxonomy_drift.json", "report path", type=Path)
    add_flag(p, "max-sessions", 20000, "new sessions embedded at most (a uniform sample of bigger logs)", type=int)
    add_flag(p, "min-cluster-share", 0.01, "a candidate intent holds at least this share of the new sessions",
             type=float)
    add_flag(p, "max-candidates", 6, "candidate intents reported at most", type=int)

    p = sub.add_parser("probe", help="does pre-training pay: the encoder vs an untrained twin and bag-of-pages "
                       "on the downstream tasks (intent probe with truth/, conversion, tile-ranking log loss)")
    add_flag(p, "data", "data/synthetic", "data directory (truth/ adds the intent probe)", type=Path)
    add_flag(p, "artifacts", "artifacts", "trained featurizer + encoder", type=Path)
    add_flag(p, "report", "reports/encoder.json", "report path (other worlds already in it are kept)", type=Path)
    add_flag(p, "n-boot", 200, "bootstrap resamples of the intervals", type=int)

    p = sub.add_parser("report", help="intent analytics: one self-contained HTML page of the head's intents on a "
                       "data directory (share per week, device, referrer, distinctive pages and searches, conversion, "
                       "confidence)")
    add_flag(p, "data", "data/synthetic", "data directory in the contract's format", type=Path)
    add_flag(p, "artifacts", "artifacts", "featurizer + encoder + intent_head.json (taxonomy.yaml for descriptions)",
             type=Path)
    add_flag(p, "out", "reports/intents.html", "the HTML page to write", type=Path)
    add_flag(p, "conversion-days", 30.0, "a linked session counts conversions within N days after it", type=float)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("bench-train", help="training and inference throughput")
    add_flag(p, "data", "data/synthetic", "data directory", type=Path)
    add_flag(p, "report", "reports/bench_train.json", "report path", type=Path)
    add_flag(p, "epochs", 2, "epochs to time", type=int)
    add_flag(p, "device", "auto", "torch device: auto, cpu, cuda")
    return parser


def _taxonomy_flags(p: argparse.ArgumentParser) -> None:
    add_flag(p, "taxonomy-report", "reports/taxonomy.json", "taxonomy report path", type=Path)
    add_flag(p, "method", "cluster_first", "taxonomy generation: cluster_first or minibatch",
         choices=("cluster_first", "minibatch"))
    add_flag(p, "taxonomy", None, "pinned taxonomy YAML to use instead of generating one", type=Path)
    add_flag(p, "clusters", 16, "embedding clusters the LLM names (cluster_first)", type=int)
    add_flag(p, "label-train", 240, "training sessions the LLM labels for the head", type=int)
    add_flag(p, "label-eval", 120, "held-out sessions the LLM labels for scoring", type=int)
    add_flag(p, "shortlist", 3, "candidate labels shown to the LLM per session", type=int)


def _taxonomy(args: argparse.Namespace) -> dict:
    from training.taxonomy.generate import TaxonomyConfig
    from training.taxonomy.stage import StageConfig, run_taxonomy

    cfg = StageConfig(method=args.method, pinned=args.taxonomy, label_train=args.label_train,
                      label_eval=args.label_eval, shortlist=args.shortlist, compare=getattr(args, "compare", False),
                      taxonomy=TaxonomyConfig(clusters=args.clusters))
    return run_taxonomy(args.data, args.artifacts, args.taxonomy_report, cfg)


def _taxonomy_summary(report: dict) -> str:
    d, lat = report["distill"], report["latency"]
    lines = [report["table"], "",
             f"taxonomy   {report['taxonomy']['file']}  {report['taxonomy_size']} intents, "
             f"{report['taxonomy']['version']} ({report['taxonomy']['method']})",
             f"distilled  head agrees with the LLM on held-out sessions: micro F1 {d['llm_vs_head_micro_f1']:.3f}"]
    if "drop_pct" in d:
        t = report["truth"]
        lines.append(f"           downstream drop vs LLM labels {d['drop_pct']:+.1f}%; NMI with hidden intents: "
                     f"LLM {t['nmi_llm']:.3f}, head {t['nmi_head']:.3f}")
    lines.append(f"latency    LLM {lat['llm_s_per_session']:.2f} s/session, head {lat['head_us_per_session']:.2f} "
                 f"us/session ({lat['head_speedup_over_llm']:,}x faster)")
    return "\n".join(lines)


def cmd_taxonomy(args: argparse.Namespace) -> None:
    report = _taxonomy(args)
    print(_taxonomy_summary(report))
    print(f"report     {args.taxonomy_report}")


def cmd_taxonomy_drift(args: argparse.Namespace) -> None:
    from training.taxonomy.drift import DriftConfig, run_drift

    cfg = DriftConfig(max_sessions=args.max_sessions, min_cluster_share=args.min_cluster_share,
                      max_candidates=args.max_candidates)
    report = run_drift(args.data, args.artifacts, args.report, args.taxonomy, args.baseline, args.baseline_data, cfg)
    print(report["table"])
    print(f"baseline   {report['baseline']['source']}")
    print(f"report     {args.report}")


def cmd_data(args: argparse.Namespace) -> None:
    from training.synthetic import GeneratorConfig, generate

    cfg = GeneratorConfig(visitors=args.visitors, seed=args.seed, days=args.days, world=args.world,
                          intent_mix=args.intent_mix)
    counts = generate(cfg, args.out)
    log.info("wrote %s: %s", args.out, ", ".join(f"{k}={v}" for k, v in counts.items()))


def _train(args: argparse.Namespace):
    """The train stage with the flags shared by `train` and `run`."""
    from training.core.featurizer import FeaturizerConfig
    from training.encoder.objectives import ObjectiveConfig
    from training.encoder.train import TrainConfig
    from training.pipeline import train

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                      objective=ObjectiveConfig(positives=args.positives, mem_weight=args.mem_weight))
    return train(args.data, args.artifacts, cfg, FeaturizerConfig(max_len=args.max_len), strict=args.strict,
                 shards=getattr(args, "shards", None))


def cmd_train(args: argparse.Namespace) -> None:
    result = _train(args)
    last = result.history[-1]
    log.info("trained %d epochs on %d sessions: val loss %.3f -> %.3f; checkpoint %s", len(result.history),
             result.n_train, result.history[0]["val_loss"], last["val_loss"], result.checkpoint)


def cmd_probe(args: argparse.Namespace) -> None:
    from training.pipeline import probe_report

    report = probe_report(args.data, args.artifacts, args.report, n_boot=args.n_boot)
    print(downstream_table(report))


def cmd_report(args: argparse.Namespace) -> None:
    from training.analytics import ReportConfig, write_report

    report = write_report(args.data, args.artifacts, args.out, ReportConfig(conversion_days=args.conversion_days),
                          progress=not args.no_progress)
    print(f"report     {args.out}  {len(report.labels)} intents over {report.sessions:,} sessions "
          f"({args.out.stat().st_size / 1e6:.1f} MB)")


def cmd_bench_train(args: argparse.Namespace) -> None:
    from training.bench import bench_train

    print(json.dumps(bench_train(args.data, args.report, epochs=args.epochs, device=args.device), indent=2))


def _generate_if_absent(data: Path, world: str, visitors: int, seed: int) -> None:
    """A synthetic world into `data` unless it already holds events (a directory of real logs is left alone)."""
    from training.core.contract import EVENT_FILES
    from training.synthetic import GeneratorConfig, generate

    if not any((data / name).exists() for name in EVENT_FILES):
        log.info("no data in %s: generating the synthetic %s world (%d visitors)", data, world, visitors)
        generate(GeneratorConfig(visitors=visitors, seed=seed, world=world), data)


def cmd_run(args: argparse.Namespace) -> None:
    from training.pipeline import probe_report
    from training.worlds import DEFAULT_WORLD

    _generate_if_absent(args.data, DEFAULT_WORLD, args.visitors, args.seed)
    if args.report.exists():
        args.report.unlink()  # this run's worlds only
    result = _train(args)
    report = probe_report(args.data, args.artifacts, args.report, n_boot=args.n_boot)
    if args.second_world:
        # data/<world> as `make eval` prepares it (never beside a data directory the user brought)
        second = argparse.Namespace(**{**vars(args), "data": Path("data") / args.second_world,
                                       "artifacts": args.artifacts / args.second_world})
        _generate_if_absent(second.data, args.second_world, args.visitors, args.seed)
        _train(second)
        report = probe_report(second.data, second.artifacts, args.report, n_boot=args.n_boot)
    first, last = result.history[0], result.history[-1]
    print("\n== intent platform: main job ==")
    print(f"data       {args.data}")
    print(f"encoder    {args.artifacts / 'encoder.pt'}  featurizer {result.featurizer_version}")
    print(f"training   {len(result.history)} epochs, val loss {first['val_loss']:.3f} -> {last['val_loss']:.3f}, "
          f"{last['sessions_per_s']:.0f} sessions/s")
    print(downstream_table(report))
    print(f"report     {args.report}")
    print("\n== intent taxonomy (LLM-named, distilled into the head) ==")
    print(_taxonomy_summary(_taxonomy(args)))
    print(f"report     {args.taxonomy_report}")


TASKS = (("probe_macro_f1", "intent probe macro F1"), ("conversion_micro_f1", "conversion micro F1"),
         ("ranking_log_loss", "tile ranking log loss (lower wins)"))


def downstream_table(report: dict) -> str:
    """One screen: per world and task, the three representations and pretrained minus the better baseline."""
    rows = [f"{'does pre-training pay? (held-out data)':<40}{'pretrained':>11}{'untrained':>11}{'bag of pages':>13}"
            f"   pretrained - best baseline [95% CI]"]
    for world, entry in report.get("worlds", {}).items():
        rows.append(f"  {world}")
        for key, label in TASKS:
            task = entry["downstream"].get(key)
            if task is None:
                continue
            d = task["vs_best_baseline"]
            verdict = "wins" if d["pretrained_better"] else "does not win"
            rows.append(f"    {label:<36}{task['pretrained']['value']:>11.4f}{task['untrained']['value']:>11.4f}"
                        f"{task['bag_of_pages']['value']:>13.4f}   {d['difference']:+.4f} "
                        f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] vs {d['baseline']}: {verdict}")
    return "\n".join(rows)


COMMANDS = {"data": cmd_data, "train": cmd_train, "probe": cmd_probe, "taxonomy": cmd_taxonomy,
            "bench-train": cmd_bench_train, "run": cmd_run, "report": cmd_report}

COMMANDS["taxonomy-drift"] = cmd_taxonomy_drift


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.core.contract import DataError

    try:
        COMMANDS[args.command](args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
