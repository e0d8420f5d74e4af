"""Evaluation data: identity linkage, per-session signals, and per-impression / per-conversion features.

Identity linkage follows the gateway: an anonymous id whose events contain a login by customer X is linked to
X from the time of that login on. At an impression (or conversion) at time t, a customer's *pre-login signal*
is built from the sessions of their linked anonymous ids that ended at or before t, within `lookback_days`
(no lookback for conversions), and only if the link was already known at t. Nothing after t is ever used.
A customer with no such session gets the explicit no-session input (see `ranker.FeatureSpec`).

Pooling: the sessions of an impression (or conversion) are pooled by `ranker.pool_sessions`, the function the
gateway calls, with each session's end time and the impression's time (`ImpressionTable.ts`), at the spec's
half-life: recency-weighted signal plus the recency features.

Tiles: the tile -> product map comes from `tiles.jsonl`; without it the evaluation stops (a ValueError naming
the file), since the need signal reaches a tile only through its product, and guessed products would report
a zero intent gain as if it were measured.

Signals per session (rows of `SessionSignals`): the encoder's embedding, the distilled head's intent
probabilities, and, for a bounded sample of customers, the LLM's label as a one-hot (NaN rows when absent);
on synthetic data also the diagnostic oracles of `oracle.py` (truth/ is read there, never here).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.core.contract import Conversion, Customer, DataError, Impression, LoadReport, Tile, read_optional
from training.core.ranker import RECENCY_FEATURES, FeatureSpec, plain_mean, pool_sessions
from training.sessions import SessionTable, load_session_table

if TYPE_CHECKING:
    from training.columnar import EventColumns

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
SIGNALS = ("embedding", "llm_labels", "distilled")


@dataclass
class EvalData:
    """One data directory prepared for evaluation (no truth/ is read here)."""

    customers: dict[str, Customer]
    tiles: dict[str, str]
    impressions: list[Impression]
    conversions: list[Conversion]
    sessions: SessionTable
    links: dict[str, tuple[str, int]]
    """anonymous_id -> (customer_id, time of the first login that linked it)."""
    by_customer: dict[str, list[int]] = field(default_factory=dict)
    """customer_id -> indices into `sessions` of their linked sessions, by end time."""

    @classmethod
    def load(cls, data_dir: Path | str) -> EvalData:
        """Events through the columnar path (sessions stay columns: `SessionTable`), the other files by the
        contract's models; invalid rows are logged, as the row-level loader logs them."""
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"data directory {data_dir} does not exist")
        report = LoadReport()
        sessions = load_session_table(data_dir, report)
        customers = read_optional(data_dir, "customers.jsonl", Customer, report)
        tiles = read_optional(data_dir, "tiles.jsonl", Tile, report)
        impressions = read_optional(data_dir, "impressions.jsonl", Impression, report)
        conversions = read_optional(data_dir, "conversions.jsonl", Conversion, report)
        if report.problems:
            log.warning("%s", report.summary())
        if not impressions or not customers:
            raise ValueError(f"{data_dir}: evaluation needs impressions.jsonl and customers.jsonl")
        if not tiles:
            raise ValueError(f"{data_dir}: evaluation needs tiles.jsonl (tile_id, product): the ranker's need "
                             "signal reaches a tile only through the product it sells")
        links = first_logins(sessions.events)
        data = cls({c.customer_id: c for c in customers}, {t.tile_id: t.product for t in tiles},
                   impressions, conversions, sessions, links)
        by_customer: dict[str, list[int]] = defaultdict(list)
        for i, visitor in enumerate(sessions.anonymous_ids):
            if visitor in links:
                by_customer[links[visitor][0]].append(i)
        ends = sessions.end_ms
        data.by_customer = {c: sorted(ix, key=lambda i: ends[i]) for c, ix in by_customer.items()}
        return data

    def linked_before(self, customer_id: str, t: int, lookback_ms: int | None) -> list[int]:
        """Indices of the customer's linked sessions that ended in [t - lookback, t], their link known by t."""
        idx = self.by_customer.get(customer_id, [])
        ends = self.sessions.end_ms[idx]
        visitors = self.sessions.anonymous_ids
        out = []
        known = int(np.searchsorted(ends, t, side="right"))  # ends ascend: by_customer is sorted by end time
        for i, end in zip(idx[:known], ends[:known].tolist(), strict=True):
            if self.links[visitors[i]][1] <= t and (lookback_ms is None or end >= t - lookback_ms):
                out.append(i)
        return out

    def feature_spec(self, signal: str = "none", signal_dim: int = 0, block: str = "need",
                     half_life_days: float | None = None, recency: bool = False) -> FeatureSpec:
        tiles = tuple(sorted(self.tiles))
        segments = tuple(sorted({c.segment for c in self.customers.values()}))
        return FeatureSpec(tiles, tuple(self.tiles[t] for t in tiles), segments, signal=signal,
                           signal_dim=signal_dim, signal_block=block, half_life_days=half_life_days,
                           recency=recency)

    def session_end_ms(self) -> np.ndarray:
        """End time of each session (aligned with `sessions`): what recency pooling measures ages from."""
        return self.sessions.end_ms.copy()


def first_logins(events: EventColumns) -> dict[str, tuple[str, int]]:
    """anonymous_id -> (customer_id, ts) of its first login carrying a customer id (by time, then file line),
    as the gateway links visitors."""
    event_types, customers = events.dicts["event_type"].values, events.dicts["customer_id"].values
    if "login" not in event_types:
        return {}
    has_customer = np.array([bool(c) for c in customers] + [False])
    rows = np.flatnonzero((events.codes["event_type"] == event_types.index("login"))
                          & has_customer[events.codes["customer_id"]])
    rows = rows[np.lexsort((events.line[rows], events.ts[rows]))]
    visitors = events.dicts["anonymous_id"].values
    links: dict[str, tuple[str, int]] = {}
    for visitor, customer, ts in zip(events.codes["anonymous_id"][rows].tolist(),
                                     events.codes["customer_id"][rows].tolist(), events.ts[rows].tolist(),
                                     strict=True):
        links.setdefault(visitors[visitor], (customers[customer], ts))
    return links


@dataclass
class SessionSignals:
    """Per-session signal matrices aligned with `EvalData.sessions` (rows of NaN where a signal is absent)."""

    matrices: dict[str, np.ndarray]
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Column names of the label-like signals (intent labels)."""
    row_signals: dict[str, Callable[[ImpressionTable], tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    """Signals given per impression rather than per session (the diagnostic intent oracles): table -> (vec, has)."""
    row_dims: dict[str, int] = field(default_factory=dict)
    end_ms: np.ndarray | None = None
    """End time of each session (`EvalData.session_end_ms`); needed for recency pooling and features."""
    _cache: dict = field(default_factory=dict, repr=False)

    def dim(self, signal: str) -> int:
        return self.row_dims[signal] if signal in self.row_signals else self.matrices[signal].shape[1]

    def rows(self, signal: str, table: ImpressionTable, half_life_days: float | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The signal of each impression row of `table`, whether it has one, and its recency features
        ([N, D], [N] bool, [N, len(RECENCY_FEATURES)]), pooled at the row's time (`pool_sessions`). Row signals
        (the oracles) have zero recency features."""
        if signal in self.row_signals:
            vec, has = self.row_signals[signal](table)
            return vec, has, np.zeros((len(has), len(RECENCY_FEATURES)))
        return self.pool(signal, table.session_rows, table.ts, half_life_days)

    def pool(self, signal: str, rows: Sequence[Sequence[int]], now_ms: Sequence[int] | np.ndarray,
             half_life_days: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each list of session indices and its scoring time: `pool_sessions` of the signal over those
        sessions (signal [N, D], has [N] bool, recency features [N, R]). Cached per (sessions, time). Without
        `end_ms` only the plain mean can be pooled, and the recency features are NaN."""
        m = self.matrices[signal]
        n = len(rows)
        out = np.zeros((n, m.shape[1]), np.float32)
        has = np.zeros(n, bool)
        rec = np.zeros((n, len(RECENCY_FEATURES)))
        now = np.asarray(now_ms, dtype=np.int64).reshape(-1)
        if len(now) != n:
            raise ValueError(f"{n} session lists but {len(now)} times")
        cache = self._cache.setdefault((signal, half_life_days), {})
        for k, ix in enumerate(rows):
            if not ix:
                continue
            key = (tuple(ix), int(now[k]))
            hit = cache.get(key)
            if hit is None:
                ix = list(ix)
                if self.end_ms is not None:
                    hit = pool_sessions(m[ix], self.end_ms[ix], int(now[k]), half_life_days)
                elif plain_mean(half_life_days):  # the plain mean needs no times; recency features unknown
                    hit = pool_sessions(m[ix], np.zeros(len(ix), np.int64), 0, None)
                    hit = replace(hit, recency=np.full(len(RECENCY_FEATURES), np.nan))
                else:
                    raise ValueError("SessionSignals.end_ms is needed to pool sessions with a half-life")
                cache[key] = hit
            out[k], has[k], rec[k] = hit.signal, hit.has_session, hit.recency
        return out, has, rec

    def pooled(self, signal: str, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """For each list of session indices: the plain mean of the signal over the sessions that have it, and
        whether any had it ([N, D], [N] bool); no times are involved (`pool_sessions` at an infinite half-life)."""
        m = self.matrices[signal]
        out = np.zeros((len(rows), m.shape[1]), np.float32)
        has = np.zeros(len(rows), bool)
        for k, ix in enumerate(rows):
            if ix:
                p = pool_sessions(m[list(ix)], np.zeros(len(ix), np.int64), 0, None)
                out[k], has[k] = p.signal, p.has_session
        return out, has


@dataclass
class ImpressionTable:
    """Shown tiles of the app homepage, one row each, in time order, with the app-side inputs."""

    customer: np.ndarray
    ts: np.ndarray
    visit: np.ndarray
    """Group id of the app visit (customer, timestamp): the unit that is ranked."""
    tile: np.ndarray
    position: np.ndarray
    clicked: np.ndarray
    segment: list[str]
    tenure: np.ndarray
    products: list[tuple[str, ...]]
    session_rows: list[list[int]]
    """Linked sessions in the lookback before each impression (same list for a visit's tiles)."""

    def __len__(self) -> int:
        return len(self.ts)

    def subset(self, mask: np.ndarray) -> ImpressionTable:
        ix = np.flatnonzero(mask)
        return ImpressionTable(self.customer[ix], self.ts[ix], self.visit[ix], self.tile[ix], self.position[ix],
                               self.clicked[ix], [self.segment[i] for i in ix], self.tenure[ix],
                               [self.products[i] for i in ix], [self.session_rows[i] for i in ix])

    @property
    def linked(self) -> np.ndarray:
        return np.array([bool(r) for r in self.session_rows])

    def features(self, spec: FeatureSpec, signals: SessionSignals | None = None) -> np.ndarray:
        if spec.signal_dim == 0:
            return spec.features(self.tile, self.position, self.segment, self.tenure, self.products)
        if signals is None:
            raise ValueError(f"spec uses the {spec.signal!r} signal: pass the session signals")
        vec, has, rec = signals.rows(spec.signal, self, spec.half_life_days)
        return spec.features(self.tile, self.position, self.segment, self.tenure, self.products, vec, has,
                             rec if spec.recency else None)


def time_split(table: ImpressionTable, test_share: float) -> tuple[ImpressionTable, ImpressionTable, int]:
    """The latest `test_share` of impressions (by time) as the test window: (train, test, cut-off in ms)."""
    cutoff = int(np.quantile(table.ts, 1 - test_share))
    return table.subset(table.ts < cutoff), table.subset(table.ts >= cutoff), cutoff


def impression_table(data: EvalData, lookback_days: float) -> ImpressionTable:
    lookback = int(lookback_days * DAY_MS)
    imps = sorted(data.impressions, key=lambda r: (r.ts, r.customer_id, r.position))
    cache: dict[tuple[str, int], list[int]] = {}
    visits: dict[tuple[str, int], int] = {}
    rows, visit_ids = [], []
    for r in imps:
        key = (r.customer_id, r.ts)
        if key not in cache:
            cache[key] = data.linked_before(r.customer_id, r.ts, lookback)
            visits[key] = len(visits)
        rows.append(cache[key])
        visit_ids.append(visits[key])
    known = [data.customers.get(r.customer_id) for r in imps]
    return ImpressionTable(
        np.array([r.customer_id for r in imps]), np.array([r.ts for r in imps], dtype=np.int64),
        np.array(visit_ids), np.array([r.tile_id for r in imps]), np.array([r.position for r in imps]),
        np.array([r.clicked for r in imps], dtype=bool), [c.segment if c else "" for c in known],
        np.array([c.tenure_months if c else 0 for c in known], dtype=float),
        [tuple(c.products) if c else () for c in known], rows)


@dataclass(frozen=True)
class ConversionTable:
    """Each customer's first conversion, with the linked sessions that ended before it."""

    customer: np.ndarray
    ts: np.ndarray
    product: np.ndarray
    session_rows: list[list[int]]


def conversion_table(data: EvalData) -> ConversionTable:
    first: dict[str, Conversion] = {}
    for c in sorted(data.conversions, key=lambda c: c.ts):
        first.setdefault(c.customer_id, c)
    convs = sorted(first.values(), key=lambda c: c.customer_id)
    return ConversionTable(np.array([c.customer_id for c in convs]), np.array([c.ts for c in convs], dtype=np.int64),
                           np.array([c.product for c in convs]),
                           [data.linked_before(c.customer_id, c.ts, None) for c in convs])
