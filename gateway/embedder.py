"""Embed linked visitors' sessions as their events arrive, so RankTiles finds them in the cache.

The read path (RankTiles, GetSessions) embeds what it does not find cached, inside its Triton budget; that
costs a featurize plus a Triton round trip per request. Most of it can happen earlier: a customer's
pre-login sessions are written (RecordEvents) or linked (a login event, LinkIdentity) before the app asks
for tiles. `WriteBehindEmbedder` collects the visitors touched by writes, waits `delay_s` so a collector's
burst becomes one batch, keeps those linked to a customer (the only ones RankTiles will read) and embeds
their changed sessions in one batched Triton call, into the same per-session-version cache the read path
uses. A session that changes after that is embedded again on its next write; if the model server is down the
read path still embeds (or degrades) as before, so this is an optimization that can never lose an answer.

Bounded: at most `max_pending` visitors wait; beyond that new ones are dropped and counted
(`gateway_embed_dropped_total`), the read path embeds them later. One bad session never spoils the others: a
batch that fails is retried session by session, so every session that can be embedded is cached. ForgetCustomer
calls `forget(visitors)`: their pending work is dropped, and whatever an in-flight batch computes for them is
refused by the store (it refuses cache entries of tombstoned visitors).
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
                 since_ms: Callable[[], int], max_sessions: int, delay_s: float, max_pending: int = 10_000) -> None:
        """`embed(sessions)` caches their embeddings and returns "" or why it could not; `since_ms()` is the
        start of the lookback window. Visitors are pseudonyms, as the store holds them."""
        self.store, self.embed, self.since_ms = store, embed, since_ms
        self.max_sessions, self.delay_s, self.max_pending = max_sessions, delay_s, max_pending
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
        dropped = 0
        for anon in anonymous_ids:
            if anon in self.pending:
                continue
            if len(self.pending) >= self.max_pending:
                dropped += 1
            else:
                self.pending.add(anon)
        if dropped:
            METRICS.embed_dropped.inc(dropped)
        self._report()
        self.wake.set()

    def forget(self, anonymous_ids: Iterable[str]) -> None:
        """Drop the pending work of forgotten visitors (an in-flight batch's results for them are refused by
        the store's tombstone check)."""
        self.pending.difference_update(anonymous_ids)
        self._report()

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
            except Exception as exc:  # the read path embeds whatever this misses; the class only (a message or a
                # traceback's locals may quote a request)
                log.warning("write-behind embedding of %d visitors failed: %s", len(visitors), type(exc).__name__)
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
        if sessions and await self._embed(sessions) and len(sessions) > 1:
            await self._embed_singly(sessions)
        return len(sessions)

    async def _embed(self, sessions: Sequence[Session]) -> str:
        """"" when embedded and cached, else why not (a raising `embed` counts as a failure)."""
        try:
            reason = await self.embed(sessions)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"embedding failed: {type(exc).__name__}"
        if reason:
            log.warning("write-behind embedding skipped %d sessions: %s", len(sessions), reason)
        return reason

    async def _embed_singly(self, sessions: Sequence[Session], give_up_after: int = 3) -> None:
        """A failed batch, one session at a time: a bad session fails alone. Stops after `give_up_after`
        failures in a row (then the model server itself is down, and the read path will degrade or embed)."""
        failures = 0
        for session in sessions:
            failures = failures + 1 if await self._embed([session]) else 0
            if failures >= give_up_after:
                return
