"""Everything the KServe transformer needs from kserve beyond its public API, in one place, for kserve 0.21.0.

`gateway.kserve_transformer` uses kserve's public API (`kserve.Model`, `ModelServer`, `InferRequest`/`InferResponse`,
`InferenceGRPCClient`, `model_server.parser`, `kserve.errors`) and this module; nothing else of kserve. What is here,
and what of kserve (or of tritonclient) each piece touches:

- `V2GrpcServer`: kserve's v2 gRPC server plus Triton's `ModelConfig` RPC (which KServe's v2 proto lacks and
  perf_analyzer and tritonclient need). kserve's `GRPCServer.start` builds its grpc.aio server inside itself, so
  `serve()` repeats it (`kserve.protocol.grpc.server.GRPCServer` and its `_port`, `_data_plane`,
  `_model_repository_extension`, `_kwargs`, `_server`; `servicer.InferenceServicer`,
  `grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server`, `interceptors.LoggingInterceptor` and
  `ExceptionToStatusInterceptor`) and adds the handler. The unit test pins the source of the method it repeats.
- `v2_grpc_server(model_server, ...)`: reads `ModelServer.dataplane`, `.model_repository_extension`,
  `.grace_period`, `.max_threads` (attributes, not documented API); extra interceptors (the token check) go
  outside kserve's own.
- `add_rest_middleware`: an ASGI middleware (the token check) on `kserve.model_server.app`, the FastAPI instance
  ModelServer serves (a module attribute, not documented API), before ModelServer.start builds its stack.
- `TRITON`: Triton's protobuf messages (`ModelConfig`, `ModelConfigRequest`, `ModelConfigResponse`), built from the
  serialized descriptors inside tritonclient's generated `model_config_pb2.py` and `service_pb2.py` into a private
  descriptor pool. Importing those modules would register Triton's `inference.*` messages in the default pool,
  where kserve's own `inference.*` (the same names, another proto) already are: the two cannot share a process
  that way. A private pool holds both files without a clash (3 ms at start-up), so the ModelConfig RPC is encoded
  and decoded by protobuf itself, with no hand-written wire codec.
- `KServeTritonTransport`: the `gateway.triton_client.Transport` on kserve's `InferenceGRPCClient` (public) plus a
  plain grpc.aio channel for Triton's ModelConfig (above), forwarding what kserve forwards to a predictor
  (`kserve.model.append_forwardable_headers`: x-request-id, x-b3-traceid; never authorization) of the request being
  served (`forwarding`).
- `KSERVE_VERSION`: the version all this was checked against. tests/unit/test_kserve_compat.py asserts it is the
  installed one and exercises every piece above over loopback, so an upgrade fails there first.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import importlib.metadata
import importlib.util
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc import aio
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.model import append_forwardable_headers
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

log = logging.getLogger("gateway.kserve")

KSERVE_VERSION = "0.21.0"
"""The kserve this module was written and tested against (`pip show kserve`; kserve has no __version__)."""
MODEL_CONFIG_METHOD = "/inference.GRPCInferenceService/ModelConfig"


def installed_kserve() -> str:
    return importlib.metadata.version("kserve")


def warn_if_other_kserve() -> None:
    if installed_kserve() != KSERVE_VERSION:
        log.warning("kserve %s is installed; gateway/kserve_compat.py was checked against %s",
                    installed_kserve(), KSERVE_VERSION)


# -- Triton's protobuf messages, in a private pool -------------------------------------------------------------

def _serialized_descriptor(path: Path) -> bytes:
    """The FileDescriptorProto a protoc-generated `_pb2.py` adds to the default pool (`AddSerializedFile(b'...')`),
    read from its source without executing it."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise LookupError(f"{path}: no AddSerializedFile(...) call: tritonclient's generated code changed")


def _triton_messages() -> SimpleNamespace:
    spec = importlib.util.find_spec("tritonclient")  # the package only: tritonclient.grpc is not imported
    generated = Path(spec.submodule_search_locations[0]) / "grpc"
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(_serialized_descriptor(generated / "model_config_pb2.py"))
    pool.AddSerializedFile(_serialized_descriptor(generated / "service_pb2.py"))

    def message(name: str):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))

    return SimpleNamespace(pool=pool, ModelConfig=message("ModelConfig"),
                           ModelConfigRequest=message("ModelConfigRequest"),
                           ModelConfigResponse=message("ModelConfigResponse"))


TRITON = _triton_messages()


def model_config_json(message) -> dict:
    """A ModelConfig message as tritonclient's `get_model_config(as_json=True)["config"]` gives it."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# -- the v2 gRPC server, with Triton's ModelConfig --------------------------------------------------------------

def model_config_handler(configs: Mapping[str, dict]) -> grpc.GenericRpcHandler:
    """Triton's `inference.GRPCInferenceService/ModelConfig` for the models in `configs` (name -> the config as JSON,
    Triton's field names), beside KServe's servicer; another name is NOT_FOUND, as Triton answers."""
    replies = {name: TRITON.ModelConfigResponse(config=json_format.ParseDict(doc, TRITON.ModelConfig()))
               for name, doc in configs.items()}

    async def handle(request, context):
        reply = replies.get(request.name)
        if reply is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Model with name {request.name} does not exist.")
        return reply

    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelConfig": grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=TRITON.ModelConfigRequest.FromString,
            response_serializer=TRITON.ModelConfigResponse.SerializeToString)})


class V2GrpcServer(GRPCServer):
    """kserve's GRPCServer (servicer, interceptors, message-size options) with extra generic handlers.
    `serve()` starts it and returns; `stop()` is kserve's (grace period)."""

    def __init__(self, port: int, data_plane, model_repository_extension, kwargs: dict, grace_period: int,
                 handlers: Sequence[grpc.GenericRpcHandler] = (), max_workers: int = 4,
                 interceptors: Sequence[aio.ServerInterceptor] = ()) -> None:
        super().__init__(port, data_plane, model_repository_extension, kwargs=kwargs, grace_period=grace_period)
        self.handlers = tuple(handlers)
        self.max_workers = max_workers
        self.interceptors = tuple(interceptors)

    async def serve(self, max_workers: int | None = None) -> None:
        """kserve 0.21's `GRPCServer.start` up to `await server.start()`, plus `add_generic_rpc_handlers`."""
        from concurrent import futures

        max_workers = max_workers or self.max_workers
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(*self.interceptors, LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                     ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length"))])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self._data_plane, self._model_repository_extension), self._server)
        if self.handlers:
            self._server.add_generic_rpc_handlers(self.handlers)
        if self._server.add_insecure_port(f"[::]:{self._port}") == 0:
            raise OSError(f"cannot listen on [::]:{self._port} (v2 gRPC)")
        log.info("v2 gRPC (with Triton's ModelConfig) on [::]:%d, %d workers", self._port, max_workers)
        await self._server.start()

    async def start(self, max_workers: int | None = None) -> None:  # kserve's contract: serve until stopped
        await self.serve(max_workers)
        await self._server.wait_for_termination()


def v2_grpc_server(model_server, port: int, kwargs: dict, model_configs: Mapping[str, dict],
                   interceptors: Sequence[aio.ServerInterceptor] = ()) -> V2GrpcServer:
    """A V2GrpcServer over `model_server`'s data plane (the models it serves), answering ModelConfig for
    `model_configs`, with `interceptors` outside kserve's own; create the ModelServer with enable_grpc=False and
    run this one instead."""
    return V2GrpcServer(port, model_server.dataplane, model_server.model_repository_extension, kwargs,
                        model_server.grace_period, [model_config_handler(model_configs)], model_server.max_threads,
                        interceptors)


def add_rest_middleware(middleware, **options: Any) -> None:
    """Install the ASGI `middleware` class on kserve's REST app (`kserve.model_server.app`); call it before
    ModelServer.start (Starlette refuses middleware once the app has started)."""
    from kserve import model_server

    model_server.app.add_middleware(middleware, **options)


# -- the Triton transport on kserve's gRPC client ---------------------------------------------------------------

_forwarded: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("kserve_forwarded",
                                                                                         default=())


@contextlib.contextmanager
def forwarding(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Within this block, Triton calls carry the headers kserve forwards from a transformer's request to its
    predictor (x-request-id, x-b3-traceid), taken from `headers` (the incoming request's). Not `authorization`,
    which kserve would forward too: the caller's token is for the transformer, and a credential sent on to
    Triton is one more place it can leak from."""
    forwarded = append_forwardable_headers(dict(headers) if headers else None)
    token = _forwarded.set(tuple((k, v) for k, v in forwarded.items() if k.lower() != "authorization"))
    try:
        yield
    finally:
        _forwarded.reset(token)


class _Outputs:
    """An InferResponse read as a tritonclient result: `as_numpy(name)`."""

    def __init__(self, response) -> None:
        self.outputs = {o.name: o for o in response.outputs}

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs[name].as_numpy()


def _with_port(url: str, use_ssl: bool) -> str:
    return url if ":" in url else f"{url}:{443 if use_ssl else 80}"  # as InferenceGRPCClient completes it


class KServeTritonTransport:
    """`gateway.triton_client.Transport` over gRPC v2 with kserve's own client (tritonclient.grpc cannot be imported
    beside kserve). `url` is host[:port] of Triton's (the predictor's) gRPC endpoint."""

    def __init__(self, url: str, use_ssl: bool = False, retries: int = 0) -> None:
        self.url = _with_port(url, use_ssl)
        self.use_ssl = use_ssl
        self.client = InferenceGRPCClient(self.url, use_ssl=use_ssl, retries=retries, timeout=None)

    async def config(self, model: str, timeout_s: float) -> dict:
        """Triton's ModelConfig RPC, JSON as tritonclient gives it."""
        channel = (aio.secure_channel(self.url, grpc.ssl_channel_credentials()) if self.use_ssl
                   else aio.insecure_channel(self.url))
        try:
            call = channel.unary_unary(MODEL_CONFIG_METHOD,
                                       request_serializer=TRITON.ModelConfigRequest.SerializeToString,
                                       response_deserializer=TRITON.ModelConfigResponse.FromString)
            reply = await call(TRITON.ModelConfigRequest(name=model), timeout=timeout_s,
                               metadata=_forwarded.get() or None)
        finally:
            await channel.close()
        return model_config_json(reply.config)

    async def infer(self, model: str, categorical: np.ndarray, continuous: np.ndarray, timeout_s: float,
                    headers: dict[str, str] | None, version: str = "") -> Any:
        """One ModelInfer, pinned to the ensemble `version` when given; Triton's refusal (an unloaded version)
        is the grpc.aio.AioRpcError with Triton's message."""
        inputs = [InferInput("CATEGORICAL", list(categorical.shape), "INT64"),
                  InferInput("CONTINUOUS", list(continuous.shape), "FP32")]
        inputs[0].set_data_from_numpy(categorical, binary_data=True)  # raw_input_contents, as tritonclient sends
        inputs[1].set_data_from_numpy(continuous, binary_data=True)
        metadata = {**dict(_forwarded.get()), **(headers or {})}
        request = InferRequest(model_name=model, infer_inputs=inputs, model_version=version or None)
        response = await self.client.infer(request, timeout=timeout_s, headers=tuple(metadata.items()))
        return _Outputs(response)

    async def close(self) -> None:
        await self.client.close()


def transport_factory(use_ssl: bool = False, retries: int = 0):
    """url -> Transport for `ServingApp(cfg, transport=...)`: `http://HOST:PORT` (Triton's HTTP endpoint, e.g. the
    trace url) takes the gateway's default tritonclient.http transport, which imports fine beside kserve; anything
    else is gRPC v2 on kserve's client."""
    def make(url: str):
        if url.startswith("http://"):
            from gateway.triton_client import _Transport

            return _Transport(url)
        return KServeTritonTransport(url, use_ssl=use_ssl, retries=retries)

    return make
