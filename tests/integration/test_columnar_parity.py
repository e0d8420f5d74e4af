"""On the synthetic bank, the columnar path's shards and session table equal the row-level pipeline's sessions and
arrays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.columnar.run import featurize_dir
from training.core.contract import LoadReport, load_events
from training.core.featurizer import Featurizer
from training.core.sessionize import sessionize
from training.evaluation.features import first_logins
from training.probe import page_document
from training.sessions import load_session_table, load_sessions
from training.shards import INVALID_ROWS, ShardDataset, read_shards, read_success
from training.splits import VALIDATION_PCT, is_holdout


@pytest.fixture(scope="module")
def dirty_bank(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated bank with bad rows spliced in (bad JSON, timestamps, missing fields)."""
    out = tmp_path_factory.mktemp("dirty_bank")
    lines = (small_data / "events.jsonl").read_text().splitlines()
    good = json.loads(lines[0])
    bad = ["{oops", json.dumps({**good, "ts": "2026-02-30T00:00:00Z"}), json.dumps({**good, "url": ""}),
           json.dumps({k: v for k, v in good.items() if k != "anonymous_id"}),
           json.dumps({**good, "ts": int(1.7e12), "event_type": "Chat_Open"}), ""]
    for i, row in enumerate(bad):
        lines.insert(7 + i * 997, row)
    (out / "events.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copytree(small_data / "truth", out / "truth")
    return out


def test_shards_equal_the_row_level_pipeline(dirty_bank: Path, tmp_path: Path) -> None:
    ref = load_sessions(dirty_bank, report_dir=tmp_path / "ref", columnar=False)
    pool = ref.part(holdout=False)
    train = [s for s in pool if not is_holdout(s.anonymous_id, VALIDATION_PCT)]
    featurizer = Featurizer.fit(s.events for s in train)

    done = featurize_dir(dirty_bank, tmp_path / "shards", part_sessions=997)
    assert done == read_success(tmp_path / "shards")
    assert done["sessions"] == len(ref.sessions) and done["invalid_rows"] == len(ref.report.problems) == 4
    assert done["events"] == sum(len(s.events) for s in ref.sessions)
    assert done["featurizer_version"] == featurizer.version
    assert (tmp_path / "shards" / INVALID_ROWS).read_text() == (tmp_path / "ref" / "invalid_rows.jsonl").read_text()

    meta = [row for t in read_shards(tmp_path / "shards", ["session_id", "anonymous_id", "start_ms", "end_ms",
                                                           "holdout"]) for row in t.to_pylist()]
    assert meta == [{"session_id": s.session_id, "anonymous_id": s.anonymous_id, "start_ms": s.start_ms,
                     "end_ms": s.end_ms, "holdout": h} for s, h in zip(ref.sessions, ref.holdout, strict=True)]
    data = ShardDataset(tmp_path / "shards")
    assert len(data) == len(ref.sessions)
    for i, session in enumerate(ref.sessions):
        cat, cont = featurizer.encode(session.events)
        got_cat, got_cont = data[i]
        np.testing.assert_array_equal(got_cat, cat)
        assert got_cont.tobytes() == cont.tobytes(), session.session_id


def test_session_table_is_the_row_level_sessions_without_their_objects(dirty_bank: Path) -> None:
    """What evaluation reads (EvalData.sessions): ids, ends, sessions built on demand, page documents, the
    featurizer's arrays and the visitor -> customer links, all equal to the row-level path's."""
    table = load_session_table(dirty_bank, LoadReport())
    ref_events = load_events(dirty_bank, LoadReport())
    ref = sessionize(ref_events)
    assert table.session_ids == [s.session_id for s in ref]
    assert table.anonymous_ids == [s.anonymous_id for s in ref]
    assert table.end_ms.tolist() == [s.end_ms for s in ref]
    sample = [*range(0, len(ref), 53), len(ref) - 1, -1]
    assert [table[i] for i in sample] == [ref[i] for i in sample]
    assert table[3:6] == ref[3:6]
    assert len(ref) > 4096 and list(table) == ref  # iteration builds 4,096 sessions at a time: chunk edges too
    with pytest.raises(IndexError):
        table[len(ref)]
    assert table.documents() == [page_document(s) for s in ref]
    featurizer = Featurizer.fit(s.events for s in ref)
    encoded = table.encoded(featurizer)
    for i in sample:
        cat, cont = featurizer.encode(ref[i].events)
        np.testing.assert_array_equal(encoded[i][0], cat)
        np.testing.assert_array_equal(encoded[i][1], cont)
    links: dict[str, tuple[str, int]] = {}
    for e in sorted(ref_events, key=lambda e: e.ts):  # how EvalData linked visitors before it read columns
        if e.event_type == "login" and e.customer_id and e.anonymous_id not in links:
            links[e.anonymous_id] = (e.customer_id, e.ts)
    assert first_logins(table.events) == links and len(links) > 50
