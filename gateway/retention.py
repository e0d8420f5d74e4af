"""Retention: delete what is past its period, in the gateway (every retention_interval_s) and on demand.

One pass (`prune_once`) deletes, in the configured store: events older than retention_days, links past
retention whose visitor has no event left, expired cache entries and tombstones past forget_tombstone_days
(gateway/store/). Redis keys also carry TTLs, so a store no gateway prunes still empties itself.

`python -m gateway.retention` (`make prune`) runs one pass with the gateway's own configuration (--config,
GATEWAY_* environment, flags) and prints what it deleted as JSON. Logs and output say counts, never ids.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from gateway.config import GatewayConfig
from gateway.store import Pruned, SessionStore, StoreLimits, StoreUnavailable, open_store
from gateway.telemetry import METRICS
from training.core.contract import parse_ts

log = logging.getLogger("gateway")


async def prune_once(store: SessionStore, now_ms: int) -> Pruned:
    """One retention pass at `now_ms`; counted in gateway_pruned_total{kind}."""
    pruned = await store.prune(now_ms)
    for kind, n in asdict(pruned).items():
        if n:
            METRICS.pruned.labels(kind).inc(n)
    return pruned


class RetentionTask:
    """Prunes `store` every `interval_s` (first pass at start); `interval_s` 0 turns it off. A store that is
    unreachable skips a pass (logged), it never stops the task."""

    def __init__(self, store: SessionStore, interval_s: float, now_ms: Callable[[], int]) -> None:
        self.store, self.interval_s, self.now_ms = store, interval_s, now_ms
        self.task: asyncio.Task | None = None
        self.passes = 0

    def start(self) -> None:
        if self.interval_s > 0 and self.task is None:
            self.task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _run(self) -> None:
        while True:
            try:
                pruned = await prune_once(self.store, self.now_ms())
                if pruned.total():
                    log.info("retention pruned %d events, %d links, %d cache entries, %d tombstones",
                             pruned.events, pruned.links, pruned.cache, pruned.tombstones)
            except StoreUnavailable as exc:
                log.warning("retention pass skipped: %s", exc)
            except Exception as exc:  # the next pass tries again; the class only (a message may quote data)
                log.error("retention pass failed: %s", type(exc).__name__)
            self.passes += 1
            await asyncio.sleep(self.interval_s)


def now_ms(cfg: GatewayConfig) -> int:
    """The gateway's now: its as_of when replaying history, else the wall clock."""
    return parse_ts(cfg.as_of) if cfg.as_of else int(time.time() * 1000)


async def run(cfg: GatewayConfig) -> Pruned:
    store = open_store(cfg.store, StoreLimits.from_config(cfg))
    try:
        return await prune_once(store, now_ms(cfg))
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.retention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    GatewayConfig.add_flags(parser)
    args = vars(parser.parse_args(argv))
    cfg = GatewayConfig.load(args.pop("config"), overrides=args)
    logging.basicConfig(level=cfg.log_level, format="%(levelname)s %(message)s")
    try:
        pruned = asyncio.run(run(cfg))
    except StoreUnavailable as exc:
        log.error("store unavailable: %s", exc)
        return 1
    print(json.dumps({"store": cfg.store.split("://", 1)[0], **asdict(pruned)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
