"""`python -m training.evaluation`: every world -> reports/eval.{json,md} + PNGs, and the served ranker.

Datasets: the main data directory (`--data`, the calibrated `bank` world by default, or your own logs); a
second world of another site (`--second-world credit_union`: generated into `--second-data`, its own encoder
and a small generated taxonomy in `--second-artifacts`; `--no-second-world` skips it); and the robustness
section on the previous configuration (`--world weak`, the main taxonomy pinned; `--no-robustness` skips it).
The extra worlds are prepared when absent, each step skipped when its output already exists.

Every flag can also come from the environment as INTENT_<FLAG> (dashes as underscores, e.g.
INTENT_LLM_CUSTOMERS=50); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.core.manifest import sha256_file

log = logging.getLogger("training.evaluation")


@dataclass(frozen=True)
class Settings:
    data: Path
    artifacts: Path
    head: Path
    taxonomy: Path
    reports: Path
    ranker_out: Path
    seeds: tuple[int, ...]
    test_share: float
    lookback_days: float
    llm_customers: int
    n_boot: int
    second_world: str | None
    second_data: Path
    second_artifacts: Path
    second_visitors: int
    second_epochs: int
    second_llm_customers: int
    second_clusters: int
    robustness: bool
    robust_data: Path
    robust_artifacts: Path
    robust_visitors: int
    robust_epochs: int
    robust_llm_customers: int
    progress: bool


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env

    def d(flag: str, default: str) -> str:
        return env.get("INTENT_" + flag.upper().replace("-", "_"), default)

    p = argparse.ArgumentParser(prog="python -m training.evaluation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=d("data", "data/synthetic"))
    p.add_argument("--artifacts", type=Path, default=d("artifacts", "artifacts"),
                   help="featurizer.json + encoder.pt (make train)")
    p.add_argument("--head", type=Path, default=d("head", ""),
                   help="distilled head (default ARTIFACTS/intent_head.json)")
    p.add_argument("--taxonomy", type=Path, default=d("taxonomy", ""),
                   help="taxonomy for LLM labels (default ARTIFACTS/taxonomy.yaml)")
    p.add_argument("--reports", type=Path, default=d("reports", "reports"), help="where eval.json/.md and PNGs go")
    p.add_argument("--ranker-out", type=Path, default=d("ranker-out", ""),
                   help="served ranker (default ARTIFACTS/ranker.json)")
    p.add_argument("--seeds", default=d("seeds", "0,1,2"), help="comma-separated seeds (at least 3 for the report)")
    p.add_argument("--test-share", type=float, default=float(d("test-share", "0.3")),
                   help="latest share of impressions held out as the test window")
    p.add_argument("--lookback-days", type=float, default=float(d("lookback-days", "21")))
    p.add_argument("--llm-customers", type=int, default=int(d("llm-customers", "150")),
                   help="customers whose linked sessions get LLM labels (about 2 sessions, ~1-2 s each; cached)")
    p.add_argument("--n-boot", type=int, default=int(d("n-boot", "200")), help="bootstrap resamples per seed")
    p.add_argument("--second-world", default=d("second-world", "credit_union"),
                   help="a second synthetic world (another site and intents), prepared when absent")
    p.add_argument("--no-second-world", dest="second_world", action="store_const", const="",
                   help="skip the second world")
    p.add_argument("--second-data", type=Path, default=d("second-data", ""),
                   help="its data directory (default data/WORLD)")
    p.add_argument("--second-artifacts", type=Path, default=d("second-artifacts", ""),
                   help="its encoder, taxonomy and head (default artifacts/WORLD)")
    p.add_argument("--second-visitors", type=int, default=int(d("second-visitors", "6000")))
    p.add_argument("--second-epochs", type=int, default=int(d("second-epochs", "16")))
    p.add_argument("--second-llm-customers", type=int, default=int(d("second-llm-customers", "50")),
                   help="LLM-labelled customers for its conversion comparison (0: none)")
    p.add_argument("--second-clusters", type=int, default=int(d("second-clusters", "10")),
                   help="clusters its generated taxonomy names")
    p.add_argument("--robustness", action=argparse.BooleanOptionalAction,
                   default=d("robustness", "1").lower() not in ("0", "false", "no"),
                   help="also evaluate the previous configuration (--world weak) in the robustness section")
    p.add_argument("--robust-data", type=Path, default=d("robust-data", "data/weak"))
    p.add_argument("--robust-artifacts", type=Path, default=d("robust-artifacts", "artifacts/weak"))
    p.add_argument("--robust-visitors", type=int, default=int(d("robust-visitors", "3000")))
    p.add_argument("--robust-epochs", type=int, default=int(d("robust-epochs", "16")))
    p.add_argument("--robust-llm-customers", type=int, default=int(d("robust-llm-customers", "0")))
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    return p


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    a = build_parser(env).parse_args(argv)
    try:
        seeds = tuple(int(s) for s in str(a.seeds).split(",") if s.strip())
    except ValueError as exc:
        raise SystemExit(f"--seeds must be comma-separated integers, got {a.seeds!r}") from exc
    if not seeds:
        raise SystemExit("--seeds is empty")
    second = str(a.second_world or "").strip()
    if second.lower() in ("0", "false", "no", "none"):
        second = ""
    if second:
        from training.worlds import WORLD_NAMES

        if second not in WORLD_NAMES:
            raise SystemExit(f"--second-world must be one of {', '.join(WORLD_NAMES)}, got {second!r}")
    given = lambda p: str(p) not in ("", ".")  # noqa: E731
    return Settings(a.data, a.artifacts, a.head if given(a.head) else a.artifacts / "intent_head.json",
                    a.taxonomy if given(a.taxonomy) else a.artifacts / "taxonomy.yaml", a.reports,
                    a.ranker_out if given(a.ranker_out) else a.artifacts / "ranker.json", seeds,
                    a.test_share, a.lookback_days, a.llm_customers, a.n_boot, second or None,
                    a.second_data if given(a.second_data) else Path("data") / (second or "second_world"),
                    a.second_artifacts if given(a.second_artifacts) else Path("artifacts") / (second or "second_world"),
                    a.second_visitors, a.second_epochs, a.second_llm_customers, a.second_clusters, a.robustness,
                    a.robust_data, a.robust_artifacts, a.robust_visitors, a.robust_epochs, a.robust_llm_customers,
                    a.progress)


def run(s: Settings, llm_client=None) -> dict:
    from training.evaluation.evaluate import EvalConfig, evaluate_dataset
    from training.evaluation.report import plots, truth_customer_intents, write_report
    from training.pipeline import machine_info

    started = time.perf_counter()
    for path in (s.head, s.artifacts / "encoder.pt"):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `make train` and `make taxonomy` first")
    taxonomy = s.taxonomy if s.taxonomy.exists() else None
    cfg = EvalConfig(seeds=s.seeds, test_share=s.test_share, lookback_days=s.lookback_days,
                     llm_customers=s.llm_customers if taxonomy else 0, n_boot=s.n_boot)
    results = {"main": evaluate_dataset(s.data, s.artifacts, s.head, taxonomy, cfg, llm_client, s.progress)}
    if s.second_world:
        from training.evaluation.robustness import WorldPlan, prepare

        plan = WorldPlan(s.second_world, s.second_data, s.second_artifacts, s.second_visitors, epochs=s.second_epochs,
                         clusters=s.second_clusters)
        head = prepare(plan, s.progress, llm_client)
        second_taxonomy = plan.taxonomy_out if plan.taxonomy_out.exists() else None
        scfg = EvalConfig(seeds=s.seeds, test_share=s.test_share, lookback_days=s.lookback_days,
                          llm_customers=s.second_llm_customers if second_taxonomy else 0, n_boot=s.n_boot)
        results["second_world"] = evaluate_dataset(plan.data, plan.artifacts, head, second_taxonomy, scfg,
                                                   llm_client, s.progress)
    if s.robustness:
        from training.evaluation.robustness import ROBUST_WORLD, WorldPlan, prepare

        if taxonomy is None:
            raise SystemExit("robustness needs the pinned taxonomy; pass --taxonomy or --no-robustness")
        plan = WorldPlan(ROBUST_WORLD, s.robust_data, s.robust_artifacts, s.robust_visitors, epochs=s.robust_epochs,
                         taxonomy=taxonomy)
        head = prepare(plan, s.progress, llm_client)
        rcfg = EvalConfig(seeds=s.seeds, test_share=s.test_share, lookback_days=s.lookback_days,
                          llm_customers=s.robust_llm_customers, n_boot=s.n_boot)
        results["robustness"] = evaluate_dataset(plan.data, plan.artifacts, head, taxonomy, rcfg, llm_client,
                                                 s.progress)
    plot_files = {name: plots(r, s.reports, truth_customer_intents(r.summary["data"]), prefix=f"eval_{name}")
                  for name, r in results.items()}
    served = next(r.ranker for r in results["main"].runs if r.name == "embedding")
    served = type(served)(served.spec, served.weights, served.bias,
                          {**served.meta, "encoder": str(s.artifacts / "encoder.pt"), "head": str(s.head),
                           # the encoder's fingerprint: export refuses to ship this ranker beside another encoder
                           # (its signal is that encoder's embedding space; training/core/manifest.py)
                           "encoder_sha256": sha256_file(s.artifacts / "encoder.pt"),
                           "featurizer_version": json.loads((s.artifacts / "featurizer.json").read_text()).get(
                               "version"),
                           "lookback_days": s.lookback_days, "signal_pooling": signal_pooling(served.spec)})
    served.save(s.ranker_out)
    doc = write_report(results, s.reports, plot_files,
                       {"ranker_artifact": str(s.ranker_out), "seconds": round(time.perf_counter() - started, 1),
                        "machine": machine_info()})
    log.info("wrote %s/eval.json, eval.md and %d plots; ranker -> %s", s.reports,
             sum(map(len, plot_files.values())), s.ranker_out)
    return doc


def signal_pooling(spec) -> str:
    """How the served ranker pools its linked sessions (`ranker.pool_sessions`), in words for its meta."""
    from training.core.ranker import plain_mean

    if spec.signal_dim == 0:
        return "none (app features only)"
    recency = " plus days since the last session and the decayed session count" if spec.recency else ""
    if plain_mean(spec.half_life_days):
        return "mean over linked sessions in the lookback" + recency
    return (f"recency-weighted mean over linked sessions in the lookback (weight 0.5 ** (age days / "
            f"{spec.half_life_days:g}), by session end)" + recency)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "INTENT_TORCH_THREADS" in os.environ or not os.environ.get("OMP_NUM_THREADS"):
        import torch

        # one thread: the encoder work here is small, and oversubscribed threads on a shared 2-core box
        # slowed a training run a hundredfold in practice
        torch.set_num_threads(int(os.environ.get("INTENT_TORCH_THREADS", "1")))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small BLAS calls: extra threads only contend on a shared box
        doc = run(parse(argv))
    print(json.dumps({k: doc[k] for k in ("tile_ranking", "conversion")}, indent=2))
    print(json.dumps({"capture": {name: {k: c.get(k) for k in ("world", "log_loss", "recall_at_1", "target", "met")}
                                  for name, c in doc["capture"]["datasets"].items()}}, indent=2))
    return 0
