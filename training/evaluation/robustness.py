"""The evaluation's extra worlds, each with its own data, encoder and distilled head, prepared on demand.

- **second world** (`credit_union` by default): another site, URL scheme, intents and tiles. The main pinned
  taxonomy names the bank's intents and cannot serve it, so a small taxonomy is generated on it
  (`run_taxonomy`, cluster-first with few clusters and small label budgets).
- **robustness** (`weak`): the previous configuration of the bank, where the intent signal is weak; same
  intents as the main world, so the main taxonomy is pinned and only a small LLM label sample is spent.

`prepare` generates the world's data (`training.synthetic.generate`), trains its encoder with the `TrainConfig`
defaults (`training.pipeline.train`) and distills its head; each step is skipped when its output already
exists, so a rerun of `make eval` costs only the evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from training.synthetic import GeneratorConfig, generate

log = logging.getLogger(__name__)
ROBUST_WORLD = "weak"
"""The robustness section's world: the previous (weak) configuration of the bank."""
SECOND_WORLD = "credit_union"


@dataclass(frozen=True)
class WorldPlan:
    """What `prepare` builds for one extra world."""

    world: str
    data: Path
    artifacts: Path
    visitors: int = 3000
    seed: int = 23
    epochs: int = 5
    taxonomy: Path | None = None
    """A pinned taxonomy (same intents as the main world); None: generate one on this world's sessions."""
    clusters: int = 10
    """KMeans clusters the LLM names when the taxonomy is generated."""
    label_train: int = 80
    label_eval: int = 20

    @property
    def head(self) -> Path:
        return self.artifacts / "intent_head.json"

    @property
    def taxonomy_out(self) -> Path:
        """The taxonomy the head was distilled under (`run_taxonomy` writes it beside the head)."""
        return self.artifacts / "taxonomy.yaml"


def world_generator(world: str, visitors: int = 3000, seed: int = 23) -> GeneratorConfig:
    return GeneratorConfig(world=world, visitors=visitors, seed=seed)


def robust_generator(visitors: int = 3000, seed: int = 23) -> GeneratorConfig:
    """The robustness section's data: the previous (weak) configuration."""
    return world_generator(ROBUST_WORLD, visitors, seed)


def prepare(plan: WorldPlan, progress: bool = False, client=None) -> Path:
    """Generate, train and distill for `plan` (each step only when its output is absent); the head's path."""
    from training.encoder.train import TrainConfig
    from training.pipeline import train
    from training.sessions import data_world

    if (plan.data / "events.jsonl").exists():
        found = data_world(plan.data)["name"]
        if found != plan.world:
            raise ValueError(f"{plan.data} holds the {found!r} world, not {plan.world!r}: remove it or pass another "
                             "data directory")
    if not (plan.data / "events.jsonl").exists():
        gen = world_generator(plan.world, plan.visitors, plan.seed)
        log.info("%s: generating %s into %s", plan.world, gen, plan.data)
        generate(gen, plan.data)
    plan.artifacts.mkdir(parents=True, exist_ok=True)
    if not (plan.artifacts / "encoder.pt").exists():
        log.info("%s: training the encoder (%d epochs) into %s", plan.world, plan.epochs, plan.artifacts)
        train(plan.data, plan.artifacts, TrainConfig(epochs=plan.epochs, seed=plan.seed))
    if not plan.head.exists():
        from training.taxonomy.generate import TaxonomyConfig
        from training.taxonomy.stage import StageConfig, run_taxonomy

        if plan.taxonomy is not None:
            log.info("%s: distilling the head on %d LLM labels under the pinned taxonomy %s", plan.world,
                     plan.label_train, plan.taxonomy)
        else:
            log.info("%s: generating a taxonomy (%d clusters) and distilling the head on %d LLM labels", plan.world,
                     plan.clusters, plan.label_train)
        cfg = StageConfig(pinned=plan.taxonomy, pool=max(600, plan.label_train), label_train=plan.label_train,
                          label_eval=plan.label_eval, seed=plan.seed,
                          taxonomy=TaxonomyConfig(clusters=plan.clusters, min_labels=min(8, plan.clusters),
                                                  seed=plan.seed))
        run_taxonomy(plan.data, plan.artifacts, plan.artifacts / "taxonomy_report.json", cfg, client=client,
                     progress=progress)
    return plan.head
