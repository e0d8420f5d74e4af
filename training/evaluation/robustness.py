"""The second generator configuration: another seed and intent mix, its own encoder and distilled head.

Kept affordable: fewer visitors, a few encoder epochs, and the main taxonomy pinned (no taxonomy generation),
so only a small LLM label sample is spent on the head. Each step is skipped when its output already exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.synthetic import GeneratorConfig, generate

log = logging.getLogger(__name__)

ROBUST_MIX = {"home_purchase": 2.5, "refinance": 2.0, "auto_loan": 1.5, "casual_browsing": 1.5,
              "credit_card_shopping": 0.5, "fraud_report": 0.4, "new_checking": 0.5}
"""Mortgage-heavy, fewer card shoppers and fraud reports than the main configuration (all 1.0)."""


def robust_generator(visitors: int = 3000, seed: int = 23) -> GeneratorConfig:
    return GeneratorConfig(visitors=visitors, seed=seed, intent_mix=ROBUST_MIX)


def prepare(data_dir: Path, artifacts: Path, taxonomy: Path, visitors: int = 3000, seed: int = 23, epochs: int = 5,
            label_train: int = 80, label_eval: int = 20, progress: bool = False) -> Path:
    """Generate, train and distill for the second configuration; returns the head's path."""
    from training.encoder.train import TrainConfig
    from training.pipeline import train

    if not (data_dir / "events.jsonl").exists():
        log.info("robustness: generating %s", robust_generator(visitors, seed))
        generate(robust_generator(visitors, seed), data_dir)
    artifacts.mkdir(parents=True, exist_ok=True)
    if not (artifacts / "encoder.pt").exists():
        log.info("robustness: training the encoder (%d epochs)", epochs)
        train(data_dir, artifacts, TrainConfig(epochs=epochs, seed=seed))
    head = artifacts / "intent_head.json"
    if not head.exists():
        from training.taxonomy.stage import StageConfig, run_taxonomy

        log.info("robustness: distilling the head on %d LLM labels under the pinned taxonomy", label_train)
        run_taxonomy(data_dir, artifacts, artifacts / "taxonomy_report.json",
                     StageConfig(pinned=taxonomy, pool=max(600, label_train), label_train=label_train,
                                 label_eval=label_eval, seed=seed), progress=progress)
    return head
