from training.core.contract import Event
from training.core.sessionize import sessionize

MIN = 60_000


def ev(anon: str, minute: int, **kw) -> Event:
    return Event(anonymous_id=anon, ts=minute * MIN, event_type="page_view", url="/", **kw)


def test_cut_at_thirty_minutes_of_inactivity_per_visitor():
    events = [ev("a", 0), ev("a", 29), ev("a", 59), ev("a", 90), ev("b", 10), ev("a", 95, customer_id="c1")]
    sessions = sessionize(events)
    by_visitor = {(s.anonymous_id, len(s.events)) for s in sessions}
    assert by_visitor == {("a", 3), ("a", 2), ("b", 1)}
    second = next(s for s in sessions if s.anonymous_id == "a" and s.start_ms == 90 * MIN)
    assert second.session_id == f"a@{90 * MIN}" and second.customer_id == "c1"


def test_explicit_session_id_wins_over_gaps():
    sessions = sessionize([ev("a", 0, session_id="s1"), ev("a", 300, session_id="s1"), ev("a", 301)])
    assert sorted(len(s.events) for s in sessions) == [1, 2]
    assert {s.session_id for s in sessions} == {"s1", f"a@{301 * MIN}"}


def test_out_of_order_events_are_sorted():
    s = sessionize([ev("a", 5), ev("a", 1), ev("a", 3)])[0]
    assert [e.ts for e in s.events] == [MIN, 3 * MIN, 5 * MIN]
