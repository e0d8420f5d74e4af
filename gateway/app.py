"""`ServingApp`: the gateway's parts assembled from one config, what every front end serves.

The typed gRPC server (`gateway.server`) and the KServe v2 transformer both run one `ServingApp`: the session
store, the Triton client, the model snapshot (featurizer, ranker, labels, pinned by the model manifest) and
the `Gateway` logic over them, so both answer from the same store with the same session lookup, identity
linkage and ranking.

Start-up refuses what would serve a wrong answer: a manifest that featurizer.json / ranker.json do not hash
to (in the constructor: ManifestError), and a Triton ensemble exported with another manifest (in `start`:
ModelMismatch). A Triton not reachable yet only degrades answers until the reloader verifies it.
While serving, the reloader (gateway/snapshot.py) follows new model sets: every `reload_poll_s` and on
`request_reload()` (the server's SIGHUP).

Dependencies that come and go (gateway/health.py): a background probe asks Triton whether the ensemble is
ready (backoff 0.1 s doubling to 1 s while it is not, reset when it answers) and another reads the store.
When Triton answers after being away or before it was ever verified, the reloader checks it at once, so a
gateway started before Triton, or one whose Triton was killed and restarted, stops degrading within about a
second of Triton being ready, whatever the outage's length.
"""

from __future__ import annotations

import logging

from gateway.config import GatewayConfig
from gateway.health import STORE_HEALTH, TRITON_HEALTH, DependencyProbe
from gateway.service import Gateway
from gateway.snapshot import ModelReloader, ModelSnapshot, load_snapshot
from gateway.store import SessionStore, StoreLimits, open_store
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
        self.triton_probe = DependencyProbe("triton", self.intents.ready)
        self.triton_probe.listeners.append(self._triton_changed)
        self.store_probe = DependencyProbe("store", lambda: probe_store(self.store),
                                           timeout_s=max(1.0, 2 * cfg.store_timeout_s))
        self.probes = {TRITON_HEALTH: self.triton_probe, STORE_HEALTH: self.store_probe}
        """Health service name -> probe (gateway/health.py)."""

    async def _triton_changed(self, up: bool) -> None:
        """Triton answers again (or for the first time): verify it now rather than at the next poll."""
        if up:
            self.reloader.request()

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
        for probe in self.probes.values():
            probe.start()

    def request_reload(self) -> None:
        """Check for a new model set now (SIGHUP) instead of at the next poll."""
        self.reloader.request()

    async def reload(self) -> ModelSnapshot:
        """Check for a new model set and wait for the outcome; the snapshot now served."""
        return await self.reloader.refresh()

    async def stop(self) -> None:
        for probe in self.probes.values():
            await probe.stop()
        await self.reloader.stop()
        await self.gateway.stop()
        await self.intents.close()
        await self.store.close()


PROBE_CUSTOMER = "health-probe"
"""The customer whose links the store probe reads: none exist; the read proves the store answers."""


async def probe_store(store: SessionStore) -> None:
    """One cheap read (raises when the store cannot answer): the store's own `ping` if it has one."""
    ping = getattr(store, "ping", None)
    if ping is not None:
        await ping()
    else:
        await store.links(PROBE_CUSTOMER)
