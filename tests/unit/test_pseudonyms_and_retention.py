"""Keyed pseudonyms: stable per key, separate per domain, unguessable without the key, rotatable; the local key
is made once, private, and the same for two processes that start together. Retention runs at start and every
interval, and an unreachable store skips a pass without stopping it."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import stat

import pytest

from gateway.config import GatewayConfig
from gateway.privacy import PSEUDONYM_HEX, Pseudonymizer, local_key, parse_key
from gateway.retention import RetentionTask, prune_once
from gateway.store import Pruned, StoreUnavailable
from gateway.telemetry import METRICS

KEY_A, KEY_B = b"a" * 32, b"b" * 32


def test_pseudonyms_are_stable_per_key_and_differ_by_domain_and_key() -> None:
    ids = Pseudonymizer(KEY_A)
    assert ids.customer("C-1") == Pseudonymizer(KEY_A).customer("C-1")
    assert len(ids.customer("C-1")) == PSEUDONYM_HEX and "C-1" not in ids.customer("C-1")
    assert ids.customer("X") != ids.visitor("X")  # a visitor id equal to a customer id gets another name
    assert ids.customer("C-1") != ids.customer("C-2")
    assert Pseudonymizer(KEY_B).customer("C-1") != ids.customer("C-1")


def test_rotation_writes_under_the_new_key_and_reads_under_every_key() -> None:
    old, rotated = Pseudonymizer(KEY_A), Pseudonymizer(KEY_B, [KEY_A])
    assert rotated.customer("C-1") == Pseudonymizer(KEY_B).customer("C-1")
    assert rotated.customer_all("C-1") == [rotated.customer("C-1"), old.customer("C-1")]
    assert rotated.visitor_all("A-1") == [rotated.visitor("A-1"), old.visitor("A-1")]
    assert Pseudonymizer(KEY_A, [KEY_A]).customer_all("C-1") == [old.customer("C-1")]  # no key twice


@pytest.mark.parametrize("encode", [bytes.hex, lambda k: base64.b64encode(k).decode(),
                                    lambda k: base64.urlsafe_b64encode(k).decode().rstrip("=")],
                         ids=["hex", "base64", "base64url"])
def test_keys_are_read_as_hex_or_base64(encode) -> None:
    key = bytes(range(40))
    assert parse_key(encode(key)) == key


@pytest.mark.parametrize("text", ["00" * 31, "not a key!", ""])
def test_short_or_unreadable_keys_are_refused_without_repeating_them(text: str) -> None:
    with pytest.raises(ValueError, match="id_hash_key") as info:
        parse_key(text)
    assert not text or text not in str(info.value)
    with pytest.raises(ValueError):
        Pseudonymizer(b"short")


def test_from_config_reads_the_secret_and_the_previous_keys(tmp_path) -> None:
    cfg = GatewayConfig.load(env={"GATEWAY_ID_HASH_KEY": KEY_B.hex(), "GATEWAY_ID_HASH_PREVIOUS_KEYS":
                                  f" {KEY_A.hex()} ,", "GATEWAY_PKI_DIR": str(tmp_path)})
    ids = Pseudonymizer.from_config(cfg)
    assert ids.keys == (KEY_B, KEY_A) and not (tmp_path / "id_hash.key").exists()


def test_without_a_key_one_is_generated_once_private_and_reused(tmp_path) -> None:
    cfg = GatewayConfig(pki_dir=str(tmp_path / "pki"))
    first = Pseudonymizer.from_config(cfg)
    path = tmp_path / "pki" / "id_hash.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Pseudonymizer.from_config(cfg).customer("C-1") == first.customer("C-1")
    assert [p.name for p in path.parent.iterdir()] == ["id_hash.key"]  # no temporary file left


def _key_of(directory: str, barrier, out) -> None:
    barrier.wait()
    out.put(local_key(directory).hex())


def test_two_processes_starting_at_once_agree_on_the_key(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(3):
        directory = str(tmp_path / f"pki{attempt}")
        barrier, out = ctx.Barrier(4), ctx.Queue()
        workers = [ctx.Process(target=_key_of, args=(directory, barrier, out)) for _ in range(4)]
        for w in workers:
            w.start()
        keys = {out.get(timeout=60) for _ in workers}
        for w in workers:
            w.join(timeout=60)
        assert len(keys) == 1 and parse_key(next(iter(keys)))


class CountingStore:
    """A stand-in store whose prune counts calls and fails when told to."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[int] = []
        self.fail_first = fail_first

    async def prune(self, now_ms: int) -> Pruned:
        self.calls.append(now_ms)
        if self.fail_first and len(self.calls) == 1:
            raise StoreUnavailable("redis: ConnectionError")
        return Pruned(events=2, tombstones=1)


def test_the_retention_task_prunes_at_start_and_every_interval_and_survives_an_unavailable_store() -> None:
    async def run(interval_s: float, fail_first: bool) -> list[int]:
        store = CountingStore(fail_first)
        task = RetentionTask(store, interval_s, lambda: 1234)
        task.start()
        await asyncio.sleep(0.25)
        await task.stop()
        return store.calls

    assert len(asyncio.run(run(0.1, fail_first=True))) >= 2  # the failed first pass did not stop it
    assert asyncio.run(run(3600, fail_first=False)) == [1234]  # the first pass at start, at the gateway's now
    assert asyncio.run(run(0, fail_first=False)) == []  # 0: off


def test_prune_once_counts_what_it_deleted_by_kind() -> None:
    before = METRICS.pruned.labels("events")._value.get()
    assert asyncio.run(prune_once(CountingStore(), 0)) == Pruned(events=2, tombstones=1)
    assert METRICS.pruned.labels("events")._value.get() - before == 2
