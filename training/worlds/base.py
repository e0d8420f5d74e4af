"""What a synthetic world is made of, and the one click / conversion model that both the generator and the
evaluation oracle (`training/evaluation/oracle.py`) call with the hidden state, so the two cannot drift.

A world is data (site map, intents, tiles, proportions) plus `Dynamics` (how needs live and how strongly they
couple to the app). Nothing outside the generator and the oracle may import a world module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Intent:
    """A latent visitor intent: the behaviour it produces on the web and what it wants in the app."""

    name: str
    description: str
    pages: dict[str, float]
    """Page -> weight; pages not listed are reached only as noise."""
    queries: tuple[str, ...] = ()
    search_rate: float = 0.08
    depth: float = 1.0
    """How far down the funnel it goes (0 explore .. 2 apply): gates stage-2 pages and forms."""
    dwell_s: float = 40.0
    devices: tuple[float, ...] = (0.55, 0.4, 0.05)
    referrers: dict[str, float] = field(default_factory=lambda: {"direct": 0.5, "https://www.google.com/search": 0.5})
    length: float = 7.0
    events: dict[str, float] = field(default_factory=dict)
    """Extra event types this intent emits after a page view, with their probability."""
    tiles: tuple[str, ...] = ()
    """Tiles this intent makes a customer click (and the first one's product it converts to)."""


@dataclass(frozen=True)
class Dynamics:
    """How needs live over time and how they couple to app clicks and conversions.

    `kind="window"` is the previous (weak) design: one need per customer, active for `need_days` from a uniform
    start, every session of the visitor on that need. `kind="funnel"`: needs with funnel stages advanced over
    return visits, whose strength decays with the days since the customer's last web session on them.
    """

    kind: str = "funnel"
    # click logit: base + affinity * aff + position * pos + held * [product held]
    #              + [tile is a need's tile] * (interest + need * strength)
    click_base: float = -2.4
    click_affinity: float = 0.8
    click_position: float = -0.35
    click_held: float = -1.0
    click_interest: float = 0.4
    """On a tile of one of the customer's needs, whatever its strength (a lasting interest)."""
    click_need: float = 1.8
    """Times the need's strength (0..1)."""
    propensity_sd: float = 0.5
    """Per-customer random effect on the click logit (the data never shows it)."""
    need_days: float = 21.0
    """window: how long a need is active. funnel: the strength's half-life in days is `half_life_days`."""
    half_life_days: float = 5.0
    stage_strength: tuple[float, float, float] = (0.55, 0.8, 1.0)
    """Strength factor by the funnel stage reached so far (research, compare, apply)."""
    # conversion logit of a need: base + stage[reached] + clicked * [clicked the need tile] + affinity
    conv_base: float = -1.2
    conv_stage: tuple[float, float, float] = (0.0, 0.0, 0.0)
    conv_clicked: float = 1.2
    conv_delay_days: tuple[float, float, float] = (8.0, 4.0, 1.0)
    """Mean days from the need's last session to its conversion, by the stage reached."""


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def click_logit(d: Dynamics, affinity, position, held, on_need, strength):
    """The click logit before the customer's propensity; scalars or numpy arrays (broadcast).

    `on_need`: the tile is the tile of one of the customer's needs; `strength`: that need's strength at the
    impression (window: 1 while active, else 0)."""
    return (d.click_base + d.click_affinity * np.asarray(affinity, float) + d.click_position * np.asarray(position)
            + d.click_held * np.asarray(held, float)
            + np.asarray(on_need, float) * (d.click_interest + d.click_need * np.asarray(strength, float)))


def conversion_logit(d: Dynamics, stage_reached: int, clicked_need: bool, affinity: float) -> float:
    return d.conv_base + d.conv_stage[stage_reached] + (d.conv_clicked if clicked_need else 0.0) + affinity


@dataclass(frozen=True)
class NeedState:
    """A customer's hidden need, as the generator wrote it to truth/customers.jsonl."""

    intent: str
    start_ms: int
    sessions_ms: tuple[int, ...] = ()
    """Start times of the customer's web sessions on this need (funnel), in time order."""
    stages: tuple[int, ...] = ()
    """Funnel stage of each of those sessions."""


def need_strength(d: Dynamics, need: NeedState, ts):
    """A need's strength at time(s) `ts` (0..1). window: 1 in [start, start + need_days). funnel: the stage
    factor of the furthest stage reached by the sessions before `ts`, halved every `half_life_days` since the
    last of them; 0 before the need's first session (intent shows up on the web)."""
    ts = np.asarray(ts, dtype=np.int64)
    if d.kind == "window":
        return ((ts >= need.start_ms) & (ts < need.start_ms + int(d.need_days * DAY_MS))).astype(float)
    if not need.sessions_ms:
        return np.zeros(ts.shape)
    starts = np.asarray(need.sessions_ms, dtype=np.int64)
    k = np.searchsorted(starts, ts, side="right") - 1  # last session started before ts
    reached = np.maximum.accumulate(np.asarray(need.stages, dtype=int))
    stage_f = np.asarray(d.stage_strength)[reached[np.maximum(k, 0)]]
    age_days = (ts - starts[np.maximum(k, 0)]) / DAY_MS
    return np.where(k >= 0, stage_f * np.exp(-math.log(2) * age_days / d.half_life_days), 0.0)


@dataclass(frozen=True)
class World:
    """One synthetic site and its customers. `tiles` maps tile id -> product."""

    name: str
    description: str
    site: dict[str, dict[str, int]]
    """Area -> page -> funnel stage (0 explore, 1 compare/calculate, 2 apply/act); `{id}` gets a random id."""
    intents: tuple[Intent, ...]
    tiles: dict[str, str]
    products: tuple[str, ...]
    devices: tuple[str, ...]
    referrers: tuple[str, ...]
    segments: tuple[str, ...]
    segment_weights: tuple[float, ...]
    segment_affinity: dict[str, dict[str, float]]
    product_base_hold: dict[str, float]
    dynamics: Dynamics
    home: str = "/"
    login_url: str = "/login"
    after_login_url: str = "/online-banking"
    search_url: str = "/search?q={q}"
    id_style: str = "path"
    """How `{id}` placeholders are filled: "path" (a number in the path) or "query" (`?id=...`)."""
    browse_intent: str = "casual_browsing"
    # proportions (GeneratorConfig fields left at None take these)
    customer_share: float = 0.4
    app_only_customers: float = 0.3
    session_intent_stickiness: float = 0.8
    noise_pages: float = 0.3
    app_visits: float = 5.0
    tiles_per_visit: int = 4
    devices_per_customer: tuple[float, ...] = (0.75, 0.2, 0.05)
    # funnel worlds only
    extra_need_rate: float = 0.6
    """Mean number of further needs per web customer over the period (Poisson), after the first."""
    return_visits: float = 1.6
    """Mean further sessions per need (Poisson), capped at 6 sessions."""
    advance: float = 0.45
    """Per session, times the intent's depth: probability that the next session is one funnel stage further."""
    switch_rate: float = 0.2
    """Share of sessions that start on another intent's pages and switch to their main intent."""
    app_after_session: float = 0.5
    """Probability that a web session on a need is followed by an app visit within two days."""
    stage_gap_days: tuple[float, float, float] = (3.0, 2.0, 1.0)
    """Mean days to the next return visit after a session at each stage."""
    stage_dwell: tuple[float, float, float] = (1.0, 1.5, 0.6)
    """Page dwell factor by the session's stage (research reads, compare calculates, apply clicks through)."""
    stage_length: tuple[float, float, float] = (1.0, 1.2, 0.7)
    stage_think_s: tuple[float, float, float] = (6.0, 4.0, 2.0)
    """Mean gap between events (beyond the dwell) by stage."""
    other_conversion: float = 0.08

    @property
    def intent_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.intents)

    @property
    def all_pages(self) -> list[str]:
        return [p for pages in self.site.values() for p in pages]

    @property
    def page_stage(self) -> dict[str, int]:
        return {p: s for pages in self.site.values() for p, s in pages.items()}

    def intent(self, name: str) -> Intent:
        return next(i for i in self.intents if i.name == name)
