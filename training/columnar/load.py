"""Events file -> compact columns (codes into per-field dictionaries), validated like the contract.

JSONL is read in 8 MB blocks of whole lines (measured faster, and 120 MB less peak, than 32 MB blocks) by
pyarrow's JSON reader (C++, no Python object per row), which parses the next blocks on other threads (it
releases the GIL) while this one is checked; Parquet by record batches. Each field is checked vectorized,
string fields once per distinct value of a block with the contract's own rules (strip, length, lower case),
and the blocks' distinct values are deduplicated once at the end (`_Interner`). A row the fast checks cannot
accept as-is (a bad value, an unusual timestamp form, a type the reader inferred differently) is re-parsed from
its own line and validated by `contract.validate_raw`, so problems and accepted values are exactly the
row-level path's. A block the reader cannot parse at all (invalid JSON, a lone CR, mixed types) goes row by
row the same way.
"""

from __future__ import annotations

import io
import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from training.core.contract import MAX_TEXT_LEN, Event, LoadReport, events_path, validate_raw

BLOCK_BYTES = 8 << 20
PARSE_THREADS = 2
"""Blocks parsed ahead at once, each on its own thread, while the oldest is checked."""
STRING_FIELDS = ("anonymous_id", "event_type", "url", "device", "referrer", "query", "customer_id", "session_id")
REQUIRED = ("anonymous_id", "event_type", "url")
_ISO = (r"^(?P<base>\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(?:\.(?P<frac>\d{3}|\d{6}))?"
        r"(?P<tz>Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$")
_WS = np.zeros(256, dtype=bool)
_WS[list(b" \t\n\r\x0b\x0c")] = True


@dataclass
class Dictionary:
    """Distinct accepted values of one field, in the order the blocks met them; code -1 is None."""

    values: list[str] = field(default_factory=list)


class _Interner:
    """One field's values under provisional codes while loading; `unify` dedupes them all at once, in C++.

    Each block adds its distinct (normalized) values as one chunk and codes its rows as chunk offset + index,
    so no Python runs per distinct value; rows the contract validated add theirs one by one."""

    def __init__(self) -> None:
        self.chunks: list[pa.Array] = []
        self.size = 0
        self.pending: list[str] = []

    def add_chunk(self, values: pa.Array) -> int:
        """Provisional code of values[0] (the others follow)."""
        self._flush()
        offset = self.size
        self.chunks.append(values.cast(pa.string()))
        self.size += len(values)
        return offset

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        self.pending.append(value)
        return self.size + len(self.pending) - 1

    def _flush(self) -> None:
        if self.pending:
            self.chunks.append(pa.array(self.pending, pa.string()))
            self.size += len(self.pending)
            self.pending = []

    def unify(self) -> tuple[np.ndarray, Dictionary]:
        """Provisional code -> final code (with -1 -> -1 as the last entry), and the final dictionary."""
        self._flush()
        values = pa.concat_arrays(self.chunks) if self.chunks else pa.array([], pa.string())
        encoded = pc.dictionary_encode(values)
        remap = np.append(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32), -1)
        return remap, Dictionary(encoded.dictionary.to_pylist())


@dataclass
class EventColumns:
    """Accepted events as arrays (file order): string fields as int32 codes into `dicts`, -1 for None."""

    codes: dict[str, np.ndarray]
    ts: np.ndarray  # int64 epoch ms
    dwell_ms: np.ndarray  # int64, -1 for None
    line: np.ndarray  # int32 line (or Parquet row) number, the tie-break the row-level sort keeps
    dicts: dict[str, Dictionary] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)


_COLUMNS = {**{name: np.int32 for name in STRING_FIELDS}, "ts": np.int64, "dwell_ms": np.int64, "line": np.int32}


class _Builder:
    """Accepted rows appended into preallocated columns (sized from the file once the first block is seen).

    Appending block arrays and concatenating at the end would hold every event twice, and glibc keeps the
    freed block arrays' heap pages, so the columns grow in place instead (by a quarter when an estimate is short).
    """

    def __init__(self, file_bytes: int = 0) -> None:
        self.interners = {name: _Interner() for name in STRING_FIELDS}
        self.file_bytes = file_bytes
        self.columns = {name: np.zeros(0, dtype=dtype) for name, dtype in _COLUMNS.items()}
        self.size = 0

    def reserve(self, block_bytes: int, block_rows: int) -> None:
        """Size the columns for the whole file from one block's bytes per row (5% headroom)."""
        if len(self.columns["ts"]) == 0 and block_rows:
            self._grow(int(self.file_bytes / max(block_bytes, 1) * block_rows * 1.05) + 1024)

    def reserve_rows(self, rows: int) -> None:
        if rows > len(self.columns["ts"]):
            self._grow(rows)

    def _grow(self, capacity: int) -> None:
        for name, col in self.columns.items():
            grown = np.empty(capacity, dtype=col.dtype)
            grown[:self.size] = col[:self.size]
            self.columns[name] = grown

    def add_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["ts"])
        if self.size + n > len(self.columns["ts"]):
            self._grow(max(self.size + n, int(len(self.columns["ts"]) * 1.25) + 1024))
        for name, values in arrays.items():
            self.columns[name][self.size:self.size + n] = values
        self.size += n

    def add_events(self, events: list[Event], lines: list[int]) -> None:
        if not events:
            return
        arrays = {name: np.array([self.interners[name].code(getattr(e, name)) for e in events], dtype=np.int32)
                  for name in STRING_FIELDS}
        arrays["ts"] = np.array([e.ts for e in events], dtype=np.int64)
        arrays["dwell_ms"] = np.array([-1 if e.dwell_ms is None else e.dwell_ms for e in events], dtype=np.int64)
        arrays["line"] = np.array(lines, dtype=np.int32)
        self.add_arrays(arrays)

    def build(self) -> EventColumns:
        c = {name: col[:self.size] for name, col in self.columns.items()}
        dicts = {}
        for name in STRING_FIELDS:
            remap, dicts[name] = self.interners[name].unify()
            c[name][:] = remap[c[name]]  # -1 indexes remap's last entry, -1
        self.interners = {}
        _trim_heap()
        return EventColumns({n: c[n] for n in STRING_FIELDS}, c["ts"], c["dwell_ms"], c["line"], dicts)


def _trim_heap() -> None:
    """Hand the parsing's freed heap pages back to the OS (glibc keeps them otherwise); no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_event_columns(data_dir: Path | str, report: LoadReport | None = None) -> EventColumns:
    """Validate the data directory's events file into columns; problems go to `report` in line order."""
    report = report if report is not None else LoadReport()
    path = events_path(Path(data_dir))
    builder = _Builder(path.stat().st_size)
    if path.suffix == ".parquet":
        _load_parquet(path, builder, report)
    else:
        _load_jsonl(path, builder, report)
    events = builder.build()
    report.accepted[path.name] = len(events)
    return events


# -- readers ----------------------------------------------------------------------------------------------

def _load_jsonl(path: Path, builder: _Builder, report: LoadReport) -> None:
    first_line = 0
    pending: deque[tuple[bytes, Future[pa.Table | None]]] = deque()
    with path.open("rb") as fh, ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="read-json") as parser:
        for block in _line_blocks(fh):
            pending.append((block, parser.submit(_read_json, block)))
            if len(pending) > PARSE_THREADS:
                first_line = _next_block(path.name, pending, first_line, builder, report)
        while pending:
            first_line = _next_block(path.name, pending, first_line, builder, report)


def _line_blocks(fh: io.BufferedReader) -> Iterator[bytes]:
    """The file as blocks of about BLOCK_BYTES that end at a line end (the last one may not)."""
    carry = b""
    while True:
        data = fh.read(BLOCK_BYTES)
        block = carry + data
        if not data:
            if block:
                yield block
            return
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            carry = block
            continue
        yield block[:cut]
        carry = block[cut:]


_AS_TEXT = pj.ParseOptions(explicit_schema=pa.schema([(name, pa.string()) for name in (*STRING_FIELDS, "ts")]))
"""String fields and ts read as text: inferred, '2026-01-01 10:00:00' (no zone, which the contract refuses)
would become a timestamp like any other, and every row of the block would need the contract's judgement."""


def _read_json(block: bytes) -> pa.Table | None:
    """The block as one table, or None where the reader cannot take it whole (those rows go one by one).

    Fields read as text first; where a value is not text (epoch-ms numbers, say), with inferred types."""
    if b"\r" in block:
        return None
    options = pj.ReadOptions(block_size=len(block) + 1)
    for parse in (_AS_TEXT, pj.ParseOptions()):
        try:
            return pj.read_json(io.BytesIO(block), read_options=options, parse_options=parse)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def _next_block(name: str, pending: deque[tuple[bytes, Future[pa.Table | None]]], first_line: int,
                builder: _Builder, report: LoadReport) -> int:
    """Check the oldest parsed block; returns the number of its last line."""
    block, parsed = pending.popleft()
    table = parsed.result()
    del parsed
    last_line = _jsonl_block(name, block, table, first_line, builder, report)
    del table, block
    pa.default_memory_pool().release_unused()  # the block's buffers are garbage now: give them back
    return last_line


def _jsonl_block(name: str, block: bytes, table: pa.Table | None, first_line: int, builder: _Builder,
                 report: LoadReport) -> int:
    """One block of whole lines and its parsed table; returns the number of the block's last line."""
    if table is not None:
        buf = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        if not block.endswith(b"\n"):
            ends = np.append(ends, len(block))
        starts = np.concatenate(([0], ends[:-1] + 1))
        filled = (ends > starts) & ~_WS[buf[np.minimum(starts, len(block) - 1)]]
        for i in np.flatnonzero((ends > starts) & ~filled):
            filled[i] = bool(block[starts[i]:ends[i]].strip())
        rows = np.flatnonzero(filled)
        if table.num_rows == len(rows):
            builder.reserve(len(block), len(rows))
            lines = rows + first_line + 1
            suspect = _fast(table, lines, builder)
            for i in np.flatnonzero(suspect):
                text = block[starts[rows[i]]:ends[rows[i]]].decode("utf-8")
                _slow_row(name, int(lines[i]), _parse(text), builder, report)
            return first_line + len(ends)
    count = 0
    for count, text in enumerate(io.TextIOWrapper(io.BytesIO(block), encoding="utf-8"), start=1):
        if text.strip():
            _slow_row(name, first_line + count, _parse(text), builder, report)
    return first_line + count


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return exc


def _slow_row(name: str, line: int, raw: object, builder: _Builder, report: LoadReport) -> None:
    event = validate_raw(name, line, raw, Event, report)
    if event is not None:
        builder.add_events([event], [line])


def _load_parquet(path: Path, builder: _Builder, report: LoadReport) -> None:
    import pyarrow.parquet as pq

    offset = 0
    source = pq.ParquetFile(path)
    builder.reserve_rows(source.metadata.num_rows)
    for batch in source.iter_batches(batch_size=1 << 20):
        table = pa.Table.from_batches([batch])
        lines = np.arange(offset + 1, offset + table.num_rows + 1, dtype=np.int64)
        for i in np.flatnonzero(_fast(table, lines, builder)):
            row = {k: v for k, v in table.slice(int(i), 1).to_pylist()[0].items() if v is not None}
            _slow_row(path.name, int(lines[i]), row, builder, report)
        offset += table.num_rows


# -- vectorized checks ------------------------------------------------------------------------------------

def _fast(table: pa.Table, lines: np.ndarray, builder: _Builder) -> np.ndarray:
    """Accept what is certainly valid (adding it to `builder`); returns the mask of rows to re-check."""
    n = table.num_rows
    suspect = np.zeros(n, dtype=bool)
    arrays: dict[str, np.ndarray] = {}
    for name in STRING_FIELDS:
        codes, bad = _string_field(table, name, builder.interners[name], n)
        arrays[name] = codes
        suspect |= bad
    ts, bad = _ts_field(table, n)
    suspect |= bad
    dwell, bad = _dwell_field(table, n)
    suspect |= bad
    keep = ~suspect
    out = {name: codes[keep] for name, codes in arrays.items()}
    out.update(ts=ts[keep], dwell_ms=dwell[keep], line=lines[keep].astype(np.int32))
    builder.add_arrays(out)
    return suspect


def _bools(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean array as numpy, null as False (via uint8: pyarrow's own bool conversion imports pandas)."""
    return pc.cast(pc.fill_null(mask, False), pa.uint8()).to_numpy().view(bool)


def _column(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _string_field(table: pa.Table, name: str, interner: _Interner, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Provisional codes of stripped values, and rows the contract would reject (or whose type needs its judgement)."""
    col = _column(table, name)
    required = name in REQUIRED
    if col is None or pa.types.is_null(col.type):
        return np.full(n, -1, dtype=np.int32), np.full(n, required)
    null = _bools(col.is_null())
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return np.full(n, -1, dtype=np.int32), ~null | required
    encoded = pc.dictionary_encode(col)
    normalized, ok = _normalized(encoded.dictionary, required, lower=name == "event_type")
    offset = interner.add_chunk(normalized)
    lookup = np.append(np.where(ok, offset + np.arange(len(ok), dtype=np.int32), -1).astype(np.int32), -1)
    ok = np.append(ok, not required)  # the last entry is a missing value
    idx = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return lookup[idx], ~ok[idx]


_CLEAN = r"(?s)^[!-~](?:.*[!-~])?$"
"""First and last characters printable ASCII: str.strip() would change nothing (all whitespace is <= 0x20 or
non-ASCII)."""


def _normalized(values: pa.Array, required: bool, lower: bool) -> tuple[pa.Array, np.ndarray]:
    """Distinct raw values -> (the contract's stripped, lower-cased-if-asked value or null, accepted as-is).

    Values that are clean by _CLEAN (and ASCII when lower-casing) are judged by vectorized length checks; the
    rest (leading or trailing space, empty, non-ASCII ends) by Python's own strip, as the contract does."""
    clean = pc.match_substring_regex(values, _CLEAN)
    if lower:
        clean = pc.and_(clean, pc.string_is_ascii(values))
    clean_mask = _bools(clean)
    ok = clean_mask & _bools(pc.less_equal(pc.utf8_length(values), MAX_TEXT_LEN))
    normalized = pc.if_else(pa.array(ok), pc.utf8_lower(values) if lower else values, pa.scalar(None, pa.string()))
    judged = np.flatnonzero(~clean_mask)
    if len(judged):
        fixed = [_stripped(v, required, lower) for v in values.take(pa.array(judged)).to_pylist()]
        ok[judged] = [v is not None for v in fixed]
        normalized = pc.replace_with_mask(normalized, pa.array(~clean_mask), pa.array(fixed, pa.string()))
    return normalized, ok


CONTRACT_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                       "\u200a\u2028\u2029\u202f\u205f\u3000")
"""What the contract's str_strip_whitespace strips (Unicode White_Space): str.isspace() without U+001C-U+001F."""


def _stripped(value: str, required: bool, lower: bool) -> str | None:
    text = value.strip(CONTRACT_WHITESPACE)
    if not (1 if required else 0) <= len(text) <= MAX_TEXT_LEN:
        return None
    return text.lower() if lower else text


def _ts_field(table: pa.Table, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ms exactly as parse_ts computes them (int(datetime.timestamp() * 1000) in float64)."""
    col = _column(table, "ts")
    if col is None or pa.types.is_null(col.type):
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    if pa.types.is_integer(col.type):
        values = col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return values, values < 0
    if not pa.types.is_string(col.type):
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    out = np.zeros(n, dtype=np.int64)
    digits = pc.and_(pc.and_(pc.string_is_ascii(col), pc.utf8_is_digit(col)), pc.less_equal(pc.binary_length(col), 18))
    digits = _bools(digits)
    if digits.any():
        out[digits] = pc.cast(pc.filter(col, pa.array(digits)), pa.int64()).to_numpy()
    quick = _quick_iso(col, out)
    rest = np.flatnonzero(~(digits | quick))
    iso = np.zeros(n, dtype=bool)
    if len(rest):
        iso[rest] = _regex_iso(pc.take(col, pa.array(rest)), out, rest)
    return out, ~(digits | quick | iso)


def _epoch_ms(seconds: np.ndarray, micros: np.ndarray) -> np.ndarray:
    """int(datetime.timestamp() * 1000): timestamp() is total microseconds / 10**6 in float64."""
    return ((seconds * 1_000_000 + micros).astype(np.float64) / 1e6 * 1000.0).astype(np.int64)


_COMMON_ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def _quick_iso(col: pa.Array, out: np.ndarray) -> np.ndarray:
    """The common form, 'YYYY-MM-DDTHH:MM:SS.mmmZ': one RE2 match, then Arrow's strict ISO-8601 cast; fills `out`."""
    mask = _bools(pc.match_substring_regex(col, _COMMON_ISO))
    if not mask.any():
        return mask
    picked = col if mask.all() else pc.filter(col, pa.array(mask))
    try:
        ms = pc.cast(pc.cast(picked, pa.timestamp("ms", tz="UTC")), pa.int64()).to_numpy()
    except pa.ArrowInvalid:  # some value is not a real date or time: let the general path judge them all
        return np.zeros(len(mask), dtype=bool)
    out[mask] = _epoch_ms(ms // 1000, ms % 1000 * 1000)
    return mask


def _regex_iso(col: pa.Array, out: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Other ISO-8601 forms the fast path accepts (fractions of 3 or 6 digits, Z or +HH:MM); fills out[where]."""
    parts = pc.extract_regex(col, _ISO)
    iso = _bools(parts.is_valid())
    if iso.any():
        parts = pc.filter(parts, pa.array(iso))
        try:  # Arrow's strict ISO-8601 cast; one impossible date sends this block's rows to the contract
            base = pc.cast(pc.cast(parts.field("base"), pa.timestamp("s")), pa.int64()).to_numpy()
        except pa.ArrowInvalid:
            return np.zeros(len(iso), dtype=bool)
        micros = pc.cast(pc.utf8_rpad(parts.field("frac"), 6, "0"), pa.int64()).to_numpy()
        out[where[np.flatnonzero(iso)]] = _epoch_ms(base - _tz_offset_seconds(parts.field("tz")), micros)
    return iso


def _tz_offset_seconds(tz: pa.Array) -> np.ndarray | int:
    """'Z' -> 0, '+HH:MM' / '-HH:MM' -> signed seconds east of UTC."""
    if pc.all(pc.equal(tz, "Z")).as_py():
        return 0
    padded = pc.if_else(pc.equal(tz, "Z"), "+00:00", tz)
    hours = pc.cast(pc.utf8_slice_codeunits(padded, 1, 3), pa.int64()).to_numpy()
    minutes = pc.cast(pc.utf8_slice_codeunits(padded, 4, 6), pa.int64()).to_numpy()
    sign = np.where(_bools(pc.equal(pc.utf8_slice_codeunits(padded, 0, 1), "-")), -1, 1)
    return sign * (hours * 3600 + minutes * 60)


def _dwell_field(table: pa.Table, n: int) -> tuple[np.ndarray, np.ndarray]:
    col = _column(table, "dwell_ms")
    if col is None or pa.types.is_null(col.type):
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
    null = _bools(col.is_null())
    if not pa.types.is_integer(col.type):
        return np.full(n, -1, dtype=np.int64), ~null
    values = col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, ~null & (values < 0)
