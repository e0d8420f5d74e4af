"""The write-behind embedder's own logic: bursts coalesce, only linked visitors count, failures are contained
(a bad session fails alone), the queue is bounded and a forget drops its visitors' pending work."""

from __future__ import annotations

import asyncio

from gateway.embedder import WriteBehindEmbedder
from gateway.store.sqlite_store import SqliteStore
from gateway.telemetry import METRICS
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


def test_the_queue_is_bounded_and_what_it_drops_is_counted() -> None:
    async def run() -> tuple[set[str], float]:
        embedder = WriteBehindEmbedder(SqliteStore(":memory:"), None, lambda: T0, 20, 0.02, max_pending=3)
        before = METRICS.embed_dropped._value.get()
        embedder.submit(["A1", "A2", "A1", "A3", "A4", "A5"])  # A1 again is no new work
        embedder.submit(["A2"])
        return embedder.pending, METRICS.embed_dropped._value.get() - before

    pending, dropped = asyncio.run(run())
    assert pending == {"A1", "A2", "A3"} and dropped == 2


def test_forget_drops_the_pending_work_of_forgotten_visitors() -> None:
    embedder = WriteBehindEmbedder(SqliteStore(":memory:"), None, lambda: T0, 20, 0.02)
    embedder.submit(["A1", "A2", "A3"])
    embedder.forget(["A1", "A3", "A9"])
    assert embedder.pending == {"A2"}


def test_a_failing_batch_is_retried_session_by_session_so_one_bad_session_spoils_nothing_else() -> None:
    async def run() -> tuple[list[list[str]], set[str]]:
        store = SqliteStore(":memory:")
        await store.append([ev(anon, 0) for anon in ("A1", "A2", "A3")])
        for anon in ("A1", "A2", "A3"):
            await store.link(anon, "C1", "api", T0)
        calls: list[list[str]] = []
        embedded: set[str] = set()

        async def embed(sessions) -> str:
            calls.append([s.anonymous_id for s in sessions])
            if any(s.anonymous_id == "A2" for s in sessions):  # one bad session fails any batch it is in
                return "model server unavailable: InferenceServerException"
            embedded.update(s.anonymous_id for s in sessions)
            return ""

        embedder = WriteBehindEmbedder(store, embed, lambda: T0 - 1, 20, 0.0)
        await embedder.embed_visitors(["A1", "A2", "A3"])
        await store.close()
        return calls, embedded

    calls, embedded = asyncio.run(run())
    assert calls == [["A1", "A2", "A3"], ["A1"], ["A2"], ["A3"]] and embedded == {"A1", "A3"}


def test_a_model_server_that_is_down_stops_the_single_retries_early() -> None:
    async def run() -> int:
        store = SqliteStore(":memory:")
        anons = [f"A{i}" for i in range(10)]
        await store.append([ev(anon, 0) for anon in anons])
        for anon in anons:
            await store.link(anon, "C1", "api", T0)
        calls = 0

        async def embed(sessions) -> str:
            nonlocal calls
            calls += 1
            raise ConnectionError("down")

        await WriteBehindEmbedder(store, embed, lambda: T0 - 1, 20, 0.0).embed_visitors(anons)
        await store.close()
        return calls

    assert asyncio.run(run()) == 1 + 3  # the batch, then three single failures in a row
