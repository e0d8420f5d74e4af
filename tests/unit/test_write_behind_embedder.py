"""The write-behind embedder's own logic: bursts coalesce, only linked visitors count, failures are contained."""

from __future__ import annotations

import asyncio

from gateway.embedder import WriteBehindEmbedder
from gateway.store.sqlite_store import SqliteStore
from training.core.contract import Event

T0 = 1_700_000_000_000


def ev(anon: str, minute: int) -> Event:
    return Event(anonymous_id=anon, ts=T0 + minute * 60_000, event_type="page_view", url="/loans")


async def scenario(fail: bool = False) -> tuple[list[list[str]], WriteBehindEmbedder]:
    store = SqliteStore(":memory:")
    await store.append([ev("A1", 0), ev("A1", 1), ev("A1", 90), ev("A2", 0), ev("A3", 0)])
    await store.link("A1", "C1", "login", T0)
    await store.link("A3", "C3", "api", T0)
    calls: list[list[str]] = []

    async def embed(sessions) -> str:
        calls.append(sorted(s.session_id for s in sessions))
        if fail:
            raise RuntimeError("model server exploded")
        return ""

    embedder = WriteBehindEmbedder(store, embed, lambda: T0 + 60 * 60_000, max_sessions=20, delay_s=0.02)
    embedder.start()
    for anon in ("A1", "A2", "A1", "A3"):  # one burst of writes
        embedder.submit([anon])
    await asyncio.sleep(0.2)
    embedder.submit(["A2"])  # not linked: nothing to do
    await asyncio.sleep(0.1)
    embedder.submit(["A1"])  # a later write: embedded again (the cache skips unchanged sessions)
    await asyncio.sleep(0.1)
    await embedder.stop()
    await store.close()
    return calls, embedder


def test_a_burst_becomes_one_call_with_only_linked_visitors_recent_sessions() -> None:
    calls, embedder = asyncio.run(scenario())
    # A1's session at minute 0 is outside the lookback (since minute 60); A2 is not linked
    assert calls == [[f"A1@{T0 + 90 * 60_000}"]] * 2
    assert embedder.pending == set() and embedder.busy == 0


def test_a_failing_model_server_does_not_stop_the_embedder() -> None:
    calls, embedder = asyncio.run(scenario(fail=True))
    assert len(calls) == 2 and embedder.task is None  # the second write was still served
