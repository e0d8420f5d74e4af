"""The intent analytics page's numbers (lift, conversion attribution, weeks, visitor thresholds, descriptions)
and its escaping, on hand-made cases (the page on real data: tests/integration/test_intent_report*.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training.analytics import (
    ReportConfig,
    SessionFacts,
    conversion_rates,
    converted_products,
    lift_table,
    render_html,
    visitor_links,
    week_start,
)
from training.core.contract import Conversion, Event
from training.core.sessionize import Session


def test_lift_puts_the_labels_own_pages_first_and_never_a_page_every_session_visits():
    # 100 sessions, 20 with the label; every session signs in, the label's sessions see /mortgage, a few
    # others too; /rates is as common inside the label as outside
    terms, in_label = [], []
    for i in range(100):
        row = {"/login"}
        if i < 20 or i >= 95:
            row.add("/mortgage")
        if i % 2 == 0:
            row.add("/rates")
        terms.append(row)
        in_label.append(i < 20)
    rows = lift_table(terms, in_label, min_sessions=3)
    assert [r.term for r in rows] == ["/mortgage"]
    top = rows[0]
    assert (top.n_label, top.share_label, top.share_all) == (20, 1.0, 0.25)
    assert top.lift == pytest.approx(4.0)
    # support and the visitor threshold both filter
    assert lift_table(terms, in_label, min_sessions=21) == []
    assert lift_table(terms, in_label, min_sessions=3, allowed={"/login"}) == []
    assert lift_table(terms, [False] * 100) == []


def _event(visitor: str, ts: int, url: str = "/", customer: str | None = None) -> Event:
    return Event(anonymous_id=visitor, ts=ts, event_type="login" if customer else "page_view", url=url,
                 customer_id=customer)


def test_conversions_count_only_the_linked_customers_after_the_session_within_the_window():
    day = 86_400_000
    sessions = [Session("a1", "A", (_event("A", 0), _event("A", 10))),
                Session("a2", "A", (_event("A", 5 * day), _event("A", 5 * day + 1, "/login", "C1"))),
                Session("b1", "B", (_event("B", 0),))]
    links = visitor_links(sessions)
    assert links == {"A": "C1"}  # a visitor's earlier sessions are linked by its later login
    facts = [SessionFacts("w", "desktop", "direct", frozenset(), frozenset(), s.anonymous_id, s.end_ms)
             for s in sessions]
    conversions = [Conversion(customer_id="C1", ts=3 * day, product="mortgage"),
                   Conversion(customer_id="C1", ts=40 * day, product="heloc"),  # past the window of both
                   Conversion(customer_id="C9", ts=day, product="card")]
    converted = converted_products(facts, links, conversions, window_days=30)
    assert converted == [frozenset({"mortgage"}), frozenset(), None]
    linked, rates = conversion_rates(converted, [True, False, True])
    assert linked == 1
    assert [(r.product, r.converted, r.rate, r.site_rate) for r in rates] == [("mortgage", 1, 1.0, 0.5)]
    assert rates[0].lift == 2.0
    assert conversion_rates([None, None], [True, False]) == (0, [])


def test_weeks_start_on_monday_utc():
    assert week_start(0) == "1969-12-29"  # a Thursday's week
    monday = 1_788_134_400_000  # 2026-09-01 is a Tuesday; 2026-08-31 00:00 UTC is its Monday
    assert week_start(monday) == "2026-08-31"
    assert week_start(monday - 1) == "2026-08-24"
    assert week_start(monday + 7 * 86_400_000 - 1) == "2026-08-31"


def _hand_made_report(description: str, data: str):
    from training.analytics import IntentReport, LabelStats

    weeks = ["2026-08-31", "2026-09-07"]
    labels = [LabelStats(name, description if i == 0 else "", 5, 0.5, [0.5, 0.5], {"desktop": 0.5},
                         {"direct": 0.5}, np.array([0.4, 0.6, 0.7, 0.8, 0.9], np.float32), [], [], 0, [])
              for i, name in enumerate(("refinance", "fraud"))]
    labels.append(LabelStats("travel", "", 0, 0.0, [0.0, 0.0], {"desktop": 0.0}, {"direct": 0.0},
                             np.zeros(0, np.float32), [], [], 0, []))
    return IntentReport(data=data, sessions=10, visitors=8, first_day="2026-09-01", last_day="2026-09-10",
                        weeks=weeks, week_sessions=[6, 4], devices={"desktop": 10}, referrers={"direct": 10},
                        labels=labels, conversions_note="no conversions in this data.", linked_sessions=0,
                        config=ReportConfig())


def test_render_escapes_every_text():
    page = render_html(_hand_made_report("<script>alert(1)</script> & <b>bold</b>", "dir<with>&quote'\""))
    assert "<script>" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "dir&lt;with&gt;&amp;quote&#x27;&quot;" in page
    assert page.count("<img src=\"data:image/png;base64,") == 3  # the overview and one per labelled section
    assert "<h2 id='intent-travel'>travel</h2>" in page  # a label the head never chose still has its section
    assert "the head gave no session of this data this label" in page


def test_terms_fewer_visitors_share_are_never_candidates():
    from training.analytics import _visitor_supported

    rows = [frozenset({"/home", "my secret search"}), frozenset({"/home", "my secret search"}),
            frozenset({"/home"}), frozenset({"/home"})]
    # one visitor's two sessions do not make a term shareable; four visitors do
    assert _visitor_supported(rows, ["A", "A", "B", "C"], min_visitors=3) == {"/home"}
    assert _visitor_supported(rows, ["A", "B", "C", "D"], min_visitors=2) == {"/home", "my secret search"}


def test_descriptions_come_from_the_taxonomy_and_a_stale_one_is_flagged(tmp_path):
    from training.analytics import Labelled, _descriptions
    from training.taxonomy.taxonomy import Label, Taxonomy

    taxonomy = Taxonomy((Label("refinance", "Rate and term refinancing."), Label("fraud", "Lost or stolen cards.")),
                        "pinned")
    taxonomy.save(tmp_path / "taxonomy.yaml")
    same = Labelled(("fraud", "refinance"), np.zeros(0), np.zeros(0), taxonomy.version)
    assert _descriptions(tmp_path, same) == ({"refinance": "Rate and term refinancing.",
                                              "fraud": "Lost or stolen cards."}, "")
    stale = Labelled(("fraud", "refinance"), np.zeros(0), np.zeros(0), "tax-0000000000")
    _, note = _descriptions(tmp_path, stale)
    assert "tax-0000000000" in note and taxonomy.version in note
    _, note = _descriptions(tmp_path / "nowhere", same)
    assert "taxonomy.yaml is not in the artifacts" in note
