"""Diagnostic upper bounds from the generator's hidden truth (synthetic data only; never a product result).

The evaluation loader reads `truth/` here and nowhere else in the rankers. Three bounds, weakest to strongest:

- **perfect session labels** (`oracle_session_intents`): each linked session's hidden intent as a one-hot,
  pooled and fed through the served ranker's design (need head, one weight). In the generator a session's
  pages, dwell, device and searches depend on nothing but that intent, so no representation of the sessions
  can know more about intent than this (it still does not know *when* the need is active).
- **hidden intent and need window** (`oracle_intent`, and `oracle_intent_all` for every customer, also those
  without a linked session): the customer's latent intent as a one-hot, split by whether their need is active
  at the impression ([intent x active | intent x inactive], 2K columns), in the same logistic family with
  signal x tile crosses. `oracle_intent` has the same availability as a session signal (only impressions with
  a linked session in the lookback get it; the rest get the no-session input).
- **the click model itself** (`click_model`): the generator's own click probability for every impression,
  with the per-customer propensity (a random effect the data never shows) integrated out. No ranker that
  learns from these impressions, whatever it knows, can expect to beat it; it mirrors
  `training.synthetic.Generator._app_activity` (tests/unit/test_eval_oracle.py checks it against fresh data).
  Its app-side part alone (`click_model_no_intent`) separates the baseline's own estimation error from what
  the intent is worth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.bank import INTENTS
from training.evaluation.features import DAY_MS, EvalData, ImpressionTable

# the generator's click logit (training/synthetic.py, Generator._app_activity), mirrored for the ceiling
CLICK_BASE, CLICK_AFFINITY, CLICK_POSITION, CLICK_HELD = -2.4, 0.8, -0.35, -1.0
CLICK_NEED_ACTIVE, CLICK_NEED_INACTIVE, PROPENSITY_SD = 2.2, 0.4, 0.5
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(21)  # E over a standard normal: sum(w f(x)) / sqrt(2 pi)
ORACLE_SIGNALS = ("oracle_intent", "oracle_intent_all")


@dataclass(frozen=True)
class Truth:
    intents: tuple[str, ...]
    customer_intent: dict[str, str]
    need_start_ms: dict[str, int]
    session_intent: dict[str, str]
    need_days: float

    @classmethod
    def load(cls, data_dir: Path | str) -> Truth | None:
        """The generator's truth/, or None for data without it (real logs)."""
        root = Path(data_dir) / "truth"
        if not (root / "customers.jsonl").exists():
            return None
        customers = [json.loads(line) for line in (root / "customers.jsonl").read_text().splitlines() if line]
        sessions = root / "sessions.jsonl"
        session_intent = ({r["session_id"]: r["intent"] for r in map(json.loads, sessions.read_text().splitlines())}
                          if sessions.exists() else {})
        config = root / "generator_config.json"
        need_days = float(json.loads(config.read_text()).get("need_days", 21)) if config.exists() else 21.0
        return cls(tuple(i.name for i in INTENTS), {c["customer_id"]: c["intent"] for c in customers},
                   {c["customer_id"]: int(c["need_start_ms"]) for c in customers}, session_intent, need_days)

    def need_active(self, customers: np.ndarray, ts: np.ndarray) -> np.ndarray:
        start = np.array([self.need_start_ms.get(c, -1) for c in customers], dtype=np.int64)
        return (start >= 0) & (ts >= start) & (ts < start + int(self.need_days * DAY_MS))

    def intent_index(self, customers: np.ndarray) -> np.ndarray:
        index = {name: k for k, name in enumerate(self.intents)}
        return np.array([index.get(self.customer_intent.get(c, ""), -1) for c in customers])

    def session_matrix(self, data: EvalData) -> np.ndarray:
        """Per session of `data`: the hidden intent as a one-hot (NaN rows for sessions without truth)."""
        index = {name: k for k, name in enumerate(self.intents)}
        out = np.full((len(data.sessions), len(self.intents)), np.nan, np.float32)
        for i, s in enumerate(data.sessions):
            k = index.get(self.session_intent.get(s.session_id, ""))
            if k is not None:
                out[i] = 0
                out[i, k] = 1
        return out

    def row_signal(self, name: str, table: ImpressionTable) -> tuple[np.ndarray, np.ndarray]:
        """[intent one-hot x need active | intent one-hot x need inactive] per impression, and who gets it."""
        k = self.intent_index(table.customer)
        active = self.need_active(table.customer, table.ts)
        out = np.zeros((len(table), 2 * len(self.intents)), np.float32)
        ok = k >= 0
        out[np.flatnonzero(ok), np.where(active, k, k + len(self.intents))[ok]] = 1
        if name == "oracle_intent":
            return out, table.linked & ok
        if name == "oracle_intent_all":
            return out, ok
        raise ValueError(f"unknown oracle signal {name!r}")

    def click_probability(self, data: EvalData, table: ImpressionTable, intent: bool = True) -> np.ndarray:
        """The generator's click probability per impression, the customer's propensity integrated out
        (without `intent`: its app-side part only, what the app-only baseline could learn at best)."""
        from training.synthetic import SEGMENT_AFFINITY

        need_tiles = {i.name: set(i.tiles) for i in INTENTS}
        active = self.need_active(table.customer, table.ts)
        logit = np.empty(len(table))
        for r, (c, tile, pos) in enumerate(zip(table.customer, table.tile, table.position, strict=True)):
            customer, product = data.customers.get(c), data.tiles.get(tile, "")
            aff = SEGMENT_AFFINITY.get(customer.segment, {}) if customer else {}
            x = CLICK_BASE + CLICK_AFFINITY * aff.get(product, 0.0) + CLICK_POSITION * pos
            x += CLICK_HELD if customer and product in customer.products else 0.0
            if intent and tile in need_tiles.get(self.customer_intent.get(c, ""), ()):
                x += CLICK_NEED_ACTIVE if active[r] else CLICK_NEED_INACTIVE
            logit[r] = x
        z = logit[:, None] + PROPENSITY_SD * _NODES[None, :]
        return (1 / (1 + np.exp(-z))) @ (_WEIGHTS / _WEIGHTS.sum())

    def need_stats(self, data: EvalData, table: ImpressionTable) -> dict:
        """How much of `table` the intent term of the click model can touch at all."""
        need_tiles = {i.name: set(i.tiles) for i in INTENTS}
        active = self.need_active(table.customer, table.ts)
        on_need = np.array([t in need_tiles.get(self.customer_intent.get(c, ""), ())
                            for c, t in zip(table.customer, table.tile, strict=True)])
        clicks = int(table.clicked.sum())
        return {"impressions": len(table), "active_need_share": round(float(active.mean()), 4),
                "active_need_share_with_session": round(float(active[table.linked].mean()), 4)
                if table.linked.any() else None,
                "clicks": clicks, "clicks_on_active_need_tiles": int((table.clicked & active & on_need).sum()),
                "share_of_clicks_on_active_need_tiles": round(float((table.clicked & active & on_need).sum())
                                                              / max(clicks, 1), 4)}
