"""The KServe transformer reads BYTES inputs sent as raw_input_contents (tritonclient's and perf_analyzer's wire
form), not only as typed contents (kserve's own client). kserve runs in a child process: it parses sys.argv on
import and clashes with tritonclient.grpc's protos in one process."""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import struct
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
got = [_strings(i) for i in InferRequest.from_grpc(req).inputs] + [_strings(InferRequest.from_grpc(typed).inputs[0])]
print(got)
assert got == [['{"url":"/a"}', '{"url":"/b"}'], ["tile_auto_loan"], ["tile_a", "tile_b"]], got
"""


def test_raw_and_typed_bytes_inputs_read_the_same():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
