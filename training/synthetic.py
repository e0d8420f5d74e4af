"""Synthetic web + app traffic in the data contract's format, reproducible by seed, for one of the worlds of
`training.worlds` (`GeneratorConfig.world`; docs/data.md describes each).

Customers carry latent needs. A need drives their anonymous web sessions (pages, event types, dwell, gaps,
device, referrer, searches) and, together with app-side features, their app tile clicks and conversions. The
click and conversion logits are `training.worlds.base.click_logit` / `conversion_logit`, the same functions
the evaluation oracle calls with the hidden state. Hidden intents and needs go to `truth/` for evaluation only.

Two dynamics: "window" (the `weak` world, the previous design: one need, active for a fixed window) and
"funnel" (`bank`, `credit_union`: needs whose sessions advance research -> compare -> apply over return
visits, visits that switch intent, stage-dependent dwell and gaps, strength that decays over days).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.core.sessionize import session_key
from training.worlds import DEFAULT_WORLD, get_world
from training.worlds.base import (
    DAY_MS,
    Intent,
    NeedState,
    World,
    click_logit,
    conversion_logit,
    need_strength,
    sigmoid,
)

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class GeneratorConfig:
    """Knobs of a synthetic world. Fields left at None take the world's own value (training/worlds/)."""

    visitors: int = 6000
    seed: int = 7
    start: str = "2026-09-01T00:00:00+00:00"
    days: int = 60
    world: str = DEFAULT_WORLD
    """bank (calibrated, default), weak (the previous design) or credit_union (another site)."""
    customer_share: float | None = None
    """Share of web visitors who are customers and log in on at least one session."""
    app_only_customers: float | None = None
    """Customers with no web activity at all, relative to web customers."""
    session_intent_stickiness: float | None = None
    """weak only: probability that a session follows the visitor's latent intent rather than a random one."""
    noise_pages: float | None = None
    """Probability that any page view is a random page of the site."""
    need_days: int | None = None
    """weak only: how long a latent need stays active after it starts."""
    app_visits: float | None = None
    """Mean app visits per customer over the period (funnel worlds add visits after web sessions)."""
    intent_mix: dict[str, float] = field(default_factory=dict)
    """Relative weight per intent name (missing -> 1.0)."""

    def resolved(self) -> GeneratorConfig:
        """Every None field set to its world's value (what generator_config.json records)."""
        w = get_world(self.world)
        return replace(self, **{
            k: getattr(self, k) if getattr(self, k) is not None else v
            for k, v in {"customer_share": w.customer_share, "app_only_customers": w.app_only_customers,
                         "session_intent_stickiness": w.session_intent_stickiness, "noise_pages": w.noise_pages,
                         "need_days": int(w.dynamics.need_days), "app_visits": w.app_visits}.items()})


@dataclass
class _Customer:
    customer_id: str
    segment: str
    tenure_months: int
    products: list[str]
    intent: Intent
    need_start_ms: int
    devices: list[str]
    needs: list[NeedState] = field(default_factory=list)


class Generator:
    """Writes one data directory. Use `generate(config, out_dir)`."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.world: World = get_world(config.world)
        unknown = set(config.intent_mix) - set(self.world.intent_names)
        if unknown:
            raise ValueError(f"intent_mix names unknown intents of the {config.world} world: {sorted(unknown)}")
        self.cfg = config.resolved()
        self.dyn = self.world.dynamics
        self.intents = self.world.intents
        self.page_stage = self.world.page_stage
        self.all_pages = self.world.all_pages
        self.rng = np.random.default_rng(config.seed)
        self.start_ms = int(datetime.fromisoformat(config.start).timestamp() * 1000)
        self.end_ms = self.start_ms + config.days * DAY_MS
        mix = np.array([config.intent_mix.get(i.name, 1.0) for i in self.intents], dtype=float)
        self.intent_p = mix / mix.sum()
        self.events: list[dict] = []
        self.truth_sessions: list[dict] = []

    # -- helpers ---------------------------------------------------------------------------------
    def _choice(self, options: list | tuple, p: np.ndarray | list[float] | None = None):
        idx = self.rng.choice(len(options), p=None if p is None else np.asarray(p, dtype=float) / np.sum(p))
        return options[int(idx)]

    def _latent_intent(self, segment: str | None) -> Intent:
        p = self.intent_p.copy()
        if segment is not None:
            aff = self.world.segment_affinity[segment]
            boost = [1.0 + 2.0 * aff.get(self.world.tiles[i.tiles[0]], 0.0) if i.tiles else 1.0
                     for i in self.intents]
            p = p * np.array(boost)
        return self._choice(self.intents, p)

    def _url(self, page: str) -> str:
        ident = str(int(self.rng.integers(1000, 999_999)))
        if self.world.id_style == "query" and "/{id}" in page:
            url = page.replace("/{id}", "?id=" + ident)
        else:
            url = page.replace("{id}", ident)
        roll = self.rng.random()
        if roll < 0.08:
            url += ("&" if "?" in url else "?") + "utm_source=" + self._choice(["email", "social", "display"])
        elif roll < 0.14 and url != "/" and "?" not in url:
            url += "/"
        return url

    def _dwell(self, mean_s: float) -> int:
        return int(self.rng.lognormal(math.log(max(mean_s, 0.5) * 1000.0), 0.7))

    def _emit(self, anon: str, device: str, event_type: str, url: str, ts: int, *, dwell: int,
              referrer: str | None = None, query: str | None = None, customer_id: str | None = None,
              think_ms: float = 4000.0) -> int:
        row: dict = {"anonymous_id": anon, "ts": ts, "event_type": event_type, "url": url, "device": device}
        if dwell or event_type != "login":
            row["dwell_ms"] = dwell
        if referrer and referrer != "direct":
            row["referrer"] = referrer
        if query:
            row["query"] = query
        if customer_id:
            row["customer_id"] = customer_id
        self.events.append(row)
        return ts + dwell + int(self.rng.exponential(think_ms)) + 500

    def _search_url(self, query: str) -> str:
        return self.world.search_url.format(q=query.replace(" ", "+"))

    def _login(self, anon: str, device: str, ts: int, customer_id: str) -> None:
        ts = self._emit(anon, device, "page_view", self.world.login_url, ts, dwell=self._dwell(10))
        ts = self._emit(anon, device, "login", self.world.login_url, ts, dwell=0, customer_id=customer_id)
        self._emit(anon, device, "page_view", self.world.after_login_url, ts, dwell=self._dwell(30),
                   customer_id=customer_id)

    def _customer(self, idx: int) -> _Customer:
        rng, cfg = self.rng, self.cfg
        w = self.world
        segment = self._choice(w.segments, w.segment_weights)
        aff = w.segment_affinity[segment]
        products = [p for p, base in w.product_base_hold.items()
                    if rng.random() < min(0.95, base + 0.3 * aff.get(p, 0))]
        intent = self._latent_intent(segment)
        last_start = max(cfg.days - cfg.need_days, 1)
        need_start = self.start_ms + int(rng.integers(0, last_start)) * DAY_MS
        return _Customer(f"C{idx:07d}", segment, int(rng.exponential(60)), products, intent, need_start, [])

    # -- window dynamics (the `weak` world: the previous design, unchanged) ------------------------
    def _session(self, anon: str, device: str, intent: Intent, t0: int, login_as: str | None) -> None:
        rng, cfg = self.rng, self.cfg
        length = 1 + int(rng.poisson(max(intent.length - 1, 0.5)))
        if rng.random() < 0.02:
            length *= 5  # a few very long sessions exercise truncation
        referrer = (
            self._choice(self.world.referrers) if rng.random() < 0.1
            else self._choice(list(intent.referrers), list(intent.referrers.values()))
        )
        pages, weights = list(intent.pages), np.array(list(intent.pages.values()))
        stages = np.array([self.page_stage[p] for p in pages])
        ts = t0
        for step in range(length):
            allowed = min(2.0, intent.depth * 2.0 * (step + 1) / length + 0.3)
            if step == 0 and referrer == "direct" and rng.random() < 0.5:
                page = self.world.home
            elif rng.random() < cfg.noise_pages:
                page = self._choice(self.all_pages)
            else:
                w = np.where(stages <= allowed, weights, 0.0)
                page = self._choice(pages, w if w.sum() > 0 else weights)
            ts = self._page_events(anon, device, intent, page, ts, referrer if step == 0 else None)
            if intent.queries and rng.random() < intent.search_rate:
                query = self._choice(intent.queries)
                ts = self._emit(anon, device, "search", self._search_url(query), ts, dwell=self._dwell(8), query=query)
        if login_as is not None:
            self._login(anon, device, ts, login_as)
        self.truth_sessions.append(
            {"session_id": session_key(anon, t0), "anonymous_id": anon, "intent": intent.name})

    def _page_events(self, anon: str, device: str, intent: Intent, page: str, ts: int, ref: str | None,
                     stage_dwell: float = 1.0, think_ms: float = 4000.0) -> int:
        rng = self.rng
        stage = self.page_stage[page]
        url = self._url(page)
        kw = {"think_ms": think_ms}
        ts = self._emit(anon, device, "page_view", url, ts,
                        dwell=self._dwell(intent.dwell_s * (0.6 + 0.4 * stage) * stage_dwell), referrer=ref, **kw)
        if "calculator" in page and rng.random() < 0.7:
            ts = self._emit(anon, device, "calculator", url, ts, dwell=self._dwell(intent.dwell_s * 1.5), **kw)
        elif stage == 2 and rng.random() < intent.depth / 2.0:
            ts = self._emit(anon, device, "form_start", url, ts, dwell=self._dwell(intent.dwell_s * 2), **kw)
            if rng.random() < intent.depth / 3.0:
                ts = self._emit(anon, device, "form_submit", url, ts, dwell=self._dwell(5), **kw)
        elif rng.random() < 0.1:
            ts = self._emit(anon, device, "click", url, ts, dwell=self._dwell(3), **kw)
        for event_type, p in intent.events.items():
            if rng.random() < p:
                ts = self._emit(anon, device, event_type, url, ts, dwell=self._dwell(intent.dwell_s * 0.3), **kw)
        return ts

    def _visits(self, anon: str, intent: Intent, need_start: int, login_as: str | None) -> None:
        """1-3 sessions on distinct days within the need's window; a customer logs in on one of them."""
        rng, cfg = self.rng, self.cfg
        n = min(1 + int(rng.poisson(0.6)), 4)
        window_days = max(cfg.need_days // 2, n)
        day0 = (need_start - self.start_ms) // DAY_MS
        days = sorted(rng.choice(window_days, size=n, replace=False) + day0)
        login_idx = int(rng.integers(n)) if login_as is not None else -1
        for k, day in enumerate(days):
            hour = rng.normal(14, 4) % 24 if intent.name != "fraud_report" else rng.uniform(0, 24)
            t0 = self.start_ms + int(day) * DAY_MS + int(hour * 3_600_000)
            sticky = rng.random() < cfg.session_intent_stickiness
            session_intent = intent if sticky else self._choice(self.intents, self.intent_p)
            device = self._choice(self.world.devices, session_intent.devices)
            self._session(anon, device, session_intent, t0, login_as if k == login_idx else None)

    def _window_app_activity(self, c: _Customer, impressions: list[dict], conversions: list[dict]) -> None:
        rng, cfg = self.rng, self.cfg
        tiles = list(self.world.tiles)
        aff = self.world.segment_affinity[c.segment]
        need = c.needs[0]
        need_end = c.need_start_ms + cfg.need_days * DAY_MS
        propensity = rng.normal(0, self.dyn.propensity_sd)
        clicked_need = False
        for _ in range(int(rng.poisson(cfg.app_visits))):
            ts = self.start_ms + int(rng.integers(0, cfg.days * DAY_MS))
            strength = float(need_strength(self.dyn, need, ts))
            shown = rng.choice(len(tiles), size=self.world.tiles_per_visit, replace=False)
            for pos, t in enumerate(shown):
                tile = tiles[int(t)]
                product = self.world.tiles[tile]
                on_need = tile in c.intent.tiles
                logit = float(click_logit(self.dyn, aff.get(product, 0), pos, product in c.products, on_need,
                                          strength)) + propensity
                clicked = bool(rng.random() < 1 / (1 + math.exp(-logit)))
                clicked_need |= clicked and strength > 0 and on_need
                impressions.append({"customer_id": c.customer_id, "ts": ts, "tile_id": tile, "position": pos,
                                    "clicked": clicked})
        if c.intent.tiles:
            product = self.world.tiles[c.intent.tiles[0]]
            if rng.random() < float(sigmoid(conversion_logit(self.dyn, 0, clicked_need, aff.get(product, 0.0)))):
                ts = int(rng.integers(c.need_start_ms, need_end))
                conversions.append({"customer_id": c.customer_id, "ts": ts, "product": product})
                return
        self._other_conversion(c, conversions)

    def _other_conversion(self, c: _Customer, conversions: list[dict]) -> None:
        if self.rng.random() < self.world.other_conversion:
            ts = self.start_ms + int(self.rng.integers(0, self.cfg.days * DAY_MS))
            conversions.append({"customer_id": c.customer_id, "ts": ts, "product": self._choice(self.world.products)})

    def _run_window(self, customers: list[_Customer], n_web: int, truth_visitors: list[dict], bar) -> int:
        cfg, rng = self.cfg, self.rng
        for c in customers:
            c.needs = [NeedState(c.intent.name, c.need_start_ms)]
        for c in customers[:n_web]:
            for anon in c.devices:
                self._visits(anon, c.intent, c.need_start_ms, c.customer_id)
                truth_visitors.append({"anonymous_id": anon, "intent": c.intent.name, "customer_id": c.customer_id})
                bar.update()
        visitor = sum(len(c.devices) for c in customers)
        last_start = max(cfg.days - cfg.need_days, 1)
        while visitor < cfg.visitors:
            anon = f"A{visitor:08d}"
            intent = self._latent_intent(None)
            need_start = self.start_ms + int(rng.integers(0, last_start)) * DAY_MS
            self._visits(anon, intent, need_start, None)
            truth_visitors.append({"anonymous_id": anon, "intent": intent.name, "customer_id": None})
            visitor += 1
            bar.update()
        return visitor

    # -- funnel dynamics (`bank`, `credit_union`) --------------------------------------------------
    def _schedule_needs(self, segment: str | None) -> list[tuple[Intent, list[tuple[int, int]]]]:
        """A web visitor's needs over the period: each a list of (session start, funnel stage)."""
        rng, w = self.rng, self.world
        n_needs = 1 + int(rng.poisson(w.extra_need_rate))
        out = []
        for _ in range(n_needs):
            intent = self._latent_intent(segment)
            day = float(rng.uniform(-3, self.cfg.days))  # a need may have started just before the logs do
            t = self.start_ms + int(day * DAY_MS)
            t = t - t % DAY_MS + int((rng.normal(14, 4) % 24) * HOUR_MS)
            stage, sessions = 0, []
            for _k in range(min(1 + int(rng.poisson(w.return_visits)), 6)):
                sessions.append((t, stage))
                gap_days = float(rng.exponential(w.stage_gap_days[stage])) + 0.1
                if intent.tiles and rng.random() < w.advance * intent.depth:
                    stage = min(2, stage + 1)
                t += int(gap_days * DAY_MS)
            out.append((intent, sessions))
        return out

    def _funnel_visitor(self, devices: list[str], segment: str | None, login_as: str | None) -> list[NeedState]:
        """All web sessions of one visitor (a customer's devices, or one anonymous device)."""
        rng, w = self.rng, self.world
        planned = self._schedule_needs(segment)
        flat = sorted((t, k, j, stage) for k, (_, ss) in enumerate(planned) for j, (t, stage) in enumerate(ss))
        times: dict[tuple[int, int], int] = {}
        last = -(10 ** 15)
        for t, k, j, _stage in flat:  # at least an hour apart, so two sessions never merge
            t = max(t, last + HOUR_MS)
            times[(k, j)] = last = t
        # one anonymous id is one browser: its device type follows the visitor's first need
        device_of = {d: self._choice(w.devices, planned[0][0].devices) for d in devices}
        sessions_of: dict[str, list[tuple[int, int, int]]] = {d: [] for d in devices}
        for _t, k, j, stage in flat:
            anon = devices[int(rng.integers(len(devices)))]
            sessions_of[anon].append((times[(k, j)], k, stage))
        kept: dict[int, list[tuple[int, int]]] = {k: [] for k in range(len(planned))}
        for anon, ss in sessions_of.items():
            # sessions before the logs begin still shaped the need (left-censored); after they end, nothing
            ss = [x for x in ss if x[0] < self.end_ms]
            for t0, k, stage in ss:
                kept[k].append((t0, stage))
            seen = [x for x in ss if x[0] >= self.start_ms]
            login_at = int(rng.integers(len(seen))) if seen and login_as is not None else -1
            for i, (t0, k, stage) in enumerate(seen):
                self._funnel_session(anon, device_of[anon], planned[k][0], stage, t0,
                                     login_as if i == login_at else None, k)
        needs = []
        for k, (intent, _) in enumerate(planned):
            ss = sorted(kept[k])
            needs.append(NeedState(intent.name, times[(k, 0)], tuple(t for t, _ in ss), tuple(s for _, s in ss)))
        return needs

    def _funnel_session(self, anon: str, device: str, intent: Intent, stage: int, t0: int, login_as: str | None,
                        need_index: int) -> None:
        rng, cfg, w = self.rng, self.cfg, self.world
        length = 1 + int(rng.poisson(max(intent.length * w.stage_length[stage] - 1, 0.5)))
        if rng.random() < 0.02:
            length *= 5  # a few very long sessions exercise truncation
        switch = None
        if rng.random() < w.switch_rate:
            others = [i for i in self.intents if i.name != intent.name]
            switch = self._choice(others)
            length += 1
        n_switch = min(1 + int(rng.integers(3)), length - 1) if switch else 0
        p_direct = min(0.9, 0.3 + 0.25 * stage)  # return visits come back directly or from a bookmark
        first = switch or intent
        referrer = ("direct" if rng.random() < p_direct and stage > 0 else
                    self._choice(w.referrers) if rng.random() < 0.1
                    else self._choice(list(first.referrers), list(first.referrers.values())))
        think = w.stage_think_s[stage] * 1000.0
        ts = t0
        for step in range(length):
            cur, cur_stage = (switch, 0) if step < n_switch else (intent, stage)
            pages, weights = list(cur.pages), np.array(list(cur.pages.values()), float)
            stages = np.array([self.page_stage[p] for p in pages])
            # the session's stage is where it spends its time; earlier stages are revisited, later ones rare
            weights = weights * np.where(stages == cur_stage, 3.0, np.where(stages < cur_stage, 1.0, 0.08))
            if step == 0 and referrer == "direct" and rng.random() < 0.5:
                page = w.home
            elif rng.random() < cfg.noise_pages:
                page = self._choice(self.all_pages)
            else:
                page = self._choice(pages, weights)
            ts = self._page_events(anon, device, cur, page, ts, referrer if step == 0 else None,
                                   stage_dwell=w.stage_dwell[cur_stage], think_ms=think)
            if cur.queries and rng.random() < cur.search_rate * (1.5 if cur_stage == 0 else 0.7):
                query = self._choice(cur.queries)
                ts = self._emit(anon, device, "search", self._search_url(query), ts, dwell=self._dwell(8),
                                query=query, think_ms=think)
        if login_as is not None:
            self._login(anon, device, ts, login_as)
        self.truth_sessions.append({"session_id": session_key(anon, t0), "anonymous_id": anon, "intent": intent.name,
                                    "stage": stage, "need": need_index,
                                    "switched_from": switch.name if switch else None})

    def _funnel_app_activity(self, c: _Customer, impressions: list[dict], conversions: list[dict]) -> None:
        rng, w, d = self.rng, self.world, self.dyn
        tiles = list(w.tiles)
        aff = w.segment_affinity[c.segment]
        propensity = rng.normal(0, d.propensity_sd)
        visits = [self.start_ms + int(rng.integers(0, self.cfg.days * DAY_MS))
                  for _ in range(int(rng.poisson(self.cfg.app_visits)))]
        for need in c.needs:  # researching on the web sends customers to the app soon after
            for t in need.sessions_ms:
                if self.world.intent(need.intent).tiles and rng.random() < w.app_after_session:
                    visits.append(t + int(rng.uniform(0.02, 2.0) * DAY_MS))
        visits = sorted(t for t in visits if t < self.end_ms)
        clicked_need = [False] * len(c.needs)
        for ts in visits:
            strengths = [float(need_strength(d, n, ts)) for n in c.needs]
            shown = rng.choice(len(tiles), size=w.tiles_per_visit, replace=False)
            for pos, t in enumerate(shown):
                tile = tiles[int(t)]
                product = w.tiles[tile]
                mine = [k for k, n in enumerate(c.needs) if tile in w.intent(n.intent).tiles]
                strength = max((strengths[k] for k in mine), default=0.0)
                logit = float(click_logit(d, aff.get(product, 0.0), pos, product in c.products, bool(mine),
                                          strength)) + propensity
                clicked = bool(rng.random() < 1 / (1 + math.exp(-logit)))
                for k in mine:
                    clicked_need[k] |= clicked and strengths[k] > 0
                impressions.append({"customer_id": c.customer_id, "ts": ts, "tile_id": tile, "position": pos,
                                    "clicked": clicked})
        converted = False
        for k, need in enumerate(c.needs):
            intent = w.intent(need.intent)
            if not intent.tiles or not need.sessions_ms:
                continue
            product = w.tiles[intent.tiles[0]]
            reached = max(need.stages)
            p = float(sigmoid(conversion_logit(d, reached, clicked_need[k], aff.get(product, 0.0))))
            if rng.random() < p:
                ts = need.sessions_ms[-1] + int((rng.exponential(d.conv_delay_days[reached]) + 0.02) * DAY_MS)
                if ts < self.end_ms:
                    conversions.append({"customer_id": c.customer_id, "ts": ts, "product": product})
                    converted = True
        if not converted:
            self._other_conversion(c, conversions)

    def _run_funnel(self, customers: list[_Customer], n_web: int, truth_visitors: list[dict], bar) -> int:
        cfg = self.cfg
        for c in customers[:n_web]:
            c.needs = self._funnel_visitor(c.devices, c.segment, c.customer_id)
            c.intent = self.world.intent(c.needs[0].intent)
            c.need_start_ms = c.needs[0].start_ms
            for anon in c.devices:
                truth_visitors.append({"anonymous_id": anon, "intent": c.intent.name, "customer_id": c.customer_id})
                bar.update()
        for c in customers[n_web:]:  # app-only: intent shows up on the web, so they research nothing
            c.needs = []
            c.intent = self.world.intent(self.world.browse_intent)
        visitor = sum(len(c.devices) for c in customers)
        while visitor < cfg.visitors:
            anon = f"A{visitor:08d}"
            needs = self._funnel_visitor([anon], None, None)
            truth_visitors.append({"anonymous_id": anon, "intent": needs[0].intent, "customer_id": None})
            visitor += 1
            bar.update()
        return visitor

    # -- the whole world -------------------------------------------------------------------------
    def run(self) -> dict[str, list[dict]]:
        cfg, w = self.cfg, self.world
        devices_mean = float(np.dot(np.arange(1, len(w.devices_per_customer) + 1), w.devices_per_customer))
        n_web_customers = int(cfg.visitors * cfg.customer_share / (1.3 if self.dyn.kind == "window" else devices_mean))
        customers = [self._customer(i) for i in range(n_web_customers + int(n_web_customers * cfg.app_only_customers))]
        visitor = 0
        choices = list(range(1, len(w.devices_per_customer) + 1))
        for c in customers[:n_web_customers]:
            for _ in range(int(self._choice(choices, w.devices_per_customer))):
                c.devices.append(f"A{visitor:08d}")
                visitor += 1
        truth_visitors: list[dict] = []
        with tqdm(total=cfg.visitors, desc="visitors", unit="visitor", leave=False) as bar:
            run = self._run_window if self.dyn.kind == "window" else self._run_funnel
            run(customers, n_web_customers, truth_visitors, bar)
        impressions: list[dict] = []
        conversions: list[dict] = []
        app = self._window_app_activity if self.dyn.kind == "window" else self._funnel_app_activity
        for c in tqdm(customers, desc="app activity", unit="customer", leave=False):
            app(c, impressions, conversions)
        self.events.sort(key=lambda e: (e["ts"], e["anonymous_id"]))
        impressions.sort(key=lambda r: (r["ts"], r["customer_id"], r["position"]))
        conversions.sort(key=lambda r: r["ts"])
        return {
            "events.jsonl": [_iso_ts(e) for e in self.events],
            "customers.jsonl": [{"customer_id": c.customer_id, "products": c.products, "tenure_months": c.tenure_months,
                                 "segment": c.segment} for c in customers],
            "tiles.jsonl": [{"tile_id": t, "product": p} for t, p in w.tiles.items()],
            "impressions.jsonl": [_iso_ts(r) for r in impressions],
            "conversions.jsonl": [_iso_ts(r) for r in conversions],
            "truth/sessions.jsonl": self.truth_sessions,
            "truth/visitors.jsonl": truth_visitors,
            "truth/customers.jsonl": [
                {"customer_id": c.customer_id, "intent": c.intent.name, "need_start_ms": c.need_start_ms,
                 "web": bool(c.devices), "needs": [asdict(n) for n in c.needs]} for c in customers],
            "truth/intents.jsonl": [{"name": i.name, "description": i.description} for i in self.intents],
        }


def _iso_ts(row: dict) -> dict:
    ms = row["ts"]
    text = datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {**row, "ts": text}


def generate(config: GeneratorConfig, out_dir: Path | str) -> dict[str, int]:
    """Generate and write a data directory; returns row counts per file."""
    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, rows in Generator(config).run().items():
        with (out / name).open("w") as fh:
            fh.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
        counts[name] = len(rows)
    (out / "truth" / "generator_config.json").write_text(json.dumps(asdict(config.resolved()), indent=2))
    return counts
