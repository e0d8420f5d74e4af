"""`ServingApp`: the gateway's parts assembled from one config, what every front end serves.

The typed gRPC server (`gateway.server`) and the KServe v2 transformer both run one `ServingApp`: the session
store, the Triton client, the ranker and the `Gateway` logic over them, so both answer from the same store
with the same session lookup, identity linkage and ranking.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.featurizer import Featurizer
from core.ranker import Ranker
from gateway.config import GatewayConfig
from gateway.service import Gateway
from gateway.store import StoreLimits, open_store
from gateway.triton_client import TransportFactory, TritonIntentClient

log = logging.getLogger("gateway")


class ServingApp:
    """Store, Triton client, ranker and `Gateway`, built from `cfg`. `await start()`, then `await stop()`."""

    def __init__(self, cfg: GatewayConfig, transport: TransportFactory | None = None) -> None:
        """`transport`: how to reach Triton (default: tritonclient, by the url's scheme)."""
        self.cfg = cfg
        artifacts = Path(cfg.artifacts)
        self.featurizer = Featurizer.load(artifacts / "featurizer.json")
        self.ranker = Ranker.load(artifacts / "ranker.json")
        self.store = open_store(cfg.store, StoreLimits(cfg.retention_days, cfg.max_events_per_visitor))
        self.intents = TritonIntentClient(cfg.triton_url, self.featurizer, cfg.triton_model, cfg.triton_trace_url,
                                          transport)
        self.gateway = Gateway(cfg, self.store, self.intents, self.ranker)

    async def start(self) -> None:
        """Connect to Triton (a Triton not up yet only degrades rankings meanwhile) and start the embedder."""
        try:
            await self.intents.connect()
        except Exception as exc:
            if "featurizer" in str(exc):
                raise
            log.warning("Triton at %s not reachable yet (%s): rankings are degraded until it is",
                        self.cfg.triton_url, exc)
        if self.gateway.embedder is not None:
            self.gateway.embedder.start()

    async def stop(self) -> None:
        if self.gateway.embedder is not None:
            await self.gateway.embedder.stop()
        await self.intents.close()
        await self.store.close()
