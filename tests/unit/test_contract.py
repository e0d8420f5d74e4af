import json
from pathlib import Path

import pytest

from training.core.contract import DataError, Event, load_dataset, parse_ts


@pytest.mark.parametrize(("value", "expected"), [
    (1767225600000, 1767225600000),
    ("1767225600000", 1767225600000),
    ("2026-01-01T00:00:00Z", 1767225600000),
    ("2026-01-01T01:00:00+01:00", 1767225600000),
    ("2026-01-01T00:00:00.250Z", 1767225600250),
])
def test_parse_ts_accepts_epoch_ms_and_zoned_iso(value, expected):
    assert parse_ts(value) == expected


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00", "yesterday", -5, True, None])
def test_parse_ts_rejects(value):
    with pytest.raises(ValueError):
        parse_ts(value)


def test_unknown_event_type_is_kept():
    e = Event.model_validate({"anonymous_id": "a", "ts": 1, "event_type": "Chat_Open", "url": "/x"})
    assert e.event_type == "chat_open"


def _write(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_bad_rows_are_reported_with_file_line_and_field(tmp_path):
    good = {"anonymous_id": "a", "ts": "2026-01-01T00:00:00Z", "event_type": "page_view", "url": "/"}
    _write(tmp_path / "events.jsonl", [
        good,
        {**good, "ts": "2026-01-01 00:00"},  # line 2: no zone
        "{not json",  # line 3
        {**good, "dwell_ms": -3},  # line 4
        {k: v for k, v in good.items() if k != "anonymous_id"},  # line 5
        good,
    ])
    _write(tmp_path / "tiles.jsonl", [{"tile_id": "t1", "product": "mortgage"}, {"tile_id": "t2"}])
    ds = load_dataset(tmp_path)
    assert len(ds.events) == 2 and len(ds.tiles) == 1
    found = {(p.file, p.line, p.field) for p in ds.report.problems}
    assert found == {("events.jsonl", 2, "ts"), ("events.jsonl", 3, "<row>"), ("events.jsonl", 4, "dwell_ms"),
                     ("events.jsonl", 5, "anonymous_id"), ("tiles.jsonl", 2, "product")}
    assert "invalid rows: 5" in ds.report.summary()
    with pytest.raises(DataError, match="5 invalid rows"):
        load_dataset(tmp_path, strict=True)


def test_missing_events_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no events file"):
        load_dataset(tmp_path)


def test_parquet_events_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([
        {"anonymous_id": "a", "ts": 5, "event_type": "click", "url": "/x", "dwell_ms": None},
        {"anonymous_id": "", "ts": 6, "event_type": "click", "url": "/x", "dwell_ms": 3},
    ]), tmp_path / "events.parquet")
    ds = load_dataset(tmp_path)
    assert len(ds.events) == 1
    assert [(p.line, p.field) for p in ds.report.problems] == [(2, "anonymous_id")]
