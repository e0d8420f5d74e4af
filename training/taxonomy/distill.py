"""The distilled intent head: a calibrated linear classifier on the frozen session embedding.

It learns the LLM's labels so that intents come at serving latency. The fitted head is kept as plain
arrays (weights, bias, labels) so it can be exported beside the encoder without sklearn at serving time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class IntentHead:
    """softmax(embedding @ weights.T + bias) over `labels`; temperature-calibrated on held-out data."""

    labels: tuple[str, ...]
    weights: np.ndarray  # float32 [K, E]
    bias: np.ndarray  # float32 [K]
    temperature: float = 1.0
    taxonomy_version: str = ""
    """The taxonomy whose labels it predicts (a head is only valid with that taxonomy)."""

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        logits = (embeddings @ self.weights.T + self.bias) / self.temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, embeddings: np.ndarray) -> list[str]:
        return [self.labels[i] for i in self.probabilities(embeddings).argmax(axis=1)]

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps({"labels": list(self.labels), "weights": self.weights.tolist(),
                                          "bias": self.bias.tolist(), "temperature": self.temperature,
                                          "taxonomy_version": self.taxonomy_version}))

    @classmethod
    def load(cls, path: Path | str) -> IntentHead:
        doc = json.loads(Path(path).read_text())
        return cls(tuple(doc["labels"]), np.asarray(doc["weights"], dtype=np.float32),
                   np.asarray(doc["bias"], dtype=np.float32), float(doc["temperature"]),
                   str(doc.get("taxonomy_version", "")))


def fit_head(embeddings: np.ndarray, labels: Sequence[str], calibration_x: np.ndarray | None = None,
             calibration_y: Sequence[str] | None = None, c: float = 1.0, seed: int = 0,
             taxonomy_version: str = "") -> IntentHead:
    """Multinomial logistic regression; with a calibration split, a temperature fitted by log loss."""
    if len(set(labels)) < 2:
        raise ValueError(f"need at least two distinct labels to train a head, got {sorted(set(labels))}")
    model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(embeddings, labels)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn fits one logit for two classes: softmax over [0, logit] is the same
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    head = IntentHead(tuple(str(x) for x in model.classes_), coef.astype(np.float32),
                      intercept.astype(np.float32), taxonomy_version=taxonomy_version)
    if calibration_x is None or calibration_y is None:
        return head
    return replace(head, temperature=_fit_temperature(head, calibration_x, calibration_y))


def _fit_temperature(head: IntentHead, x: np.ndarray, y: Sequence[str]) -> float:
    """Grid search of the temperature minimizing log loss (labels unseen by the head are skipped)."""
    index = {label: i for i, label in enumerate(head.labels)}
    rows = [(i, index[label]) for i, label in enumerate(y) if label in index]
    if not rows:
        return 1.0
    sel, target = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    best_t, best_loss = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.25), np.log(4.0), 41)):
        p = replace(head, temperature=float(t)).probabilities(x[sel])
        loss = -np.mean(np.log(np.clip(p[np.arange(len(sel)), target], 1e-9, None)))
        if loss < best_loss:
            best_t, best_loss = float(t), loss
    return best_t
