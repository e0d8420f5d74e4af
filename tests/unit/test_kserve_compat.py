"""gateway/kserve_compat.py, pinned to kserve 0.21.0: every kserve internal it touches is exercised here over
loopback (no Triton: a kserve Model stands in for Triton's ensemble), so a kserve upgrade fails this test first.

kserve runs in a child process: it parses sys.argv on import, and its protos clash with tritonclient.grpc's
(package `inference`) in one process.
"""

from __future__ import annotations

import subprocess
import sys

RECHECK = ("gateway/kserve_compat.py was written against kserve 0.21.0 and uses some of its internals (listed in its "
           "docstring): re-check each one against the installed kserve, then update KSERVE_VERSION and this test")

CHILD = r"""
import asyncio, hashlib, importlib.metadata, inspect, socket, sys
sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported
RECHECK = sys.stdin.read()

installed = importlib.metadata.version("kserve")
assert installed == "0.21.0", f"kserve {installed} is installed: {RECHECK}"

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput
from kserve.protocol.grpc.server import GRPCServer

from gateway import kserve_compat as compat
from gateway.triton_client import served_model

assert compat.KSERVE_VERSION == installed, RECHECK
# V2GrpcServer.serve repeats GRPCServer.start: its servicer, interceptors and options
start = inspect.getsource(GRPCServer.start)
assert hashlib.sha256(start.encode()).hexdigest() == \
    "f4ea7b4eb6f0d9f7ac4947c7bda31531f4bf870529f9de0964a2dad2f6a7fb5e", f"GRPCServer.start changed: {RECHECK}"
for needed in ("InferenceServicer(", "LoggingInterceptor()", "ExceptionToStatusInterceptor()",
               "grpc_max_send_message_length", "grpc_max_receive_message_length",
               "add_GRPCInferenceServiceServicer_to_server"):
    assert needed in start, (needed, RECHECK)
for attribute in ("_port", "_data_plane", "_model_repository_extension", "_kwargs", "_grace_period"):
    assert attribute in inspect.getsource(GRPCServer.__init__), (attribute, RECHECK)


def free_ports(n):
    # n distinct free ports: held open together while chosen (closed one by one, the OS may repeat one)
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class FakeEnsemble(Model):
    # stands in for Triton's intent_pipeline: EMBEDDING = row sums, INTENT_PROBS = uniform; remembers the metadata
    def __init__(self):
        super().__init__("intent_pipeline")
        self.ready = True
        self.seen = []

    async def predict(self, payload, headers=None, response_headers=None):
        self.seen.append({**(headers or {}), "model_version": payload.model_version or ""})
        categorical = {i.name: i for i in payload.inputs}["CATEGORICAL"].as_numpy()
        if categorical.shape[0] == 13:
            raise InvalidInput("thirteen sessions: refused")
        n = categorical.shape[0]
        outs = [InferOutput("EMBEDDING", [n, 2], "FP32"), InferOutput("INTENT_PROBS", [n, 3], "FP32")]
        outs[0].set_data_from_numpy(np.repeat(categorical.sum(axis=(1, 2))[:, None], 2, 1).astype(np.float32))
        outs[1].set_data_from_numpy(np.full((n, 3), 1 / 3, np.float32))
        return InferResponse(payload.id, self.name, outs, use_binary_outputs=payload.use_binary_outputs)


CONFIG = {"name": "intent_pipeline", "platform": "ensemble", "max_batch_size": 8,
          "parameters": {"featurizer_version": {"string_value": "f1"}, "labels": {"string_value": "a,b,c"},
                         "taxonomy_version": {"string_value": "t1"}},
          "input": [{"name": "CATEGORICAL", "data_type": "TYPE_INT64", "dims": ["-1", "4"]}]}


async def main():
    port, http_port = free_ports(2)
    server = ModelServer(http_port=http_port, grpc_port=port, enable_grpc=False, enable_docs_url=False)
    fake = FakeEnsemble()
    server.register_model(fake)
    v2 = compat.v2_grpc_server(server, port, {"grpc_max_send_message_length": -1,
                                              "grpc_max_receive_message_length": -1}, {"intent_pipeline": CONFIG})
    assert isinstance(v2, GRPCServer) and v2.max_workers == server.max_threads
    await v2.serve()
    transport = compat.transport_factory()(f"127.0.0.1:{port}")
    try:
        # Triton's ModelConfig through the private-pool messages, read as tritonclient's JSON
        config = await transport.config("intent_pipeline", 5)
        assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == ["-1", "4"], config
        assert served_model(config, "intent_pipeline", type("F", (), {"version": "f1"})()) == (("a", "b", "c"), 8,
                                                                                              "f1/t1")
        try:
            await transport.config("nope", 5)
            raise AssertionError("ModelConfig of an unknown model answered")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        # ModelInfer on kserve's client: raw tensors both ways; the forwardable headers and the trace context pass
        categorical = np.arange(2 * 3 * 4, dtype=np.int64).reshape(2, 3, 4)
        with compat.forwarding({"authorization": "Bearer t", "x-request-id": "r-1", "cookie": "secret"}):
            out = await transport.infer("intent_pipeline", categorical, np.zeros((2, 3, 5), np.float32), 5,
                                        {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        np.testing.assert_allclose(out.as_numpy("EMBEDDING")[:, 0], categorical.sum(axis=(1, 2)))
        assert out.as_numpy("INTENT_PROBS").shape == (2, 3)
        seen = fake.seen[-1]
        assert seen["x-request-id"] == "r-1" and "authorization" not in seen, seen  # the caller's token stays here
        assert seen["traceparent"].startswith("00-111") and "cookie" not in seen, seen
        assert seen["model_version"] == ""  # unpinned
        await transport.infer("intent_pipeline", categorical, np.zeros((2, 3, 5), np.float32), 5, None, version="3")
        assert "authorization" not in fake.seen[-1]  # outside `forwarding`, nothing is forwarded
        assert fake.seen[-1]["model_version"] == "3"  # pinned to the snapshot's ensemble version
        # kserve's exception interceptor: InvalidInput is INVALID_ARGUMENT
        try:
            await transport.infer("intent_pipeline", np.zeros((13, 1, 4), np.int64), np.zeros((13, 1, 5), np.float32),
                                  5, None)
            raise AssertionError("the refusal was not an error")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "thirteen" in exc.details(), exc
        # the v2 servicer itself: metadata of the registered model, through kserve's public client
        client = InferenceGRPCClient(f"127.0.0.1:{port}", retries=0)
        assert await client.is_model_ready("intent_pipeline")
        await client.close()
        # an HTTP url gets the gateway's default (tritonclient.http) transport, which imports beside kserve
        http = compat.transport_factory()("http://127.0.0.1:1")
        assert type(http).__name__ == "_Transport" and http.http
        await http.close()
    finally:
        await transport.close()
        await v2.stop()
    assert compat.TRITON.ModelConfig.DESCRIPTOR.file.pool is compat.TRITON.pool  # not the default pool
    print("ok")


asyncio.run(main())
"""


def test_kserve_compat_against_the_pinned_kserve():
    done = subprocess.run([sys.executable, "-c", CHILD], input=RECHECK, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-4000:]
