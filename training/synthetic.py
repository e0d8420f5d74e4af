"""Synthetic bank traffic in the data contract's format, reproducible by seed.

Customers carry a latent intent (a need, active for a few weeks). That intent drives their
anonymous web sessions (pages, event types, dwell, gaps, device, referrer, searches) and,
together with app-side features, their app tile clicks and conversions. Hidden intents go to
`truth/` for evaluation only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import bank
from training.bank import INTENTS, Intent
from training.sessionize import session_key

DAY_MS = 86_400_000


@dataclass(frozen=True)
class GeneratorConfig:
    """Knobs of the synthetic bank. The defaults give a moderately hard benchmark."""

    visitors: int = 6000
    seed: int = 7
    start: str = "2026-09-01T00:00:00+00:00"
    days: int = 60
    customer_share: float = 0.4
    """Share of web visitors who are customers and log in on at least one session."""
    app_only_customers: float = 0.3
    """Customers with no web activity at all, relative to web customers."""
    session_intent_stickiness: float = 0.8
    """Probability that a session follows the visitor's latent intent rather than a random one."""
    noise_pages: float = 0.3
    """Probability that any page view is a random page of the site."""
    need_days: int = 21
    """How long a latent need stays active after it starts."""
    app_visits: float = 5.0
    intent_mix: dict[str, float] = field(default_factory=dict)
    """Relative weight per intent name (missing -> 1.0)."""


# Product affinity of segments (added to click and conversion logits; also skews latent intents).
SEGMENT_AFFINITY: dict[str, dict[str, float]] = {
    "mass": {"credit_card": 0.6, "auto_loan": 0.5, "personal_loan": 0.4, "savings": 0.2},
    "affluent": {"investing": 0.8, "retirement": 0.6, "mortgage": 0.5, "heloc": 0.4, "insurance": 0.3},
    "student": {"checking": 0.8, "credit_card": 0.5},
    "small_business": {"checking": 0.5, "personal_loan": 0.5, "insurance": 0.3},
    "senior": {"retirement": 0.6, "savings": 0.6, "insurance": 0.5},
}
SEGMENT_WEIGHTS = (0.45, 0.2, 0.12, 0.08, 0.15)
PRODUCT_BASE_HOLD = {
    "checking": 0.8, "savings": 0.45, "credit_card": 0.4, "mortgage": 0.2, "heloc": 0.05, "auto_loan": 0.15,
    "personal_loan": 0.08, "investing": 0.15, "retirement": 0.15, "insurance": 0.1,
}


@dataclass
class _Customer:
    customer_id: str
    segment: str
    tenure_months: int
    products: list[str]
    intent: Intent
    need_start_ms: int
    devices: list[str]


class Generator:
    """Writes one data directory. Use `generate(config, out_dir)`."""

    def __init__(self, config: GeneratorConfig) -> None:
        unknown = set(config.intent_mix) - set(bank.INTENT_NAMES)
        if unknown:
            raise ValueError(f"intent_mix names unknown intents: {sorted(unknown)}")
        self.cfg = config
        self.rng = np.random.default_rng(config.seed)
        self.start_ms = int(datetime.fromisoformat(config.start).timestamp() * 1000)
        mix = np.array([config.intent_mix.get(i.name, 1.0) for i in INTENTS], dtype=float)
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
            aff = SEGMENT_AFFINITY[segment]
            boost = [1.0 + 2.0 * aff.get(bank.TILES[i.tiles[0]], 0.0) if i.tiles else 1.0 for i in INTENTS]
            p = p * np.array(boost)
        return self._choice(INTENTS, p)

    def _url(self, page: str) -> str:
        url = page.replace("{id}", str(int(self.rng.integers(1000, 999_999))))
        roll = self.rng.random()
        if roll < 0.08:
            url += "?utm_source=" + self._choice(["email", "social", "display"])
        elif roll < 0.14 and url != "/":
            url += "/"
        return url

    # -- web sessions ----------------------------------------------------------------------------
    def _session(self, anon: str, device: str, intent: Intent, t0: int, login_as: str | None) -> None:
        rng, cfg = self.rng, self.cfg
        length = 1 + int(rng.poisson(max(intent.length - 1, 0.5)))
        if rng.random() < 0.02:
            length *= 5  # a few very long sessions exercise truncation
        referrer = (
            self._choice(bank.REFERRERS) if rng.random() < 0.1
            else self._choice(list(intent.referrers), list(intent.referrers.values()))
        )
        pages, weights = list(intent.pages), np.array(list(intent.pages.values()))
        stages = np.array([bank.PAGE_STAGE[p] for p in pages])
        ts = t0
        for step in range(length):
            allowed = min(2.0, intent.depth * 2.0 * (step + 1) / length + 0.3)
            if step == 0 and referrer == "direct" and rng.random() < 0.5:
                page = "/"
            elif rng.random() < cfg.noise_pages:
                page = self._choice(bank.ALL_PAGES)
            else:
                w = np.where(stages <= allowed, weights, 0.0)
                page = self._choice(pages, w if w.sum() > 0 else weights)
            ts = self._page_events(anon, device, intent, page, ts, referrer if step == 0 else None)
            if intent.queries and rng.random() < intent.search_rate:
                query = self._choice(intent.queries)
                ts = self._emit(anon, device, "search", f"/search?q={query.replace(' ', '+')}", ts,
                                dwell=self._dwell(8), query=query)
        if login_as is not None:
            ts = self._emit(anon, device, "page_view", "/login", ts, dwell=self._dwell(10))
            ts = self._emit(anon, device, "login", "/login", ts, dwell=0, customer_id=login_as)
            self._emit(anon, device, "page_view", "/online-banking", ts, dwell=self._dwell(30),
                       customer_id=login_as)
        self.truth_sessions.append(
            {"session_id": session_key(anon, t0), "anonymous_id": anon, "intent": intent.name})

    def _page_events(self, anon: str, device: str, intent: Intent, page: str, ts: int, ref: str | None) -> int:
        rng = self.rng
        stage = bank.PAGE_STAGE[page]
        url = self._url(page)
        ts = self._emit(anon, device, "page_view", url, ts, dwell=self._dwell(intent.dwell_s * (0.6 + 0.4 * stage)),
                        referrer=ref)
        if "calculator" in page and rng.random() < 0.7:
            ts = self._emit(anon, device, "calculator", url, ts, dwell=self._dwell(intent.dwell_s * 1.5))
        elif stage == 2 and rng.random() < intent.depth / 2.0:
            ts = self._emit(anon, device, "form_start", url, ts, dwell=self._dwell(intent.dwell_s * 2))
            if rng.random() < intent.depth / 3.0:
                ts = self._emit(anon, device, "form_submit", url, ts, dwell=self._dwell(5))
        elif rng.random() < 0.1:
            ts = self._emit(anon, device, "click", url, ts, dwell=self._dwell(3))
        for event_type, p in intent.events.items():
            if rng.random() < p:
                ts = self._emit(anon, device, event_type, url, ts, dwell=self._dwell(intent.dwell_s * 0.3))
        return ts

    def _dwell(self, mean_s: float) -> int:
        return int(self.rng.lognormal(math.log(max(mean_s, 0.5) * 1000.0), 0.7))

    def _emit(self, anon: str, device: str, event_type: str, url: str, ts: int, *, dwell: int,
              referrer: str | None = None, query: str | None = None, customer_id: str | None = None) -> int:
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
        return ts + dwell + int(self.rng.exponential(4000.0)) + 500

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
            session_intent = intent if sticky else self._choice(INTENTS, self.intent_p)
            device = self._choice(bank.DEVICES, session_intent.devices)
            self._session(anon, device, session_intent, t0, login_as if k == login_idx else None)

    # -- customers and the app -------------------------------------------------------------------
    def _customer(self, idx: int) -> _Customer:
        rng, cfg = self.rng, self.cfg
        segment = self._choice(bank.SEGMENTS, SEGMENT_WEIGHTS)
        aff = SEGMENT_AFFINITY[segment]
        products = [p for p, base in PRODUCT_BASE_HOLD.items() if rng.random() < min(0.95, base + 0.3 * aff.get(p, 0))]
        intent = self._latent_intent(segment)
        last_start = max(cfg.days - cfg.need_days, 1)
        need_start = self.start_ms + int(rng.integers(0, last_start)) * DAY_MS
        return _Customer(f"C{idx:07d}", segment, int(rng.exponential(60)), products, intent, need_start, [])

    def _app_activity(self, c: _Customer, impressions: list[dict], conversions: list[dict]) -> None:
        rng, cfg = self.rng, self.cfg
        tiles = list(bank.TILES)
        aff = SEGMENT_AFFINITY[c.segment]
        need_end = c.need_start_ms + cfg.need_days * DAY_MS
        propensity = rng.normal(0, 0.5)
        clicked_need = False
        for _ in range(int(rng.poisson(cfg.app_visits))):
            ts = self.start_ms + int(rng.integers(0, cfg.days * DAY_MS))
            active = c.need_start_ms <= ts < need_end
            shown = rng.choice(len(tiles), size=4, replace=False)
            for pos, t in enumerate(shown):
                tile = tiles[int(t)]
                product = bank.TILES[tile]
                logit = -2.4 + propensity + 0.8 * aff.get(product, 0) - 0.35 * pos
                logit -= 1.0 if product in c.products else 0.0
                if tile in c.intent.tiles:
                    logit += 2.2 if active else 0.4
                clicked = bool(rng.random() < 1 / (1 + math.exp(-logit)))
                clicked_need |= clicked and active and tile in c.intent.tiles
                impressions.append({"customer_id": c.customer_id, "ts": ts, "tile_id": tile, "position": pos,
                                    "clicked": clicked})
        self._conversion(c, clicked_need, need_end, conversions)

    def _conversion(self, c: _Customer, clicked_need: bool, need_end: int, conversions: list[dict]) -> None:
        rng = self.rng
        if c.intent.tiles:
            product = bank.TILES[c.intent.tiles[0]]
            logit = -1.2 + (1.2 if clicked_need else 0.0) + SEGMENT_AFFINITY[c.segment].get(product, 0.0)
            if rng.random() < 1 / (1 + math.exp(-logit)):
                ts = int(rng.integers(c.need_start_ms, need_end))
                conversions.append({"customer_id": c.customer_id, "ts": ts, "product": product})
                return
        if rng.random() < 0.08:
            ts = self.start_ms + int(rng.integers(0, self.cfg.days * DAY_MS))
            conversions.append({"customer_id": c.customer_id, "ts": ts, "product": self._choice(bank.PRODUCTS)})

    # -- the whole world -------------------------------------------------------------------------
    def run(self) -> dict[str, list[dict]]:
        cfg, rng = self.cfg, self.rng
        n_web_customers = int(cfg.visitors * cfg.customer_share / 1.3)
        customers = [self._customer(i) for i in range(n_web_customers + int(n_web_customers * cfg.app_only_customers))]
        visitor = 0
        for c in customers[:n_web_customers]:
            for _ in range(int(self._choice([1, 2, 3], [0.75, 0.2, 0.05]))):
                c.devices.append(f"A{visitor:08d}")
                visitor += 1
        truth_visitors = []
        with tqdm(total=cfg.visitors, desc="visitors", unit="visitor", leave=False) as bar:
            for c in customers[:n_web_customers]:
                for anon in c.devices:
                    self._visits(anon, c.intent, c.need_start_ms, c.customer_id)
                    truth_visitors.append({"anonymous_id": anon, "intent": c.intent.name, "customer_id": c.customer_id})
                    bar.update()
            last_start = max(cfg.days - cfg.need_days, 1)
            while visitor < cfg.visitors:
                anon = f"A{visitor:08d}"
                intent = self._latent_intent(None)
                need_start = self.start_ms + int(rng.integers(0, last_start)) * DAY_MS
                self._visits(anon, intent, need_start, None)
                truth_visitors.append({"anonymous_id": anon, "intent": intent.name, "customer_id": None})
                visitor += 1
                bar.update()
        impressions: list[dict] = []
        conversions: list[dict] = []
        for c in tqdm(customers, desc="app activity", unit="customer", leave=False):
            self._app_activity(c, impressions, conversions)
        self.events.sort(key=lambda e: (e["ts"], e["anonymous_id"]))
        impressions.sort(key=lambda r: (r["ts"], r["customer_id"], r["position"]))
        conversions.sort(key=lambda r: r["ts"])
        return {
            "events.jsonl": [_iso_ts(e) for e in self.events],
            "customers.jsonl": [{"customer_id": c.customer_id, "products": c.products, "tenure_months": c.tenure_months,
                                 "segment": c.segment} for c in customers],
            "tiles.jsonl": [{"tile_id": t, "product": p} for t, p in bank.TILES.items()],
            "impressions.jsonl": [_iso_ts(r) for r in impressions],
            "conversions.jsonl": [_iso_ts(r) for r in conversions],
            "truth/sessions.jsonl": self.truth_sessions,
            "truth/visitors.jsonl": truth_visitors,
            "truth/customers.jsonl": [{"customer_id": c.customer_id, "intent": c.intent.name,
                                       "need_start_ms": c.need_start_ms, "web": bool(c.devices)} for c in customers],
            "truth/intents.jsonl": [{"name": i.name, "description": i.description} for i in INTENTS],
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
    (out / "truth" / "generator_config.json").write_text(json.dumps(asdict(config), indent=2))
    return counts
