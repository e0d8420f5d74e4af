"""The KServe transformer's request parsing (gateway.kserve_transformer.parse) and its error mapping, without
servers: which tensors make a by-customer or a stateless call, and how each bad request is named. kserve runs in
a child process (it parses sys.argv on import)."""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import json, sys
sys.argv = sys.argv[:1]
from kserve import InferInput, InferRequest
from kserve.errors import InvalidInput
from gateway.errors import invalid_argument
from gateway.kserve_transformer import STATELESS, _as_invalid_input, model_config, parse

def request(from_grpc=False, **tensors):
    return InferRequest("reranker", [InferInput(k, [len(v)], "BYTES", v) for k, v in tensors.items()],
                        from_grpc=from_grpc)

def refused(payload, allow_events=True):
    try:
        parse(payload, allow_events)
    except InvalidInput as exc:
        return str(exc.reason)
    raise AssertionError(f"accepted: {payload}")

call = parse(request(CUSTOMER_ID=["C-1"], TILE_IDS=["a", "b"], CONTEXT=[json.dumps({"segment": "mass",
                                                                                        "tenure_months": 3})]))
assert call.events is None and call.request.customer_id == "C-1" and list(call.request.tile_ids) == ["a", "b"]
assert call.request.context.segment == "mass" and call.request.context.tenure_months == 3 and not call.raw_outputs
stateless = parse(request(EVENTS=['{"anonymous_id": "v", "ts": "1", "url": "/a", "event_type": "view"}'],
                          TILE_IDS=["a"]))
assert stateless.request.customer_id == STATELESS and stateless.events[0].url == "/a"
assert parse(request(EVENTS=[], TILE_IDS=["a"])).events == []

assert refused(request(TILE_IDS=["a"])).startswith("CUSTOMER_ID: required (or EVENTS")
assert refused(request(TILE_IDS=["a"]), allow_events=False) == "CUSTOMER_ID: required"
assert "off on this server" in refused(request(EVENTS=[], TILE_IDS=["a"]), allow_events=False)
assert refused(request(CUSTOMER_ID=["C-1"], EVENTS=[], TILE_IDS=["a"])).startswith("CUSTOMER_ID: send")
assert refused(request(CUSTOMER_ID=["C-1"])) == "TILE_IDS: required"
assert refused(request(CUSTOMER_ID=["C-1", "C-2"], TILE_IDS=["a"])).startswith("CUSTOMER_ID: one element")
assert refused(request(CUSTOMER_ID=["C-1"], TILE_IDS=["a"], X=["1"])).startswith("inputs: unknown tensors ['X']")
numbers = InferRequest("reranker", [InferInput("CUSTOMER_ID", [1], "BYTES", ["C-1"]),
                                    InferInput("TILE_IDS", [1], "INT32", [3])])
assert refused(numbers) == "TILE_IDS: datatype must be BYTES, got INT32"
twice = InferRequest("reranker", [InferInput("TILE_IDS", [1], "BYTES", ["a"]), InferInput("TILE_IDS", [1], "BYTES",
                                                                                          ["b"])])
assert refused(twice) == "TILE_IDS: sent twice"
# JSON problems name fields, never values (a visitor id, a customer id)
secret = "C-secret-42"
why = refused(request(EVENTS=['{"anonymous_id": 5, "note": "%s"}' % secret], TILE_IDS=["a"]))
assert why.startswith("EVENTS[0]: bad field") and secret not in why, why
why = refused(request(CUSTOMER_ID=[secret], TILE_IDS=["a"], CONTEXT=['{"tenure_months": "%s"}' % secret]))
assert why == "CONTEXT: bad field tenure_months", why
assert refused(request(CUSTOMER_ID=["C"], TILE_IDS=["a"], CONTEXT=["[1"])).startswith("CONTEXT: not JSON")
assert refused(request(CUSTOMER_ID=["C"], TILE_IDS=["a"], CONTEXT=["{}", "{}"])).startswith("CONTEXT: one JSON")
short = InferRequest("reranker", [InferInput("CUSTOMER_ID", [1], "BYTES", ["C"]),
                                  InferInput("TILE_IDS", [3], "BYTES", ["a"])])
assert refused(short) == "TILE_IDS: data does not match shape [3]"

# the gateway's field paths become tensor names
error = _as_invalid_input(invalid_argument([("customer_id", "required"), ("tile_ids[2]", "unknown tile 'x'"),
                                            ("context.tenure_months", "must be >= 0"), ("events[0].ts", "bad"),
                                            ("other", "kept")]))
assert str(error.reason) == ("invalid request: CUSTOMER_ID: required; TILE_IDS[2]: unknown tile 'x'; "
                             "CONTEXT.tenure_months: must be >= 0 (and 2 more)"), error.reason

config = model_config("reranker")
assert [i["name"] for i in config["input"]] == ["CUSTOMER_ID", "EVENTS", "TILE_IDS", "CONTEXT"]
assert [i["optional"] for i in config["input"]] == [True, True, False, True]
assert [i["name"] for i in model_config("reranker", allow_events=False)["input"]] == ["CUSTOMER_ID", "TILE_IDS",
                                                                                     "CONTEXT"]
from gateway import kserve_compat  # the config is a valid Triton ModelConfig
from google.protobuf import json_format
json_format.ParseDict(config, kserve_compat.TRITON.ModelConfig())
print("ok")
"""


def test_requests_parse_and_bad_ones_name_the_tensor():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
