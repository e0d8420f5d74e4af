"""The tile ranker as the gateway serves it: numpy only (no torch, no sklearn), loaded from `ranker.json`.

The ranker is a logistic regression on explicit features, so scoring is `sigmoid(X @ w + b)`:

    tile one-hot [T] | position one-hot [P] | segment one-hot [S] | segment x tile product [S*Q]
    | tile product held, number of products held, log1p(tenure months) [3]
    | signal block (absent for the app-only baseline):
        no-session indicator [1] | no-session x tile [T] | z-scored signal [D] | z-scored signal x tile [D*T]

The signal is the customer's pre-login intent summary from linked web sessions (the mean session embedding,
the mean distilled intent probabilities, or the LLM label histogram), z-scored with the training mean/scale;
a customer with no linked session in the lookback gets the no-session indicator and a zero signal.
Crossing the signal with the tile lets intent change the *order* of tiles, not only a customer's click rate.

`ranker.json` (format "intent-ranker/1"): {"format", "signal", "signal_dim", "tiles", "tile_products",
"segments", "positions", "signal_mean", "signal_scale", "weights", "bias", "feature_names", "meta"}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "intent-ranker/1"


@dataclass(frozen=True)
class FeatureSpec:
    """The vocabularies and signal normalization that turn impressions into the feature matrix."""

    tiles: tuple[str, ...]
    tile_products: tuple[str, ...]
    """Product of each tile, aligned with `tiles`."""
    segments: tuple[str, ...]
    positions: int = 4
    """Positions 0..positions-1 get their own column; later positions share the last one."""
    signal: str = "none"
    """Name of the pre-login signal ("none" for the app-only baseline)."""
    signal_dim: int = 0
    signal_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    signal_scale: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))

    @property
    def products(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.tile_products)))

    def feature_names(self) -> list[str]:
        t, p = list(self.tiles), self.products
        names = [f"tile={x}" for x in t] + [f"pos={i}" for i in range(self.positions)]
        names += [f"segment={s}" for s in self.segments]
        names += [f"segment={s}&product={q}" for s in self.segments for q in p]
        names += ["tile_product_held", "n_products", "log1p_tenure"]
        if self.signal_dim:
            names += ["no_session"] + [f"no_session&tile={x}" for x in t]
            names += [f"{self.signal}[{d}]" for d in range(self.signal_dim)]
            names += [f"{self.signal}[{d}]&tile={x}" for d in range(self.signal_dim) for x in t]
        return names

    def features(self, tile_ids: Sequence[str], positions: Sequence[int], segments: Sequence[str],
                 tenure_months: Sequence[float], products_held: Sequence[Sequence[str]],
                 signal: np.ndarray | None = None, has_session: Sequence[bool] | None = None) -> np.ndarray:
        """Feature matrix [N, F] for N shown tiles (one row per tile per visit). Unknown tiles or segments
        get all-zero one-hots (the ranker then falls back on the other features)."""
        n = len(tile_ids)
        if not (len(positions) == len(segments) == len(tenure_months) == len(products_held) == n):
            raise ValueError("tile_ids, positions, segments, tenure_months and products_held differ in length")
        t_index = {x: i for i, x in enumerate(self.tiles)}
        s_index = {x: i for i, x in enumerate(self.segments)}
        q_index = {x: i for i, x in enumerate(self.products)}
        tile_product = dict(zip(self.tiles, self.tile_products, strict=True))
        n_t, n_s, n_q = len(self.tiles), len(self.segments), len(self.products)
        rows = np.arange(n)
        ti = np.array([t_index.get(x, -1) for x in tile_ids])
        si = np.array([s_index.get(x, -1) for x in segments])
        qi = np.array([q_index.get(tile_product.get(x, ""), -1) for x in tile_ids])
        tile_oh = np.zeros((n, n_t), np.float32)
        tile_oh[rows[ti >= 0], ti[ti >= 0]] = 1
        pos_oh = np.zeros((n, self.positions), np.float32)
        pos_oh[rows, np.clip(np.asarray(positions, dtype=int), 0, self.positions - 1)] = 1
        seg_oh = np.zeros((n, n_s), np.float32)
        seg_oh[rows[si >= 0], si[si >= 0]] = 1
        seg_prod = np.zeros((n, n_s * n_q), np.float32)
        ok = (si >= 0) & (qi >= 0)
        seg_prod[rows[ok], si[ok] * n_q + qi[ok]] = 1
        held = np.array([tile_product.get(x) in set(h) for x, h in zip(tile_ids, products_held, strict=True)])
        app = np.column_stack([held, [len(h) for h in products_held],
                               np.log1p(np.asarray(tenure_months, dtype=float))]).astype(np.float32)
        blocks = [tile_oh, pos_oh, seg_oh, seg_prod, app]
        if self.signal_dim:
            if signal is None or has_session is None:
                raise ValueError(f"ranker uses the {self.signal!r} signal: pass signal and has_session")
            signal = np.asarray(signal, dtype=np.float32).reshape(n, self.signal_dim)
            has = np.asarray(has_session, dtype=bool)
            z = np.where(has[:, None], (signal - self.signal_mean) / self.signal_scale, 0).astype(np.float32)
            none = (~has).astype(np.float32)[:, None]
            blocks += [none, none * tile_oh, z, (z[:, :, None] * tile_oh[:, None, :]).reshape(n, -1)]
        return np.concatenate(blocks, axis=1)


@dataclass(frozen=True)
class Ranker:
    """A fitted logistic ranker: click probability = sigmoid(features @ weights + bias)."""

    spec: FeatureSpec
    weights: np.ndarray
    bias: float
    meta: Mapping = field(default_factory=dict)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Click probabilities [N] for a feature matrix [N, F] built by `spec.features`."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.weights):
            raise ValueError(f"expected features [N, {len(self.weights)}], got {features.shape}")
        return 1.0 / (1.0 + np.exp(-(features @ self.weights + self.bias)))

    def to_dict(self) -> dict:
        s = self.spec
        return {"format": FORMAT, "signal": s.signal, "signal_dim": s.signal_dim, "tiles": list(s.tiles),
                "tile_products": list(s.tile_products), "segments": list(s.segments), "positions": s.positions,
                "signal_mean": s.signal_mean.tolist(), "signal_scale": s.signal_scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias, "feature_names": s.feature_names(),
                "meta": dict(self.meta)}

    def save(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path | str) -> Ranker:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path}: format {doc.get('format')!r} is not {FORMAT!r}")
        spec = FeatureSpec(tuple(doc["tiles"]), tuple(doc["tile_products"]), tuple(doc["segments"]),
                           int(doc["positions"]), doc["signal"], int(doc["signal_dim"]),
                           np.asarray(doc["signal_mean"], np.float32), np.asarray(doc["signal_scale"], np.float32))
        weights = np.asarray(doc["weights"], np.float32)
        if len(weights) != len(spec.feature_names()):
            raise ValueError(f"{path}: {len(weights)} weights for {len(spec.feature_names())} features")
        return cls(spec, weights, float(doc["bias"]), doc.get("meta", {}))


def score(ranker: Ranker | Path | str, features: np.ndarray) -> np.ndarray:
    """Click probabilities for a feature matrix; `ranker` may be a path to ranker.json."""
    model = ranker if isinstance(ranker, Ranker) else Ranker.load(ranker)
    return model.score(features)
