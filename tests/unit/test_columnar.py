"""The columnar path reports, sessionizes and featurizes exactly like the row-level reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.columnar import encode_sessions, fit_featurizer, load_event_columns, sessionize_columns
from training.columnar.featurize import log1p_seconds
from training.core.contract import LoadReport, load_events
from training.core.featurizer import Featurizer, FeaturizerConfig
from training.core.sessionize import sessionize

GOOD = {"anonymous_id": "a", "ts": "2026-01-01T00:00:00Z", "event_type": "page_view", "url": "/"}
BAD_LINES = [
    json.dumps(GOOD),
    json.dumps({**GOOD, "ts": "yesterday"}),
    "{not json",
    json.dumps({**GOOD, "dwell_ms": -5}),
    json.dumps({**GOOD, "anonymous_id": ""}),
    "",
    "   ",
    json.dumps([1, 2]),
    json.dumps({**GOOD, "ts": "2026-01-01T00:00:00"}),
    json.dumps({**GOOD, "ts": "2026-13-01T00:00:00Z"}),
    json.dumps({**GOOD, "ts": "2026-01-01 10:00:00+02:00"}),
    json.dumps({**GOOD, "ts": "2026-01-01T10:00:00.5+05:30"}),
    json.dumps({**GOOD, "ts": " 1767225600123 "}),
    json.dumps({**GOOD, "ts": 1767225600999}),
    json.dumps({**GOOD, "ts": -1}),
    json.dumps({**GOOD, "ts": True}),
    json.dumps({**GOOD, "ts": None}),
    json.dumps({k: v for k, v in GOOD.items() if k != "url"}),
    json.dumps({**GOOD, "url": None}),
    json.dumps({**GOOD, "url": 7}),
    json.dumps({**GOOD, "url": "x" * 2049}),
    json.dumps({**GOOD, "url": "  /padded/  ", "event_type": " CLICK "}),
    json.dumps({**GOOD, "dwell_ms": 1.5}),
    json.dumps({**GOOD, "dwell_ms": "12"}),
    json.dumps({**GOOD, "dwell_ms": 3.0, "device": "x" * 3000}),
    json.dumps({**GOOD, "session_id": "", "customer_id": "  ", "extra": {"nested": [1]}}),
    json.dumps({**GOOD, "ts": "2026-01-01T00:00:00.123456-03:00", "query": "Home LOANS rates"}),
    json.dumps({**GOOD, "anonymous_id": None, "event_type": None}),
    json.dumps({**GOOD, "ts": "2026-03-04T05:06:07.891Z"}),
    json.dumps({**GOOD, "ts": "2026-02-30T05:06:07.891Z"}),
    json.dumps({**GOOD, "ts": "2026-03-04T05:06:60.891Z"}),
    json.dumps({**GOOD, "ts": "2026-03-04T05:06:07.-12Z"}),
    json.dumps({**GOOD, "ts": "0001767225600123"}),
    json.dumps({**GOOD, "ts": "١٢٣"}),
]
STRING_EDGES = [  # every string field string-typed, so the block takes the vectorized checks
    {**GOOD, "url": "\u00a0/nbsp\u00a0", "event_type": "\u2003Click"},
    {**GOOD, "url": "/tab\t", "event_type": "\x1cview", "device": "\x7fdev"},
    {**GOOD, "event_type": "ÉVÉNEMENT", "referrer": "   ", "query": ""},
    {**GOOD, "event_type": "İstanbul", "device": "Straße"},
    {**GOOD, "url": "x" * 2048, "anonymous_id": "é" * 2048},
    {**GOOD, "url": " " + "x" * 2048 + " ", "anonymous_id": "é" * 2049},
    {**GOOD, "event_type": "Page_View ", "url": "/ ", "customer_id": "", "session_id": " s1 "},
    {**GOOD, "event_type": "   ", "device": "\u3000"},
    GOOD,
]


def _reference(path: Path) -> tuple[LoadReport, list]:
    report = LoadReport()
    return report, load_events(path, report)


def _columnar(path: Path) -> tuple[LoadReport, list]:
    report = LoadReport()
    events = load_event_columns(path, report)
    d = events.dicts
    rows = []
    for i in np.argsort(events.line, kind="stable"):
        row = {name: (d[name].values[c] if (c := int(events.codes[name][i])) >= 0 else None) for name in d}
        row.update(ts=int(events.ts[i]), dwell_ms=None if events.dwell_ms[i] < 0 else int(events.dwell_ms[i]))
        rows.append(row)
    return report, rows


def _same(tmp_path: Path) -> None:
    want_report, want = _reference(tmp_path)
    got_report, got = _columnar(tmp_path)
    assert got_report.problems == want_report.problems
    assert got_report.accepted == want_report.accepted
    assert got == [{k: getattr(e, k) for k in got[0]} for e in want]


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_bad_rows_reported_exactly_as_the_contract(tmp_path: Path, line_end: str) -> None:
    (tmp_path / "events.jsonl").write_text(line_end.join(BAD_LINES) + line_end)
    _same(tmp_path)
    assert len(_reference(tmp_path)[0].problems) >= 18


def test_common_timestamps_take_the_quick_path_exactly(tmp_path: Path) -> None:
    stamps = [f"2026-{m:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z" for m, d, h, mi, s, ms in
              zip(range(1, 13), range(1, 29, 2), range(0, 24, 2), range(0, 60, 5), range(0, 60, 5), range(0, 999, 83),
                  strict=False)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps({**GOOD, "ts": t}) + "\n" for t in stamps))
    _same(tmp_path)
    assert len(_reference(tmp_path)[1]) == len(stamps)


def test_blocks_that_pyarrow_rejects_fall_back_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.columnar.load as load

    monkeypatch.setattr(load, "BLOCK_BYTES", 300)
    good = [json.dumps({**GOOD, "anonymous_id": f"v{i}", "ts": 1000 * i}) for i in range(40)]
    lines = good[:10] + BAD_LINES + good[10:] + ["{broken"] + good[:3]
    (tmp_path / "events.jsonl").write_text("\n".join(lines))  # no final newline
    _same(tmp_path)


def test_string_edge_cases_in_the_vectorized_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.columnar.load as load

    judged: list[int] = []
    slow_row = load._slow_row
    monkeypatch.setattr(load, "_slow_row", lambda name, line, *rest: judged.append(line) or slow_row(name, line, *rest))
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in STRING_EDGES * 3))
    _same(tmp_path)
    problems = _reference(tmp_path)[0].problems
    assert len(problems) == 2 * 3  # 2049 characters and a blank event_type, per copy
    assert sorted(set(judged)) == sorted({p.line for p in problems})  # only those rows needed the contract
    (tmp_path / "events.jsonl").unlink()
    pq.write_table(pa.Table.from_pylist(STRING_EDGES * 3), tmp_path / "events.parquet")
    _same(tmp_path)


def test_timestamps_without_a_zone_are_refused_whatever_the_reader_infers(tmp_path: Path) -> None:
    rows = [{**GOOD, "ts": "2026-01-01T10:00:00Z"}, {**GOOD, "ts": "2026-01-01 10:00:00"},
            {**GOOD, "ts": "2026-01-01T10:00:00+02:00"}, {**GOOD, "ts": "2026-01-01T10:00:00"}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _same(tmp_path)
    assert [p.line for p in _reference(tmp_path)[0].problems] == [2, 4]


def test_epoch_millisecond_numbers(tmp_path: Path) -> None:
    rows = [{**GOOD, "anonymous_id": f"v{i % 3}", "ts": 1_767_225_600_000 + 61_000 * i} for i in range(20)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, {**GOOD, "ts": -5}]))
    _same(tmp_path)


def test_parquet_events(tmp_path: Path) -> None:
    rows = [{**GOOD, "ts": f"2026-01-01T00:0{i % 10}:00.250Z", "anonymous_id": f"v{i % 3}", "dwell_ms": i - 2}
            for i in range(12)] + [{**GOOD, "url": ""}, {**GOOD, "ts": "noon"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "events.parquet")
    _same(tmp_path)


def _events_file(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_sessions_match_the_reference_cut(tmp_path: Path) -> None:
    gap = 30 * 60 * 1000
    rows = []
    for v in ("b", "a", "c"):
        for i, step in enumerate((0, gap, 1, gap + 1, 5, 0)):
            rows.append({"anonymous_id": v, "ts": 10_000 + i * 7 + sum((0, gap, 1, gap + 1, 5, 0)[:i]) + step,
                         "event_type": "click", "url": f"/x/{i}"})
    rows += [{"anonymous_id": v, "ts": 10_000, "event_type": "login", "url": "/login", "session_id": "shared"}
             for v in ("c", "a")]
    rows += [{"anonymous_id": "a", "ts": 9_000, "event_type": "login", "url": "/", "session_id": "own"},
             {"anonymous_id": "a", "ts": 10_000, "event_type": "click", "url": "/", "session_id": "  "},
             {"anonymous_id": "b", "ts": 10_000, "event_type": "click", "url": "/dup"}]
    path = _events_file(tmp_path, rows[::-1])
    want = sessionize(load_events(path))
    got = sessionize_columns(load_event_columns(path))
    assert got.session_id.to_pylist() == [s.session_id for s in want]
    assert got.anonymous_id.to_pylist() == [s.anonymous_id for s in want]
    assert got.counts.tolist() == [len(s.events) for s in want]
    assert (got.start_ms.tolist(), got.end_ms.tolist()) == ([s.start_ms for s in want], [s.end_ms for s in want])


@pytest.mark.parametrize("chunk", [3, 50_000])
def test_featurizer_fit_and_encode_match(tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.columnar.featurize as featurize

    monkeypatch.setattr(featurize, "FIT_CHUNK_SESSIONS", chunk)
    rows = [{"anonymous_id": f"v{i % 7}", "ts": 1_700_000_000_000 + i * 61_001 + (i % 7) * 3_600_000 * 30,
             "event_type": ("page_view", "click", "Search")[i % 3], "url": f"/loans/{i % 5}/{10_000 + i}?q=1",
             "dwell_ms": None if i % 4 == 0 else i * 977, "device": (None, "Mobile", "desktop")[i % 3],
             "referrer": (None, "https://www.google.com/x", "bank.example")[i % 3],
             "query": None if i % 2 else f"home loan rate {i % 3} and more words"} for i in range(300)]
    path = _events_file(tmp_path, rows)
    want = sessionize(load_events(path))
    events = load_event_columns(path)
    sessions = sessionize_columns(events)
    config = FeaturizerConfig(max_len=8, min_count=1)
    mask = np.array([i % 3 != 0 for i in range(len(want))])
    ref = Featurizer.fit((s.events for s, m in zip(want, mask, strict=True) if m), config)
    got = fit_featurizer(events, sessions, mask, config)
    assert got.to_dict() == ref.to_dict()
    lengths, cat, cont = encode_sessions(ref, events, sessions)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    for i, s in enumerate(want):
        c, x = ref.encode(s.events)
        np.testing.assert_array_equal(cat[offsets[i]:offsets[i + 1]], c)
        assert cont[offsets[i]:offsets[i + 1]].tobytes() == x.tobytes()


def test_log1p_is_bit_exact_beyond_the_table() -> None:
    import math

    ms = np.array([0, 1, 999, 4_194_303, 4_194_304, 10**10, 10**10], dtype=np.int64)
    assert log1p_seconds(ms).tolist() == [math.log1p(v / 1000.0) for v in ms.tolist()]


def test_load_sessions_columnar_equals_row_level(tmp_path: Path) -> None:
    from training.core.contract import DataError
    from training.sessions import load_sessions

    rows = [{"anonymous_id": f"v{i % 4}", "ts": 1_000 + i * 600_001, "event_type": "click", "url": f"/p/{i}",
             "dwell_ms": i if i % 2 else None, "session_id": "s1" if i % 5 == 0 else None} for i in range(40)]
    path = _events_file(tmp_path, rows)
    with (path / "events.jsonl").open("a") as fh:
        fh.write("\n".join(BAD_LINES) + "\n")
    want = load_sessions(path, report_dir=tmp_path / "ref", columnar=False)
    got = load_sessions(path, report_dir=tmp_path / "col", columnar=True)
    assert got.sessions == want.sessions and got.holdout == want.holdout
    assert got.report == want.report
    written = [(tmp_path / side / "invalid_rows.jsonl").read_text() for side in ("col", "ref")]
    assert written[0] == written[1] != ""
    with pytest.raises(DataError, match="invalid rows"):
        load_sessions(path, strict=True, columnar=True)


def test_cli_writes_shards_with_a_given_featurizer(tmp_path: Path) -> None:
    from training.columnar.__main__ import main
    from training.shards import ShardDataset, read_success

    rows = [{"anonymous_id": f"v{i % 3}", "ts": i * 1000, "event_type": "click", "url": f"/p/{i % 4}"}
            for i in range(30)]
    (tmp_path / "data").mkdir()
    path = _events_file(tmp_path / "data", rows)
    featurizer = Featurizer.fit([load_events(path)], FeaturizerConfig(min_count=1))
    featurizer.save(tmp_path / "featurizer.json")
    assert main(["--data", str(path), "--out", str(tmp_path / "shards"), "--featurizer",
                 str(tmp_path / "featurizer.json")]) == 0
    assert read_success(tmp_path / "shards")["featurizer_version"] == featurizer.version
    data = ShardDataset(tmp_path / "shards")
    assert len(data) == 3
    np.testing.assert_array_equal(data[0][0], featurizer.encode(sessionize(load_events(path))[0].events)[0])


def test_contract_whitespace_is_what_the_contract_strips() -> None:
    from training.columnar.load import CONTRACT_WHITESPACE
    from training.core.contract import Event

    for char in map(chr, [*range(0xD800), *range(0xE000, 0x10000)]):  # not the lone surrogates
        stripped = Event(anonymous_id=f"a{char}", ts=1, event_type="x", url="/").anonymous_id == "a"
        assert stripped == (char in CONTRACT_WHITESPACE), hex(ord(char))
