"""The fuzzer's strategies reach every RPC and every field of the proto, with hostile values among them."""

from __future__ import annotations

import time

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.api import pb
from harness.fuzz import (
    HOSTILE_TS,
    HOSTILE_URLS,
    METHODS,
    SERVICE,
    FuzzContext,
    crafted_bodies,
    field_paths,
    must_reject,
    raw_strategy,
    request_strategy,
    set_paths,
    split,
)

CTX = FuzzContext(("tile_auto_loan", "tile_heloc", "tile_open_checking"), int(time.time() * 1000))
EXAMPLES = settings(max_examples=300, phases=(Phase.generate,), database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), derandomize=True)


def test_every_rpc_of_the_service_has_a_strategy():
    assert set(METHODS) == {m.name for m in pb.DESCRIPTOR.services_by_name["IntentGatewayService"].methods}
    assert len(METHODS) == 6


@pytest.mark.parametrize("method", METHODS)
def test_the_requests_of_a_method_set_every_field_and_are_of_its_type(method):
    descriptor = SERVICE.methods_by_name[method].input_type
    seen: set[str] = set()

    @EXAMPLES
    @given(request_strategy(method, CTX))
    def collect(request):
        assert request.DESCRIPTOR is descriptor
        seen.update(set_paths(request))

    collect()
    assert seen == field_paths(descriptor)


def test_event_times_and_urls_mix_plausible_and_hostile_values():
    times, urls, ids = [], [], []

    @EXAMPLES
    @given(request_strategy("RecordEvents", CTX))
    def collect(request):
        times.extend(e.ts for e in request.events)
        urls.extend(e.url for e in request.events)
        ids.extend(e.anonymous_id for e in request.events)

    collect()
    assert set(times) & set(HOSTILE_TS) and set(urls) & set(HOSTILE_URLS)
    assert any(t.isdigit() and abs(int(t) - CTX.now_ms) < 31 * 86_400_000 for t in times)  # epoch ms, recent
    assert any(t.endswith("Z") and t.startswith("20") for t in times)  # RFC 3339
    assert set(ids) & set(CTX.ids) and any("\x00" in i or len(i) > 128 for i in ids)


def test_some_requests_carry_more_entries_than_any_limit():
    sizes = []

    @EXAMPLES
    @given(request_strategy("RankTiles", CTX))
    def collect(request):
        sizes.append(max(len(request.tile_ids), len(request.context.products_held)))

    collect()
    assert max(sizes) > 1_000 and min(sizes) <= 6


def test_an_optional_field_is_drawn_present_and_absent():
    presence = set()

    @EXAMPLES
    @given(request_strategy("RecordEvents", CTX))
    def collect(request):
        presence.update(e.HasField("dwell_ms") for e in request.events)

    collect()
    assert presence == {True, False}


def test_the_oneof_is_drawn_each_way_and_unset():
    chosen = set()

    @EXAMPLES
    @given(request_strategy("GetSessions", CTX))
    def collect(request):
        chosen.add(request.WhichOneof("subject"))

    collect()
    assert chosen == {"anonymous_id", "customer_id", None}


@pytest.mark.parametrize("method", METHODS)
def test_raw_bodies_include_undecodable_ones(method):
    message = {m.name: m.input_type for m in SERVICE.methods}[method]
    decodes = set()

    @EXAMPLES
    @given(raw_strategy(method, CTX))
    def collect(body):
        assert isinstance(body, bytes)
        try:
            pb.__dict__[message.name].FromString(body)
            decodes.add(True)
        except DecodeError:
            decodes.add(False)

    collect()
    assert decodes == {True, False}


def test_crafted_bodies_are_refused_by_the_decoder_or_decode_to_odd_values():
    """Some the decoder refuses (truncated, over-long varints); the others decode (a wrong wire type is an
    unknown field, a 10-byte varint is truncated to 64 bits): the gateway must survive both."""
    refused = 0
    bodies = crafted_bodies(pb.RecordEventsRequest.DESCRIPTOR)
    for body in bodies:
        try:
            pb.RecordEventsRequest.FromString(body)
        except DecodeError:
            refused += 1
    assert 8 <= refused < len(bodies) and b"\x6e" in bodies


@given(st.integers(0, 20_000), st.integers(1, 12))
def test_split_spreads_the_total(total, parts):
    shares = split(total, parts)
    assert sum(shares) == total and max(shares) - min(shares) <= 1 and len(shares) == parts


def test_must_reject_names_the_invalid_field_and_passes_plausible_requests():
    good = pb.WebEvent(anonymous_id="fz-a1", ts=str(CTX.now_ms), event_type="page_view", url="/loans/auto")
    assert must_reject(pb.RecordEventsRequest(events=[good])) == ""
    nul = pb.WebEvent(anonymous_id="fz\x00a1", ts=str(CTX.now_ms), event_type="page_view", url="/")
    assert must_reject(pb.RecordEventsRequest(events=[good, nul])).startswith("events[1].anonymous_id")
    late = pb.WebEvent(anonymous_id="fz-a1", ts="253402300800000", event_type="page_view", url="/")
    assert must_reject(pb.RecordEventsRequest(events=[late])).startswith("events[0].ts")
    broken = pb.WebEvent(anonymous_id="fz-a1", ts=str(CTX.now_ms), event_type="page_view", url="http://[")
    assert must_reject(pb.RecordEventsRequest(events=[broken])).startswith("events[0].url")
    assert must_reject(pb.LinkIdentityRequest(anonymous_id="x" * 129, customer_id="c")).startswith("anonymous_id")
    assert must_reject(pb.RankTilesRequest(customer_id="fz-c1", tile_ids=["tile_heloc"])) == ""
