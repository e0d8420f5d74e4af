"""Request validation: every string and repeated field bounded, every violation named by its field path.

Limits (docs/serving.md, "Limits"): ids (anonymous_id, customer_id) 1..MAX_ID_LEN characters, not blank;
every text field at most its `MAX_*` length; no control characters anywhere (NUL included: C0, DEL, C1);
`url` and `referrer` parseable the way the featurizer parses them; `dwell_ms` in [0, 1 day]; `ts` epoch ms or
ISO-8601 with a zone, within [now - retention_days, now + max_clock_skew_s]; RankTiles' context bounded
(`check_rank_request`). Descriptions name the rule and the size, never the value (ids and payloads stay out
of errors).

URLs lose their query string and fragment at ingest (`clean_url`): the featurizer reads only a url's path
(`normalize_url` takes `urlsplit(url).path`) and a referrer's host (`normalize_referrer`), so nothing it
computes changes, and those parts are where e-mail addresses, tokens and campaign ids leak into the store.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from gateway.api import pb
from gateway.config import GatewayConfig
from gateway.errors import invalid_argument
from training.core.contract import Event
from training.core.featurizer import normalize_referrer, normalize_url

MAX_ID_LEN = 128
MAX_URL_LEN = 2048
MAX_REFERRER_LEN = 2048
MAX_QUERY_LEN = 512
"""The search text the featurizer tokenizes (it keeps the first few tokens)."""
MAX_EVENT_TYPE_LEN = 64
MAX_DEVICE_LEN = 64
MAX_TS_LEN = 40
MAX_SEGMENT_LEN = 64
MAX_PRODUCT_LEN = 64
MAX_TILE_ID_LEN = 128
MAX_DWELL_MS = 86_400_000
MAX_TENURE_MONTHS = 1200
MAX_TS_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last instant Python's datetime (and ISO-8601's four-digit year) can show."""
DAY_MS = 86_400_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class EventLimits:
    """The time window events must fall in; the defaults are GatewayConfig's."""

    retention_days: float = 90.0
    """Events older than this (before now) are refused: the store would prune them anyway."""
    max_clock_skew_s: float = 300.0
    """Events at most this far after now are accepted (collectors' clocks drift)."""

    @classmethod
    def from_config(cls, cfg: GatewayConfig) -> EventLimits:
        return cls(float(cfg.retention_days), float(cfg.max_clock_skew_s))


def check_text(value: str, field: str, max_len: int, violations: list[tuple[str, str]]) -> bool:
    """Length and control characters of one text field; False (and a violation) when it breaks one."""
    if len(value) > max_len:
        violations.append((field, f"at most {max_len} characters, got {len(value)}"))
        return False
    if _CONTROL.search(value):
        violations.append((field, "must not contain control characters"))
        return False
    return True


def check_id(value: str, field: str, violations: list[tuple[str, str]]) -> None:
    """An id: not blank, at most MAX_ID_LEN characters, no control characters (NUL included)."""
    if check_text(value, field, MAX_ID_LEN, violations) and not value.strip():
        violations.append((field, "required"))


def require_ids(**ids: str) -> None:
    violations: list[tuple[str, str]] = []
    for field, value in ids.items():
        check_id(value, field, violations)
    if violations:
        raise invalid_argument(violations)


def clean_url(url: str) -> str:
    """`url` without its query string and fragment, checked to be what the featurizer can read (ValueError
    otherwise: `http://[` fails urlsplit, and would fail every featurization of its session)."""
    parts = urlsplit(url)
    cleaned = urlunsplit(parts._replace(query="", fragment=""))
    normalize_url(cleaned)
    return cleaned


def clean_referrer(referrer: str) -> str:
    """A referrer without query string and fragment (the featurizer keeps only its host); ValueError when
    the featurizer could not read it."""
    parts = urlsplit(referrer)
    cleaned = urlunsplit(parts._replace(query="", fragment=""))
    normalize_referrer(cleaned)
    return cleaned


def parse_event_ts(text: str) -> int:
    """Epoch ms from the proto's `ts` (epoch ms digits, or ISO-8601 with a zone); ValueError with a message
    that does not repeat the value, for text, overflow and times outside years 1970..9999."""
    text = text.strip()
    if not text:
        raise ValueError("required")
    if text.isdigit():
        ms = int(text) if len(text) <= 16 else MAX_TS_MS + 1
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be epoch milliseconds or ISO-8601 text with a zone") from None
        if parsed.tzinfo is None:
            raise ValueError("ISO-8601 time without a zone (add Z or +HH:MM)")
        try:
            ms = int(parsed.timestamp() * 1000)
        except (OverflowError, OSError, ValueError):
            raise ValueError("out of range") from None
    if not 0 <= ms <= MAX_TS_MS:
        raise ValueError("out of range (1970-01-01 to 9999-12-31)")
    return ms


def _event_row(m: pb.WebEvent, field: str, now_ms: int | None, limits: EventLimits,
               violations: list[tuple[str, str]]) -> dict | None:
    """The contract row of one message, or None after appending its violations."""
    before = len(violations)
    for name in ("anonymous_id", "customer_id"):
        value = getattr(m, name)
        if name == "anonymous_id" or value:
            check_id(value, f"{field}.{name}", violations)
    if check_text(m.event_type, f"{field}.event_type", MAX_EVENT_TYPE_LEN, violations) and not m.event_type.strip():
        violations.append((f"{field}.event_type", "required"))
    check_text(m.device, f"{field}.device", MAX_DEVICE_LEN, violations)
    check_text(m.query, f"{field}.query", MAX_QUERY_LEN, violations)
    url = referrer = None
    if check_text(m.url, f"{field}.url", MAX_URL_LEN, violations):
        if not m.url.strip():
            violations.append((f"{field}.url", "required"))
        else:
            try:
                url = clean_url(m.url.strip())
            except ValueError:
                violations.append((f"{field}.url", "not a URL the featurizer can parse"))
    if m.referrer and check_text(m.referrer, f"{field}.referrer", MAX_REFERRER_LEN, violations):
        try:
            referrer = clean_referrer(m.referrer.strip())
        except ValueError:
            violations.append((f"{field}.referrer", "not a URL the featurizer can parse"))
    if m.HasField("dwell_ms") and not 0 <= m.dwell_ms <= MAX_DWELL_MS:
        violations.append((f"{field}.dwell_ms", f"must be in [0, {MAX_DWELL_MS}] (one day)"))
    ts = _event_ts(m.ts, f"{field}.ts", now_ms, limits, violations)
    if len(violations) > before:
        return None
    return {"anonymous_id": m.anonymous_id, "ts": ts, "event_type": m.event_type, "url": url,
            "dwell_ms": m.dwell_ms if m.HasField("dwell_ms") else None, "device": m.device or None,
            "referrer": referrer or None, "query": m.query or None, "customer_id": m.customer_id or None}


def _event_ts(text: str, field: str, now_ms: int | None, limits: EventLimits,
              violations: list[tuple[str, str]]) -> int | None:
    if not check_text(text, field, MAX_TS_LEN, violations):
        return None
    try:
        ts = parse_event_ts(text)
    except ValueError as exc:
        violations.append((field, str(exc)))
        return None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ts > now + limits.max_clock_skew_s * 1000:
        violations.append((field, f"more than {limits.max_clock_skew_s:g} s in the future"))
    elif now_ms is not None and ts < now_ms - limits.retention_days * DAY_MS:
        violations.append((field, f"older than the retention period ({limits.retention_days:g} days)"))
    return ts


def to_events(messages: Sequence[pb.WebEvent], max_batch: int, *, now_ms: int | None = None,
              limits: EventLimits | None = None) -> list[Event]:
    """All events or an INVALID_ARGUMENT naming every bad field (`events[i].ts`); nothing half-accepted.

    `now_ms`: the gateway's now (its `as_of` when replaying); `ts` must fall in [now - retention, now + skew].
    Without it the wall clock bounds the future only: a caller that does not say what now is (a replay of
    history) gets no retention floor. URLs come back without query string and fragment (module docstring)."""
    if not messages:
        raise invalid_argument([("events", "at least one event is required")])
    if len(messages) > max_batch:
        raise invalid_argument([("events", f"at most {max_batch} events per call, got {len(messages)}")])
    limits = limits or EventLimits()
    events, violations = [], []
    for i, m in enumerate(messages):
        row = _event_row(m, f"events[{i}]", now_ms, limits, violations)
        if row is None:
            continue
        try:
            events.append(Event.model_validate(row))
        except ValidationError as exc:  # what the contract adds (none today past the checks above)
            for err in exc.errors():
                name = ".".join(str(p) for p in err["loc"]) or "event"
                violations.append((f"events[{i}].{name}", err["msg"].removeprefix("Value error, ")))
    if violations:
        raise invalid_argument(violations)
    return events


def check_rank_request(request: pb.RankTilesRequest, known_tiles: Collection[str], cfg: GatewayConfig) -> None:
    """INVALID_ARGUMENT naming every bad field of a RankTiles request: the customer id, 1..cfg.max_tiles known
    distinct tiles, and the context (segment, tenure_months in [0, 1200], at most cfg.max_products_held
    products). A list over its limit is reported once, without looking at its items (a request of 100,000
    products costs no more than one of 65)."""
    violations: list[tuple[str, str]] = []
    check_id(request.customer_id, "customer_id", violations)
    tiles = request.tile_ids
    if not tiles:
        violations.append(("tile_ids", "at least one candidate tile is required"))
    elif len(tiles) > cfg.max_tiles:
        violations.append(("tile_ids", f"at most {cfg.max_tiles} tiles, got {len(tiles)}"))
    else:
        seen: set[str] = set()
        for i, tile in enumerate(tiles):
            field = f"tile_ids[{i}]"
            if not check_text(tile, field, MAX_TILE_ID_LEN, violations):
                continue
            if tile not in known_tiles:
                violations.append((field, f"unknown tile {tile!r}"))
            elif tile in seen:
                violations.append((field, f"duplicate tile {tile!r}"))
            seen.add(tile)
    ctx = request.context
    check_text(ctx.segment, "context.segment", MAX_SEGMENT_LEN, violations)
    if not 0 <= ctx.tenure_months <= MAX_TENURE_MONTHS:
        violations.append(("context.tenure_months", f"must be in [0, {MAX_TENURE_MONTHS}]"))
    products = ctx.products_held
    if len(products) > cfg.max_products_held:
        violations.append(("context.products_held",
                           f"at most {cfg.max_products_held} products, got {len(products)}"))
    else:
        for i, product in enumerate(products):
            check_text(product, f"context.products_held[{i}]", MAX_PRODUCT_LEN, violations)
    if violations:
        raise invalid_argument(violations)
