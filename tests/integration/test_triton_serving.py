"""The exported ensemble on the real Triton server (nvidia-pytriton wheel, CPU), over gRPC on loopback."""

import queue
import time

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from training.core.featurizer import pad_batch
from training.export.onnx_export import example_inputs
from training.export.repository import ENCODER, HEAD, PIPELINE
from training.export.triton_server import TritonServer, TritonStartError, model_metric
from training.pipeline import load_artifacts
from training.sessions import load_sessions
from training.taxonomy.distill import IntentHead

TOLERANCE = 1e-4
"""Served (onnxruntime in Triton) vs PyTorch, FP32."""
DEADLINE_S = 10.0
"""A bad request must come back with an error well within this (never a hang)."""


@pytest.fixture(scope="module")
def server(triton):
    """The session's Triton on the exported CPU repository (tests/integration/conftest.py)."""
    return triton


@pytest.fixture(scope="module")
def client(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def reference(small_artifacts, small_data):
    """Real featurized sessions with PyTorch's embeddings and the head's probabilities."""
    featurizer, encoder, _ = load_artifacts(small_artifacts)
    head = IntentHead.load(small_artifacts / "intent_head.json")
    sessions = load_sessions(small_data).sessions[:64]
    encoded = [featurizer.encode(s.events) for s in sessions]
    with torch.no_grad():
        emb = np.concatenate([encoder(torch.from_numpy(c[None]), torch.from_numpy(x[None])).numpy()
                              for c, x in encoded])
    return featurizer, encoded, emb, head.probabilities(emb), head


def inputs(cat: np.ndarray, cont: np.ndarray) -> list[grpcclient.InferInput]:
    first = grpcclient.InferInput("CATEGORICAL", list(cat.shape), "INT64")
    first.set_data_from_numpy(cat)
    second = grpcclient.InferInput("CONTINUOUS", list(cont.shape), "FP32")
    second.set_data_from_numpy(cont)
    return [first, second]


def test_single_sessions_match_pytorch(client, reference):
    _, encoded, emb, probs, _ = reference
    for i in (0, 1, int(np.argmax([len(c) for c, _ in encoded]))):
        cat, cont = encoded[i]
        result = client.infer(PIPELINE, inputs(cat[None], cont[None]), client_timeout=DEADLINE_S)
        np.testing.assert_allclose(result.as_numpy("EMBEDDING")[0], emb[i], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(result.as_numpy("INTENT_PROBS")[0], probs[i], atol=TOLERANCE, rtol=0)


def test_a_padded_batch_request_matches_pytorch(client, reference):
    _, encoded, emb, probs, _ = reference
    batch = pad_batch(encoded[:16])
    result = client.infer(PIPELINE, inputs(batch.categorical, batch.continuous), client_timeout=DEADLINE_S)
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), emb[:16], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(result.as_numpy("INTENT_PROBS"), probs[:16], atol=TOLERANCE, rtol=0)


def test_concurrent_requests_of_mixed_lengths_are_batched_and_stay_correct(server, client, reference):
    """64 single-session requests of many lengths in flight at once: the batcher groups them (fewer encoder
    executions than requests in Triton's metrics), and model.py's padding must not change any result.

    A full batch of 64 long sessions goes first and keeps the one encoder instance busy while the others
    arrive, so they queue and batch even when a loaded machine slows this client down."""
    featurizer, encoded, emb, probs, _ = reference
    assert len({len(c) for c, _ in encoded}) > 5
    before = server.metrics()
    done: queue.Queue = queue.Queue()
    cat, cont = example_inputs(featurizer.cardinalities, cont_width(encoded), batch=64, length=64)
    client.async_infer(PIPELINE, inputs(cat, cont), partial(done, -1), client_timeout=DEADLINE_S)
    for i, (cat, cont) in enumerate(encoded):
        client.async_infer(PIPELINE, inputs(cat[None], cont[None]), partial(done, i), client_timeout=DEADLINE_S)
    results = [done.get(timeout=DEADLINE_S) for _ in range(len(encoded) + 1)]
    for i, result, error in results:
        assert error is None, error
        if i >= 0:
            np.testing.assert_allclose(result.as_numpy("EMBEDDING")[0], emb[i], atol=TOLERANCE, rtol=0)
            np.testing.assert_allclose(result.as_numpy("INTENT_PROBS")[0], probs[i], atol=TOLERANCE, rtol=0)
    after = server.metrics()
    requests = model_metric(after, "nv_inference_request_success", ENCODER) - \
        model_metric(before, "nv_inference_request_success", ENCODER)
    executions = model_metric(after, "nv_inference_exec_count", ENCODER) - \
        model_metric(before, "nv_inference_exec_count", ENCODER)
    assert requests == len(encoded) + 1
    assert executions < requests / 2, f"no dynamic batching: {executions} executions for {requests} requests"


def cont_width(encoded) -> int:
    return encoded[0][1].shape[1]


def partial(done: queue.Queue, index: int):
    return lambda result, error: done.put((index, result, error))


def _bad(encoded, kind):
    cat, cont = encoded[0]
    cat, cont = cat[None].copy(), cont[None].copy()
    if kind == "categorical as float":
        x = grpcclient.InferInput("CATEGORICAL", list(cat.shape), "FP32")
        x.set_data_from_numpy(cat.astype(np.float32))
        return [x, inputs(cat, cont)[1]]
    if kind == "ten columns":
        return inputs(np.zeros((1, cat.shape[1], 10), np.int64), cont)
    if kind == "missing input":
        return inputs(cat, cont)[:1]
    if kind == "lengths disagree":
        return inputs(cat, np.zeros((1, cat.shape[1] + 1, cont.shape[2]), np.float32))
    if kind == "too long":
        return inputs(np.ones((1, 65, cat.shape[2]), np.int64) * 3, np.zeros((1, 65, cont.shape[2]), np.float32))
    if kind == "unknown id":
        cat[0, 0, 3] = 10_000
        return inputs(cat, cont)
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "message"), [
    ("categorical as float", "data-type"),
    ("ten columns", "shape"),
    ("missing input", "CONTINUOUS"),
    ("lengths disagree", "disagree"),
    ("too long", "outside 1..64"),
    ("unknown id", "ids outside"),
])
def test_bad_request_gets_tritons_error_quickly(client, reference, kind, message):
    start = time.monotonic()
    with pytest.raises(InferenceServerException, match=message):
        client.infer(PIPELINE, _bad(reference[1], kind), client_timeout=DEADLINE_S)
    assert time.monotonic() - start < DEADLINE_S / 2


def test_a_bad_request_does_not_fail_its_batch_company(client, reference):
    _, encoded, emb, _, _ = reference
    done: queue.Queue = queue.Queue()
    client.async_infer(PIPELINE, _bad(encoded, "unknown id"), partial(done, -1), client_timeout=DEADLINE_S)
    for i in range(1, 9):
        client.async_infer(PIPELINE, inputs(encoded[i][0][None], encoded[i][1][None]), partial(done, i),
                           client_timeout=DEADLINE_S)
    results = {i: (r, e) for i, r, e in (done.get(timeout=DEADLINE_S) for _ in range(9))}
    assert results[-1][0] is None and "ids outside" in str(results[-1][1])
    for i in range(1, 9):
        assert results[i][1] is None
        np.testing.assert_allclose(results[i][0].as_numpy("EMBEDDING")[0], emb[i], atol=TOLERANCE, rtol=0)


def test_a_subset_of_outputs_can_be_requested(server, client, reference):
    """EMBEDDING alone skips the head; INTENT_PROBS alone still runs the encoder."""
    _, encoded, emb, probs, _ = reference
    cat, cont = encoded[3]
    before = model_metric(server.metrics(), "nv_inference_request_success", HEAD)
    only_emb = client.infer(PIPELINE, inputs(cat[None], cont[None]), client_timeout=DEADLINE_S,
                            outputs=[grpcclient.InferRequestedOutput("EMBEDDING")])
    assert only_emb.as_numpy("INTENT_PROBS") is None
    np.testing.assert_allclose(only_emb.as_numpy("EMBEDDING")[0], emb[3], atol=TOLERANCE, rtol=0)
    assert model_metric(server.metrics(), "nv_inference_request_success", HEAD) == before
    only_probs = client.infer(PIPELINE, inputs(cat[None], cont[None]), client_timeout=DEADLINE_S,
                              outputs=[grpcclient.InferRequestedOutput("INTENT_PROBS")])
    assert only_probs.as_numpy("EMBEDDING") is None
    np.testing.assert_allclose(only_probs.as_numpy("INTENT_PROBS")[0], probs[3], atol=TOLERANCE, rtol=0)


def test_served_config_names_the_featurizer_and_the_intents(client, reference):
    featurizer, encoded, _, probs, head = reference
    config = client.get_model_config(PIPELINE).config
    assert config.parameters["featurizer_version"].string_value == featurizer.version
    cat, cont = encoded[0]
    top = grpcclient.InferRequestedOutput("INTENT_PROBS", class_count=1)
    result = client.infer(PIPELINE, inputs(cat[None], cont[None]), outputs=[top], client_timeout=DEADLINE_S)
    score, index, label = result.as_numpy("INTENT_PROBS")[0][0].decode().split(":")
    assert label == head.labels[int(index)] == head.labels[int(np.argmax(probs[0]))]
    assert float(score) == pytest.approx(probs[0].max(), abs=TOLERANCE)


def test_a_broken_repository_fails_fast_with_the_log_tail(tmp_path):
    (tmp_path / "repo" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\nmax_batch_size: x\n')
    start = time.monotonic()
    with pytest.raises(TritonStartError, match="broken"):
        TritonServer(tmp_path / "repo", workdir=tmp_path / "work", startup_timeout=30).start()
    assert time.monotonic() - start < 30
