"""The Triton client for session intents: the ensemble (session_encoder -> intent_head) over gRPC or HTTP.

Sessions of one request go to Triton in one call (padded to the longest, in chunks of the model's
max_batch_size); the channel is opened once and reused. `served()` reads the ensemble's config: its labels,
batch limit, featurizer version, and the `manifest_hash` / `repository_version` the export wrote into it, which
gateway/snapshot.py compares with the gateway's model manifest (at start-up and on every reload).

Every call is pinned to the ensemble version of the request's snapshot (`infer(..., snapshot)`): Triton
answers with exactly that version's encoder and head, or, once a newer version has replaced it, fails with
"unknown model ... version N" which becomes `VersionGone` (the gateway then retries once on its newest
snapshot).

`url` is Triton's gRPC endpoint (`HOST:8001`), or its HTTP endpoint written `http://HOST:8000`. Triton 2.51
keeps every W3C `traceparent` sent as an HTTP header but drops a few sent as gRPC metadata, so a traced
deployment also gives `trace_url` (`http://HOST:8000`): the requests whose span is sampled go there, with
their context, and all others keep the faster gRPC path (see gateway/telemetry.py). The spans `featurize`
and `triton.infer` are made here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from opentelemetry.trace import SpanKind

from gateway.telemetry import child_span, inject_headers
from training.core.featurizer import Featurizer, pad_batch


class ModelMismatch(ValueError):
    """Triton serves a model the gateway must not use with its artifacts (the message says what to do)."""


class ModelNotReady(RuntimeError):
    """Triton answers, but the ensemble is not loaded and ready."""


class VersionGone(RuntimeError):
    """Triton no longer serves the ensemble version a call was pinned to: a newer version replaced it."""


@dataclass(frozen=True)
class SessionIntents:
    embeddings: np.ndarray  # float32 [N, E]
    probabilities: np.ndarray  # float32 [N, K]


@dataclass(frozen=True)
class ServedModel:
    """What the ensemble's config says about the served model."""

    labels: tuple[str, ...]
    max_batch: int
    featurizer_version: str
    taxonomy_version: str
    manifest_hash: str
    repository_version: str
    params: dict[str, str]

    @property
    def version(self) -> str:
        """The pre-manifest version string, featurizer/taxonomy."""
        return f"{self.featurizer_version}/{self.taxonomy_version}"


def parse_served(config: dict) -> ServedModel:
    """ServedModel from the ensemble's config (Triton's JSON form)."""
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    labels = tuple(x for x in params.get("labels", "").split(",") if x)
    return ServedModel(labels, int(config.get("max_batch_size", 64)) or 64, params.get("featurizer_version", ""),
                       params.get("taxonomy_version", ""), params.get("manifest_hash", ""),
                       params.get("repository_version", ""), params)


def served_model(config: dict, model: str, featurizer: Featurizer) -> tuple[tuple[str, ...], int, str]:
    """(labels, max batch, version) from the ensemble's config (JSON); refuses another featurizer version.
    (The manifest-less check; the gateway itself compares manifests, gateway/snapshot.py.)"""
    served = parse_served(config)
    if served.featurizer_version != featurizer.version:
        raise ModelMismatch(f"Triton model {model!r} was built with featurizer {served.featurizer_version!r}, "
                            f"the gateway has {featurizer.version!r}: export and deploy them together")
    return served.labels, served.max_batch, served.version


def is_version_gone(exc: BaseException) -> bool:
    """Whether Triton refused a call because the model version is not (or no longer) loaded."""
    text = str(exc)
    return "unknown model" in text or "is not at ready state" in text


MAX_RECONNECT_BACKOFF_MS = 1000
"""The gRPC channel to Triton retries connecting at most this far apart (gRPC's default grows to 120 s, so
after a long outage the channel only tried again up to two minutes after Triton was back)."""
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)]
"""tritonclient's own channel settings (unbounded messages, its keepalive defaults: none) plus the reconnect
backoff cap."""


class _Transport:
    """One tritonclient (gRPC or HTTP, by the url's scheme) and its module, for building requests. Nothing is
    connected here: the gRPC channel connects on the first call and reconnects on its own (CHANNEL_ARGS)."""

    def __init__(self, url: str) -> None:
        self.http = url.startswith("http://")
        # imported here: tritonclient.grpc's protos clash with kserve's (both declare package `inference`)
        if self.http:
            import tritonclient.http.aio as api
            self.client = api.InferenceServerClient(url.removeprefix("http://"))
        else:
            import tritonclient.grpc.aio as api
            self.client = api.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        self.api = api

    async def ready(self, model: str, timeout_s: float) -> bool:
        """Whether Triton says `model` is ready to infer."""
        if self.http:
            return await asyncio.wait_for(self.client.is_model_ready(model), timeout_s)
        return await self.client.is_model_ready(model, client_timeout=timeout_s)

    async def config(self, model: str, timeout_s: float) -> dict:
        if self.http:
            return await asyncio.wait_for(self.client.get_model_config(model), timeout_s)
        return (await self.client.get_model_config(model, as_json=True, client_timeout=timeout_s))["config"]

    async def infer(self, model: str, categorical: np.ndarray, continuous: np.ndarray, timeout_s: float,
                    headers: dict[str, str] | None, version: str = ""):
        api = self.api
        inputs = [api.InferInput("CATEGORICAL", list(categorical.shape), "INT64"),
                  api.InferInput("CONTINUOUS", list(continuous.shape), "FP32")]
        inputs[0].set_data_from_numpy(categorical)
        inputs[1].set_data_from_numpy(continuous)
        outputs = [api.InferRequestedOutput("EMBEDDING"), api.InferRequestedOutput("INTENT_PROBS")]
        if self.http:
            return await self.client.infer(model, inputs, model_version=version, outputs=outputs, headers=headers)
        return await self.client.infer(model, inputs, model_version=version, outputs=outputs,
                                       client_timeout=timeout_s, headers=headers)

    async def close(self) -> None:
        await self.client.close()


class Transport(Protocol):
    """How the client reaches Triton: `_Transport` (tritonclient gRPC or HTTP), or another implementation
    with the same calls (the KServe transformer's, on kserve's own gRPC client). `infer` gets `version` (the
    ensemble version to pin, as a keyword) whenever the gateway has one; Triton's refusal of an unloaded
    version must surface as an exception whose text keeps Triton's message (`is_version_gone`)."""

    async def config(self, model: str, timeout_s: float) -> dict: ...

    async def infer(self, model: str, categorical: np.ndarray, continuous: np.ndarray, timeout_s: float,
                    headers: dict[str, str] | None, version: str = "") -> Any: ...

    async def close(self) -> None: ...


TransportFactory = Callable[[str], Transport]
"""url -> Transport; the default is `_Transport`."""


class TritonIntentClient:
    def __init__(self, url: str, featurizer: Featurizer, model: str = "intent_pipeline", trace_url: str = "",
                 transport: TransportFactory | None = None) -> None:
        """`featurizer`: the one used when `infer` gets no snapshot (a snapshot carries its own)."""
        self.url = url
        self.model = model
        self.featurizer = featurizer
        make = transport or _Transport
        self.transport = make(url)
        self.traced = make(trace_url) if trace_url else self.transport
        self.labels: tuple[str, ...] = ()
        self.version = ""
        self.max_batch = 64

    async def ready(self, timeout_s: float = 1.0) -> None:
        """Raise unless Triton answers that the ensemble is ready (the health probe's check). A transport
        without `ready` is asked for the ensemble's config instead."""
        probe = getattr(self.transport, "ready", None)
        if probe is None:
            await self.transport.config(self.model, timeout_s)
        elif not await probe(self.model, timeout_s):
            raise ModelNotReady(f"Triton does not have {self.model} ready")

    async def served(self, timeout_s: float = 5.0) -> ServedModel:
        """What Triton serves now under the ensemble's name (its config)."""
        return parse_served(await self.transport.config(self.model, timeout_s))

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Read labels, batch limit and versions from the served ensemble; refuse a featurizer mismatch.
        (The manifest-less path; ServingApp checks the manifest instead, gateway/snapshot.py.)"""
        config = await self.transport.config(self.model, timeout_s)
        self.labels, self.max_batch, self.version = served_model(config, self.model, self.featurizer)

    async def infer(self, sessions: Sequence[Sequence], timeout_s: float, snapshot: Any = None) -> SessionIntents:
        """Embeddings and intent probabilities for sessions (each a sequence of contract events).

        With a `snapshot` (gateway.snapshot.ModelSnapshot) its featurizer and batch limit are used and the call
        is pinned to its ensemble version; VersionGone when Triton no longer serves that version."""
        featurizer = self.featurizer if snapshot is None else snapshot.featurizer
        max_batch = self.max_batch if snapshot is None else snapshot.max_batch
        version = "" if snapshot is None else snapshot.triton_version
        with child_span("featurize") as span:
            encoded = [featurizer.encode(events) for events in sessions]
            batches = [pad_batch(encoded[start:start + max_batch]) for start in range(0, len(encoded), max_batch)]
            span.set_attribute("sessions", len(encoded))
        embeddings, probabilities = [], []
        for batch in batches:
            with child_span("triton.infer", SpanKind.CLIENT) as span:
                span.set_attribute("triton.model", self.model)
                span.set_attribute("triton.batch", int(batch.categorical.shape[0]))
                if version:
                    span.set_attribute("triton.model_version", version)
                headers = inject_headers() or None  # only a sampled span has any
                transport = self.traced if headers else self.transport
                pinned = {"version": version} if version else {}
                try:
                    result = await transport.infer(self.model, batch.categorical, batch.continuous, timeout_s,
                                                   headers, **pinned)
                except Exception as exc:
                    if version and is_version_gone(exc):
                        raise VersionGone(f"Triton no longer serves {self.model} version {version}") from exc
                    raise
            embeddings.append(result.as_numpy("EMBEDDING"))
            probabilities.append(result.as_numpy("INTENT_PROBS"))
        return SessionIntents(np.concatenate(embeddings), np.concatenate(probabilities))

    async def close(self) -> None:
        await self.transport.close()
        if self.traced is not self.transport:
            await self.traced.close()
