"""`ServingApp`: the gateway's parts assembled from one config, what every front end serves.

The typed gRPC server (`gateway.server`) and the KServe v2 transformer both run one `ServingApp`: the session
store, the Triton client, the model snapshot (featurizer, ranker, labels, pinned by the model manifest) and
the `Gateway` logic over them, so both answer from the same store with the same session lookup, identity
linkage and ranking.

Start-up refuses what would serve a wrong answer: a manifest that featurizer.json / ranker.json do not hash
to (in the constructor: ManifestError), and a Triton ensemble exported with another manifest (in `start`:
ModelMismatch). A Triton not reachable yet only degrades answers until the reloader's next check finds it.
While serving, the reloader (gateway/snapshot.py) follows new model sets: every `reload_poll_s` and on
`request_reload()` (the server's SIGHUP).
"""

from __future__ import annotations

import logging

from gateway.config import GatewayConfig
from gateway.service import Gateway
from gateway.snapshot import ModelReloader, ModelSnapshot, load_snapshot
from gateway.store import StoreLimits, open_store
from gateway.triton_client import TransportFactory, TritonIntentClient
from training.core.featurizer import Featurizer
from training.core.ranker import Ranker

log = logging.getLogger("gateway")


class ServingApp:
    """Store, Triton client, model snapshot and `Gateway`, built from `cfg`. `await start()`, then
    `await stop()`."""

    def __init__(self, cfg: GatewayConfig, transport: TransportFactory | None = None) -> None:
        """`transport`: how to reach Triton (default: tritonclient, by the url's scheme). Raises ManifestError
        (a ValueError) when the artifacts do not match the manifest, FileNotFoundError without a manifest."""
        self.cfg = cfg
        snapshot = load_snapshot(cfg)
        self.store = open_store(cfg.store, StoreLimits.from_config(cfg))
        self.intents = TritonIntentClient(cfg.triton_url, snapshot.featurizer, cfg.triton_model, cfg.triton_trace_url,
                                          transport)
        self.gateway = Gateway(cfg, self.store, self.intents, snapshot=snapshot)
        self.reloader = ModelReloader(cfg, self.intents, snapshot, self._publish)
        self.gateway.refresh = self.reloader.newer_than

    def _publish(self, snapshot: ModelSnapshot) -> None:
        self.gateway.snapshot = snapshot
        self.intents.featurizer = snapshot.featurizer
        self.intents.labels, self.intents.max_batch = snapshot.labels, snapshot.max_batch
        self.intents.version = snapshot.model_version

    # the current snapshot's parts (a reload replaces them; a request holds on to its own snapshot)
    @property
    def snapshot(self) -> ModelSnapshot:
        return self.gateway.snapshot

    @property
    def featurizer(self) -> Featurizer:
        return self.gateway.snapshot.featurizer

    @property
    def ranker(self) -> Ranker:
        return self.gateway.snapshot.ranker

    @property
    def model_version(self) -> str:
        return self.gateway.snapshot.model_version

    async def start(self) -> None:
        """Check Triton against the manifest (ModelMismatch refuses to start; unreachable only degrades), then
        start the write-behind embedder and the reloader."""
        await self.reloader.connect()
        await self.gateway.start()
        self.reloader.start()

    def request_reload(self) -> None:
        """Check for a new model set now (SIGHUP) instead of at the next poll."""
        self.reloader.request()

    async def reload(self) -> ModelSnapshot:
        """Check for a new model set and wait for the outcome; the snapshot now served."""
        return await self.reloader.refresh()

    async def stop(self) -> None:
        await self.reloader.stop()
        await self.gateway.stop()
        await self.intents.close()
        await self.store.close()
