"""Cluster evidence by lift against the whole site: site-wide pages fall out without a hand list."""

from __future__ import annotations

from training.core.contract import Event
from training.core.sessionize import Session
from training.taxonomy.evidence import (
    SiteStats,
    candidate_names,
    cluster_evidence,
    distinctiveness,
    evidence_words,
    path_words,
)


def session(sid: str, urls: list[str], query: str | None = None, event_type: str = "page_view") -> Session:
    events = tuple(Event(anonymous_id=sid, ts=1_790_000_000_000 + i * 1000, event_type=event_type if i else "page_view",
                         url=u, query=query if i == 0 else None) for i, u in enumerate(urls))
    return Session(f"{sid}@1", sid, events)


def site() -> tuple[list[Session], list[Session]]:
    """Every session signs in; a third look at car finance (with a calculator), the rest at savings or help."""
    car_pages = ["/member/sign-in", "/personal/borrowing/car-finance", "/personal/borrowing/car-finance/calculator"]
    cars = [session(f"C{i}", car_pages, "car loan rate", event_type="calculator") for i in range(30)]
    savings = [session(f"S{i}", ["/member/sign-in", "/personal/saving/term-deposits", "/"], "term deposit rates")
               for i in range(30)]
    help_ = [session(f"H{i}", ["/member/sign-in", "/help", "/"], "reset password") for i in range(30)]
    return cars, [*cars, *savings, *help_]


def test_distinctiveness_is_zero_for_pages_every_session_shares() -> None:
    assert distinctiveness(1.0, 1.0) == 0.0  # in every session of the group and of the site
    assert distinctiveness(0.2, 0.4) == 0.0  # under-represented
    assert distinctiveness(0.9, 0.3) > distinctiveness(0.9, 0.6) > 0


def test_a_site_wide_sign_in_page_is_never_evidence_even_at_full_share() -> None:
    cars, everyone = site()
    ev = cluster_evidence(cars, SiteStats.of(everyone))
    assert "/member/sign-in" not in ev.page_list  # 100% of the group, but 100% of the site too
    assert ev.page_list[0].startswith("/personal/borrowing/car-finance")
    terms = [t for t, _ in ev.terms]
    assert {"car", "finance", "calculator"} <= set(terms[:6]) and "sign" not in terms and "member" not in terms
    assert ev.search_list == ("car loan rate",) and ev.event_list == ("calculator",)
    assert "Distinctive pages: /personal/borrowing/car-finance" in ev.prompt()


def test_candidate_names_come_from_the_evidence_only() -> None:
    cars, everyone = site()
    ev = cluster_evidence(cars, SiteStats.of(everyone))
    names = candidate_names(ev)
    assert names and all(set(n.split("_")) <= ev.vocabulary for n in names), names
    assert all(1 <= len(n.split("_")) <= 3 for n in names)
    assert any("car" in n.split("_") for n in names)


def test_words_drop_ids_numbers_and_function_words() -> None:
    assert path_words("/personal/home-loans/:id/first-home") == ["personal", "home", "loans", "home"]
    assert evidence_words(["/a-b/cd"], ["how much can i borrow"], ["form_start"]) == {"cd", "borrow", "form", "start"}
