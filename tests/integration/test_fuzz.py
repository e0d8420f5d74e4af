"""Generated and raw requests to every RPC of a real gateway process (real Triton behind it): no UNKNOWN, no
INTERNAL, the process alive and healthy afterwards. A fixed-seed subset of `make fuzz` (harness/fuzz.py)."""

from __future__ import annotations

import time

import pytest

from harness.fuzz import FuzzContext, fuzz_gateway, ranker_tiles, run_fuzz
from harness.processes import manifest_of

CASES, RAW_CASES, SEED = 500, 150, 16


@pytest.fixture(scope="module")
def fuzzed(gw_artifacts, triton, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    ctx = FuzzContext(ranker_tiles(gw_artifacts), int(time.time() * 1000))
    gateway = fuzz_gateway(gw_artifacts, manifest_of(triton), f"sqlite://{work / 'fuzz.db'}", triton.grpc_url,
                           ctx.now_ms, work / "gateway.log").start()
    try:
        yield run_fuzz(gateway, ctx, CASES, RAW_CASES, SEED)
    finally:
        gateway.stop()


def _failures(result, status: str) -> list[str]:
    return [f"{f['kind']} {f['method']}: {f['message'][:120]} <- {f['input'][:120]}" for f in result.failures
            if f["status"] == status]


def test_every_rpc_got_generated_and_raw_requests(fuzzed):
    assert fuzzed.cases == CASES and fuzzed.raw_cases == RAW_CASES
    methods = {key.split(":", 1)[1] for key in fuzzed.by_method_status}
    assert len(methods) == 6 and len(fuzzed.by_method_status) == 12
    # the strategies reach past validation: every RPC answered some requests OK
    assert all(c["OK"] > 0 for key, c in fuzzed.by_method_status.items() if key.startswith("typed:"))


def test_no_request_is_answered_unknown(fuzzed):
    assert fuzzed.unknown == 0, _failures(fuzzed, "UNKNOWN")


def test_no_request_is_answered_internal(fuzzed):
    assert fuzzed.internal == 0, _failures(fuzzed, "INTERNAL")


def test_no_invalid_value_is_accepted(fuzzed):
    """Ids with control characters or over 128 characters, times out of range, unparseable URLs."""
    assert fuzzed.accepted_invalid == 0, _failures(fuzzed, "OK (accepted invalid)")


def test_error_details_fit_the_clients_metadata_limit(fuzzed):
    assert fuzzed.oversized_details == 0, _failures(fuzzed, "RESOURCE_EXHAUSTED")


def test_the_gateway_survives_and_is_healthy_afterwards(fuzzed):
    assert not fuzzed.crashed and fuzzed.healthy_after


def test_no_customer_is_left_degraded_with_triton_up(fuzzed):
    """One bad event must not spoil a customer's ranking for good (as `http://[` once did)."""
    assert fuzzed.degraded_after == []
