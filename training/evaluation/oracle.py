"""Diagnostic upper bounds from the generator's hidden truth (synthetic data only; never a product result).

The evaluation loader reads `truth/` here and nowhere else in the rankers. Three bounds, weakest to strongest:

- **perfect session labels** (`oracle_session_intents`): each linked session's hidden (main) intent as a one-hot,
  pooled and fed through the served ranker's design (need head, one weight). It still does not know *when* a
  need is strong, nor its funnel stage.
- **hidden intent and need state** (`oracle_intent`, and `oracle_intent_all` for every customer, also those
  without a linked session): the intent of the customer's strongest need at the impression as a one-hot, split
  by whether that need is active (strength >= `ACTIVE_STRENGTH`) ([intent x active | intent x inactive], 2K
  columns), in the same logistic family with signal x tile crosses. `oracle_intent` has the same availability
  as a session signal (only impressions with a linked session in the lookback get it).
- **the click model itself** (`click_model`): the generator's own click probability for every impression, with
  the per-customer propensity (a random effect the data never shows) integrated out. It calls the world's
  `click_logit` and `need_strength` (training/worlds/base.py) with the hidden needs, the very functions the
  generator draws clicks from, so the two cannot drift. Its app-side part alone (`click_model_no_intent`)
  separates the baseline's own estimation error from what the intent is worth.

The world comes from truth/generator_config.json (`world`); data written before worlds existed is `weak`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from training.evaluation.features import EvalData, ImpressionTable
from training.worlds import LEGACY_WORLD, Dynamics, NeedState, World, click_logit, get_world, need_strength

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(21)  # E over a standard normal: sum(w f(x)) / sqrt(2 pi)
ORACLE_SIGNALS = ("oracle_intent", "oracle_intent_all")
ACTIVE_STRENGTH = 0.25
"""A need counts as active at an impression when its strength is at least this (window worlds: 0 or 1)."""


@dataclass(frozen=True)
class Truth:
    intents: tuple[str, ...]
    customer_intent: dict[str, str]
    need_start_ms: dict[str, int]
    session_intent: dict[str, str]
    need_days: float
    world_name: str = LEGACY_WORLD
    needs: dict[str, tuple[NeedState, ...]] = field(default_factory=dict)
    """customer_id -> hidden needs; empty: one need per customer from `customer_intent` and `need_start_ms`."""

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
        config_path = root / "generator_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        world = get_world(config.get("world") or LEGACY_WORLD)
        need_days = float(config.get("need_days") or world.dynamics.need_days)
        needs = {c["customer_id"]: tuple(NeedState(n["intent"], int(n["start_ms"]), tuple(n.get("sessions_ms", ())),
                                                   tuple(n.get("stages", ()))) for n in c["needs"])
                 for c in customers if "needs" in c}
        return cls(world.intent_names, {c["customer_id"]: c["intent"] for c in customers},
                   {c["customer_id"]: int(c["need_start_ms"]) for c in customers}, session_intent, need_days,
                   world.name, needs)

    @property
    def world(self) -> World:
        return get_world(self.world_name)

    def _needs(self, customer: str) -> tuple[NeedState, ...]:
        if customer in self.needs:
            return self.needs[customer]
        if customer in self.customer_intent:
            return (NeedState(self.customer_intent[customer], self.need_start_ms[customer]),)
        return ()

    def _dynamics(self) -> Dynamics:
        d = self.world.dynamics
        return replace(d, need_days=self.need_days) if d.kind == "window" and d.need_days != self.need_days else d

    def need_matrix(self, customers: np.ndarray, ts: np.ndarray) -> tuple[list[tuple[NeedState, ...]], np.ndarray]:
        """Per impression: the customer's needs and their strengths ([N, max needs], 0 where none)."""
        d = self._dynamics()
        rows = [self._needs(c) for c in customers]
        width = max((len(r) for r in rows), default=0)
        out = np.zeros((len(rows), max(width, 1)))
        by_customer: dict[str, list[int]] = {}
        for i, c in enumerate(customers):
            by_customer.setdefault(c, []).append(i)
        for c, ix in by_customer.items():
            for k, need in enumerate(self._needs(c)):
                out[ix, k] = need_strength(d, need, ts[ix])
        return rows, out

    def need_strength(self, customers: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The strength (0..1) of the customer's strongest need at each impression."""
        return self.need_matrix(customers, ts)[1].max(axis=1)

    def need_active(self, customers: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return self.need_strength(customers, ts) >= ACTIVE_STRENGTH

    def intent_index(self, customers: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
        """The intent of each customer (with `ts`: of their strongest need at that time, else their first)."""
        index = {name: k for k, name in enumerate(self.intents)}
        if ts is None:
            return np.array([index.get(self.customer_intent.get(c, ""), -1) for c in customers])
        rows, strength = self.need_matrix(customers, ts)
        best = strength.argmax(axis=1)
        return np.array([index.get(r[b].intent, -1) if r else index.get(self.customer_intent.get(c, ""), -1)
                         for c, r, b in zip(customers, rows, best, strict=True)])

    def session_matrix(self, data: EvalData) -> np.ndarray:
        """Per session of `data`: the hidden intent as a one-hot (NaN rows for sessions without truth)."""
        index = {name: k for k, name in enumerate(self.intents)}
        ids = data.sessions.session_ids
        out = np.full((len(ids), len(self.intents)), np.nan, np.float32)
        for i, session_id in enumerate(ids):
            k = index.get(self.session_intent.get(session_id, ""))
            if k is not None:
                out[i] = 0
                out[i, k] = 1
        return out

    def row_signal(self, name: str, table: ImpressionTable) -> tuple[np.ndarray, np.ndarray]:
        """[intent one-hot x need active | intent one-hot x need inactive] per impression, and who gets it."""
        k = self.intent_index(table.customer, table.ts)
        active = self.need_active(table.customer, table.ts)
        out = np.zeros((len(table), 2 * len(self.intents)), np.float32)
        ok = k >= 0
        out[np.flatnonzero(ok), np.where(active, k, k + len(self.intents))[ok]] = 1
        if name == "oracle_intent":
            return out, table.linked & ok
        if name == "oracle_intent_all":
            return out, ok
        raise ValueError(f"unknown oracle signal {name!r}")

    def tile_need(self, table: ImpressionTable) -> tuple[np.ndarray, np.ndarray]:
        """Per impression: whether the tile is one of the customer's needs' tiles, and that need's strength."""
        world = self.world
        need_tiles = {i.name: set(i.tiles) for i in world.intents}
        rows, strength = self.need_matrix(table.customer, table.ts)
        on_need = np.zeros(len(table), bool)
        s = np.zeros(len(table))
        for r, (needs, tile) in enumerate(zip(rows, table.tile, strict=True)):
            for k, need in enumerate(needs):
                if tile in need_tiles.get(need.intent, ()):
                    on_need[r] = True
                    s[r] = max(s[r], strength[r, k])
        return on_need, s

    def click_probability(self, data: EvalData, table: ImpressionTable, intent: bool = True) -> np.ndarray:
        """The generator's click probability per impression, the customer's propensity integrated out
        (without `intent`: its app-side part only, what the app-only baseline could learn at best)."""
        d, world = self._dynamics(), self.world
        aff = np.zeros(len(table))
        held = np.zeros(len(table), bool)
        for r, (c, tile) in enumerate(zip(table.customer, table.tile, strict=True)):
            customer, product = data.customers.get(c), data.tiles.get(tile, "")
            if customer is not None:
                aff[r] = world.segment_affinity.get(customer.segment, {}).get(product, 0.0)
                held[r] = product in customer.products
        on_need, strength = self.tile_need(table) if intent else (np.zeros(len(table), bool), np.zeros(len(table)))
        logit = click_logit(d, aff, table.position, held, on_need, strength)
        z = logit[:, None] + d.propensity_sd * _NODES[None, :]
        return (1 / (1 + np.exp(-z))) @ (_WEIGHTS / _WEIGHTS.sum())

    def need_stats(self, data: EvalData, table: ImpressionTable) -> dict:
        """How much of `table` the intent term of the click model can touch at all."""
        active = self.need_active(table.customer, table.ts)
        on_need, strength = self.tile_need(table)
        on_active = on_need & (strength >= ACTIVE_STRENGTH)
        clicks = int(table.clicked.sum())
        return {"world": self.world_name, "impressions": len(table),
                "active_need_share": round(float(active.mean()), 4),
                "active_need_share_with_session": round(float(active[table.linked].mean()), 4)
                if table.linked.any() else None,
                "mean_need_strength": round(float(self.need_strength(table.customer, table.ts).mean()), 4),
                "clicks": clicks, "clicks_on_active_need_tiles": int((table.clicked & on_active).sum()),
                "share_of_clicks_on_active_need_tiles": round(float((table.clicked & on_active).sum())
                                                              / max(clicks, 1), 4)}

