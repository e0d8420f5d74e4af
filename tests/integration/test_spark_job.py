"""The PySpark job (a real Spark in local[2]) writes the same sessions, featurized arrays and invalid-row report
as the row-level path (training.sessions + Featurizer.fit), compared by session_id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.core.contract import LoadReport
from training.core.featurizer import Featurizer
from training.sessions import load_sessions
from training.shards import ShardDataset, read_shards
from training.splits import VALIDATION_PCT, is_holdout
from training.synthetic import GeneratorConfig, generate

pytestmark = pytest.mark.slow

BAD_ROWS = [
    '{"anonymous_id": "A-bad", "ts": "2026-09-01T00:00:00", "event_type": "click", "url": "/a"}',
    "not json at all",
    "",
    "[1, 2]",
    '{"ts": -5, "event_type": "", "url": "/b", "dwell_ms": -1}',
    '{"anonymous_id": "A-odd", "ts": "1788220800000", "event_type": "SEARCH", "url": "https://x.example/Pay/12345?q=1",'
    ' "query": "Home Loan rates", "referrer": "www.Search.example"}',
    '{"anonymous_id": "A-cut", "ts": 1788220800000, "event_',
]
CUT_LAST_LINE = '{"anonymous_id": "A-cut", "ts": 17882208'
"""A file cut mid-row: its JSON error cites the end of the text, with or without a newline after it."""
"""Contract failures of each kind, a blank line, and one odd but valid row (digits as text, upper case, a full URL)."""


def _java_home() -> str | None:
    if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists():
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    return str(Path(java).resolve().parent.parent) if java else None


def _java_17() -> bool:
    home = _java_home()
    if home is None:
        return False
    out = subprocess.run([str(Path(home, "bin", "java")), "-version"], capture_output=True, text=True, timeout=30)
    version = out.stderr.split('"')[1] if '"' in out.stderr else "0"
    return int(version.split(".")[0]) >= 17


@pytest.fixture(scope="module")
def spark():
    if not _java_17():
        if "MAKELEVEL" in os.environ:  # make test installs Java (make java), so its absence there is a failure
            pytest.fail("no Java 17+ runtime although make test installs one (make java)")
        pytest.skip("no Java 17+ runtime: run `make java` (make test does)")
    os.environ.setdefault("JAVA_HOME", _java_home() or "")
    from training.spark.job import spark_session

    session = spark_session("local[2]", app="test-spark-job", driver_memory="768m")
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic bank with bad rows spread through its events file."""
    out = tmp_path_factory.mktemp("spark_world")
    generate(GeneratorConfig(visitors=400, seed=5), out)
    lines = (out / "events.jsonl").read_text().splitlines()
    for i, bad in enumerate(BAD_ROWS):
        lines.insert(1 + i * (len(lines) // len(BAD_ROWS)), bad)
    (out / "events.jsonl").write_text("\n".join([*lines, CUT_LAST_LINE]))
    return out


def _reference(data_dir: Path, featurizer: Featurizer | None = None):
    data = load_sessions(data_dir, columnar=False)  # the row-level reference
    if featurizer is None:
        featurizer = Featurizer.fit(s.events for s in data.sessions if not is_holdout(s.anonymous_id, VALIDATION_PCT))
    return data, featurizer


def _shards(out: Path) -> dict[str, dict]:
    rows = [row for table in read_shards(out) for row in table.to_pylist()]
    by_id = {r["session_id"]: r for r in rows}
    assert len(by_id) == len(rows), "session ids repeat across shards"
    return by_id


def _problems_text(report: LoadReport, tmp: Path) -> str:
    report.write_problems(tmp / "expected_invalid_rows.jsonl")
    return (tmp / "expected_invalid_rows.jsonl").read_text()


def _assert_parity(out: Path, data, featurizer: Featurizer, exact: bool) -> None:
    shards = _shards(out)
    assert set(shards) == {s.session_id for s in data.sessions}
    n_cat, n_cont = len(featurizer.categorical_columns), len(featurizer.to_dict()["continuous_columns"])
    for session, holdout in zip(data.sessions, data.holdout, strict=True):
        row = shards[session.session_id]
        cat, cont = featurizer.encode(session.events)
        assert (row["anonymous_id"], row["start_ms"], row["end_ms"], row["holdout"], row["length"]) == (
            session.anonymous_id, session.start_ms, session.end_ms, holdout, len(cat))
        np.testing.assert_array_equal(np.asarray(row["categorical"], dtype=np.int64).reshape(-1, n_cat), cat)
        got = np.asarray(row["continuous"], dtype=np.float32).reshape(-1, n_cont)
        if exact:
            np.testing.assert_array_equal(got, cont)
        else:
            np.testing.assert_allclose(got, cont, rtol=1e-5, atol=1e-5)


def test_fitted_job_matches_the_row_level_path(spark, world: Path, tmp_path: Path):
    from training.spark.job import JobSettings, run

    done = run(spark, JobSettings(str(world), str(tmp_path / "shards")))
    out = tmp_path / "shards"
    data, expected = _reference(world)

    fitted = Featurizer.load(out / "featurizer.json")
    assert fitted.config == expected.config
    assert {k: v.tokens for k, v in fitted.vocabs.items()} == {k: v.tokens for k, v in expected.vocabs.items()}
    for key, (mean, std) in expected.stats.items():
        assert fitted.stats[key] == pytest.approx((mean, std), rel=1e-9), key
    assert fitted.version == expected.version
    _assert_parity(out, data, expected, exact=False)

    assert (out / "invalid_rows.jsonl").read_text() == _problems_text(data.report, tmp_path)
    assert len(data.report.problems) >= 8
    assert done == json.loads((out / "_SUCCESS.json").read_text())
    assert done["sessions"] == len(data.sessions)
    assert done["events"] == sum(len(s.events) for s in data.sessions)
    assert done["invalid_rows"] == len(data.report.problems)
    assert done["featurizer_version"] == expected.version
    assert done["parts"] == len(list(out.glob("part-*.parquet")))

    train = ShardDataset(out, holdout=False)  # what training reads
    by_id = {s.session_id: s for s in data.sessions}
    assert sorted(train.session_ids) == sorted(s.session_id for s, h in zip(data.sessions, data.holdout, strict=True)
                                               if not h)
    cat, cont = train[len(train) - 1]
    want_cat, want_cont = expected.encode(by_id[train.session_ids[-1]].events)
    np.testing.assert_array_equal(cat, want_cat)
    np.testing.assert_allclose(cont, want_cont, rtol=1e-5, atol=1e-5)


def test_parquet_input_with_a_given_featurizer_is_exact(spark, world: Path, tmp_path: Path):
    """events.parquet at a file:// URI, encoded with a featurizer.json the job is given: arrays equal bit for bit,
    and Parquet rows are reported by row number like the contract does."""
    from training.spark.job import JobSettings, run

    data_dir = tmp_path / "parquet_data"
    data_dir.mkdir()
    rows = [json.loads(line) for line in (world / "events.jsonl").read_text().splitlines()[:3000]
            if line.startswith("{")]
    rows[10]["dwell_ms"] = -3
    rows[20].pop("anonymous_id")
    table = pa.Table.from_pylist([{k: str(v) if k == "ts" else v for k, v in r.items()} for r in rows])
    pq.write_table(table, data_dir / "events.parquet", row_group_size=500)
    data, _ = _reference(data_dir)
    given = _reference(world)[1]
    given.save(tmp_path / "given.json")

    run(spark, JobSettings(data_dir.as_uri(), (tmp_path / "shards").as_uri(), featurizer=str(tmp_path / "given.json")))
    out = tmp_path / "shards"
    assert Featurizer.load(out / "featurizer.json").version == given.version
    _assert_parity(out, data, given, exact=True)
    problems = (out / "invalid_rows.jsonl").read_text()
    assert problems == _problems_text(data.report, tmp_path)
    assert [json.loads(p)["line"] for p in problems.splitlines()] == [2, 11, 21]  # BAD_ROWS[0] is row 2
