"""What each Spark task runs: the contract's validation, the sessionizer and the featurizer, applied to
partitions. No Spark imports here, so the functions are plain Python that tests and executors share."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from training.core.contract import Event, problems_from
from training.core.featurizer import (
    STANDARDIZED,
    VOCABULARIES,
    Featurizer,
    FeaturizerConfig,
    count_tokens,
    raw_continuous,
    token_counts,
)
from training.core.sessionize import Session, sessionize
from training.splits import VALIDATION_PCT, is_holdout

EVENT_FIELDS = ("anonymous_id", "ts", "event_type", "url", "dwell_ms", "device", "referrer", "query", "customer_id",
                "session_id")
VALIDATED_DDL = ("kind int, file_idx int, line long, k int, anonymous_id string, ts long, event_type string, "
                 "url string, dwell_ms long, device string, referrer string, query string, customer_id string, "
                 "session_id string, field string, reason string")
"""One row per accepted event (kind 0) or per problem (kind 1); (file_idx, line, k) keep the contract's order."""
SHARD_DDL = ("session_id string, anonymous_id string, start_ms long, end_ms long, holdout boolean, length int, "
             "categorical array<int>, continuous array<float>")


def validate_line(file_idx: int, line: int, raw: Any) -> list[tuple]:
    """One input row -> validated rows, exactly as contract.read_rows judges it (raw: JSON text or a dict)."""
    if isinstance(raw, str):
        if not raw.strip():
            return []
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            return [_problem(file_idx, line, 0, "<row>", f"invalid JSON: {exc}")]
    if not isinstance(raw, dict):
        return [_problem(file_idx, line, 0, "<row>", "expected a JSON object")]
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        return [_problem(file_idx, line, k, p.field, p.reason) for k, p in enumerate(problems_from(exc, "", line))]
    return [(0, file_idx, line, 0, *(getattr(event, f) for f in EVENT_FIELDS), None, None)]


def _problem(file_idx: int, line: int, k: int, field: str, reason: str) -> tuple:
    return (1, file_idx, line, k, *([None] * len(EVENT_FIELDS)), field, reason)


def validate_partition(rows: Iterable[tuple[int, int, Any]]) -> Iterator[tuple]:
    """(file_idx, line, raw) -> validated rows."""
    for file_idx, line, raw in rows:
        yield from validate_line(file_idx, line, raw)


def visitor_sessions(batches: Iterable[pa.RecordBatch]) -> Iterator[Session]:
    """Sessions of a partition sorted by (anonymous_id, ts, file order): one visitor at a time, cut by
    training.core.sessionize itself, so the gap rule and explicit session ids are the reference's."""
    current: list[Event] = []
    for batch in batches:
        columns = {name: batch.column(name).to_pylist() for name in EVENT_FIELDS}
        for i in range(batch.num_rows):
            event = Event.model_construct(**{name: columns[name][i] for name in EVENT_FIELDS})
            if current and event.anonymous_id != current[0].anonymous_id:
                yield from sessionize(current)
                current = []
            current.append(event)
    if current:
        yield from sessionize(current)


def fit_partition(batches: Iterable[pa.RecordBatch], config: FeaturizerConfig) -> Iterator[pa.RecordBatch]:
    """Token counts and (n, mean, M2) per standardized value over this partition's training sessions, as
    Featurizer.fit counts them (the most recent max_len events of each session)."""
    counts = token_counts()
    moments = {k: (0, 0.0, 0.0) for k in STANDARDIZED}
    for session in visitor_sessions(batches):
        if is_holdout(session.anonymous_id, VALIDATION_PCT):
            continue
        recent = list(session.events)[-config.max_len:]
        count_tokens(counts, recent)
        for values in raw_continuous(recent):
            for k in STANDARDIZED:
                if not math.isnan(values[k]):
                    moments[k] = merge_moments(moments[k], (1, values[k], 0.0))
    blob = json.dumps({"counts": {k: dict(c) for k, c in counts.items()}, "moments": moments})
    yield pa.RecordBatch.from_pydict({"blob": [blob]})


def merge_moments(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    """Chan et al.'s parallel update of (count, mean, sum of squared deviations): stable in any merge order."""
    n = a[0] + b[0]
    if n == 0:
        return (0, 0.0, 0.0)
    delta = b[1] - a[1]
    mean = a[1] + delta * b[0] / n
    return (n, mean, a[2] + b[2] + delta * delta * a[0] * b[0] / n)


def featurizer_from_partials(blobs: Iterable[str], config: FeaturizerConfig) -> Featurizer:
    """Merge the partitions' partial counts into the Featurizer that Featurizer.fit builds on the same sessions
    (vocabularies identical; stats equal up to floating-point summation order)."""
    from training.core.featurizer import Vocab

    counts: dict[str, Counter[str]] = {}
    moments = {k: (0, 0.0, 0.0) for k in STANDARDIZED}
    for blob in blobs:
        doc = json.loads(blob)
        for key, part in doc["counts"].items():
            counts.setdefault(key, Counter()).update(part)
        for k in STANDARDIZED:
            moments[k] = merge_moments(moments[k], tuple(doc["moments"][k]))
    vocabs = {k: Vocab.fit(counts.get(k, Counter()), config) for k in VOCABULARIES}
    stats = {k: ((m[1], math.sqrt(m[2] / m[0]) or 1.0) if m[0] else (0.0, 1.0)) for k, m in moments.items()}
    return Featurizer(config, vocabs, stats)


def encode_partition(batches: Iterable[pa.RecordBatch], featurizer: Featurizer,
                     batch_sessions: int = 2048) -> Iterator[pa.RecordBatch]:
    """Sessions -> shard rows (the shared shard format), encoded by the one Featurizer."""
    rows: dict[str, list] = {k: [] for k in ("session_id", "anonymous_id", "start_ms", "end_ms", "holdout", "length",
                                             "categorical", "continuous")}
    for session in visitor_sessions(batches):
        cat, cont = featurizer.encode(session.events)
        for key, value in (("session_id", session.session_id), ("anonymous_id", session.anonymous_id),
                           ("start_ms", session.start_ms), ("end_ms", session.end_ms),
                           ("holdout", is_holdout(session.anonymous_id)), ("length", len(cat)),
                           ("categorical", cat.astype("int32").ravel()), ("continuous", cont.ravel())):
            rows[key].append(value)
        if len(rows["session_id"]) >= batch_sessions:
            yield _shard_batch(rows)
            rows = {k: [] for k in rows}
    if rows["session_id"]:
        yield _shard_batch(rows)


_SHARD_SCHEMA = pa.schema([("session_id", pa.string()), ("anonymous_id", pa.string()), ("start_ms", pa.int64()),
                           ("end_ms", pa.int64()), ("holdout", pa.bool_()), ("length", pa.int32()),
                           ("categorical", pa.list_(pa.int32())), ("continuous", pa.list_(pa.float32()))])


def _shard_batch(rows: dict[str, list]) -> pa.RecordBatch:
    arrays = []
    for field in _SHARD_SCHEMA:
        values = rows[field.name]
        if pa.types.is_list(field.type):
            import numpy as np

            offsets = np.zeros(len(values) + 1, dtype=np.int32)
            np.cumsum([len(v) for v in values], out=offsets[1:])
            flat = np.concatenate(values) if values else np.zeros(0)
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=field.type.value_type)))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=_SHARD_SCHEMA)
