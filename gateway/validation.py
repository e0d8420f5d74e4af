"""Request validation: proto messages -> the data contract's Events, every violation named by field path."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from gateway.api import pb
from gateway.errors import invalid_argument
from training.core.contract import Event

MAX_ID_LEN = 128


def check_id(value: str, field: str, violations: list[tuple[str, str]]) -> None:
    if not value.strip():
        violations.append((field, "required"))
    elif len(value) > MAX_ID_LEN:
        violations.append((field, f"at most {MAX_ID_LEN} characters, got {len(value)}"))


def require_ids(**ids: str) -> None:
    violations: list[tuple[str, str]] = []
    for field, value in ids.items():
        check_id(value, field, violations)
    if violations:
        raise invalid_argument(violations)


def to_events(messages: Sequence[pb.WebEvent], max_batch: int) -> list[Event]:
    """All events or an INVALID_ARGUMENT naming every bad field (`events[i].ts`); nothing half-accepted."""
    if not messages:
        raise invalid_argument([("events", "at least one event is required")])
    if len(messages) > max_batch:
        raise invalid_argument([("events", f"at most {max_batch} events per call, got {len(messages)}")])
    events, violations = [], []
    for i, m in enumerate(messages):
        for name in ("anonymous_id", "customer_id"):  # emptiness is the contract's to report
            if len(getattr(m, name)) > MAX_ID_LEN:
                violations.append((f"events[{i}].{name}", f"at most {MAX_ID_LEN} characters"))
        row = {"anonymous_id": m.anonymous_id, "ts": m.ts, "event_type": m.event_type, "url": m.url,
               "dwell_ms": m.dwell_ms if m.HasField("dwell_ms") else None, "device": m.device or None,
               "referrer": m.referrer or None, "query": m.query or None, "customer_id": m.customer_id or None}
        try:
            events.append(Event.model_validate(row))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "event"
                violations.append((f"events[{i}].{field}", err["msg"].removeprefix("Value error, ")))
    if violations:
        raise invalid_argument(violations)
    return events
