"""Embed linked visitors' sessions as their events arrive, so RankTiles finds them in the cache.

The read path (RankTiles, GetSessions) embeds what it does not find cached, inside its Triton budget; that
costs a featurize plus a Triton round trip per request. Most of it can happen earlier: a customer's
pre-login sessions are written (RecordEvents) or linked (a login event, LinkIdentity) before the app asks
for tiles. `WriteBehindEmbedder` collects the visitors touched by writes, waits `delay_s` so a collector's
burst becomes one batch, keeps those linked to a customer (the only ones RankTiles will read) and embeds
their changed sessions in one batched Triton call, into the same per-session-version cache the read path
uses. A session that changes after that is embedded again on its next write; if the model server is down the
read path still embeds (or degrades) as before, so this is an optimization that can never lose an answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from gateway.store import SessionStore
from gateway.telemetry import METRICS
from training.core.sessionize import Session, sessionize

log = logging.getLogger("gateway")


class WriteBehindEmbedder:
    def __init__(self, store: SessionStore, embed: Callable[[Sequence[Session]], Awaitable[str]],
                 since_ms: Callable[[], int], max_sessions: int, delay_s: float) -> None:
        """`embed(sessions)` caches their embeddings and returns "" or why it could not; `since_ms()` is the
        start of the lookback window."""
        self.store, self.embed, self.since_ms = store, embed, since_ms
        self.max_sessions, self.delay_s = max_sessions, delay_s
        self.pending: set[str] = set()
        self.busy = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="write-behind-embedder")

    async def stop(self) -> None:
        """Drop what is pending (it is only a cache) and stop."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    def submit(self, anonymous_ids: Iterable[str]) -> None:
        self.pending.update(anonymous_ids)
        self._report()
        self.wake.set()

    def _report(self) -> None:
        METRICS.embed_pending.set(len(self.pending) + self.busy)

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(self.delay_s)  # let a burst of writes arrive
            self.wake.clear()
            visitors, self.pending = self.pending, set()
            self.busy = len(visitors)
            try:
                await self.embed_visitors(visitors)
            except asyncio.CancelledError:
                raise
            except Exception:  # the read path embeds whatever this misses
                log.exception("write-behind embedding of %d visitors failed", len(visitors))
            finally:
                self.busy = 0
                self._report()

    async def embed_visitors(self, visitors: Iterable[str]) -> int:
        """Embed the uncached recent sessions of the linked ones among `visitors`; how many sessions looked at."""
        linked = await self.store.linked_visitors(sorted(visitors))
        since = self.since_ms()
        sessions: list[Session] = []
        for anon in sorted(linked):
            sessions += sessionize(await self.store.events(anon, since))[-self.max_sessions:]
        if sessions:
            reason = await self.embed(sessions)
            if reason:
                log.warning("write-behind embedding skipped %d sessions: %s", len(sessions), reason)
        return len(sessions)
