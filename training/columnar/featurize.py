"""Vectorized Featurizer.fit / Featurizer.encode over sessionized columns, with identical results.

The featurizer's own token functions (normalize_url, url_area, normalize_referrer, query_tokens) run once per
distinct raw value and become lookup tables, so there is still one featurizer. math.log1p (not numpy's, whose
last bits differ) runs once per distinct millisecond value. Hour sin/cos come from a table of the 86,400
seconds of a day.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

import numpy as np

from training.columnar.load import EventColumns
from training.columnar.sessionize import SessionIndex
from training.core.featurizer import (
    CONTINUOUS,
    PAD,
    STANDARDIZED,
    Featurizer,
    FeaturizerConfig,
    Vocab,
    normalize_referrer,
    normalize_url,
    query_tokens,
    url_area,
)

_LOG1P_DENSE_MS = 1 << 22
"""Millisecond values below this are cached in a dense table (filled only where values were seen)."""


class _Log1pSeconds:
    """math.log1p(ms / 1000.0), bit for bit (numpy's log1p differs in the last bits), once per distinct value."""

    def __init__(self) -> None:
        self.values = np.zeros(0, dtype=np.float64)
        self.known = np.zeros(0, dtype=bool)

    def __call__(self, ms: np.ndarray) -> np.ndarray:
        out = np.empty(len(ms), dtype=np.float64)
        dense = ms < _LOG1P_DENSE_MS
        small = ms[dense]
        if len(small):
            self._fill(int(small.max()) + 1, small)
            out[dense] = self.values[small]
        if not dense.all():
            values, inverse = np.unique(ms[~dense], return_inverse=True)
            out[~dense] = _math_log1p(values / 1000.0).astype(np.float64)[inverse]
        return out

    def _fill(self, size: int, ms: np.ndarray) -> None:
        if size > len(self.values):
            grown = max(size, 2 * len(self.values))
            self.values = np.concatenate([self.values, np.zeros(grown - len(self.values))])
            self.known = np.concatenate([self.known, np.zeros(grown - len(self.known), dtype=bool)])
        unseen = ms[~self.known[ms]]
        if not len(unseen):
            return
        wanted = np.zeros(len(self.known), dtype=bool)
        wanted[unseen] = True
        missing = np.flatnonzero(wanted)
        self.values[missing] = _math_log1p(missing / 1000.0)  # ms / 1000.0 is the same float in numpy
        self.known[missing] = True


_math_log1p = np.frompyfunc(math.log1p, 1, 1)


log1p_seconds = _Log1pSeconds()


@lru_cache(maxsize=1)
def _hour_tables() -> tuple[np.ndarray, np.ndarray]:
    hours = [(s / 3600.0) for s in range(86_400)]
    return (np.array([math.sin(2 * math.pi * h / 24.0) for h in hours]),
            np.array([math.cos(2 * math.pi * h / 24.0) for h in hours]))


class Tokens:
    """Per-code token tables of one data set (codes index the EventColumns dictionaries; the last row is None).

    Built once per EventColumns (normalize_url per distinct URL is the costly part) and shared by fit and encode."""

    def __init__(self, events: EventColumns):
        d = events.dicts
        self.url = [normalize_url(u) for u in d["url"].values]
        self.area = [url_area(u) for u in self.url]
        self.event_type = [e.lower() for e in d["event_type"].values]
        self.device = [(v or "unknown").lower() for v in d["device"].values] + ["unknown"]
        self.referrer = [normalize_referrer(v) for v in d["referrer"].values] + [normalize_referrer(None)]
        self.query = [query_tokens(v) for v in d["query"].values] + [[]]


def _kept(sessions: SessionIndex, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Event rows of each session's most recent max_len events, and the kept offsets."""
    counts = sessions.counts
    kept = np.minimum(counts, max_len)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    skip = np.repeat(counts - kept, kept)
    starts = np.repeat(sessions.offsets[:-1], kept)
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], kept)
    return sessions.order[starts + skip + within], offsets


def _raw_continuous(events: EventColumns, rows: np.ndarray, offsets: np.ndarray,
                    names: tuple[str, ...] = CONTINUOUS) -> dict[str, np.ndarray]:
    """Unstandardized values of `names` per kept event (NaN marks a missing dwell), as _raw_continuous."""
    ts = events.ts[rows]
    lengths = np.diff(offsets)
    out: dict[str, np.ndarray] = {}
    if "log_dwell" in names or "dwell_missing" in names:
        dwell = events.dwell_ms[rows]
        has = dwell >= 0
        out["log_dwell"] = np.full(len(rows), np.nan)
        out["log_dwell"][has] = log1p_seconds(dwell[has])
        out["dwell_missing"] = (~has).astype(np.float64)
    if "log_gap" in names:
        previous = np.empty_like(ts)
        if len(ts):
            previous[1:] = ts[:-1]
            previous[offsets[:-1][lengths > 0]] = ts[offsets[:-1][lengths > 0]]
        out["log_gap"] = log1p_seconds(np.maximum(ts - previous, 0))
    if "log_elapsed" in names:
        out["log_elapsed"] = log1p_seconds(np.maximum(ts - np.repeat(ts[offsets[:-1]], lengths), 0))
    if "hour_sin" in names or "hour_cos" in names:
        sin, cos = _hour_tables()
        second = (ts // 1000) % 86_400
        out["hour_sin"], out["hour_cos"] = sin[second], cos[second]
    return {k: out[k] for k in names}


def _counter(hist: np.ndarray, tokens: list[str]) -> Counter[str]:
    """Counts of tokens from a histogram over codes (several raw values may share one token)."""
    counts: Counter[str] = Counter()
    for code in np.flatnonzero(hist):
        counts[tokens[code]] += int(hist[code])
    return counts


FIT_CHUNK_SESSIONS = 50_000


def _histogram(codes: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(np.where(codes < 0, size - 1, codes), minlength=size)


def fit_featurizer(events: EventColumns, sessions: SessionIndex, mask: np.ndarray | None = None,
                   config: FeaturizerConfig | None = None, tokens: Tokens | None = None) -> Featurizer:
    """Featurizer.fit on the sessions where `mask` is true (all by default), in session order.

    Token counts add up chunk by chunk; the standardized values are kept whole and in order, so their mean
    and std sum in the same order as the reference's."""
    config = config or FeaturizerConfig()
    mask = np.ones(len(sessions), dtype=bool) if mask is None else mask
    tok = tokens or Tokens(events)
    sizes = {"url": len(tok.url), "event_type": len(tok.event_type), "device": len(tok.device),
             "referrer": len(tok.referrer), "query": len(tok.query)}
    hist = {name: np.zeros(size, dtype=np.int64) for name, size in sizes.items()}
    values: dict[str, list[np.ndarray]] = {k: [] for k in STANDARDIZED}
    for start in range(0, len(sessions), FIT_CHUNK_SESSIONS):
        stop = min(start + FIT_CHUNK_SESSIONS, len(sessions))
        rows, offsets = _select(*_kept(sessions.slice(start, stop), config.max_len), mask[start:stop])
        for name, size in sizes.items():
            hist[name] += _histogram(events.codes[name][rows], size)
        for k, v in _raw_continuous(events, rows, offsets, STANDARDIZED).items():
            values[k].append(v[~np.isnan(v)])
    counts = {"url": _counter(hist["url"], tok.url), "area": _counter(hist["url"], tok.area),
              "event_type": _counter(hist["event_type"], tok.event_type),
              "device": _counter(hist["device"], tok.device), "referrer": _counter(hist["referrer"], tok.referrer)}
    query: Counter[str] = Counter()
    for code in np.flatnonzero(hist["query"]):
        for word in tok.query[code]:
            query[word] += int(hist["query"][code])
    counts["query"] = query
    vocabs = {k: Vocab.fit(v, config) for k, v in counts.items()}
    stats = {}
    for k in STANDARDIZED:
        v = np.concatenate(values[k]) if values[k] else np.zeros(0)
        stats[k] = (float(np.mean(v)) if len(v) else 0.0, float(np.std(v)) or 1.0 if len(v) else 1.0)
    return Featurizer(config, vocabs, stats)


def _select(rows: np.ndarray, offsets: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.diff(offsets)
    keep = np.repeat(mask, lengths)
    new = np.zeros(int(mask.sum()) + 1, dtype=np.int64)
    np.cumsum(lengths[mask], out=new[1:])
    return rows[keep], new


def _ids(vocab: Vocab, tokens: list[str]) -> np.ndarray:
    return np.array([vocab.id(t) for t in tokens], dtype=np.int32)


class SessionEncoder:
    """Featurizer.encode for sessions of one EventColumns: the token -> id tables are built once, here."""

    def __init__(self, featurizer: Featurizer, events: EventColumns, tokens: Tokens | None = None):
        self.featurizer, self.events = featurizer, events
        tok = tokens or Tokens(events)
        v = featurizer.vocabs
        q = featurizer.config.query_tokens
        words = np.full((len(tok.query), q), PAD, dtype=np.int32)
        for i, toks in enumerate(tok.query):
            for j, word in enumerate(toks[:q]):
                words[i, j] = v["query"].id(word)
        self.tables = [("url", _ids(v["url"], tok.url)), ("url", _ids(v["area"], tok.area)),
                       ("event_type", _ids(v["event_type"], tok.event_type)),
                       ("device", _ids(v["device"], tok.device)),
                       ("referrer", _ids(v["referrer"], tok.referrer)), ("query", words)]

    def __call__(self, sessions: SessionIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lengths [S], categorical [sum, F] int32, continuous [sum, C] float32)."""
        featurizer, events = self.featurizer, self.events
        rows, offsets = _kept(sessions, featurizer.config.max_len)
        cat = np.full((len(rows), 5 + featurizer.config.query_tokens), PAD, dtype=np.int32)
        for j, (name, table) in enumerate(self.tables):
            codes = events.codes[name][rows]
            ids = table[np.where(codes < 0, len(table) - 1, codes)]
            if ids.ndim == 1:
                cat[:, j] = ids
            else:  # query words: the last q columns
                cat[:, j:] = ids
        raw = _raw_continuous(events, rows, offsets)
        cont = np.empty((len(rows), len(CONTINUOUS)), dtype=np.float32)
        for j, name in enumerate(CONTINUOUS):
            value = raw[name]
            if name in featurizer.stats:
                mean, std = featurizer.stats[name]
                value = np.where(np.isnan(value), 0.0, (value - mean) / std)
            cont[:, j] = value
        return np.diff(offsets), cat, cont


def encode_sessions(featurizer: Featurizer, events: EventColumns,
                    sessions: SessionIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Featurizer.encode for every session: (lengths [S], categorical [sum, F] int32, continuous [sum, C])."""
    return SessionEncoder(featurizer, events)(sessions)
