"""`intent report` on a data directory a user might bring: events only (no truth/, no conversions), another
folder name; the page says there are no conversions, has a section per label and no visitor or customer id."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.analytics import ReportConfig, write_report


@pytest.fixture(scope="module")
def events_only(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small bank as a user might bring it: events alone, no truth/, no conversions, another folder name."""
    out = tmp_path_factory.mktemp("brought") / "web_logs"
    out.mkdir()
    shutil.copy(small_data / "events.jsonl", out / "events.jsonl")
    return out


@pytest.fixture(scope="module")
def brought(events_only: Path, small_artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    """(report, page) of `intent report` on `events_only` with the small artifacts (no taxonomy.yaml there)."""
    out = tmp_path_factory.mktemp("page") / "intents.html"
    report = write_report(events_only, small_artifacts, out, ReportConfig(), progress=False)
    return report, out.read_text()


@pytest.mark.slow
def test_page_on_events_only_says_there_are_no_conversions_and_shows_no_ids(brought, events_only):
    report, page = brought
    assert report.conversions_note.startswith("no conversions in this data")
    shown = sum(1 for s in report.labels if s.sessions)
    assert page.count("no conversions in this data") >= 1 + shown  # the note and every labelled section
    assert "taxonomy.yaml is not in the artifacts" in page
    for stats in report.labels:
        assert f"<h2 id='intent-{stats.name}'>{stats.name}</h2>" in page
    assert sum(s.sessions for s in report.labels) == report.sessions
    assert np.isclose(sum(s.share for s in report.labels), 1.0)
    assert not re.search(r"<script|https?://", page, re.IGNORECASE)  # nothing runs, nothing is fetched
    rows = [json.loads(line) for line in (events_only / "events.jsonl").read_text().splitlines()]
    visitors = {r["anonymous_id"] for r in rows}
    customers = {r["customer_id"] for r in rows if r.get("customer_id")}
    assert visitors and customers
    assert not [i for i in visitors | customers if i in page]
