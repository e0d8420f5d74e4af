"""The KServe transformer reads BYTES inputs however they come: raw_input_contents (tritonclient's and perf_analyzer's
wire form), typed gRPC contents (kserve's own client) and REST JSON lists. kserve runs in a child process: it parses
sys.argv on import and clashes with tritonclient.grpc's protos in one process."""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import struct, sys
sys.argv = sys.argv[:1]
from kserve import InferInput
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
from kserve.protocol.infer_type import InferRequest
from gateway.kserve_transformer import _strings

def raw(*items):
    return b"".join(struct.pack("<I", len(s)) + s for s in items)

req = ModelInferRequest(model_name="reranker")
for name, n in (("EVENTS", 2), ("TILE_IDS", 1)):
    t = req.inputs.add(name=name, datatype="BYTES")
    t.shape.append(n)
req.raw_input_contents.extend([raw(b'{"url":"/a"}', b'{"url":"/b"}'), raw(b"tile_auto_loan")])
typed = ModelInferRequest(model_name="reranker")
t = typed.inputs.add(name="TILE_IDS", datatype="BYTES")
t.shape.append(2)
t.contents.bytes_contents.extend([b"tile_a", b"tile_b"])
rest = InferInput("TILE_IDS", [2], "BYTES", ["tile_c", "tile_d"])  # as the REST data plane builds it
empty = InferInput("EVENTS", [0], "BYTES", [])
got = [_strings(i) for i in InferRequest.from_grpc(req).inputs] + [_strings(InferRequest.from_grpc(typed).inputs[0]),
                                                                   _strings(rest), _strings(empty)]
print(got)
assert got == [['{"url":"/a"}', '{"url":"/b"}'], ["tile_auto_loan"], ["tile_a", "tile_b"], ["tile_c", "tile_d"],
               []], got
"""


def test_raw_typed_and_rest_bytes_inputs_read_the_same():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
