"""The tile ranker as the gateway serves it: numpy only (no torch, no sklearn), loaded from `ranker.json`.

The ranker is a logistic regression on explicit features, so scoring is `sigmoid(X @ w + b)`:

    tile one-hot [T] | position one-hot [P] | segment one-hot [S] | segment x product one-hot [S*Q]
    | tile product held, number of products held, log1p(tenure months) [3]
    | signal block (absent for the app-only baseline), one of two layouts (`signal_block`):
        "need":    no-session indicator [1] | no-session x tile [T] | need probability of the tile's product [1]
                   | with `recency` (format 3): need x log1p(days since the last session), log1p(days since
                     the last session), log1p(recency-weighted session count) [3]
        "crosses": no-session indicator [1] | no-session x tile [T] | z-scored signal [D] | signal x tile [D*T]
                   | with `recency` (format 3): the signal x tile crosses are multiplied by the need's decay
                     `0.5 ** (days since the last session / half_life_days)`, and the recency features and
                     their tile crosses are added [R + R*T]

The signal is the customer's pre-login summary from linked web sessions in the lookback: the session
embeddings (or distilled intent probabilities, or LLM label one-hots) pooled by `pool_sessions`, a vector of
`signal_dim` numbers. A customer with no linked session gets the no-session indicator, a zero signal and zero
recency features.

Recency pooling (`pool_sessions`, the one function the evaluation and the gateway both call): a session that
ended `age` days before the scoring time weighs `0.5 ** (age / half_life_days)`, and the pooled signal is the
weighted mean; `half_life_days` None (or inf) is the plain mean, the format 1/2 behaviour. Beside the signal
it returns the recency features `RECENCY_FEATURES`: log1p of the days since the most recent session, and
log1p of the recency-weighted session count (the count itself at an infinite half-life). In the "need"
layout they enter as three weights: the need probability times log1p(days since last) (a need fading with
the time since the last visit), and the two features themselves (zero without a session, so they are
crossed with having one).

"need" (the served layout since format 2): a small softmax head inside the ranker, `softmax(signal @ need_weights.T
+ need_bias)` over `need_products`, estimates which product the customer's need is for (it is fitted on the
training window's conversions, see `training/evaluation/need.py`); each tile gets the probability of its own
product, one number with one weight. "crosses" (format 1): every signal dimension crossed with every tile,
D*T weights. On the weak world's ~600 clicks of visits with a session those could not be pinned down; on the
calibrated worlds (thousands of such clicks) they can, and they see what the need head cannot: which *tile*
of a product the session points to, and a need's strength beside its product. With `recency` the crosses fade
with the time since the customer's last session at the same half-life that pools them, so a stale visit
counts less than yesterday's (the served layout since the calibrated worlds: `make eval` reports both).

`ranker.json`, format "intent-ranker/3": {"format", "signal", "signal_dim", "signal_block", "tiles",
"tile_products", "segments", "positions", "signal_mean", "signal_scale", "need_products", "need_weights",
"need_bias", "half_life_days" (a number, or null for the plain mean), "recency" (bool: the recency features
are in the layout), "recency_features" (their names, in order), "weights", "bias", "feature_names", "meta"}.
Format "intent-ranker/2" files (no half_life_days, no recency) load as the plain mean without recency
features, and "intent-ranker/1" files (no signal_block, no need_*) as the "crosses" layout: both score
exactly as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from pathlib import Path

import numpy as np

FORMAT = "intent-ranker/3"
READABLE_FORMATS = ("intent-ranker/1", "intent-ranker/2", FORMAT)
BLOCKS = ("need", "crosses")
DAY_MS = 86_400_000
RECENCY_FEATURES = ("log1p_days_since_last", "log1p_decayed_sessions")
"""The recency features `pool_sessions` returns, in order."""


def plain_mean(half_life_days: float | None) -> bool:
    """Whether a half-life means the plain (unweighted) mean: None or infinite."""
    return half_life_days is None or math.isinf(half_life_days)


def recency_weights(end_ms: Sequence[int] | np.ndarray, now_ms: int, half_life_days: float | None) -> np.ndarray:
    """Weight of each session, `0.5 ** (age_days / half_life_days)` with age = now - end (clipped at 0); all
    ones for the plain mean (None or inf)."""
    end = np.asarray(end_ms, dtype=np.int64).reshape(-1)
    if plain_mean(half_life_days):
        return np.ones(len(end))
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, None or inf, got {half_life_days}")
    age_days = np.maximum(now_ms - end, 0) / DAY_MS
    return 0.5 ** (age_days / half_life_days)


@dataclass(frozen=True)
class PooledSignal:
    """A customer's pre-login input at one time: the pooled signal, the recency features, whether any session
    had a signal, and how many did."""

    signal: np.ndarray
    """[D]: zeros without a session."""
    recency: np.ndarray
    """[len(RECENCY_FEATURES)]: zeros without a session."""
    has_session: bool
    n_sessions: int


def pool_sessions(rows: np.ndarray, end_ms: Sequence[int] | np.ndarray, now_ms: int,
                  half_life_days: float | None = None) -> PooledSignal:
    """Recency pooling of per-session signal rows [K, D] that ended at `end_ms` [K], scored at `now_ms`.

    Rows with a NaN are skipped (a session without that signal). The pooled signal is the mean of the rows
    weighted by `recency_weights` (the plain mean, computed as numpy's mean of the rows, for None/inf); the
    recency features are log1p(days from the most recent session's end to now, clipped at 0) and log1p(the sum
    of the weights). Sessions are taken in end-time order, so callers that list them in another order get
    the same numbers."""
    rows = np.asarray(rows)
    end = np.asarray(end_ms, dtype=np.int64).reshape(-1)
    if rows.ndim != 2 or len(rows) != len(end):
        raise ValueError(f"expected rows [K, D] and end_ms [K], got {rows.shape} and {end.shape}")
    keep = ~np.isnan(rows).any(axis=1) if len(rows) else np.zeros(0, bool)
    rows, end = rows[keep], end[keep]
    if len(rows) == 0:
        return PooledSignal(np.zeros(rows.shape[1], np.float32), np.zeros(len(RECENCY_FEATURES)), False, 0)
    order = np.argsort(end, kind="stable")
    rows, end = rows[order], end[order]
    w = recency_weights(end, now_ms, half_life_days)
    pooled = rows.mean(axis=0) if plain_mean(half_life_days) else (w[:, None] * rows).sum(axis=0) / w.sum()
    days_since_last = max(now_ms - int(end[-1]), 0) / DAY_MS
    recency = np.array([math.log1p(days_since_last), math.log1p(float(w.sum()))])
    return PooledSignal(np.asarray(pooled, np.float32), recency, True, len(rows))


@dataclass(frozen=True)
class FeatureSpec:
    """The vocabularies and signal transforms that turn impressions into the feature matrix."""

    tiles: tuple[str, ...]
    tile_products: tuple[str, ...]
    """Product of each tile, aligned with `tiles`."""
    segments: tuple[str, ...]
    positions: int = 4
    """Positions 0..positions-1 get their own column; later positions share the last one."""
    signal: str = "none"
    """Name of the pre-login signal ("none" for the app-only baseline)."""
    signal_dim: int = 0
    """Length of the signal vector the caller passes (the embedding's width for the served ranker)."""
    signal_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    signal_scale: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    """"crosses" only: z-score of the signal (training mean / standard deviation)."""
    signal_block: str = "crosses"
    """How the signal enters: "need" or "crosses" (see the module docstring)."""
    need_products: tuple[str, ...] = ()
    need_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    """"need" only: [len(need_products), signal_dim], applied to the raw signal (standardization folded in)."""
    need_bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    half_life_days: float | None = None
    """Recency pooling of the sessions (`pool_sessions`); None (or inf): the plain mean, as formats 1 and 2."""
    recency: bool = False
    """Format 3: the recency features (`RECENCY_FEATURES`) are in the layout ("need": with need x log1p(days
    since last); "crosses": with their tile crosses, and the signal crosses decayed); False: formats 1 and 2."""

    def __post_init__(self) -> None:
        if self.signal_block not in BLOCKS:
            raise ValueError(f"signal_block must be one of {BLOCKS}, got {self.signal_block!r}")
        if self.recency and not self.signal_dim:
            raise ValueError("recency features need a signal")
        if self.half_life_days is not None and not (self.half_life_days > 0):
            raise ValueError(f"half_life_days must be > 0, None or inf, got {self.half_life_days}")
        if len(self.tiles) != len(self.tile_products):
            raise ValueError("tiles and tile_products differ in length")
        k = len(self.need_products)
        head_ok = (np.shape(self.need_weights) == (k, self.signal_dim) if k else np.size(self.need_weights) == 0)
        if not head_ok or np.shape(self.need_bias) != (k,):
            raise ValueError(f"need head must be [{len(self.need_products)}, {self.signal_dim}] weights and "
                             f"[{len(self.need_products)}] bias, got {np.shape(self.need_weights)} and "
                             f"{np.shape(self.need_bias)}")

    @property
    def products(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.tile_products)))

    # -- lookups, computed once per spec (a frozen dataclass still has a __dict__ for cached_property)
    @cached_property
    def _tile_lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sorted tile ids, their index in `tiles`, product index (in `products`) and need-head column (-1: none)."""
        order = np.argsort(np.asarray(self.tiles, dtype=object).astype(str), kind="stable")
        q_index = {q: i for i, q in enumerate(self.products)}
        n_index = {q: i for i, q in enumerate(self.need_products)}
        prod = np.array([q_index[p] for p in self.tile_products], dtype=np.int64)
        need = np.array([n_index.get(p, -1) for p in self.tile_products], dtype=np.int64)
        return np.asarray(self.tiles, dtype=str)[order], order, prod[order], need[order]

    @cached_property
    def _segment_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(np.asarray(self.segments, dtype=str), kind="stable")
        return np.asarray(self.segments, dtype=str)[order], order

    @staticmethod
    def _find(sorted_keys: np.ndarray, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(position in sorted_keys, found) for each value, vectorized."""
        values = np.asarray(values, dtype=str)
        if len(sorted_keys) == 0:
            return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
        pos = np.clip(np.searchsorted(sorted_keys, values), 0, len(sorted_keys) - 1)
        return pos, sorted_keys[pos] == values

    def feature_names(self) -> list[str]:
        t, p = list(self.tiles), self.products
        names = [f"tile={x}" for x in t] + [f"pos={i}" for i in range(self.positions)]
        names += [f"segment={s}" for s in self.segments]
        names += [f"segment={s}&product={q}" for s in self.segments for q in p]
        names += ["tile_product_held", "n_products", "log1p_tenure"]
        if self.signal_dim:
            names += ["no_session"] + [f"no_session&tile={x}" for x in t]
            if self.signal_block == "need":
                names += [f"{self.signal}:need_of_tile_product"]
                if self.recency:
                    names += [f"{self.signal}:need_of_tile_product&{RECENCY_FEATURES[0]}"]
                    names += [f"{self.signal}:{r}" for r in RECENCY_FEATURES]
            else:
                decayed = "&decay" if self.recency else ""
                names += [f"{self.signal}[{d}]" for d in range(self.signal_dim)]
                names += [f"{self.signal}[{d}]&tile={x}{decayed}" for d in range(self.signal_dim) for x in t]
                if self.recency:
                    names += [f"{self.signal}:{r}" for r in RECENCY_FEATURES]
                    names += [f"{self.signal}:{r}&tile={x}" for r in RECENCY_FEATURES for x in t]
        return names

    def decay(self, recency: np.ndarray) -> np.ndarray:
        """The need's decay per row, `0.5 ** (days since the last session / half_life_days)` (1 for the plain
        mean), from the recency features [N, R] (`RECENCY_FEATURES[0]` is log1p of those days)."""
        if plain_mean(self.half_life_days):
            return np.ones(len(recency), np.float32)
        days = np.expm1(np.asarray(recency, dtype=np.float64)[:, 0])
        return (0.5 ** (days / self.half_life_days)).astype(np.float32)

    def need_probabilities(self, signal: np.ndarray) -> np.ndarray:
        """The need head's product probabilities [N, len(need_products)] for signals [N, signal_dim]."""
        logits = np.asarray(signal, dtype=np.float32) @ self.need_weights.T + self.need_bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def pool(self, rows: np.ndarray, end_ms: Sequence[int] | np.ndarray, now_ms: int) -> PooledSignal:
        """`pool_sessions` with this spec's half-life."""
        return pool_sessions(rows, end_ms, now_ms, self.half_life_days)

    def features(self, tile_ids: Sequence[str], positions: Sequence[int], segments: Sequence[str],
                 tenure_months: Sequence[float], products_held: Sequence[Sequence[str]],
                 signal: np.ndarray | None = None, has_session: Sequence[bool] | None = None,
                 recency: np.ndarray | None = None) -> np.ndarray:
        """Feature matrix [N, F] for N shown tiles (one row per tile per visit). Unknown tiles or segments
        get all-zero one-hots (the ranker then falls back on the other features). `signal` [N, signal_dim] is
        the pooled pre-login signal of each row's customer (anything where `has_session` is false), `recency`
        [N, len(RECENCY_FEATURES)] its recency features (needed when `self.recency`), both from `pool`."""
        n = len(tile_ids)
        if not (len(positions) == len(segments) == len(tenure_months) == len(products_held) == n):
            raise ValueError("tile_ids, positions, segments, tenure_months and products_held differ in length")
        tile_keys, tile_order, tile_prod, tile_need = self._tile_lookup
        seg_keys, seg_order = self._segment_lookup
        n_t, n_s, n_q = len(self.tiles), len(self.segments), len(self.products)
        rows = np.arange(n)
        tpos, tok = self._find(tile_keys, tile_ids)
        spos, sok = self._find(seg_keys, segments)
        ti, si = tile_order[tpos], seg_order[spos] if n_s else spos
        qi = tile_prod[tpos]
        tile_oh = np.zeros((n, n_t), np.float32)
        tile_oh[rows[tok], ti[tok]] = 1
        pos_oh = np.zeros((n, self.positions), np.float32)
        pos_oh[rows, np.clip(np.asarray(positions, dtype=int), 0, self.positions - 1)] = 1
        seg_oh = np.zeros((n, n_s), np.float32)
        seg_oh[rows[sok], si[sok]] = 1
        seg_prod = np.zeros((n, n_s * n_q), np.float32)
        ok = sok & tok
        seg_prod[rows[ok], si[ok] * n_q + qi[ok]] = 1
        n_held = np.fromiter(map(len, products_held), np.int64, n)
        held_oh = np.zeros((n, n_q + 1), bool)  # products held per row (last column: unknown products)
        flat = list(chain.from_iterable(products_held))
        if flat:
            keys = np.asarray(self.products, dtype=str)
            hpos, hok = self._find(keys, flat)
            held_oh[np.repeat(rows, n_held), np.where(hok, hpos, n_q)] = True
        app = np.empty((n, 3), np.float32)
        app[:, 0] = tok & held_oh[rows, np.where(tok, qi, n_q)]
        app[:, 1] = n_held
        app[:, 2] = np.log1p(np.asarray(tenure_months, dtype=float))
        blocks = [tile_oh, pos_oh, seg_oh, seg_prod, app]
        if self.signal_dim:
            if signal is None or has_session is None:
                raise ValueError(f"ranker uses the {self.signal!r} signal: pass signal and has_session")
            signal = np.asarray(signal, dtype=np.float32).reshape(n, self.signal_dim)
            has = np.asarray(has_session, dtype=bool).reshape(n)
            none = (~has).astype(np.float32)[:, None]
            blocks += [none, none * tile_oh]
            rec = None
            if self.recency:
                if recency is None:
                    raise ValueError("the ranker uses recency features: pass recency")
                rec = np.asarray(recency, dtype=np.float32).reshape(n, len(RECENCY_FEATURES))
                rec = np.where(has[:, None], rec, 0).astype(np.float32)
            if self.signal_block == "need":
                need = np.zeros((n, 1), np.float32)
                col = tile_need[tpos]
                use = has & tok & (col >= 0)
                if use.any():
                    need[use, 0] = self.need_probabilities(signal[use])[np.arange(int(use.sum())), col[use]]
                blocks.append(need)
                if rec is not None:
                    blocks += [need * rec[:, :1], rec]
            else:
                z = np.where(has[:, None], (signal - self.signal_mean) / self.signal_scale, 0).astype(np.float32)
                crosses = (z[:, :, None] * tile_oh[:, None, :]).reshape(n, -1)
                if rec is None:
                    blocks += [z, crosses]
                else:
                    decay = np.where(has, self.decay(rec), 0).astype(np.float32)[:, None]
                    blocks += [z, crosses * decay, rec, (rec[:, :, None] * tile_oh[:, None, :]).reshape(n, -1)]
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
        return {"format": FORMAT, "signal": s.signal, "signal_dim": s.signal_dim, "signal_block": s.signal_block,
                "tiles": list(s.tiles), "tile_products": list(s.tile_products), "segments": list(s.segments),
                "positions": s.positions, "signal_mean": s.signal_mean.tolist(),
                "signal_scale": s.signal_scale.tolist(), "need_products": list(s.need_products),
                "need_weights": np.asarray(s.need_weights).tolist(), "need_bias": np.asarray(s.need_bias).tolist(),
                "half_life_days": None if plain_mean(s.half_life_days) else float(s.half_life_days),
                "recency": s.recency, "recency_features": list(RECENCY_FEATURES) if s.recency else [],
                "weights": self.weights.tolist(), "bias": self.bias, "feature_names": s.feature_names(),
                "meta": dict(self.meta)}

    def save(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path | str) -> Ranker:
        doc = json.loads(Path(path).read_text())
        if doc.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{path}: format {doc.get('format')!r} is not one of {READABLE_FORMATS}")
        dim = int(doc["signal_dim"])
        products = tuple(doc.get("need_products", ()))
        need_w = np.asarray(doc.get("need_weights", []), np.float32)
        spec = FeatureSpec(tuple(doc["tiles"]), tuple(doc["tile_products"]), tuple(doc["segments"]),
                           int(doc["positions"]), doc["signal"], dim,
                           np.asarray(doc["signal_mean"], np.float32), np.asarray(doc["signal_scale"], np.float32),
                           doc.get("signal_block", "crosses"), products,
                           need_w.reshape(len(products), dim) if products else np.zeros((0, 0), np.float32),
                           np.asarray(doc.get("need_bias", []), np.float32),
                           _half_life(doc.get("half_life_days")), bool(doc.get("recency", False)))
        if spec.recency and list(doc.get("recency_features", [])) != list(RECENCY_FEATURES):
            raise ValueError(f"{path}: recency features {doc.get('recency_features')} are not {RECENCY_FEATURES}")
        weights = np.asarray(doc["weights"], np.float32)
        if len(weights) != len(spec.feature_names()):
            raise ValueError(f"{path}: {len(weights)} weights for {len(spec.feature_names())} features")
        return cls(spec, weights, float(doc["bias"]), doc.get("meta", {}))


def _half_life(value) -> float | None:
    return None if value is None or plain_mean(float(value)) else float(value)


def score(ranker: Ranker | Path | str, features: np.ndarray) -> np.ndarray:
    """Click probabilities for a feature matrix; `ranker` may be a path to ranker.json."""
    model = ranker if isinstance(ranker, Ranker) else Ranker.load(ranker)
    return model.score(features)
