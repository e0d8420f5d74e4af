"""Cut events into sessions: by `session_id` when the log has one, else 30 minutes of inactivity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from training.core.contract import Event

SESSION_GAP_MS = 30 * 60 * 1000


def session_key(anonymous_id: str, first_ts_ms: int) -> str:
    """Stable id of a session cut by inactivity: later events never renumber earlier sessions."""
    return f"{anonymous_id}@{first_ts_ms}"


@dataclass(frozen=True)
class Session:
    """One visitor's events in time order. `customer_id` is set when the session contains a login."""

    session_id: str
    anonymous_id: str
    events: tuple[Event, ...]

    @property
    def start_ms(self) -> int:
        return self.events[0].ts

    @property
    def end_ms(self) -> int:
        return self.events[-1].ts

    @property
    def customer_id(self) -> str | None:
        return next((e.customer_id for e in self.events if e.customer_id), None)


def sessionize(events: Iterable[Event], gap_ms: int = SESSION_GAP_MS) -> list[Session]:
    """Group events per anonymous id, order by time, and cut sessions; result is ordered by start time."""
    by_visitor: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_visitor[event.anonymous_id].append(event)
    sessions: list[Session] = []
    for anonymous_id, visitor_events in by_visitor.items():
        visitor_events.sort(key=lambda e: e.ts)
        sessions.extend(_cut(anonymous_id, visitor_events, gap_ms))
    sessions.sort(key=lambda s: (s.start_ms, s.session_id))
    return sessions


def _cut(anonymous_id: str, events: list[Event], gap_ms: int) -> list[Session]:
    explicit: dict[str, list[Event]] = defaultdict(list)
    current: list[Event] = []
    out: list[Session] = []
    for event in events:
        if event.session_id:
            explicit[event.session_id].append(event)
            continue
        if current and event.ts - current[-1].ts > gap_ms:
            out.append(Session(session_key(anonymous_id, current[0].ts), anonymous_id, tuple(current)))
            current = []
        current.append(event)
    if current:
        out.append(Session(session_key(anonymous_id, current[0].ts), anonymous_id, tuple(current)))
    out.extend(Session(sid, anonymous_id, tuple(evs)) for sid, evs in explicit.items())
    return out
