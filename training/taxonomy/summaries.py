"""Deterministic, readable text renderings of sessions: the LLM's view of a session.

Same normalization as the featurizer (paths, referrer hosts), so the LLM and the encoder see the same
facts. Long sessions keep their most recent `max_events` lines, and say how many were left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from training.core.featurizer import EventLike, normalize_referrer, normalize_url


def _duration(ms: int) -> str:
    seconds = max(ms, 0) // 1000
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _line(i: int, event: EventLike) -> str:
    text = f"{i}. {event.event_type} {normalize_url(event.url)}"
    if event.query:
        text += f' "{event.query.strip()}"'
    if event.dwell_ms is not None:
        text += f" ({_duration(event.dwell_ms)})"
    return text


def summarize(events: Sequence[EventLike], max_events: int = 20) -> str:
    """A few lines: device, entry referrer, length and duration, then one line per event in order."""
    if not events:
        raise ValueError("cannot summarize an empty session")
    first, last = events[0], events[-1]
    devices = sorted({(e.device or "unknown") for e in events})
    header = (f"Web session of {len(events)} events over {_duration(last.ts - first.ts)} "
              f"on {', '.join(devices)}, arrived from {normalize_referrer(first.referrer)}.")
    kept = events[-max_events:]
    lines = [header]
    if len(events) > len(kept):
        lines.append(f"(first {len(events) - len(kept)} events omitted)")
    offset = len(events) - len(kept)
    lines += [_line(offset + i + 1, e) for i, e in enumerate(kept)]
    searches = [e.query.strip() for e in events if e.query]
    if searches:
        lines.append("Searches: " + "; ".join(f'"{q}"' for q in dict.fromkeys(searches)))
    return "\n".join(lines)


def compact_summary(events: Sequence[EventLike], max_pages: int = 8) -> str:
    """Two short lines (distinct pages by visits, then searches): what a small LLM can actually read.

    The full `summarize` rendering overwhelms SmolLM2-135M: on the synthetic bank its label accuracy
    with the true taxonomy was 0.20 from full summaries and 0.33 from this form (40 sessions).
    """
    if not events:
        raise ValueError("cannot summarize an empty session")
    visits = Counter(normalize_url(e.url) for e in events)
    pages = ", ".join(f"{url} (x{n})" if n > 1 else url for url, n in visits.most_common(max_pages))
    text = f"Pages visited: {pages}"
    searches = list(dict.fromkeys(e.query.strip() for e in events if e.query))
    if searches:
        text += "\nSearches: " + "; ".join(f'"{q}"' for q in searches[:4])
    return text
