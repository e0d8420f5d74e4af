"""`python -m gateway.kserve_transformer`: the gateway's product on the Open Inference Protocol v2, as a KServe
transformer.

One process, one `gateway.app.ServingApp` (session store, Triton client, ranker, `Gateway`), the same assembly as
`python -m gateway.server`, served two ways:

- KServe v2 (REST on --http_port 8080, gRPC on --grpc_port 8081), model `reranker`: by customer id, the answer is
  `Gateway.rank`, RankTiles' own code: the customer's linked visitors' sessions from the store (SQLite by default,
  Redis in the chart, shared with every replica and with the typed gateway), cached embeddings, Triton for the
  rest, the ranker. Triton is the predictor (`--predictor_host H:P --predictor_protocol grpc-v2`), called through
  kserve's own gRPC client (gateway/kserve_compat.py; tritonclient.grpc cannot be imported beside kserve), or
  over HTTP with `--predictor_protocol v2`.
- The typed `IntentGatewayService` (RecordEvents, LinkIdentity, UnlinkIdentity, ForgetCustomer, GetSessions,
  RankTiles, with gRPC health and reflection) on the gateway's --listen (GATEWAY_LISTEN, 127.0.0.1:50051 by
  default; the chart sets 0.0.0.0:50051), over the same ServingApp: events recorded and identities linked there
  are what the v2 endpoint ranks from, and ForgetCustomer forgets them for both. `--enable_gateway_grpc false`
  leaves it out.

Model `reranker` (v2 tensors; BYTES elements are UTF-8):

  inputs   CUSTOMER_ID   BYTES [1]   the customer: rank from their linked pre-login sessions in the store
           EVENTS        BYTES [E]   or, the stateless variant, the caller's events instead of the store's: one JSON
                                     web event each (RecordEvents' WebEvent fields: anonymous_id, ts, event_type, url,
                                     dwell_ms, device, referrer, query); E may be 0. Nothing is read from or written
                                     to the store (no embedding cache either). `--allow_events false` turns it off
           TILE_IDS      BYTES [T]   candidate tiles, 1..max_tiles, known to the ranker, no duplicates
           CONTEXT       BYTES [1]   optional JSON {"segment", "tenure_months", "products_held"}
           (exactly one of CUSTOMER_ID and EVENTS)
  outputs  TILE_IDS      BYTES [T]   the tiles, best first
           SCORES        FP32  [T]   their scores, same order
           INTENTS       BYTES [K]   top intent labels (K <= 3; 0 without sessions)
           INTENT_PROBS  FP32  [K]
           SESSIONS_USED INT32 [1]
           DEGRADED      BOOL  [1]   true when Triton failed or was late: the no-session ranking
  parameters  model_version (as RankTiles' model_version), degraded_reason

Who may call (gateway/auth.py, unless --auth none): an infer (REST /v2/models/reranker/infer, v1 :predict, gRPC
ModelInfer) needs `authorization: Bearer <JWT>` with the scope rank:read, checked as the typed service checks
it: no, garbled, expired or wrongly signed token -> 401 / UNAUTHENTICATED, no rank:read -> 403 /
PERMISSION_DENIED, with a JSON {"error"} (REST) that names no id. Health, readiness, metadata, ModelConfig and
/metrics stay open (kubelet probes, perf_analyzer's set-up, Prometheus); repository load/unload is refused to
everyone. The typed service on --listen gets mTLS and the same tokens from GatewayServer.

A bad request is a 400 (REST) / INVALID_ARGUMENT (gRPC) naming the tensor (`TILE_IDS[1]: unknown tile ...`), as
the gateway's gRPC API names the field. Start-up is the gateway's (`ServingApp.start`: artifacts that are not the
model manifest's, or a Triton serving another model set, stop it; a Triton not up yet only degrades answers until
the reloader finds it, and new model sets are followed without a restart); until it is done the model is not ready
(`/v2/models/reranker/ready` is 503) and the typed service is not started.

Traces: with the gateway's `OTEL_*` settings, each v2 request is a `reranker.infer` server span continuing the
caller's `traceparent` (REST header or gRPC metadata), with the gateway's spans inside (`store.lookup`,
`featurize`, `triton.infer`, `rank`); a sampled `triton.infer` hands its context to Triton (start Triton with
`--trace-config rate=0`, as for the gateway). The typed service traces as the gateway does. Metrics: KServe's on
the REST port's /metrics, the gateway's on OTEL_EXPORTER_PROMETHEUS_PORT.

So that Triton's perf_analyzer (and tritonclient) can drive it like a Triton model: ModelMetadata lists the tensors
above, the v2 gRPC server also answers Triton's ModelConfig RPC, and a gRPC request sent with raw_input_contents
is answered with raw_output_contents, as Triton answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from gateway import auth
from gateway.api import pb
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, startup_error
from gateway.service import Ranking
from gateway.telemetry import METRICS, TelemetrySettings, setup, tracer

log = logging.getLogger("gateway.kserve")
MODEL_NAME = "reranker"
# (name, v2 datatype, shape, optional): the reranker's tensors, for ModelMetadata and ModelConfig
INPUTS = (("CUSTOMER_ID", "BYTES", [1], True), ("EVENTS", "BYTES", [-1], True), ("TILE_IDS", "BYTES", [-1], False),
          ("CONTEXT", "BYTES", [1], True))
OUTPUTS = (("TILE_IDS", "BYTES", [-1]), ("SCORES", "FP32", [-1]), ("INTENTS", "BYTES", [-1]),
           ("INTENT_PROBS", "FP32", [-1]), ("SESSIONS_USED", "INT32", [1]), ("DEGRADED", "BOOL", [1]))
_NUMPY = {"BYTES": np.object_, "FP32": np.float32, "INT32": np.int32, "BOOL": np.bool_}
_TENSOR_OF_FIELD = {"customer_id": "CUSTOMER_ID", "tile_ids": "TILE_IDS", "context": "CONTEXT", "events": "EVENTS"}


def inputs(allow_events: bool = True) -> tuple:
    return tuple(i for i in INPUTS if allow_events or i[0] != "EVENTS")


def model_config(name: str, allow_events: bool = True) -> dict:
    """The reranker's Triton ModelConfig, as JSON: no batching (max_batch_size 0), the tensors of INPUTS and OUTPUTS;
    what perf_analyzer reads before it sends load."""
    def dtype(datatype: str) -> str:
        return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"

    return {"name": name, "backend": "python", "max_batch_size": 0,
            "input": [{"name": n, "data_type": dtype(d), "dims": s, "optional": o}
                      for n, d, s, o in inputs(allow_events)],
            "output": [{"name": n, "data_type": dtype(d), "dims": s} for n, d, s in OUTPUTS]}


# -- requests --------------------------------------------------------------------------------------------------

def _invalid(field: str, why: str):
    from kserve.errors import InvalidInput

    return InvalidInput(f"{field}: {why}")


def _strings(tensor) -> list[str]:
    """A BYTES tensor's elements as str, however it came: REST (a list), gRPC typed contents, or raw_input_contents
    (as tritonclient and perf_analyzer send them)."""
    try:
        values = tensor.as_numpy().ravel().tolist()
    except (ValueError, TypeError):
        raise _invalid(tensor.name, f"data does not match shape {list(tensor.shape)}") from None
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError:
        raise _invalid(tensor.name, "elements must be UTF-8") from None


def _json_problem(exc: Exception) -> str:
    """Why a JSON document did not parse into the contract, naming fields but never echoing values (ids)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at char {exc.pos})"
    fields = re.findall(r'field named "(\w+)"|Failed to parse (\w+) field', str(exc))
    names = sorted({a or b for a, b in fields})
    return f"bad field {', '.join(names)}" if names else "not an object of the contract's fields"


@dataclass(frozen=True)
class Call:
    """One v2 request, parsed: the RankTilesRequest, and for the stateless variant the caller's events."""

    request: pb.RankTilesRequest
    events: list[pb.WebEvent] | None  # None: by customer id, from the store
    raw_outputs: bool  # a gRPC request with raw_input_contents: answer with raw_output_contents


STATELESS = "(events)"
"""customer_id of a stateless request's RankTilesRequest: never looked up (the sessions are the caller's events);
set only because the gateway's request check requires one."""


def parse(payload, allow_events: bool = True) -> Call:
    """The v2 request -> Call, or InvalidInput naming the tensor."""
    tensors: dict = {}
    for tensor in payload.inputs:
        if tensor.name in tensors:
            raise _invalid(tensor.name, "sent twice")
        tensors[tensor.name] = tensor
    known = [n for n, *_ in inputs(allow_events)]
    if "EVENTS" in tensors and not allow_events:
        raise _invalid("EVENTS", "the stateless variant is off on this server (--allow_events false): send "
                                 "CUSTOMER_ID")
    unknown = sorted(set(tensors) - set(known))
    if unknown:
        raise _invalid("inputs", f"unknown tensors {unknown}; the model takes {known}")
    for name, tensor in tensors.items():
        if tensor.datatype != "BYTES":
            raise _invalid(name, f"datatype must be BYTES, got {tensor.datatype}")
    if "TILE_IDS" not in tensors:
        raise _invalid("TILE_IDS", "required")
    by_customer = "CUSTOMER_ID" in tensors
    if by_customer and "EVENTS" in tensors:
        raise _invalid("CUSTOMER_ID", "send CUSTOMER_ID (sessions from the store) or EVENTS (the caller's events), "
                                      "not both")
    if not by_customer and "EVENTS" not in tensors:
        raise _invalid("CUSTOMER_ID", "required" + (" (or EVENTS, the caller's own events)" if allow_events else ""))
    request = pb.RankTilesRequest(tile_ids=_strings(tensors["TILE_IDS"]))
    if by_customer:
        ids = _strings(tensors["CUSTOMER_ID"])
        if len(ids) != 1:
            raise _invalid("CUSTOMER_ID", f"one element expected, got {len(ids)}")
        request.customer_id = ids[0]
    else:
        request.customer_id = STATELESS
    if "CONTEXT" in tensors:
        docs = _strings(tensors["CONTEXT"])
        if len(docs) != 1:
            raise _invalid("CONTEXT", f"one JSON object expected, got {len(docs)} elements")
        try:
            json_format.ParseDict(json.loads(docs[0]), request.context)
        except (ValueError, json_format.ParseError, AttributeError, TypeError) as exc:
            raise _invalid("CONTEXT", _json_problem(exc)) from None
    events = None
    if not by_customer:
        events = []
        for i, doc in enumerate(_strings(tensors["EVENTS"])):
            try:
                events.append(json_format.ParseDict(json.loads(doc), pb.WebEvent()))
            except (ValueError, json_format.ParseError, AttributeError, TypeError) as exc:
                raise _invalid(f"EVENTS[{i}]", _json_problem(exc)) from None
    return Call(request, events, bool(payload.from_grpc and payload.use_binary_outputs))


def _as_invalid_input(exc: GatewayError):
    """The gateway's INVALID_ARGUMENT (a BadRequest of proto field paths) as InvalidInput naming the tensors."""
    violations: list[tuple[str, str]] = []
    details = dict(exc.status.trailing_metadata or ()).get("grpc-status-details-bin")
    if details:
        for detail in status_pb2.Status.FromString(details).details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [(v.field, v.description) for v in bad.field_violations]
    if not violations:
        return _invalid("request", exc.status.details)

    def tensor(path: str) -> str:  # customer_id -> CUSTOMER_ID, tile_ids[1] -> TILE_IDS[1], events[0].ts -> ...
        head = re.match(r"[a-z_]*", path).group(0)
        return _TENSOR_OF_FIELD[head] + path[len(head):] if head in _TENSOR_OF_FIELD else path

    from kserve.errors import InvalidInput

    shown = "; ".join(f"{tensor(f)}: {d}" for f, d in violations[:3])
    more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
    return InvalidInput(f"invalid request: {shown}{more}")


# -- answers ---------------------------------------------------------------------------------------------------

def response(ranking: Ranking, request_id: str, model_name: str, raw_outputs: bool):
    from kserve import InferOutput, InferResponse

    values = {"TILE_IDS": [t for t, _ in ranking.tiles], "SCORES": [s for _, s in ranking.tiles],
              "INTENTS": [lb for lb, _ in ranking.intents], "INTENT_PROBS": [p for _, p in ranking.intents],
              "SESSIONS_USED": [ranking.sessions_used], "DEGRADED": [ranking.degraded]}
    outputs = []
    for name, dtype, _ in OUTPUTS:
        data = values[name]
        if not raw_outputs:
            outputs.append(InferOutput(name, [len(data)], dtype, data))
            continue
        # every output raw, even an empty one, so that raw_output_contents line up with the outputs
        out = InferOutput(name, [len(data)], dtype)
        out.set_data_from_numpy(np.array([x.encode() for x in data] if dtype == "BYTES" else data,
                                         dtype=_NUMPY[dtype]), binary_data=True)
        outputs.append(out)
    return InferResponse(request_id, model_name, outputs, use_binary_outputs=raw_outputs,
                         parameters={"model_version": ranking.model_version, "degraded_reason": ranking.reason})


# -- the model -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    allow_events: bool = True
    """Serve the stateless EVENTS variant."""
    gateway_grpc: bool = True
    """Serve the typed IntentGatewayService on cfg.listen from the same ServingApp."""


def build_model(name: str, cfg: GatewayConfig, telemetry: TelemetrySettings, transport, options: Options,
                v2_grpc=None):
    """The kserve.Model serving `name` over one ServingApp built from `cfg` with `transport` (a Triton transport
    factory, see gateway/kserve_compat.py). It is a kserve "engine" model: ModelServer runs `start_engine()` in its
    event loop (it builds and starts the ServingApp, then the typed gRPC server and `v2_grpc`, the v2 gRPC server
    with Triton's ModelConfig, and serves until stopped) and calls `stop_engine()` on shutdown.

    kserve is imported here and in main(), never at import time (it parses sys.argv when imported)."""
    import kserve
    from kserve.errors import ServerNotReady

    from gateway import kserve_compat as compat
    from gateway.app import ServingApp
    from gateway.server import GatewayServer

    class Reranker(kserve.Model):
        def __init__(self) -> None:
            super().__init__(name, return_response_headers=False)
            self.ready = True  # so that ModelServer registers it; not ready again until start_engine is done
            self.engine = True
            self.app: ServingApp | None = None
            self.typed: GatewayServer | None = None
            self._loop: asyncio.AbstractEventLoop | None = None
            self._stopping: asyncio.Event | None = None

        def start(self) -> None:  # ModelServer calls it after registering the model
            self.ready = False

        def load(self) -> bool:  # the data plane calls it for a model that is not ready: readiness is the engine's
            return self.ready

        async def start_engine(self) -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            try:
                await self._start()
                await self._stopping.wait()
            finally:
                await self._stop()

        def stop_engine(self) -> None:  # from ModelServer.stop (a signal handler)
            self.ready = False
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._stopping.set)

        async def _start(self) -> None:
            self.app = ServingApp(cfg, transport=transport)  # refuses artifacts that are not the manifest's
            await self.app.start()  # refuses a Triton serving another model set; one not up yet only degrades
            if v2_grpc is not None:
                await v2_grpc.serve()
            if options.gateway_grpc:
                self.typed = GatewayServer(cfg, telemetry, app=self.app)
                await self.typed.start()
            self.ready = True
            log.info("reranker ready (model %s; stateless EVENTS %s; typed service %s)",
                     self.app.gateway.model_version, "on" if options.allow_events else "off",
                     f"on port {self.typed.port}" if self.typed else "off")

        async def _stop(self) -> None:
            self.ready = False
            if self.typed is not None:
                await self.typed.stop()
            if v2_grpc is not None:
                await v2_grpc.stop()
            if self.app is not None:
                await self.app.stop()

        def get_input_types(self) -> list[dict]:
            return [{"name": n, "datatype": d, "shape": s} for n, d, s, _ in inputs(options.allow_events)]

        def get_output_types(self) -> list[dict]:
            return [{"name": n, "datatype": d, "shape": s} for n, d, s in OUTPUTS]

        async def __call__(self, body, headers: dict[str, str] | None = None, *args, **kwargs):
            """The request as one server span that continues the caller's W3C context (REST headers or gRPC
            metadata); the gateway's spans run inside it."""
            with tracer.start_as_current_span(f"{name}.infer", context=propagate.extract(headers or {}),
                                              kind=SpanKind.SERVER):
                return await super().__call__(body, headers, *args, **kwargs)

        async def predict(self, payload, headers=None, response_headers=None):
            if not self.ready or self.app is None:
                raise ServerNotReady("the reranker is starting (store, Triton's model config) or stopping")
            call = parse(payload, options.allow_events)
            gateway = self.app.gateway
            try:
                with compat.forwarding(headers):
                    if call.events is None:
                        ranking = await gateway.rank(call.request)
                    else:
                        ranking = await gateway.rank_events(call.request, call.events)
            except GatewayError as exc:
                raise _as_invalid_input(exc) from None
            if ranking.degraded:
                METRICS.degraded.labels("reranker").inc()
                log.warning("degraded ranking (%s): %s", "stateless" if call.events is not None else "by customer",
                            ranking.reason)
            return response(ranking, payload.id or "", self.name, call.raw_outputs)

    return Reranker()


# -- who may call ------------------------------------------------------------------------------------------------

INFER_SCOPE = "rank:read"
V2_GRPC_PREFIX = "/inference.GRPCInferenceService/"
V2_GRPC_OPEN = frozenset({"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig"})
"""v2 gRPC methods without a token (probes, perf_analyzer's and tritonclient's set-up); ModelInfer needs rank:read,
repository load/unload is refused."""
_REST_OPEN = re.compile(r"/(metrics|v2|v2/health/(live|ready)|v2/models|v2/models/[^/]+(/versions/[^/]+)?(/ready)?"
                        r"|v1/models(/[^/:]+)?)?/?")
_REST_INFER = re.compile(r"/(v2/models/[^/]+(/versions/[^/]+)?/infer|v1/models/[^/:]+:predict)")


def v2_grpc_interceptor(verifier: auth.TokenVerifier) -> auth.AuthInterceptor:
    return auth.AuthInterceptor(verifier, {"ModelInfer": INFER_SCOPE}, V2_GRPC_PREFIX, V2_GRPC_OPEN)


class RestTokenCheck:
    """ASGI middleware on kserve's REST app: an infer needs a bearer token with rank:read (401 / 403 with a JSON
    error otherwise); health, readiness, metadata and /metrics stay open; anything else is refused."""

    def __init__(self, app, verifier: auth.TokenVerifier) -> None:
        self.app, self.verifier = app, verifier

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope["method"] in ("GET", "HEAD") and _REST_OPEN.fullmatch(scope["path"])):
            await self.app(scope, receive, send)
            return
        try:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ())]
            principal = self.verifier.verify(auth.bearer_token(headers))
            if not _REST_INFER.fullmatch(scope["path"]):
                raise auth.AuthError(grpc.StatusCode.PERMISSION_DENIED, "no scope grants this endpoint")
            if INFER_SCOPE not in principal.scopes:
                raise auth.missing_scope(INFER_SCOPE, "infer")
        except auth.AuthError as exc:
            log.info("refused %s %s: %s", scope["method"], "infer" if _REST_INFER.fullmatch(scope["path"]) else
                     "endpoint", exc.message)
            await _refuse(send, exc)
            return
        await self.app(scope, receive, send)


async def _refuse(send, error: auth.AuthError) -> None:
    unauthenticated = error.code == grpc.StatusCode.UNAUTHENTICATED
    body = json.dumps({"error": error.message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if unauthenticated:
        headers.append((b"www-authenticate", b'Bearer realm="intent-gateway"'))
    await send({"type": "http.response.start", "status": 401 if unauthenticated else 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- command line ----------------------------------------------------------------------------------------------

def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")
    return text in ("true", "1", "yes", "on")


def parser() -> argparse.ArgumentParser:
    """KServe's model-server flags (--http_port, --grpc_port, --predictor_host, --predictor_protocol, ...), the
    transformer's own (--allow_events, --enable_gateway_grpc) and the gateway's settings (--store, --listen,
    --artifacts, --triton-model, ...; env GATEWAY_*)."""
    from kserve import model_server

    p = argparse.ArgumentParser(prog="python -m gateway.kserve_transformer", parents=[model_server.parser],
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--allow_events", type=_flag, default=True,
                   help="serve the stateless variant (an EVENTS input instead of CUSTOMER_ID); default true")
    p.add_argument("--enable_gateway_grpc", type=_flag, default=True,
                   help="also serve the typed IntentGatewayService on --listen (GATEWAY_LISTEN); default true")
    GatewayConfig.add_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    from kserve import ModelServer
    from kserve.predictor_config import PredictorConfig

    from gateway import kserve_compat as compat
    from gateway.server import JsonFormatter

    host, protocol = args["predictor_host"], args["predictor_protocol"]
    if protocol not in ("grpc-v2", "v2") or not host:
        print("--predictor_host HOST:PORT and --predictor_protocol grpc-v2 (or v2, Triton's HTTP) are required",
              file=sys.stderr)
        return 2
    if protocol == "v2" and args["predictor_use_ssl"]:
        print("--predictor_use_ssl needs --predictor_protocol grpc-v2", file=sys.stderr)
        return 2
    gateway_args = {k: args.get(k) for k in GatewayConfig.__dataclass_fields__}
    gateway_args["triton_url"] = host if protocol == "grpc-v2" else f"http://{host}"
    cfg = GatewayConfig.load(args.get("config"), overrides=gateway_args)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    gateway_log = logging.getLogger("gateway")
    gateway_log.addHandler(handler)
    gateway_log.setLevel(cfg.log_level)
    gateway_log.propagate = False
    compat.warn_if_other_kserve()

    name = args["model_name"] if args["model_name"] != "model" else MODEL_NAME
    options = Options(allow_events=args["allow_events"], gateway_grpc=args["enable_gateway_grpc"])
    telemetry = TelemetrySettings.from_env()
    predictor = PredictorConfig(predictor_host=host, predictor_protocol=protocol,
                                predictor_use_ssl=args["predictor_use_ssl"],
                                predictor_request_timeout_seconds=args["predictor_request_timeout_seconds"],
                                predictor_request_retries=args["predictor_request_retries"])
    # v2 gRPC is served by the model's engine (compat.V2GrpcServer), not by ModelServer, so that it also answers
    # Triton's ModelConfig
    server = ModelServer(http_port=args["http_port"], grpc_port=args["grpc_port"], workers=1, enable_grpc=False,
                         enable_docs_url=False, enable_latency_logging=args["enable_latency_logging"],
                         predictor_config=predictor)
    try:
        verifier = auth.verifier(cfg)
    except (FileNotFoundError, ValueError, OSError) as exc:
        log.error("%s", startup_error(exc))
        return 2
    if verifier is None:
        log.warning("AUTH IS OFF (auth: none): the v2 endpoints take no token. For local experiments only.")
    else:
        compat.add_rest_middleware(RestTokenCheck, verifier=verifier)
    v2_grpc = (compat.v2_grpc_server(server, args["grpc_port"], args, {name: model_config(name, options.allow_events)},
                                     [v2_grpc_interceptor(verifier)] if verifier is not None else [])
               if args["enable_grpc"] else None)
    transport = compat.transport_factory(use_ssl=args["predictor_use_ssl"], retries=args["predictor_request_retries"])
    model = build_model(name, cfg, telemetry, transport, options, v2_grpc)
    provider = setup(telemetry)  # OTEL_* as for the gateway; nothing when unset
    try:
        server.start([model])
    except (FileNotFoundError, ValueError, OSError) as exc:
        log.error("%s", startup_error(exc))
        return 2
    finally:
        if provider is not None:
            provider.shutdown()  # flush the last spans
    return 0


if __name__ == "__main__":
    sys.exit(main())
