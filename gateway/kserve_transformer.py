"""`python -m gateway.kserve_transformer`: the reranker on the Open Inference Protocol v2, as a KServe transformer.

KServe's native shape: this process (REST on --http_port 8080, gRPC on --grpc_port 8081) is the
transformer; its predictor is Triton's `intent_pipeline` over grpc-v2 (`--predictor_host H:P
--predictor_protocol grpc-v2`). preprocess validates and featurizes, predict forwards the featurized
sessions to Triton (KServe's own grpc-v2 client), postprocess scores the tiles with the gateway's ranking
core (`Gateway.rank_with`, the same code RankTiles runs). Stateless: the caller sends the customer's
linked pre-login events, no store is read.

Model `reranker` (v2 tensors; BYTES elements are UTF-8):

  inputs   EVENTS        BYTES [E]   one JSON web event each (RecordEvents' WebEvent fields: anonymous_id, ts,
                                     event_type, url, dwell_ms, device, referrer, query); E may be 0
           TILE_IDS      BYTES [T]   candidate tiles, 1..max_tiles, known to the ranker, no duplicates
           CONTEXT       BYTES [1]   optional JSON {"segment", "tenure_months", "products_held"}
  outputs  TILE_IDS      BYTES [T]   the tiles, best first
           SCORES        FP32  [T]   their scores, same order
           INTENTS       BYTES [K]   top intent labels (K <= 3; 0 without sessions)
           INTENT_PROBS  FP32  [K]
           SESSIONS_USED INT32 [1]
           DEGRADED      BOOL  [1]   true when Triton failed or was late: the no-session ranking

A bad request is a 400 (REST) / INVALID_ARGUMENT (gRPC) naming the field, as in the gateway's gRPC API.

Traces: with the gateway's `OTEL_*` settings, each request is a `reranker.infer` server span continuing the
caller's `traceparent` (REST header or gRPC metadata), with `featurize` and `triton.infer` inside; a sampled
span hands its context to Triton as gRPC metadata (start Triton with `--trace-config rate=0`, as for the
gateway). Metrics are KServe's own (its /metrics on the REST port).

So that Triton's perf_analyzer (and tritonclient) can drive it like a Triton model: ModelMetadata lists the tensors
above, the gRPC server also answers Triton's ModelConfig RPC (which KServe's v2 server lacks), and a gRPC request
sent with raw_input_contents is answered with raw_output_contents, as Triton answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from google.protobuf import json_format
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from core.featurizer import Featurizer, pad_batch
from core.ranker import Ranker
from core.sessionize import Session
from gateway.api import pb
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.service import Gateway, select_sessions
from gateway.telemetry import TelemetrySettings, child_span, inject_headers, setup, tracer
from gateway.triton_client import SessionIntents, served_model
from gateway.validation import to_events

log = logging.getLogger("gateway.kserve")
MODEL_NAME = "reranker"
# (name, v2 datatype, shape, optional): the reranker's tensors, for ModelMetadata and ModelConfig
INPUTS = (("EVENTS", "BYTES", [-1], False), ("TILE_IDS", "BYTES", [-1], False), ("CONTEXT", "BYTES", [1], True))
OUTPUTS = (("TILE_IDS", "BYTES", [-1]), ("SCORES", "FP32", [-1]), ("INTENTS", "BYTES", [-1]),
           ("INTENT_PROBS", "FP32", [-1]), ("SESSIONS_USED", "INT32", [1]), ("DEGRADED", "BOOL", [1]))
_NUMPY = {"BYTES": np.object_, "FP32": np.float32, "INT32": np.int32, "BOOL": np.bool_}


@dataclass
class _Pending:
    """What preprocess learned about one request, for postprocess (kept in a contextvar of the request's task)."""

    request_id: str
    request: pb.RankTilesRequest
    sessions: list[Session]
    reason: str = ""
    now_ms: int | None = None
    """The time the sessions were chosen at; the ranker pools them at the same time."""
    raw_outputs: bool = False  # a gRPC request with raw_input_contents: answer with raw_output_contents


_pending: contextvars.ContextVar[_Pending] = contextvars.ContextVar("kserve_pending")


def _strings(tensor) -> list[str]:
    """A BYTES tensor's elements as str, whether it came over REST (a list) or gRPC (typed contents, or
    raw_input_contents as tritonclient and perf_analyzer send them: then `data` is an empty list)."""
    raw = getattr(tensor, "_raw_data", None) is not None
    data = tensor.data if isinstance(tensor.data, list) and not raw else tensor.as_numpy().ravel().tolist()
    return [x.decode() if isinstance(x, bytes) else str(x) for x in data]


def _invalid(field: str, why: str):
    from kserve.errors import InvalidInput

    return InvalidInput(f"{field}: {why}")


def build_model(name: str, cfg: GatewayConfig, featurizer: Featurizer, ranker: Ranker, labels: Sequence[str],
                version: str, predictor_model: str):
    """The kserve.Model serving `name`; `labels`/`version` come from the served ensemble's config.

    kserve is imported here and in main(), never at import time (it parses sys.argv when imported)."""
    import kserve
    from kserve import InferInput, InferOutput, InferRequest, InferResponse
    from kserve.model import append_forwardable_headers

    intents_info = SimpleNamespace(labels=tuple(labels), version=version)
    core = Gateway(replace(cfg, embed_on_write=False), store=None, intents=intents_info, ranker=ranker)  # no store

    class Reranker(kserve.Model):
        def __init__(self) -> None:
            super().__init__(name, return_response_headers=False)
            self.ready = True

        def get_input_types(self) -> list[dict]:
            return [{"name": n, "datatype": d, "shape": s} for n, d, s, _ in INPUTS]

        def get_output_types(self) -> list[dict]:
            return [{"name": n, "datatype": d, "shape": s} for n, d, s in OUTPUTS]

        async def __call__(self, body, headers: dict[str, str] | None = None, *args, **kwargs):
            """The request as one server span that continues the caller's W3C context (REST headers or gRPC
            metadata); preprocess, predict and postprocess run inside it."""
            with tracer.start_as_current_span(f"{name}.infer", context=propagate.extract(headers or {}),
                                              kind=SpanKind.SERVER):
                return await super().__call__(body, headers, *args, **kwargs)

        async def preprocess(self, payload: InferRequest, headers: dict[str, str] | None = None):
            inputs = {i.name: i for i in payload.inputs}
            unknown = set(inputs) - {"EVENTS", "TILE_IDS", "CONTEXT"}
            if unknown:
                raise _invalid("inputs", f"unknown tensors {sorted(unknown)}")
            if "TILE_IDS" not in inputs:
                raise _invalid("TILE_IDS", "required")
            request = pb.RankTilesRequest(customer_id="kserve", tile_ids=_strings(inputs["TILE_IDS"]))
            try:
                if "CONTEXT" in inputs:
                    docs = _strings(inputs["CONTEXT"])
                    if len(docs) != 1:
                        raise _invalid("CONTEXT", "one JSON object expected")
                    json_format.ParseDict(json.loads(docs[0]), request.context)
                raw = _strings(inputs["EVENTS"]) if "EVENTS" in inputs else []
                messages = [json_format.ParseDict(json.loads(doc), pb.WebEvent()) for doc in raw]
            except (ValueError, json_format.ParseError) as exc:
                raise _invalid("EVENTS/CONTEXT", f"not valid JSON for the contract: {exc}") from None
            try:
                core._check_rank_request(request)
                events = to_events(messages, cfg.max_batch_events) if messages else []
            except GatewayError as exc:
                raise _invalid("request", str(exc)) from None
            now = core.now_ms()
            with child_span("featurize"):
                # the gateway's selection (sessions that ended in the lookback, whole), on the events sent
                sessions = select_sessions(events, now, core.lookback_ms, cfg.max_sessions)
                _pending.set(_Pending(payload.id or "", request, sessions, now_ms=now,
                                      raw_outputs=bool(payload.from_grpc and payload.use_binary_outputs)))
                if not sessions:
                    return InferRequest(model_name=predictor_model, infer_inputs=[], request_id=payload.id)
                batch = pad_batch([featurizer.encode(s.events) for s in sessions])
            tensors = [InferInput("CATEGORICAL", list(batch.categorical.shape), "INT64"),
                       InferInput("CONTINUOUS", list(batch.continuous.shape), "FP32")]
            tensors[0].set_data_from_numpy(batch.categorical, binary_data=True)
            tensors[1].set_data_from_numpy(batch.continuous, binary_data=True)
            return InferRequest(model_name=predictor_model, infer_inputs=tensors, request_id=payload.id)

        async def predict(self, payload, headers=None, response_headers=None):
            pending = _pending.get()
            if not pending.sessions:
                return None
            try:
                with child_span("triton.infer", SpanKind.CLIENT):
                    return await asyncio.wait_for(self._predict(payload, headers), cfg.triton_timeout_s)
            except TimeoutError:
                pending.reason = f"model server slower than {cfg.triton_timeout_s * 1000:.0f} ms"
            except Exception as exc:  # the predictor failing degrades the answer, never fails it
                log.warning("predictor call failed: %s", exc)
                pending.reason = f"model server unavailable: {type(exc).__name__}"
            return None

        async def _predict(self, payload, headers):
            """KServe's grpc-v2 predictor call, plus the W3C context of a sampled span as gRPC metadata: kserve
            forwards only x-request-id, x-b3-traceid and authorization (this relies on kserve 0.21's
            `_grpc_client`; Triton 2.51 keeps most, not all, traceparents sent as metadata)."""
            context = inject_headers()
            if not context:
                return await super().predict(payload, headers)
            metadata = [("request_type", "grpc_v2"), ("response_type", "grpc_v2"),
                        *append_forwardable_headers(headers).items(), *context.items()]
            return await self._grpc_client.infer(infer_request=payload, headers=tuple(metadata))

        async def postprocess(self, result, headers=None, response_headers=None):
            pending = _pending.get()
            intents = None
            if result is not None:
                out = {o.name: o.as_numpy() for o in result.outputs}
                intents = SessionIntents(out["EMBEDDING"], out["INTENT_PROBS"])
            elif not pending.sessions:
                intents = SessionIntents(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
            r = core.rank_with(pending.request, pending.sessions, intents, pending.reason, pending.now_ms)
            tiles, scores = [t for t, _ in r.tiles], [s for _, s in r.tiles]
            labels_out, probs = [lb for lb, _ in r.intents], [p for _, p in r.intents]
            values = {"TILE_IDS": tiles, "SCORES": scores, "INTENTS": labels_out, "INTENT_PROBS": probs,
                      "SESSIONS_USED": [r.sessions_used], "DEGRADED": [r.degraded]}
            outputs = []
            for out_name, dtype, _ in OUTPUTS:
                data = values[out_name]
                if not pending.raw_outputs:
                    outputs.append(InferOutput(out_name, [len(data)], dtype, data))
                    continue
                # every output raw, even an empty one, so that raw_output_contents line up with the outputs
                out = InferOutput(out_name, [len(data)], dtype)
                out.set_data_from_numpy(np.array([x.encode() for x in data] if dtype == "BYTES" else data,
                                                 dtype=_NUMPY[dtype]), binary_data=True)
                outputs.append(out)
            return InferResponse(pending.request_id, self.name, outputs, use_binary_outputs=pending.raw_outputs,
                                 parameters={"model_version": r.model_version, "degraded_reason": r.reason})

    return Reranker()


def read_served_model(url: str, featurizer: Featurizer, model: str) -> tuple[tuple[str, ...], str]:
    """Labels and version of the served ensemble; refuses a featurizer mismatch (as the gateway does).

    Triton's ModelConfig RPC over a plain grpc channel: tritonclient.grpc cannot be imported beside kserve
    (both register protos of package `inference`), so the request is encoded by hand and the reply parsed
    with Triton's model_config.proto, loaded from tritonclient's file without its package.
    """
    import grpc

    model_config_pb2 = _model_config_pb2()
    name = model.encode()
    request = b"\x0a" + _varint(len(name)) + name  # ModelConfigRequest{name = 1}
    with grpc.insecure_channel(url) as channel:
        reply = channel.unary_unary("/inference.GRPCInferenceService/ModelConfig")(request, timeout=10)
    config = model_config_pb2.ModelConfig()
    if reply[:1] == b"\x0a":  # ModelConfigResponse{config = 1}
        length, start = _read_varint(reply, 1)
        config.ParseFromString(reply[start:start + length])
    doc = json_format.MessageToDict(config, preserving_proto_field_name=True)
    labels, _, version = served_model(doc, model, featurizer)
    return labels, version


@functools.cache
def _model_config_pb2():
    """Triton's model_config_pb2, loaded from tritonclient's file under another module name (importing
    tritonclient.grpc itself would clash with kserve's protos of package `inference`)."""
    import importlib.util

    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_config(name: str) -> bytes:
    """The reranker's Triton ModelConfig (serialized): no batching (max_batch_size 0), the tensors of INPUTS
    and OUTPUTS; what perf_analyzer reads before it sends load."""
    mc = _model_config_pb2()
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    for tensor_name, datatype, dims, optional in INPUTS:
        config.input.add(name=tensor_name, data_type=mc.DataType.Value(_config_type(datatype)), dims=dims,
                         optional=optional)
    for tensor_name, datatype, dims in OUTPUTS:
        config.output.add(name=tensor_name, data_type=mc.DataType.Value(_config_type(datatype)), dims=dims)
    return config.SerializeToString()


def _config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def model_config_handler(model_name: str):
    """A generic gRPC handler for Triton's `inference.GRPCInferenceService/ModelConfig`, beside KServe's servicer
    (whose proto has no ModelConfig). Messages are bytes: ModelConfigRequest{name = 1, version = 2} is read by
    hand, the answer is ModelConfigResponse{config = 1}."""
    import grpc

    config = model_config(model_name)
    response = b"\x0a" + _varint(len(config)) + config

    async def handle(request: bytes, context) -> bytes:
        requested, pos = "", 0
        while pos < len(request):  # find field 1 (name); skip the rest
            key, pos = _read_varint(request, pos)
            if key & 7 == 2:
                length, pos = _read_varint(request, pos)
                if key >> 3 == 1:
                    requested = request[pos:pos + length].decode()
                pos += length
            elif key & 7 == 0:
                _, pos = _read_varint(request, pos)
            else:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed ModelConfigRequest")
        if requested != model_name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Model with name {requested} does not exist.")
        return response

    identity = None  # bytes in, bytes out
    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelConfig": grpc.unary_unary_rpc_method_handler(handle, request_deserializer=identity,
                                                           response_serializer=identity)})


def grpc_server(port: int, dataplane, model_repository_extension, kwargs: dict, grace_period: int, model_name: str):
    """KServe's GRPCServer (its servicer, interceptors and options) with the ModelConfig handler added."""
    from concurrent import futures

    from grpc import aio
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
    from kserve.protocol.grpc.server import GRPCServer
    from kserve.protocol.grpc.servicer import InferenceServicer

    class Server(GRPCServer):
        async def start(self, max_workers):  # kserve 0.21's GRPCServer.start, plus add_generic_rpc_handlers
            self._server = aio.server(
                futures.ThreadPoolExecutor(max_workers=max_workers),
                interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
                options=[("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                         ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length"))])
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                InferenceServicer(self._data_plane, self._model_repository_extension), self._server)
            self._server.add_generic_rpc_handlers((model_config_handler(model_name),))
            self._server.add_insecure_port(f"[::]:{self._port}")
            log.info("Starting gRPC server (with Triton's ModelConfig) on [::]:%d, %d workers", self._port,
                     max_workers)
            await self._server.start()
            await self._server.wait_for_termination()

    return Server(port, dataplane, model_repository_extension, kwargs=kwargs, grace_period=grace_period)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def parser() -> argparse.ArgumentParser:
    """KServe's model-server flags (--http_port, --grpc_port, --predictor_host, --predictor_protocol, ...)
    plus the gateway's settings (--artifacts, --triton-model, ...; env GATEWAY_*)."""
    from kserve import model_server

    p = argparse.ArgumentParser(prog="python -m gateway.kserve_transformer", parents=[model_server.parser],
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    GatewayConfig.add_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    from kserve import ModelServer
    from kserve.predictor_config import PredictorConfig

    if args["predictor_protocol"] != "grpc-v2" or not args["predictor_host"]:
        print("--predictor_host HOST:PORT and --predictor_protocol grpc-v2 are required", file=sys.stderr)
        return 2
    gateway_args = {k: args.get(k) for k in GatewayConfig.__dataclass_fields__}
    cfg = GatewayConfig.load(args.get("config"), overrides=gateway_args)
    artifacts = Path(cfg.artifacts)
    featurizer = Featurizer.load(artifacts / "featurizer.json")
    ranker = Ranker.load(artifacts / "ranker.json")
    labels, version = read_served_model(args["predictor_host"], featurizer, cfg.triton_model)
    model = build_model(args["model_name"] if args["model_name"] != "model" else MODEL_NAME, cfg, featurizer,
                        ranker, labels, version, cfg.triton_model)
    predictor = PredictorConfig(predictor_host=args["predictor_host"], predictor_protocol="grpc-v2",
                                predictor_use_ssl=args["predictor_use_ssl"],
                                predictor_request_timeout_seconds=args["predictor_request_timeout_seconds"],
                                predictor_request_retries=args["predictor_request_retries"])
    # gRPC is started here, not by ModelServer, so that its server also answers Triton's ModelConfig
    server = ModelServer(http_port=args["http_port"], grpc_port=args["grpc_port"], workers=1, enable_grpc=False,
                         enable_docs_url=False, enable_latency_logging=args["enable_latency_logging"],
                         predictor_config=predictor)
    if args["enable_grpc"]:
        server._grpc_server = grpc_server(args["grpc_port"], server.dataplane, server.model_repository_extension,
                                          args, server.grace_period, model.name)
        server.servers.append(server._grpc_server.start(server.max_threads))
    provider = setup(TelemetrySettings.from_env())  # OTEL_* as for the gateway; nothing when unset
    try:
        server.start([model])
    finally:
        if provider is not None:
            provider.shutdown()  # flush the last spans
    return 0


if __name__ == "__main__":
    sys.exit(main())
