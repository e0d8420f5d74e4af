"""The one featurizer, shared by training and the gateway (numpy only: no torch, no pandas).

A session becomes two arrays of its most recent `max_len` events:

    categorical  int64   [L, F]  ids of url, area, event_type, device, referrer, query tokens...
    continuous   float32 [L, C]  log dwell (standardized), dwell missing, log gap, log elapsed, hour sin/cos

Batches pad on the right with id 0 (PAD); the model derives its mask from column 0 (url) != PAD.
Ids 0-2 are reserved in every vocabulary (PAD, OOV, MASK); MASK is used only by training.
Everything fitted (vocabularies, normalization stats) is saved as one versioned JSON artifact
whose `version` includes a content fingerprint, so a model can refuse a mismatched featurizer.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

FORMAT_VERSION = 1
PAD, OOV, MASK = 0, 1, 2
N_SPECIAL = 3
CONTINUOUS = ("log_dwell", "dwell_missing", "log_gap", "log_elapsed", "hour_sin", "hour_cos")
STANDARDIZED = ("log_dwell", "log_gap", "log_elapsed")
"""Continuous columns standardized by the mean and std fitted on training sessions (the rest are used as-is)."""

_ID_SEGMENT = re.compile(
    r"^(\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?=[a-z]*\d)[0-9a-f]{12,}"
    r"|[a-z0-9-]*\d{4,}[a-z0-9-]*)$"
)
_TOKEN = re.compile(r"[a-z0-9]+")


class EventLike(Protocol):
    """What the featurizer reads of an event (training.core.contract.Event, or the gateway's own type)."""

    ts: int
    event_type: str
    url: str
    dwell_ms: int | None
    device: str | None
    referrer: str | None
    query: str | None


def normalize_url(url: str) -> str:
    """Path only, lower case, no query/fragment/trailing slash, id-like segments replaced by ':id'."""
    text = url.strip().lower()
    if "://" not in text and not text.startswith("/"):
        text = "/" + text
    path = urlsplit(text).path
    segments = [":id" if _ID_SEGMENT.match(seg) else seg for seg in path.split("/") if seg]
    return "/" + "/".join(segments)


def url_area(normalized: str) -> str:
    """The site section: first path segment ('/' for the home page)."""
    return normalized.split("/")[1] if normalized != "/" else "/"


def normalize_referrer(referrer: str | None) -> str:
    """Host without 'www.'; 'direct' when absent."""
    if not referrer or not referrer.strip():
        return "direct"
    text = referrer.strip().lower()
    host = urlsplit(text if "://" in text else "//" + text).hostname or text
    return host.removeprefix("www.")


def query_tokens(query: str | None) -> list[str]:
    return _TOKEN.findall(query.lower()) if query else []


@dataclass(frozen=True)
class FeaturizerConfig:
    """How sessions are cut into arrays. Part of the artifact, so serving uses what training used."""

    max_len: int = 64
    """Keep the most recent N events of a session."""
    query_tokens: int = 4
    """Query tokens kept per event (first N)."""
    min_count: int = 2
    """Tokens seen fewer times in the fitting data map to OOV."""
    max_vocab: int = 5000
    """Cap per vocabulary (most frequent first)."""


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {t: i + N_SPECIAL for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens) + N_SPECIAL

    def id(self, token: str) -> int:
        return self.index.get(token, OOV)

    @classmethod
    def fit(cls, counts: Counter[str], config: FeaturizerConfig) -> Vocab:
        kept = [t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= config.min_count]
        return cls(tuple(kept[: config.max_vocab]))


@dataclass(frozen=True)
class FeatureBatch:
    """A padded batch: the model's two inputs plus the true lengths."""

    categorical: np.ndarray  # int64 [B, L, F]
    continuous: np.ndarray  # float32 [B, L, C]
    lengths: np.ndarray  # int64 [B]


class Featurizer:
    """Fitted vocabularies + normalization stats. Build with `fit`, persist with `save`/`load`."""

    def __init__(self, config: FeaturizerConfig, vocabs: dict[str, Vocab], stats: dict[str, tuple[float, float]]):
        self.config = config
        self.vocabs = vocabs
        self.stats = stats
        self.version = f"{FORMAT_VERSION}-{self._fingerprint()}"

    # -- columns --------------------------------------------------------------------------------
    @property
    def categorical_columns(self) -> list[str]:
        return ["url", "area", "event_type", "device", "referrer"] + [
            f"query_{i}" for i in range(self.config.query_tokens)
        ]

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per categorical column (query columns share the query vocab)."""
        return [len(self.vocabs[self._vocab_of(c)]) for c in self.categorical_columns]

    @staticmethod
    def _vocab_of(column: str) -> str:
        return "query" if column.startswith("query_") else column

    # -- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(cls, sessions: Iterable[Sequence[EventLike]], config: FeaturizerConfig | None = None) -> Featurizer:
        config = config or FeaturizerConfig()
        counts = token_counts()
        raw: dict[str, list[float]] = {k: [] for k in STANDARDIZED}
        for events in sessions:
            recent = list(events)[-config.max_len:]
            count_tokens(counts, recent)
            for values in raw_continuous(recent):
                for k in STANDARDIZED:
                    if not math.isnan(values[k]):
                        raw[k].append(values[k])
        vocabs = {k: Vocab.fit(c, config) for k, c in counts.items()}
        stats = {k: (float(np.mean(v)) if v else 0.0, float(np.std(v)) or 1.0 if v else 1.0) for k, v in raw.items()}
        return cls(config, vocabs, stats)

    # -- transforming ---------------------------------------------------------------------------
    def encode(self, events: Sequence[EventLike]) -> tuple[np.ndarray, np.ndarray]:
        """One session -> (categorical [L, F] int64, continuous [L, C] float32), L = min(len, max_len)."""
        recent = list(events)[-self.config.max_len:]
        if not recent:
            raise ValueError("cannot featurize an empty session")
        q = self.config.query_tokens
        cat = np.zeros((len(recent), 5 + q), dtype=np.int64)
        for i, tok in enumerate(event_tokens(e) for e in recent):
            cat[i, 0] = self.vocabs["url"].id(tok["url"])
            cat[i, 1] = self.vocabs["area"].id(tok["area"])
            cat[i, 2] = self.vocabs["event_type"].id(tok["event_type"])
            cat[i, 3] = self.vocabs["device"].id(tok["device"])
            cat[i, 4] = self.vocabs["referrer"].id(tok["referrer"])
            for j, word in enumerate(tok["query"][:q]):
                cat[i, 5 + j] = self.vocabs["query"].id(word)
        cont = np.zeros((len(recent), len(CONTINUOUS)), dtype=np.float32)
        for i, values in enumerate(raw_continuous(recent)):
            for j, name in enumerate(CONTINUOUS):
                value = values[name]
                if name in self.stats:
                    mean, std = self.stats[name]
                    value = 0.0 if math.isnan(value) else (value - mean) / std
                cont[i, j] = value
        return cat, cont

    def batch(self, sessions: Sequence[Sequence[EventLike]], pad_to: int | None = None) -> FeatureBatch:
        """Encode and right-pad a batch to its longest session (or to `pad_to`)."""
        encoded = [self.encode(s) for s in sessions]
        return pad_batch(encoded, pad_to)

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "config": asdict(self.config),
            "categorical_columns": self.categorical_columns,
            "continuous_columns": list(CONTINUOUS),
            "vocabs": {k: list(v.tokens) for k, v in self.vocabs.items()},
            "stats": {k: list(v) for k, v in self.stats.items()},
        }

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path | str) -> Featurizer:
        doc = json.loads(Path(path).read_text())
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: featurizer format {doc.get('format_version')} != supported {FORMAT_VERSION}")
        featurizer = cls(
            FeaturizerConfig(**doc["config"]),
            {k: Vocab(tuple(v)) for k, v in doc["vocabs"].items()},
            {k: (float(v[0]), float(v[1])) for k, v in doc["stats"].items()},
        )
        if featurizer.version != doc["version"]:
            raise ValueError(f"{path}: content fingerprint {featurizer.version} != recorded {doc['version']}")
        return featurizer

    def _fingerprint(self) -> str:
        doc = {"config": asdict(self.config), "vocabs": {k: list(v.tokens) for k, v in sorted(self.vocabs.items())},
               "stats": {k: [round(x, 9) for x in v] for k, v in sorted(self.stats.items())}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def pad_batch(encoded: Sequence[tuple[np.ndarray, np.ndarray]], pad_to: int | None = None) -> FeatureBatch:
    """Right-pad encoded sessions into one batch (PAD ids, zero continuous values)."""
    if not encoded:
        raise ValueError("cannot build an empty batch")
    lengths = np.array([c.shape[0] for c, _ in encoded], dtype=np.int64)
    width = int(lengths.max()) if pad_to is None else pad_to
    if width < lengths.max():
        raise ValueError(f"pad_to={pad_to} is shorter than the longest session ({lengths.max()})")
    n_cat, n_cont = encoded[0][0].shape[1], encoded[0][1].shape[1]
    cat = np.full((len(encoded), width, n_cat), PAD, dtype=np.int64)
    cont = np.zeros((len(encoded), width, n_cont), dtype=np.float32)
    for i, (c, x) in enumerate(encoded):
        cat[i, : len(c)] = c
        cont[i, : len(x)] = x
    return FeatureBatch(cat, cont, lengths)


VOCABULARIES = ("url", "area", "event_type", "device", "referrer", "query")
"""The token vocabularies, one per event_tokens key; "query" holds several tokens per event."""


def token_counts() -> dict[str, Counter[str]]:
    return {k: Counter() for k in VOCABULARIES}


def count_tokens(counts: dict[str, Counter[str]], events: Iterable[EventLike]) -> None:
    """Add the events' tokens to `counts` (Featurizer.fit's counting; the Spark job runs it per partition)."""
    for tokens in map(event_tokens, events):
        for key in VOCABULARIES[:-1]:
            counts[key][tokens[key]] += 1
        counts["query"].update(tokens["query"])


def event_tokens(event: EventLike) -> dict:
    """The categorical tokens of one event, by vocabulary name (fit counts them; encode looks them up)."""
    url = normalize_url(event.url)
    return {
        "url": url,
        "area": url_area(url),
        "event_type": event.event_type.lower(),
        "device": (event.device or "unknown").lower(),
        "referrer": normalize_referrer(event.referrer),
        "query": query_tokens(event.query),
    }


def raw_continuous(events: Sequence[EventLike]) -> Iterable[dict[str, float]]:
    """Unstandardized values per event; NaN marks a missing dwell."""
    start = events[0].ts
    previous = start
    for event in events:
        hour = ((event.ts // 1000) % 86_400) / 3600.0
        yield {
            "log_dwell": math.log1p(event.dwell_ms / 1000.0) if event.dwell_ms is not None else math.nan,
            "dwell_missing": 0.0 if event.dwell_ms is not None else 1.0,
            "log_gap": math.log1p(max(event.ts - previous, 0) / 1000.0),
            "log_elapsed": math.log1p(max(event.ts - start, 0) / 1000.0),
            "hour_sin": math.sin(2 * math.pi * hour / 24.0),
            "hour_cos": math.cos(2 * math.pi * hour / 24.0),
        }
        previous = event.ts
