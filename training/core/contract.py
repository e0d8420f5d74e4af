"""The data contract: what a data directory holds, validated row by row on load.

A data directory (`--data DIR`) holds JSONL (or Parquet for events) files:

    events.jsonl | events.parquet   web events (required)
    customers.jsonl                 app-side customer features
    tiles.jsonl                     the app homepage tiles and the product each one sells
    impressions.jsonl               tiles shown on the app homepage, with clicks
    conversions.jsonl               products customers opened

Bad rows never vanish: each one becomes a `RowProblem` (file, line, field, reason) in the
`LoadReport`; `strict=True` turns the first report with problems into a `DataError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

KNOWN_EVENT_TYPES = (
    "page_view", "click", "search", "form_start", "form_submit", "calculator", "login", "logout", "download",
)
"""Event types the synthetic bank emits. Others are accepted and featurized as out-of-vocabulary."""

EVENT_FILES = ("events.jsonl", "events.parquet")
MAX_TEXT_LEN = 2048
"""Longest accepted string field (URLs, queries); longer values are reported, not truncated silently."""


class DataError(ValueError):
    """A data directory violates the contract (missing file, or bad rows under --strict)."""


def parse_ts(value: Any) -> int:
    """Timestamp -> epoch milliseconds. Accepts epoch ms (int) or ISO-8601 text with a zone."""
    if isinstance(value, bool):
        raise ValueError("must be ISO-8601 text with a zone or epoch milliseconds, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"epoch milliseconds must be >= 0, got {value}")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"not ISO-8601: {value!r}") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no zone (add Z or +HH:MM)")
        return int(parsed.timestamp() * 1000)
    raise ValueError(f"must be ISO-8601 text with a zone or epoch milliseconds, got {type(value).__name__}")


Timestamp = Annotated[int, BeforeValidator(parse_ts)]
"""Epoch milliseconds; parsed from epoch ms or ISO-8601 text with a zone."""

_Str = Field(min_length=1, max_length=MAX_TEXT_LEN)
_OptStr = Field(default=None, max_length=MAX_TEXT_LEN)


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class Event(_Row):
    """One web event. `ts` is normalized to epoch milliseconds (UTC)."""

    anonymous_id: str = _Str
    ts: Timestamp
    event_type: str = _Str
    url: str = _Str
    dwell_ms: int | None = Field(default=None, ge=0)
    device: str | None = _OptStr
    referrer: str | None = _OptStr
    query: str | None = _OptStr
    customer_id: str | None = _OptStr
    session_id: str | None = _OptStr

    @field_validator("event_type")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class Customer(_Row):
    customer_id: str = _Str
    products: list[str] = Field(default_factory=list)
    tenure_months: int = Field(ge=0)
    segment: str = _Str


class Tile(_Row):
    tile_id: str = _Str
    product: str = _Str


class Impression(_Row):
    customer_id: str = _Str
    ts: Timestamp
    tile_id: str = _Str
    position: int = Field(ge=0)
    clicked: bool


class Conversion(_Row):
    customer_id: str = _Str
    ts: Timestamp
    product: str = _Str


@dataclass(frozen=True)
class RowProblem:
    """One rejected row: where it is and why."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass
class LoadReport:
    """Counts of accepted rows per file and every problem found."""

    accepted: dict[str, int] = field(default_factory=dict)
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, show: int = 10) -> str:
        counts = ", ".join(f"{name}: {n}" for name, n in self.accepted.items())
        lines = [f"accepted rows: {counts}; invalid rows: {len(self.problems)}"]
        lines += [f"  {p}" for p in self.problems[:show]]
        if len(self.problems) > show:
            lines.append(f"  ... and {len(self.problems) - show} more")
        return "\n".join(lines)

    def write_problems(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as fh:
            for p in self.problems:
                fh.write(json.dumps(p.__dict__) + "\n")


M = TypeVar("M", bound=_Row)


def problems_from(exc: ValidationError, file: str, line: int) -> Iterator[RowProblem]:
    """One RowProblem per field the model refused, in the model's error order."""
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "<row>"
        yield RowProblem(file, line, loc, err["msg"])


def _raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the exception) for a JSONL file; Parquet rows count from 1."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, {k: v for k, v in row.items() if v is not None}
        return
    with path.open("r", encoding="utf-8") as fh:
        for i, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                yield i, json.loads(text)
            except json.JSONDecodeError as exc:
                yield i, exc


def read_rows(path: Path, model: type[M], report: LoadReport) -> list[M]:
    """Validate every row of `path` against `model`; bad rows go to `report`, good rows are returned."""
    rows: list[M] = []
    for line, raw in _raw_rows(path):
        if isinstance(raw, Exception):
            report.problems.append(RowProblem(path.name, line, "<row>", f"invalid JSON: {raw}"))
            continue
        if not isinstance(raw, dict):
            report.problems.append(RowProblem(path.name, line, "<row>", "expected a JSON object"))
            continue
        try:
            rows.append(model.model_validate(raw))
        except ValidationError as exc:
            report.problems.extend(problems_from(exc, path.name, line))
    report.accepted[path.name] = len(rows)
    return rows


@dataclass
class Dataset:
    """A loaded data directory. Optional files that are absent load as empty lists."""

    events: list[Event]
    customers: list[Customer]
    tiles: list[Tile]
    impressions: list[Impression]
    conversions: list[Conversion]
    report: LoadReport


def events_path(data_dir: Path) -> Path:
    for name in EVENT_FILES:
        if (data_dir / name).exists():
            return data_dir / name
    raise DataError(f"{data_dir}: no events file (expected one of {', '.join(EVENT_FILES)})")


def load_events(data_dir: Path, report: LoadReport | None = None, strict: bool = False) -> list[Event]:
    report = report if report is not None else LoadReport()
    events = read_rows(events_path(Path(data_dir)), Event, report)
    _check_strict(report, strict)
    return events


def read_optional(data_dir: Path, name: str, model: type[M], report: LoadReport) -> list[M]:
    """read_rows of an optional file of the data directory; absent, no rows."""
    path = data_dir / name
    return read_rows(path, model, report) if path.exists() else []


def load_dataset(data_dir: Path | str, strict: bool = False) -> Dataset:
    """Load and validate a whole data directory."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    report = LoadReport()
    events = read_rows(events_path(data_dir), Event, report)
    dataset = Dataset(
        events=events,
        customers=read_optional(data_dir, "customers.jsonl", Customer, report),
        tiles=read_optional(data_dir, "tiles.jsonl", Tile, report),
        impressions=read_optional(data_dir, "impressions.jsonl", Impression, report),
        conversions=read_optional(data_dir, "conversions.jsonl", Conversion, report),
        report=report,
    )
    _check_strict(report, strict)
    return dataset


def _check_strict(report: LoadReport, strict: bool) -> None:
    if strict and report.problems:
        raise DataError(f"{len(report.problems)} invalid rows (--strict):\n{report.summary()}")


def validate_raw(file: str, line: int, raw: Any, model: type[M], report: LoadReport) -> M | None:
    """One parsed row (or its JSON error) -> the model, or None with its problems in `report`.

    The same checks and messages as `read_rows`, for callers that parse rows themselves (the columnar path
    sends here only the rows its vectorized checks could not accept, so both paths report alike).
    """
    if isinstance(raw, Exception):
        report.problems.append(RowProblem(file, line, "<row>", f"invalid JSON: {raw}"))
        return None
    if not isinstance(raw, dict):
        report.problems.append(RowProblem(file, line, "<row>", "expected a JSON object"))
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        report.problems.extend(problems_from(exc, file, line))
        return None
