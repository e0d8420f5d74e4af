"""The product under KServe: `python -m gateway.kserve_transformer` (the real kserve ModelServer, its own process) in
front of the real Triton over grpc-v2, serving KServe v2 (REST and gRPC) and the typed IntentGatewayService from
one ServingApp, over loopback.

By customer id the v2 answer is RankTiles' own (sessions of the linked visitors from the store the typed service
writes, the same ranking); ForgetCustomer through the typed service forgets them for v2 too; bad inputs are
400 / INVALID_ARGUMENT naming the tensor; the stateless events-in variant still works (kserve's own REST and gRPC
clients, typed tensor contents) and can be turned off. With Redis (the chart's store), a typed gateway process and
the transformer share one store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.api import pb, pb_grpc
from gateway.errors import field_violations
from gateway.pki import LocalPKI
from harness import client
from harness.processes import GatewayProcess, stop
from harness.workload import event_json, to_message
from training.core.ranker import Ranker
from training.export.triton_server import free_ports

DAY_MS = 86_400_000
TILES = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan"]
CONTEXT = {"segment": "mass", "tenure_months": 12, "products_held": ["checking"]}
SECRET_CUSTOMER = "C-never-in-a-log-7311"  # sent only in requests that fail: must appear in no answer and no log


@dataclass
class Transformer:
    """The transformer process: KServe v2 on http_port / grpc_port, the typed service on typed_port."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    typed_port: int
    log: Path
    channel: grpc.Channel = field(init=False)

    @property
    def pki_dir(self) -> Path:
        return self.log.parent / "pki"

    def token(self, scopes=("rank:read",)) -> str:
        return client.bearer(self.pki_dir, scopes)

    def __post_init__(self) -> None:
        self.channel = client.channel(f"127.0.0.1:{self.typed_port}", pki_dir=self.pki_dir)
        self.stub = pb_grpc.IntentGatewayServiceStub(self.channel)

    def stop(self) -> int:
        self.channel.close()
        return stop(self.process)


def start(triton, artifacts: Path, as_of: int, store: str, log: Path, *flags: str) -> Transformer:
    """`python -m gateway.kserve_transformer` in front of `triton` (a TritonServer; its repository's model manifest)
    on free loopback ports, once its model is ready (which is after the typed service started)."""
    http_port, grpc_port, typed_port = free_ports(3)
    args = [sys.executable, "-m", "gateway.kserve_transformer", "--predictor_host", triton.grpc_url,
            "--predictor_protocol", "grpc-v2", "--http_port", str(http_port), "--grpc_port", str(grpc_port),
            "--listen", f"127.0.0.1:{typed_port}", "--store", store, "--artifacts", str(artifacts),
            "--as-of", str(as_of), "--triton-timeout-s", "5", "--max-batch-events", "100",
            "--manifest", str(Path(triton.repository) / "manifest.json"), "--pki-dir", str(log.parent / "pki"), *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWAY_"))}
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/reranker/ready", timeout=1) as r:
                if r.status == 200:
                    return Transformer(process, http_port, grpc_port, typed_port, log)
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"kserve transformer did not start: {log.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def kserve_app(triton, gw_artifacts, visitor, tmp_path_factory):
    work = tmp_path_factory.mktemp("kserve_app")
    t = start(triton, gw_artifacts, visitor[1][-1].ts + DAY_MS, f"sqlite://{work / 'store.db'}",
              work / "transformer.log")
    yield t
    assert t.stop() == 0, t.log.read_text()[-3000:]  # SIGTERM: a clean shutdown of both servers
    assert SECRET_CUSTOMER not in t.log.read_text()


# -- clients ---------------------------------------------------------------------------------------------------

MINE = object()
"""`token=MINE`: a token of the transformer's PKI with rank:read (the default)."""


def rest(t: Transformer, tensors: dict[str, list[str]], token: str | object | None = MINE) -> tuple[int, dict]:
    """POST /v2/models/reranker/infer with BYTES tensors and `token` (None: no Authorization): (status, JSON body)."""
    body = {"inputs": [{"name": k, "shape": [len(v)], "datatype": "BYTES", "data": v} for k, v in tensors.items()]}
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {t.token() if token is MINE else token}"
    req = urllib.request.Request(f"http://127.0.0.1:{t.http_port}/v2/models/reranker/infer",
                                 data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def rest_outputs(doc: dict) -> dict:
    return {o["name"]: o["data"] for o in doc["outputs"]}


def grpc_v2(t: Transformer, tensors: dict[str, list[str]], token: str | object | None = MINE):
    """ModelInfer with tritonclient.grpc (raw_input_contents, as perf_analyzer sends) and `token`: the InferResult."""
    import tritonclient.grpc as triton_grpc

    headers = None if token is None else {"authorization": f"Bearer {t.token() if token is MINE else token}"}
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{t.grpc_port}") as v2:
        inputs = []
        for name, values in tensors.items():
            tensor = triton_grpc.InferInput(name, [len(values)], "BYTES")
            tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
            inputs.append(tensor)
        return v2.infer("reranker", inputs, client_timeout=30, headers=headers)


def grpc_error(t: Transformer, tensors: dict[str, list[str]], token: str | object | None = MINE):
    import tritonclient.grpc as triton_grpc

    with pytest.raises(triton_grpc.InferenceServerException) as info:
        grpc_v2(t, tensors, token)
    return info.value


def by_customer(customer: str, tiles=TILES) -> dict[str, list[str]]:
    return {"CUSTOMER_ID": [customer], "TILE_IDS": list(tiles), "CONTEXT": [json.dumps(CONTEXT)]}


def rank_tiles(stub, customer: str) -> pb.RankTilesResponse:
    return stub.RankTiles(pb.RankTilesRequest(customer_id=customer, tile_ids=TILES, context=pb.CustomerContext(
        segment=CONTEXT["segment"], tenure_months=CONTEXT["tenure_months"], products_held=CONTEXT["products_held"])),
        timeout=30)


def assert_same_ranking(v2: dict, typed: pb.RankTilesResponse, model_version: str) -> None:
    assert v2["TILE_IDS"] == [t.tile_id for t in typed.tiles]
    np.testing.assert_allclose(v2["SCORES"], [t.score for t in typed.tiles], rtol=1e-6, atol=1e-6)
    assert v2["INTENTS"] == [i.label for i in typed.intents]
    np.testing.assert_allclose(v2["INTENT_PROBS"], [i.probability for i in typed.intents], rtol=1e-6, atol=1e-6)
    assert v2["SESSIONS_USED"] == [typed.sessions_used] and v2["DEGRADED"] == [typed.degraded] == [False]
    assert model_version == typed.model_version != ""


def visitor_as(events, anonymous_id: str) -> list:
    return [e.model_copy(update={"anonymous_id": anonymous_id}) for e in events]


# -- by customer, from the store the typed service writes ----------------------------------------------------------

def test_by_customer_after_a_login_is_rank_tiles_answer(kserve_app, visitor):
    """RecordEvents with a login event (the typed service of the same process) links the visitor; the v2 answer by
    customer id, over REST and over gRPC, is RankTiles' answer for that customer: same tiles, scores, intents,
    sessions and model_version."""
    anon, events = visitor
    stub = kserve_app.stub
    customer = "C-kserve-login"
    assert rest_outputs(rest(kserve_app, by_customer(customer))[1])["SESSIONS_USED"] == [0]  # nobody linked yet
    recorded = stub.RecordEvents(pb.RecordEventsRequest(events=[to_message(e) for e in events[:50]]), timeout=30)
    assert recorded.accepted == min(50, len(events))
    login = pb.WebEvent(anonymous_id=anon, ts=str(events[min(50, len(events)) - 1].ts + 1), event_type="login",
                        url="/login", customer_id=customer)
    assert stub.RecordEvents(pb.RecordEventsRequest(events=[login]), timeout=10).links_created == 1

    status, doc = rest(kserve_app, by_customer(customer))
    assert status == 200, doc
    typed = rank_tiles(stub, customer)
    assert typed.sessions_used > 0 and len(typed.intents) == 3
    assert_same_ranking(rest_outputs(doc), typed, doc["parameters"]["model_version"])
    result = grpc_v2(kserve_app, by_customer(customer))
    raw = {o: result.as_numpy(o).tolist() for o in ("TILE_IDS", "SCORES", "INTENTS", "INTENT_PROBS",
                                                    "SESSIONS_USED", "DEGRADED")}
    raw["TILE_IDS"], raw["INTENTS"] = [x.decode() for x in raw["TILE_IDS"]], [x.decode() for x in raw["INTENTS"]]
    assert_same_ranking(raw, typed, result.get_response().parameters["model_version"].string_param)
    # the typed GetSessions sees what v2 ranked from
    sessions = stub.GetSessions(pb.GetSessionsRequest(customer_id=customer), timeout=30)
    assert len(sessions.sessions) == typed.sessions_used and sessions.model_version == typed.model_version


def test_link_identity_then_forget_customer(kserve_app, visitor):
    """LinkIdentity through the typed service makes a visitor's sessions count for v2; after ForgetCustomer the v2
    answer has no sessions (the no-session ranking, not degraded) and GetSessions knows no such customer."""
    _, events = visitor
    stub, customer, anon = kserve_app.stub, "C-kserve-forget", "anon-kserve-forget"
    mine = visitor_as(events[:40], anon)
    stub.RecordEvents(pb.RecordEventsRequest(events=[to_message(e) for e in mine]), timeout=30)
    assert stub.LinkIdentity(pb.LinkIdentityRequest(anonymous_id=anon, customer_id=customer), timeout=10).created
    before = rest_outputs(rest(kserve_app, by_customer(customer))[1])
    assert before["SESSIONS_USED"][0] > 0 and len(before["INTENTS"]) == 3

    forgot = stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id=customer), timeout=10)
    assert forgot.links_deleted == 1 and forgot.events_deleted == len(mine)
    status, doc = rest(kserve_app, by_customer(customer))
    after = rest_outputs(doc)
    assert status == 200 and after["SESSIONS_USED"] == [0] and after["INTENTS"] == [] and after["DEGRADED"] == [False]
    assert sorted(after["TILE_IDS"]) == sorted(TILES)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSessions(pb.GetSessionsRequest(customer_id=customer), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- bad requests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tensors, named", [
    ({"CUSTOMER_ID": [SECRET_CUSTOMER], "TILE_IDS": ["tile_auto_loan", "nope"]}, "TILE_IDS[1]"),
    ({"CUSTOMER_ID": [SECRET_CUSTOMER], "TILE_IDS": ["tile_auto_loan", "tile_auto_loan"]}, "TILE_IDS[1]"),
    ({"CUSTOMER_ID": [""], "TILE_IDS": TILES}, "CUSTOMER_ID"),
    ({"CUSTOMER_ID": [SECRET_CUSTOMER, "C-2"], "TILE_IDS": TILES}, "CUSTOMER_ID"),
    ({"TILE_IDS": TILES}, "CUSTOMER_ID"),
    ({"CUSTOMER_ID": [SECRET_CUSTOMER]}, "TILE_IDS"),
    ({"CUSTOMER_ID": [SECRET_CUSTOMER], "EVENTS": [], "TILE_IDS": TILES}, "CUSTOMER_ID"),
    ({"CUSTOMER_ID": [SECRET_CUSTOMER], "TILE_IDS": TILES, "SEGMENT": ["mass"]}, "SEGMENT"),
    ({"CUSTOMER_ID": [SECRET_CUSTOMER], "TILE_IDS": TILES, "CONTEXT": ["{not json"]}, "CONTEXT"),
    ({"CUSTOMER_ID": [SECRET_CUSTOMER], "TILE_IDS": TILES, "CONTEXT": ['{"tenure_months": -1}']},
     "CONTEXT.tenure_months"),
    ({"EVENTS": ['{"anonymous_id": "' + SECRET_CUSTOMER + '", "ts": "yesterday", "url": "/a"}'], "TILE_IDS": TILES},
     "EVENTS[0].ts"),
    ({"EVENTS": ['{"anonymous_id": 7, "colour": "' + SECRET_CUSTOMER + '"}'], "TILE_IDS": TILES}, "EVENTS[0]"),
])
def test_bad_inputs_are_client_errors_naming_the_tensor(kserve_app, tensors, named):
    status, doc = rest(kserve_app, tensors)
    assert status == 400 and named in doc["error"], doc
    error = grpc_error(kserve_app, tensors)
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and named in error.message(), error
    assert SECRET_CUSTOMER not in doc["error"] + error.message()  # ids are never echoed


# -- who may call ------------------------------------------------------------------------------------------------

def _tokens(t: Transformer, tmp_path: Path) -> dict[str, str | None]:
    return {"no token": None, "wrong scope": t.token(["events:write", "sessions:read"]),
            "bad signature": LocalPKI(tmp_path / "other-pki").mint_token(["rank:read"]),
            "expired": LocalPKI(t.pki_dir).mint_token(["rank:read"], ttl_s=-3600)}


@pytest.mark.parametrize("case", ["no token", "wrong scope", "bad signature", "expired"])
def test_an_infer_needs_a_token_with_rank_read(kserve_app, case, tmp_path):
    """REST: 401 (no, bad or expired token) / 403 (no rank:read) with a JSON error; gRPC: UNAUTHENTICATED /
    PERMISSION_DENIED. Neither names the customer."""
    token = _tokens(kserve_app, tmp_path)[case]
    tensors = by_customer(SECRET_CUSTOMER)
    status, doc = rest(kserve_app, tensors, token)
    error = grpc_error(kserve_app, tensors, token)
    if case == "wrong scope":
        assert status == 403 and "rank:read" in doc["error"], doc
        assert error.status() == "StatusCode.PERMISSION_DENIED" and "rank:read" in error.message()
    else:
        assert status == 401 and doc["error"], doc
        assert error.status() == "StatusCode.UNAUTHENTICATED", error
    assert SECRET_CUSTOMER not in doc["error"] + error.message()


def test_probes_and_metadata_need_no_token_and_the_repository_api_is_refused(kserve_app):
    import tritonclient.grpc as triton_grpc

    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/reranker/ready", "/v2/models/reranker"):
        with urllib.request.urlopen(f"http://127.0.0.1:{kserve_app.http_port}{path}", timeout=10) as r:
            assert r.status == 200, path
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{kserve_app.grpc_port}") as v2:
        assert v2.is_server_ready() and v2.is_model_ready("reranker")
        assert v2.get_model_config("reranker", as_json=True)["config"]["name"] == "reranker"
        with pytest.raises(triton_grpc.InferenceServerException) as info:
            v2.unload_model("reranker", headers={"authorization": f"Bearer {kserve_app.token()}"})
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    req = urllib.request.Request(f"http://127.0.0.1:{kserve_app.http_port}/v2/repository/models/reranker/unload",
                                 data=b"{}", headers={"Authorization": f"Bearer {kserve_app.token()}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403
    assert rest(kserve_app, by_customer("C-still-served"))[0] == 200  # nothing was unloaded


# -- the stateless variant ------------------------------------------------------------------------------------

# kserve's clients run in a child process: tritonclient.grpc (loaded here by the Triton fixtures) and kserve
# register clashing protos of package `inference` in one process.
CLIENT = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

http_port, grpc_port, token, calls = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.stdin.read())
headers = {"authorization": f"Bearer {token}"}

def request(call):
    inputs = [InferInput("EVENTS", [len(call["events"])], "BYTES", call["events"]),
              InferInput("TILE_IDS", [len(call["tiles"])], "BYTES", call["tiles"])]
    if call.get("context") is not None:
        inputs.append(InferInput("CONTEXT", [1], "BYTES", [json.dumps(call["context"])]))
    return InferRequest(model_name="reranker", infer_inputs=inputs, request_id="r-1")

def outputs(response):
    out = {}
    for o in response.outputs:
        value = np.array(o.data) if isinstance(o.data, list) else o.as_numpy()
        out[o.name] = [x.decode() if isinstance(x, bytes) else x for x in np.asarray(value).ravel().tolist()]
    return out

async def main():
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    grpc_client = InferenceGRPCClient(f"127.0.0.1:{grpc_port}", timeout=30)
    results = []
    try:
        for call in calls:
            if call["via"] == "rest":
                r = await rest.infer(f"http://127.0.0.1:{http_port}", request(call), model_name="reranker",
                                     headers=headers)
            else:
                r = await grpc_client.infer(request(call), headers=tuple(headers.items()))
            results.append(outputs(r))
    finally:
        await rest.close()
        await grpc_client.close()
    print(json.dumps(results))

asyncio.run(main())
"""


def kserve_calls(t: Transformer, calls: list[dict]) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", CLIENT, str(t.http_port), str(t.grpc_port), t.token()],
                          input=json.dumps(calls),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_stateless_variant_ranks_the_callers_events(kserve_app, visitor, gw_artifacts):
    """EVENTS instead of CUSTOMER_ID: kserve's REST and gRPC clients get the same ranking of the events sent, which
    touch nothing in the store."""
    _, events = visitor
    anon = "anon-kserve-stateless"
    evs = [event_json(e) for e in visitor_as(events[:50], anon)]
    rest_out, grpc_out, none = kserve_calls(kserve_app, [
        {"via": "rest", "events": evs, "tiles": TILES, "context": CONTEXT},
        {"via": "grpc", "events": evs, "tiles": TILES, "context": CONTEXT},
        {"via": "grpc", "events": [], "tiles": TILES[:2]}])
    assert rest_out["DEGRADED"] == [False] and rest_out["SESSIONS_USED"][0] > 0 and len(rest_out["INTENTS"]) == 3
    assert rest_out["TILE_IDS"] == grpc_out["TILE_IDS"] and sorted(rest_out["TILE_IDS"]) == sorted(TILES)
    np.testing.assert_allclose(rest_out["SCORES"], grpc_out["SCORES"], atol=1e-5)
    assert rest_out["SCORES"] == sorted(rest_out["SCORES"], reverse=True)
    # the no-session answer is the ranker's own no-session ranking, not degraded
    ranker = Ranker.load(gw_artifacts / "ranker.json")
    want = ranker.score(ranker.spec.features(TILES[:2], [0, 0], [""] * 2, [0, 0], [[], []],
                                             np.zeros((2, ranker.spec.signal_dim)), [False, False]))
    assert none["DEGRADED"] == [False] and none["SESSIONS_USED"] == [0] and none["INTENTS"] == []
    np.testing.assert_allclose(none["SCORES"], np.sort(want)[::-1], atol=1e-5)
    # nothing was stored: the typed service has never seen that visitor
    with pytest.raises(grpc.RpcError) as info:
        kserve_app.stub.GetSessions(pb.GetSessionsRequest(anonymous_id=anon), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_typed_service_answers_health_and_names_bad_fields(kserve_app):
    health = health_pb2_grpc.HealthStub(kserve_app.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        kserve_app.stub.RankTiles(pb.RankTilesRequest(customer_id="C-x", tile_ids=["nope"]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(info.value)] == ["tile_ids[0]"]


# -- the chart's store: Redis, shared with a typed gateway process -----------------------------------------------------

def test_with_redis_a_gateway_and_the_transformer_share_the_store(triton, gw_artifacts, visitor, redis_server,
                                                                  tmp_path):
    """As `mode: kserve` deploys it, with the stateless variant off: the typed gateway (`python -m gateway.server`)
    records and links; the transformer, another process on the same Redis, ranks that customer as the gateway
    does; ForgetCustomer through the transformer's typed service is seen by the gateway."""
    _, events = visitor
    as_of = events[-1].ts + DAY_MS
    customer = "C-kserve-redis"
    t = start(triton, gw_artifacts, as_of, redis_server.url, tmp_path / "transformer.log",
              "--allow_events", "false")
    try:
        with GatewayProcess(gw_artifacts, redis_server.url, triton.grpc_url, as_of, log=tmp_path / "gateway.log",
                            triton_timeout_s=5, manifest=Path(triton.repository) / "manifest.json") as gateway:
            gateway.seed(visitor_as(events[:60], "anon-kserve-redis"), customer)
            status, doc = rest(t, by_customer(customer))
            assert status == 200, doc
            assert_same_ranking(rest_outputs(doc), rank_tiles(gateway.stub, customer),
                                doc["parameters"]["model_version"])
            t.stub.ForgetCustomer(pb.ForgetCustomerRequest(customer_id=customer), timeout=10)
            with pytest.raises(grpc.RpcError) as info:
                gateway.stub.GetSessions(pb.GetSessionsRequest(customer_id=customer), timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert rank_tiles(gateway.stub, customer).sessions_used == 0
        # the stateless variant is off: EVENTS is refused, and the model's metadata no longer lists it
        status, doc = rest(t, {"EVENTS": [event_json(events[0])], "TILE_IDS": TILES})
        assert status == 400 and "EVENTS" in doc["error"] and "off" in doc["error"], doc
        with urllib.request.urlopen(f"http://127.0.0.1:{t.http_port}/v2/models/reranker", timeout=10) as r:
            assert [i["name"] for i in json.loads(r.read())["inputs"]] == ["CUSTOMER_ID", "TILE_IDS", "CONTEXT"]
    finally:
        assert t.stop() == 0, t.log.read_text()[-3000:]
