"""The KServe v2 endpoint: the real kserve ModelServer (`python -m gateway.kserve_transformer`, its own process)
in transformer mode in front of the real Triton over grpc-v2, called with kserve's REST and gRPC clients."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from test_gateway_grpc import gw_artifacts, triton, visitor  # noqa: F401 (fixtures)

from core.ranker import Ranker
from gateway.api import pb
from gateway.bench_all import event_json, start_transformer

pytestmark = pytest.mark.slow
DAY_MS = 86_400_000
TILES = ["tile_refinance_rates", "tile_cash_back_card", "tile_open_checking", "tile_auto_loan"]


@pytest.fixture(scope="module")
def transformer(triton, gw_artifacts, visitor, tmp_path_factory):  # noqa: F811
    log = tmp_path_factory.mktemp("kserve") / "kserve.log"
    process, http_port, grpc_port = start_transformer(triton.grpc_url, gw_artifacts, visitor[1][-1].ts + DAY_MS,
                                                      log, timeout_s=60)
    yield http_port, grpc_port
    process.terminate()
    process.wait(30)


# kserve's clients run in a child process: tritonclient.grpc (loaded here by the Triton fixtures) and kserve
# register clashing protos of package `inference` in one process.
CLIENT = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

http_port, grpc_port, calls = sys.argv[1], sys.argv[2], json.loads(sys.stdin.read())

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
                r = await rest.infer(f"http://127.0.0.1:{http_port}", request(call), model_name="reranker")
            else:
                r = await grpc_client.infer(request(call))
            results.append(outputs(r))
    finally:
        await rest.close()
        await grpc_client.close()
    print(json.dumps(results))

asyncio.run(main())
"""


def kserve_calls(transformer, calls: list[dict]) -> list[dict]:
    http_port, grpc_port = transformer
    done = subprocess.run([sys.executable, "-c", CLIENT, str(http_port), str(grpc_port)], input=json.dumps(calls),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rest_and_grpc_clients_get_the_same_ranking_from_triton(transformer, visitor, gw_artifacts):  # noqa: F811
    _, events = visitor
    context = {"segment": "mass", "tenure_months": 12, "products_held": ["checking"]}
    evs = [event_json(e) for e in events[:50]]
    rest, grpc_out, none = kserve_calls(transformer, [
        {"via": "rest", "events": evs, "tiles": TILES, "context": context},
        {"via": "grpc", "events": evs, "tiles": TILES, "context": context},
        {"via": "grpc", "events": [], "tiles": TILES[:2]}])
    assert rest["DEGRADED"] == [False] and rest["SESSIONS_USED"][0] > 0 and len(rest["INTENTS"]) == 3
    assert rest["TILE_IDS"] == grpc_out["TILE_IDS"] and sorted(rest["TILE_IDS"]) == sorted(TILES)
    np.testing.assert_allclose(rest["SCORES"], grpc_out["SCORES"], atol=1e-5)
    assert rest["SCORES"] == sorted(rest["SCORES"], reverse=True)
    # the no-session answer is the ranker's own no-session ranking, not degraded
    ranker = Ranker.load(gw_artifacts / "ranker.json")
    want = ranker.score(ranker.spec.features(TILES[:2], [0, 0], [""] * 2, [0, 0], [[], []],
                                             np.zeros((2, ranker.spec.signal_dim)), [False, False]))
    assert none["DEGRADED"] == [False] and none["SESSIONS_USED"] == [0] and none["INTENTS"] == []
    np.testing.assert_allclose(none["SCORES"], np.sort(want)[::-1], atol=1e-5)


def test_a_bad_tile_is_a_client_error_naming_it(transformer, visitor):  # noqa: F811
    http_port, _ = transformer
    body = {"inputs": [{"name": "TILE_IDS", "shape": [2], "datatype": "BYTES", "data": ["tile_auto_loan", "nope"]}]}
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/reranker/infer",
                                 data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400 and "tile_ids[1]" in info.value.read().decode()
    assert pb.RankTilesRequest  # the same contract as RankTiles
