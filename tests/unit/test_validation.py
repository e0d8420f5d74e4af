"""Every limit of gateway/validation.py, named by field path: ids, text lengths, control characters (NUL),
URLs the featurizer cannot parse, query strings and fragments dropped, the ts window (year 10000, past int64),
the RankTiles context, and BadRequest details capped under 8 KB of trailers."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway.api import pb
from gateway.config import GatewayConfig
from gateway.errors import MORE_FIELD, GatewayError
from gateway.validation import (
    DAY_MS,
    MAX_DEVICE_LEN,
    MAX_DWELL_MS,
    MAX_EVENT_TYPE_LEN,
    MAX_ID_LEN,
    MAX_PRODUCT_LEN,
    MAX_QUERY_LEN,
    MAX_SEGMENT_LEN,
    MAX_TILE_ID_LEN,
    MAX_URL_LEN,
    EventLimits,
    check_rank_request,
    require_ids,
    to_events,
)
from training.core.contract import Event
from training.core.featurizer import Featurizer

NOW = 1_790_000_000_000  # 2026-09-21
TILES = ("checking", "savings", "mortgage")
CFG = GatewayConfig()


def event(**fields) -> pb.WebEvent:
    base = {"anonymous_id": "a1", "ts": str(NOW - 1000), "event_type": "page_view", "url": "https://bank.example/loans"}
    return pb.WebEvent(**(base | fields))


def violations(call) -> list[tuple[str, str]]:
    """The BadRequest field violations of the GatewayError `call` raises."""
    with pytest.raises(GatewayError) as raised:
        call()
    details = dict(raised.value.status.trailing_metadata)["grpc-status-details-bin"]
    bad = error_details_pb2.BadRequest()
    status_pb2.Status.FromString(details).details[0].Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


def fields_of(messages, **kw) -> list[str]:
    return [f for f, _ in violations(lambda: to_events(messages, 1000, now_ms=NOW, **kw))]


def test_a_good_event_passes_with_query_string_and_fragment_dropped() -> None:
    [e] = to_events([event(url="https://bank.example/loans/apply?email=jane%40x.com&token=abc#step2",
                           referrer="https://search.example/q?q=jane+doe#top", device="mobile", query="car loan",
                           dwell_ms=1200)], 10, now_ms=NOW)
    assert e.url == "https://bank.example/loans/apply" and e.referrer == "https://search.example/q"
    assert (e.device, e.query, e.dwell_ms, e.ts) == ("mobile", "car loan", 1200, NOW - 1000)


def test_dropping_query_and_fragment_changes_nothing_the_featurizer_computes() -> None:
    """The assumption behind dropping them: the featurizer reads a url's path and a referrer's host only."""
    raw = [event(url="https://bank.example/loans/123?utm=x&email=a%40b.c#f", referrer="https://www.s.example/?q=me")]
    [kept] = to_events(raw, 10, now_ms=NOW)
    original = Event(anonymous_id="a1", ts=NOW - 1000, event_type="page_view", url=raw[0].url, referrer=raw[0].referrer)
    featurizer = Featurizer.fit([[original]])
    for left, right in zip(featurizer.encode([original]), featurizer.encode([kept]), strict=True):
        assert (left == right).all()


@pytest.mark.parametrize("name, limit", [("anonymous_id", MAX_ID_LEN), ("customer_id", MAX_ID_LEN),
                                         ("event_type", MAX_EVENT_TYPE_LEN), ("device", MAX_DEVICE_LEN),
                                         ("query", MAX_QUERY_LEN), ("url", MAX_URL_LEN), ("referrer", MAX_URL_LEN)])
def test_every_text_field_has_a_maximum_length(name, limit) -> None:
    long = "/" + "x" * limit if name in ("url", "referrer") else "x" * (limit + 1)
    assert fields_of([event(**{name: long})]) == [f"events[0].{name}"]
    fits = ("/" + "x" * (limit - 1)) if name in ("url", "referrer") else "x" * limit
    assert to_events([event(**{name: fits})], 10, now_ms=NOW)


@pytest.mark.parametrize("name", ["anonymous_id", "customer_id", "event_type", "url", "device", "referrer", "query"])
@pytest.mark.parametrize("char", ["\x00", "\x07", "\n", "\x7f", "\x85"])
def test_control_characters_are_refused_everywhere(name, char) -> None:
    value = {"url": f"/a{char}b", "referrer": f"https://r.example/{char}"}.get(name, f"ab{char}c")
    assert fields_of([event(**{name: value})]) == [f"events[0].{name}"]


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_ids_and_required_fields(value) -> None:
    assert set(fields_of([event(anonymous_id=value, event_type=value, url=value, ts=value)])) == {
        "events[0].anonymous_id", "events[0].event_type", "events[0].url", "events[0].ts"}


@pytest.mark.parametrize("url", ["http://[", "https://[::1/x", "//[bad"])
def test_urls_the_featurizer_cannot_parse_are_refused(url) -> None:
    assert fields_of([event(url=url)]) == ["events[0].url"]
    assert fields_of([event(referrer=url)]) == ["events[0].referrer"]


@pytest.mark.parametrize("dwell, ok", [(0, True), (MAX_DWELL_MS, True), (-1, False), (MAX_DWELL_MS + 1, False),
                                       (2**63 - 1, False)])
def test_dwell_is_within_a_day(dwell, ok) -> None:
    if ok:
        assert to_events([event(dwell_ms=dwell)], 10, now_ms=NOW)[0].dwell_ms == dwell
    else:
        assert fields_of([event(dwell_ms=dwell)]) == ["events[0].dwell_ms"]


@pytest.mark.parametrize("ts", ["253402300800000",  # 10000-01-01 in epoch ms
                                str(2**63), "9" * 40, "9" * 5000,  # past int64, and past int's digit limit
                                "10000-01-01T00:00:00Z", "2026-09-21T00:00:00",  # year 10000, no zone
                                "yesterday", "0001-01-01T00:00:00+00:00",
                                str(NOW + 301_000),  # past the clock skew
                                str(NOW - 91 * DAY_MS)])  # older than retention
def test_ts_outside_the_window_or_unparseable(ts) -> None:
    assert fields_of([event(ts=ts)]) == ["events[0].ts"]


def test_ts_window_edges_and_its_limits() -> None:
    inside = [event(ts=str(NOW + 299_000)), event(ts=str(NOW - 89 * DAY_MS)), event(ts="2026-09-21T00:00:00+02:00")]
    assert len(to_events(inside, 10, now_ms=NOW)) == 3
    assert fields_of([event(ts=str(NOW - 2 * DAY_MS))], limits=EventLimits(retention_days=1)) == ["events[0].ts"]
    assert EventLimits.from_config(GatewayConfig(retention_days=7, max_clock_skew_s=5)) == EventLimits(7, 5)


def test_without_now_the_wall_clock_bounds_the_future_only() -> None:
    assert to_events([event(ts="1000")], 10)  # history older than retention: a replay's business
    with pytest.raises(GatewayError):
        to_events([event(ts="253402300799999")], 10)


def test_every_bad_field_of_every_event_is_named() -> None:
    bad = [event(), event(anonymous_id="x\x00"), event(url="http://[", dwell_ms=-5)]
    assert fields_of(bad) == ["events[1].anonymous_id", "events[2].url", "events[2].dwell_ms"]


def test_200_bad_events_fit_in_8_kb_of_trailers_with_a_count() -> None:
    messages = [event(ts="2026-09-21T00:00:00", url="http://[" + "x" * 2000) for _ in range(200)]
    with pytest.raises(GatewayError) as raised:
        to_events(messages, 1000, now_ms=NOW)
    status = raised.value.status
    size = len(quote(status.details)) + sum(len(k) + len(base64.b64encode(v) if isinstance(v, bytes) else v)
                                            for k, v in status.trailing_metadata)
    assert size < 8192
    listed = violations(lambda: to_events(messages, 1000, now_ms=NOW))
    assert listed[0] == ("events[0].url", "not a URL the featurizer can parse")
    assert listed[-1][0] == MORE_FIELD and listed[-1][1] == f"(and {400 - len(listed) + 1} more)"
    assert "(and 397 more)" in status.details


def test_batch_size_and_empty_batch() -> None:
    assert fields_of([]) == ["events"]
    assert [f for f, _ in violations(lambda: to_events([event()] * 3, 2, now_ms=NOW))] == ["events"]


def test_require_ids() -> None:
    require_ids(customer_id="C1")
    assert [f for f, _ in violations(lambda: require_ids(customer_id="C\x00", anonymous_id="x" * 129))] == [
        "customer_id", "anonymous_id"]


def rank_request(**context) -> pb.RankTilesRequest:
    tiles = context.pop("tiles", ["checking", "savings"])
    return pb.RankTilesRequest(customer_id=context.pop("customer_id", "C1"), tile_ids=tiles,
                               context=pb.CustomerContext(**context))


def rank_fields(request, cfg: GatewayConfig = CFG) -> list[str]:
    return [f for f, _ in violations(lambda: check_rank_request(request, TILES, cfg))]


def test_a_good_rank_request_passes() -> None:
    check_rank_request(rank_request(segment="mass", tenure_months=1200, products_held=["checking"] * 64), TILES, CFG)


def test_rank_request_tiles() -> None:
    assert rank_fields(rank_request(tiles=[])) == ["tile_ids"]
    assert rank_fields(rank_request(tiles=["checking"] * 51)) == ["tile_ids"]
    assert rank_fields(rank_request(tiles=["checking", "nope", "checking", "x\x00", "t" * (MAX_TILE_ID_LEN + 1)])) == [
        "tile_ids[1]", "tile_ids[2]", "tile_ids[3]", "tile_ids[4]"]
    assert rank_fields(rank_request(customer_id="")) == ["customer_id"]


@pytest.mark.parametrize("context, field", [
    ({"tenure_months": -1}, "context.tenure_months"), ({"tenure_months": 1201}, "context.tenure_months"),
    ({"segment": "s" * (MAX_SEGMENT_LEN + 1)}, "context.segment"), ({"segment": "mass\x00"}, "context.segment"),
    ({"products_held": ["p"] * 65}, "context.products_held"),
    ({"products_held": ["ok", "p" * (MAX_PRODUCT_LEN + 1)]}, "context.products_held[1]"),
    ({"products_held": ["ok", "a\nb"]}, "context.products_held[1]")])
def test_rank_request_context_limits(context, field) -> None:
    assert rank_fields(rank_request(**context)) == [field]


def test_a_huge_products_list_is_one_violation() -> None:
    assert rank_fields(rank_request(products_held=["p\x00"] * 100_000)) == ["context.products_held"]
    assert rank_fields(rank_request(products_held=["p"] * 3), GatewayConfig(max_products_held=2)) == [
        "context.products_held"]
