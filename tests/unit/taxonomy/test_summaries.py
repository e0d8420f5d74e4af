import pytest

from training.core.contract import Event
from training.taxonomy.summaries import summarize


def ev(i: int, **kw) -> Event:
    base = {"anonymous_id": "a", "ts": 1_000_000 + i * 30_000, "event_type": "page_view", "url": "/credit-cards/"}
    return Event(**{**base, **kw})


def test_summary_golden():
    events = [
        ev(0, referrer="https://www.google.com/search?q=x", device="mobile_web", dwell_ms=45_000),
        ev(1, event_type="search", url="/search?q=cash+back", query="best cash back card ", device="mobile_web"),
        ev(5, url="/careers/jobs/123456", device="mobile_web", dwell_ms=75_500),
    ]
    assert summarize(events) == (
        "Web session of 3 events over 2 min 30 s on mobile_web, arrived from google.com.\n"
        "1. page_view /credit-cards (45 s)\n"
        '2. search /search "best cash back card"\n'
        "3. page_view /careers/jobs/:id (1 min 15 s)\n"
        'Searches: "best cash back card"'
    )


def test_long_sessions_keep_the_most_recent_events_and_say_so():
    text = summarize([ev(i, url=f"/p{i}") for i in range(30)], max_events=5)
    lines = text.splitlines()
    assert lines[1] == "(first 25 events omitted)"
    assert lines[2].startswith("26. page_view /p25") and lines[-1].startswith("30. ")


def test_summary_is_deterministic_and_rejects_empty():
    events = [ev(i, device="desktop") for i in range(3)]
    assert summarize(events) == summarize(list(events))
    with pytest.raises(ValueError):
        summarize([])
