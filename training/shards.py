"""Featurized shards: the one on-disk format both the columnar path and the Spark job write.

A shard directory holds

    part-NNNNN.parquet   one row per session: session_id, anonymous_id, start_ms, end_ms, holdout, length,
                         categorical list<int32> ([length, F] flattened), continuous list<float32> ([length, C])
    featurizer.json      the Featurizer the arrays were made with
    invalid_rows.jsonl   the contract's LoadReport problems (file, line, field, reason)
    _SUCCESS.json        {"sessions", "events", "invalid_rows", "featurizer_version", "parts"}, written last

Sessions keep the row-level path's order (training.core.sessionize: by start, then session id) within and
across parts, so the first N rows of a directory are the same N sessions whichever path wrote it. Readers
refuse a directory without _SUCCESS.json: a half-written job is not data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from training.core.contract import LoadReport
from training.core.featurizer import Featurizer
from training.splits import VALIDATION_PCT, bucket

SUCCESS = "_SUCCESS.json"
FEATURIZER = "featurizer.json"
INVALID_ROWS = "invalid_rows.jsonl"
PART_SESSIONS = 50_000
"""Sessions per part by default: a part of ~50k sessions is ~10-30 MB, one row group a reader can hold."""

WRITE_OPTIONS = {"use_dictionary": False, "compression": "zstd", "compression_level": 1}
"""Measured on a 50k-session part: 0.115 s to write and 0.057 s to read, 13.2 MB, against 0.153 s, 0.123 s and
16.9 MB with pyarrow's defaults (dictionary pages for the id arrays cost time and save nothing)."""

SCHEMA = pa.schema([
    ("session_id", pa.string()),
    ("anonymous_id", pa.string()),
    ("start_ms", pa.int64()),
    ("end_ms", pa.int64()),
    ("holdout", pa.bool_()),
    ("length", pa.int32()),
    ("categorical", pa.list_(pa.int32())),
    ("continuous", pa.list_(pa.float32())),
])


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass(frozen=True)
class SessionColumns:
    """A batch of featurized sessions as flat columns (what both writers produce)."""

    session_id: Sequence[str] | pa.Array
    anonymous_id: Sequence[str] | pa.Array
    start_ms: np.ndarray  # int64 [S]
    end_ms: np.ndarray  # int64 [S]
    holdout: np.ndarray  # bool [S]
    lengths: np.ndarray  # int32 [S], events kept per session
    categorical: np.ndarray  # int [sum(lengths), F]
    continuous: np.ndarray  # float32 [sum(lengths), C]

    def __len__(self) -> int:
        return len(self.lengths)


def to_table(cols: SessionColumns) -> pa.Table:
    """Flat columns -> a table in SCHEMA: list offsets are cumulative lengths times the row width."""
    lengths = np.asarray(cols.lengths, dtype=np.int32)
    n_cat = cols.categorical.shape[1] if cols.categorical.ndim == 2 else 0
    n_cont = cols.continuous.shape[1] if cols.continuous.ndim == 2 else 0
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cat = pa.ListArray.from_arrays(pa.array((offsets * n_cat).astype(np.int32)),
                                   pa.array(np.ascontiguousarray(cols.categorical, dtype=np.int32).ravel()))
    cont = pa.ListArray.from_arrays(pa.array((offsets * n_cont).astype(np.int32)),
                                    pa.array(np.ascontiguousarray(cols.continuous, dtype=np.float32).ravel()))
    return pa.Table.from_arrays([
        pa.array(cols.session_id, pa.string()), pa.array(cols.anonymous_id, pa.string()),
        pa.array(np.asarray(cols.start_ms, dtype=np.int64)), pa.array(np.asarray(cols.end_ms, dtype=np.int64)),
        pa.array(np.asarray(cols.holdout, dtype=bool)), pa.array(lengths), cat, cont,
    ], schema=SCHEMA)


def write_featurized(out_dir: Path | str, tables: Iterable[pa.Table], featurizer: Featurizer,
                     report: LoadReport, events: int, part_sessions: int = PART_SESSIONS) -> dict:
    """Write tables (in session order) as parts of at most `part_sessions` rows; _SUCCESS.json last.

    A part is written on a second thread while the next table is made."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*.parquet"):
        stale.unlink()
    (out / SUCCESS).unlink(missing_ok=True)
    featurizer.save(out / FEATURIZER)
    report.write_problems(out / INVALID_ROWS)
    parts = sessions = 0
    writing: Future[None] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="write-part") as writer:  # parquet encodes without the GIL
        for table in tables:
            for start in range(0, table.num_rows, part_sessions):
                chunk = table.slice(start, part_sessions)
                if writing is not None:
                    writing.result()  # one part in flight: its table is the memory this costs
                writing = writer.submit(pq.write_table, chunk.cast(SCHEMA), out / part_name(parts), **WRITE_OPTIONS)
                parts += 1
                sessions += chunk.num_rows
        if writing is not None:
            writing.result()
    done = {"sessions": sessions, "events": int(events), "invalid_rows": len(report.problems),
            "featurizer_version": featurizer.version, "parts": parts}
    (out / SUCCESS).write_text(json.dumps(done, indent=1))
    return done


def read_success(path: Path | str) -> dict:
    marker = Path(path) / SUCCESS
    if not marker.exists():
        raise FileNotFoundError(f"{path}: no {SUCCESS} (not a finished shard directory)")
    return json.loads(marker.read_text())


def part_paths(path: Path | str) -> list[Path]:
    done = read_success(path)
    return [Path(path) / part_name(i) for i in range(done["parts"])]


def read_shards(path: Path | str, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """Each part as a table, in session order."""
    for part in part_paths(path):
        yield pq.read_table(part, columns=list(columns) if columns else None)


def load_featurizer(path: Path | str) -> Featurizer:
    recorded = read_success(path)["featurizer_version"]
    featurizer = Featurizer.load(Path(path) / FEATURIZER)
    if featurizer.version != recorded:
        raise ValueError(f"{path}: featurizer {featurizer.version} != shards' {recorded}")
    return featurizer


class FlatSessions:
    """Map-style data set over flat arrays: item i -> (categorical [L, F] int64, continuous [L, C] float32).

    Holds one int32 and one float32 buffer with offsets (about 4 bytes per value), not one array per session."""

    def __init__(self, lengths: np.ndarray, categorical: np.ndarray, continuous: np.ndarray) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.n_cat, self.n_cont = categorical.shape[1], continuous.shape[1]
        self._cat = np.ascontiguousarray(categorical, dtype=np.int32).ravel()
        self._cont = np.ascontiguousarray(continuous, dtype=np.float32).ravel()
        self._starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1])).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"session {index} out of range ({len(self)})")
        start, length = int(self._starts[index]), int(self.lengths[index])
        cat = self._cat[start * self.n_cat:(start + length) * self.n_cat].reshape(length, self.n_cat)
        cont = self._cont[start * self.n_cont:(start + length) * self.n_cont].reshape(length, self.n_cont)
        return cat.astype(np.int64), cont.copy()


class ShardDataset(FlatSessions):
    """FlatSessions of a shard directory (a data set costs what its parquet columns cost decompressed), with
    `holdout`, `session_ids` and `featurizer`; `holdout` selects a split."""

    def __init__(self, path: Path | str, holdout: bool | None = None):
        self.featurizer = load_featurizer(path)
        self.n_cat = len(self.featurizer.categorical_columns)
        self.n_cont = len(self.featurizer.to_dict()["continuous_columns"])
        tables = list(read_shards(path, ["session_id", "holdout", "length", "categorical", "continuous"]))
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        mask = _bools(table.column("holdout"))
        self.holdout = mask
        keep = np.arange(len(mask)) if holdout is None else np.flatnonzero(mask == holdout)
        lengths = np.asarray(table.column("length").to_numpy(), dtype=np.int64)
        self.session_ids = [table.column("session_id")[int(i)].as_py() for i in keep] if len(keep) < len(mask) \
            else table.column("session_id").to_pylist()
        self.lengths = lengths[keep]
        self._cat = _flat(table.column("categorical"), np.int32)
        self._cont = _flat(table.column("continuous"), np.float32)
        starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        self._starts = starts[:-1][keep]
        if holdout is not None:
            self.holdout = mask[keep]


class Subset(Sequence):
    """Rows `index` of a data set, without copying them."""

    def __init__(self, base: FlatSessions, index: np.ndarray) -> None:
        self.base, self.index = base, index
        self.lengths = base.lengths[index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        return self.base[int(self.index[i])]


class Splits(NamedTuple):
    """A shard directory split for pre-training: hold-out rows left out, visitors below `validation_pct`
    validate (training.splits), with each row's visitor for the objective's visitor positives."""

    featurizer: Featurizer
    train: Subset
    validation: Subset
    train_visitors: list[str]
    validation_visitors: list[str]


def shard_splits(shards: Path | str, validation_pct: int = VALIDATION_PCT) -> Splits:
    data = ShardDataset(shards, holdout=False)
    ids = pa.concat_tables(list(read_shards(shards, ["anonymous_id", "holdout"])))
    keep = ~_bools(ids.column("holdout"))
    visitors = [v for v, k in zip(ids.column("anonymous_id").to_pylist(), keep, strict=True) if k]
    buckets = {v: bucket(v) for v in set(visitors)}  # hashed once per visitor, not per session
    val = np.array([buckets[v] < validation_pct for v in visitors], dtype=bool)
    tr_i, va_i = np.flatnonzero(~val), np.flatnonzero(val)
    return Splits(data.featurizer, Subset(data, tr_i), Subset(data, va_i), [visitors[i] for i in tr_i],
                  [visitors[i] for i in va_i])


def _bools(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(), dtype=bool) if column.num_chunks else np.zeros(0, dtype=bool)


def _flat(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """All list values of a column as one numpy buffer (lists are back to back, no nulls)."""
    values = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return np.concatenate(values).astype(dtype, copy=False) if values else np.zeros(0, dtype=dtype)
