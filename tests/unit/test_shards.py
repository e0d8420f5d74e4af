"""The shard format round-trips featurized sessions exactly, and refuses unfinished directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.core.contract import Event, LoadReport, RowProblem
from training.core.featurizer import Featurizer
from training.core.sessionize import sessionize
from training.shards import SessionColumns, ShardDataset, read_shards, read_success, to_table, write_featurized


def _events() -> list[Event]:
    rows = []
    for v in range(6):
        for i in range(3 + v):
            rows.append(Event(anonymous_id=f"v{v}", ts=1_000_000 + v * 10 + i * 60_000, event_type="page_view",
                              url=f"/p/{i % 3}", dwell_ms=None if i % 2 else 1000 * i,
                              query="home loan" if i else None))
    return rows


def _columns(featurizer: Featurizer, sessions) -> SessionColumns:
    encoded = [featurizer.encode(s.events) for s in sessions]
    return SessionColumns(
        session_id=[s.session_id for s in sessions], anonymous_id=[s.anonymous_id for s in sessions],
        start_ms=np.array([s.start_ms for s in sessions]), end_ms=np.array([s.end_ms for s in sessions]),
        holdout=np.array([i % 2 == 0 for i in range(len(sessions))]),
        lengths=np.array([len(c) for c, _ in encoded]),
        categorical=np.concatenate([c for c, _ in encoded]), continuous=np.concatenate([x for _, x in encoded]))


def test_round_trip_is_exact_across_parts(tmp_path: Path) -> None:
    sessions = sessionize(_events())
    featurizer = Featurizer.fit(s.events for s in sessions)
    report = LoadReport(problems=[RowProblem("events.jsonl", 3, "ts", "bad")])
    done = write_featurized(tmp_path, [to_table(_columns(featurizer, sessions))], featurizer, report,
                            events=33, part_sessions=4)
    assert done == {"sessions": len(sessions), "events": 33, "invalid_rows": 1,
                    "featurizer_version": featurizer.version, "parts": 2}
    assert read_success(tmp_path)["parts"] == 2
    ids = [sid for t in read_shards(tmp_path) for sid in t.column("session_id").to_pylist()]
    assert ids == [s.session_id for s in sessions]
    data = ShardDataset(tmp_path)
    assert len(data) == len(sessions)
    for i, s in enumerate(sessions):
        cat, cont = featurizer.encode(s.events)
        got_cat, got_cont = data[i]
        assert got_cat.dtype == np.int64 and got_cont.dtype == np.float32
        np.testing.assert_array_equal(got_cat, cat)
        np.testing.assert_array_equal(got_cont, cont)
    held = ShardDataset(tmp_path, holdout=True)
    assert held.session_ids == [s.session_id for i, s in enumerate(sessions) if i % 2 == 0]
    np.testing.assert_array_equal(held[1][0], featurizer.encode(sessions[2].events)[0])
    assert json.loads((tmp_path / "invalid_rows.jsonl").read_text()) == {
        "file": "events.jsonl", "line": 3, "field": "ts", "reason": "bad"}


def test_unfinished_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        ShardDataset(tmp_path)


def test_index_out_of_range(tmp_path: Path) -> None:
    sessions = sessionize(_events())
    featurizer = Featurizer.fit(s.events for s in sessions)
    write_featurized(tmp_path, [to_table(_columns(featurizer, sessions))], featurizer, LoadReport(), events=33)
    with pytest.raises(IndexError):
        ShardDataset(tmp_path)[len(sessions)]
