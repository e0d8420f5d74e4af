"""Faults injected into real processes while clients call the gateway; each returns the figures it measured.

- `triton_kill`: Triton SIGKILLed under RankTiles load, down a while, restarted: every request answered (OK,
  degraded while it was down), and the time from its readiness to the first non-degraded answer.
- `gateway_before_triton`: the gateway started while no Triton listens (the chart starts both at once), then
  Triton started: the time from its readiness to the first non-degraded answer, and any UNKNOWN meanwhile.
- `gateway_kill_after_writes`: the gateway (and the Redis under it, when there is one) SIGKILLed right after
  acknowledged RecordEvents, restarted on the same store: acknowledged events missing afterwards.
- `redis_restart_under_load`: redis-server stopped and started again while RankTiles and RecordEvents run:
  ranks keep answering (degraded allowed), writes are UNAVAILABLE (never UNKNOWN) while it is down, then
  both recover.

The gateways here run with the embedding cache off, so every RankTiles of a customer with sessions calls
Triton and an outage shows in its answers. Durations are bounded (a few seconds of each phase).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc

from gateway.api import pb
from harness.processes import GatewayProcess
from training.export.triton_server import TritonServer, free_port, triton_environment

DAY_MS = 86_400_000
EVENTS_PER_VISITOR = 12


class Restartable(Protocol):
    """A server process that can be started again on its port and directory (RedisProcess, the tests' fixture)."""

    process: subprocess.Popen | None
    url: str

    def start(self) -> object: ...


@dataclass
class RedisProcess:
    """redis-server on loopback with an append-only file fsynced on every write (`appendfsync always`, what
    the chart's Redis runs with): SIGKILLed and started again in the same directory, it keeps every write
    it acknowledged."""

    directory: Path
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make redis`")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.port}: {(self.directory / 'redis.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)



def cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000, what redis-server opens beside it) is free too: an
    ephemeral port above 55535 has no room for the bus, so one is drawn below."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 55_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue


@dataclass
class RedisCluster:
    """A Redis Cluster of `size` primaries on loopback, each redis-server with `--cluster-enabled yes` and an
    append-only file fsynced on every write (`appendfsync always`, each node its own file), joined by
    `redis-cli --cluster create` with no replicas; ready once every node says cluster_state:ok."""

    directory: Path
    size: int = 3
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    created: bool = False

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node_dir(self, port: int) -> Path:
        return self.directory / f"node-{port}"

    def start(self, timeout_s: float = 30.0) -> RedisCluster:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are not installed: run `make redis`")
        while len({*self.ports, *(p + 10_000 for p in self.ports)}) < 2 * self.size:  # no port another's bus
            self.ports = [cluster_port() for _ in range(self.size)]
        try:
            self._launch(server, cli, time.monotonic() + timeout_s)
        except BaseException:
            self.stop()  # no node outlives a start that failed
            raise
        return self

    def _launch(self, server: str, cli: str, deadline: float) -> None:
        for port in self.ports:
            node = self.node_dir(port)
            node.mkdir(parents=True, exist_ok=True)
            self.processes.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node), "--save", "",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf"),
                 "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(node / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda p=port: self._cli(cli, p, "ping") == "PONG", deadline, f"node {port} did not start")
        if not self.created:  # started again: the nodes rejoin from their nodes.conf
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                            "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True,
                           timeout=max(1.0, deadline - time.monotonic()))
            self.created = True
        for port in self.ports:
            self._wait(lambda p=port: "cluster_state:ok" in self._cli(cli, p, "cluster", "info"), deadline,
                       f"node {port} did not reach cluster_state:ok")

    def flush(self) -> None:
        """Empty every node (tests that share one cluster start from nothing)."""
        cli = shutil.which("redis-cli") or "redis-cli"
        for port in self.ports:
            if self._cli(cli, port, "flushall") != "OK":
                raise RuntimeError(f"FLUSHALL failed on node {port}")

    @staticmethod
    def _cli(cli: str, port: int, *command: str) -> str:
        done = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *command], capture_output=True, text=True,
                              timeout=5)
        return done.stdout.strip()

    @staticmethod
    def _wait(ready: Callable[[], bool], deadline: float, failure: str) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                if ready():
                    return
            time.sleep(0.1)
        raise RuntimeError(failure)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes = []  # started again, new processes on the same ports and directories

def sigkill(process: subprocess.Popen | None) -> None:
    """SIGKILL a process and reap it (no shutdown handler runs: the crash case)."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def ensure_triton(triton: TritonServer) -> None:
    """Start `triton` (again) unless it runs."""
    if not triton.running():
        respawn_triton(triton)


def kill_triton(triton: TritonServer) -> None:
    """SIGKILL Triton's whole process group (the server and its python backend stubs), as the OOM killer would."""
    if triton.process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(triton.process.pid, signal.SIGKILL)
        triton.process.wait(timeout=10)
        triton.process = None


def respawn_triton(triton: TritonServer, timeout_s: float = 90.0) -> float:
    """Start Triton again on its own ports and wait until it is ready; the monotonic time it was.

    Not `TritonServer.start`: its free-port check refuses a port that the killed server's connections still
    hold in TIME_WAIT, which Triton's own listeners (SO_REUSEADDR) bind anyway."""
    triton.workdir.mkdir(parents=True, exist_ok=True)
    with triton.log_path.open("ab") as log:
        triton.process = subprocess.Popen(triton.command(), stdout=log, stderr=subprocess.STDOUT,
                                          cwd=triton.workdir, env=triton_environment(), start_new_session=True)
    triton.wait_ready(timeout_s)
    return time.monotonic()


# -- load ------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    at: float  # monotonic time the answer came
    status: str  # OK or the gRPC status code's name
    degraded: bool = False


@dataclass
class Load:
    """A few client threads calling one RPC in a loop, every answer kept with its time."""

    call: Callable[[int], Answer]
    clients: int = 3
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        def worker(k: int) -> None:
            i = k
            while not self._stop.is_set():
                self.answers.append(self.call(i))
                i += self.clients
                time.sleep(0.01)  # a client's think time: keeps 2 cores free for the servers

        self._threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.answers

    def wait_for(self, predicate: Callable[[Answer], bool], since: float, timeout_s: float) -> float | None:
        """The time of the first answer after `since` that satisfies `predicate`, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for a in list(self.answers):
                if a.at >= since and predicate(a):
                    return a.at
            time.sleep(0.05)
        return None


def rank_call(gateway: GatewayProcess, customer_id: str, tiles: list[str], timeout_s: float = 5.0
              ) -> Callable[[int], Answer]:
    request = pb.RankTilesRequest(customer_id=customer_id, tile_ids=tiles, context=pb.CustomerContext(segment="mass"))

    def call(_: int) -> Answer:
        try:
            reply = gateway.stub.RankTiles(request, timeout=timeout_s)
            return Answer(time.monotonic(), "OK", reply.degraded)
        except grpc.RpcError as exc:
            return Answer(time.monotonic(), exc.code().name)

    return call


def visitor_events(anonymous_id: str, now_ms: int, n: int = EVENTS_PER_VISITOR, customer_id: str = ""
                   ) -> list[pb.WebEvent]:
    """`n` page views a minute apart ending an hour before `now_ms` (one session), a login last if `customer_id`."""
    paths = ("/", "/loans/auto", "/mortgage/rates", "/credit-cards", "/savings")
    start = now_ms - 3_600_000 - n * 60_000
    events = [pb.WebEvent(anonymous_id=anonymous_id, ts=str(start + i * 60_000), event_type="page_view",
                          url=paths[i % len(paths)], device="desktop", dwell_ms=20_000) for i in range(n)]
    if customer_id:
        events[-1] = pb.WebEvent(anonymous_id=anonymous_id, ts=str(start + (n - 1) * 60_000), event_type="login",
                                 url="/login", device="desktop", customer_id=customer_id)
    return events


def seed_customer(gateway: GatewayProcess, customer_id: str, now_ms: int, visitors: int = 2) -> None:
    """A customer with `visitors` linked visitors of one recent session each (their login links them)."""
    for v in range(visitors):
        events = visitor_events(f"{customer_id}-v{v}", now_ms, customer_id=customer_id)
        gateway.stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=30)


def _summary(answers: list[Answer]) -> dict:
    statuses = Counter(a.status for a in answers)
    ok = statuses.get("OK", 0)
    return {"requests": len(answers), "answered": ok,
            "answered_pct": round(100.0 * ok / len(answers), 2) if answers else 0.0,
            "statuses": dict(statuses), "degraded": sum(a.degraded for a in answers)}


# -- the faults ------------------------------------------------------------------------------------------


def triton_kill(gateway: GatewayProcess, triton: TritonServer, customer_id: str, tiles: list[str],
                clients: int = 3, before_s: float = 2.0, down_s: float = 3.0, recovery_timeout_s: float = 60.0
                ) -> dict:
    """SIGKILL Triton under RankTiles load for a seeded customer, restart it after `down_s`: every request's
    status, the answers while it was down (all should be degraded), and `recovery_s` from Triton's readiness to
    the first non-degraded answer (None: none within `recovery_timeout_s`)."""
    load = Load(rank_call(gateway, customer_id, tiles), clients).start()
    time.sleep(before_s)
    killed_at = time.monotonic()
    kill_triton(triton)
    time.sleep(down_s)
    down_until = time.monotonic()
    ready_at = respawn_triton(triton)
    recovered_at = load.wait_for(lambda a: a.status == "OK" and not a.degraded, ready_at, recovery_timeout_s)
    time.sleep(0.5)
    answers = load.stop()
    before = [a for a in answers if a.at < killed_at]
    down = [a for a in answers if killed_at + 0.5 <= a.at <= down_until]  # after the kill has been seen
    return {**_summary(answers), "not_degraded_before": sum(a.status == "OK" and not a.degraded for a in before),
            "down_answers": len(down), "down_degraded": sum(a.degraded for a in down),
            "down_not_degraded": sum(a.status == "OK" and not a.degraded for a in down),
            "recovery_s": None if recovered_at is None else round(recovered_at - ready_at, 3)}


def gateway_before_triton(gateway: GatewayProcess, triton: TritonServer, customer_id: str, tiles: list[str],
                          clients: int = 3, recovery_timeout_s: float = 60.0) -> dict:
    """`gateway` started in front of `triton`'s port before Triton runs (its customer seeded), then Triton
    started: statuses throughout and `recovery_s` from Triton's readiness to the first non-degraded answer."""
    load = Load(rank_call(gateway, customer_id, tiles), clients).start()
    time.sleep(1.0)
    ready_at = respawn_triton(triton)
    recovered_at = load.wait_for(lambda a: a.status == "OK" and not a.degraded, ready_at, recovery_timeout_s)
    time.sleep(0.5)
    answers = load.stop()
    return {**_summary(answers), "recovery_s": None if recovered_at is None else round(recovered_at - ready_at, 3)}


def gateway_kill_after_writes(make_gateway: Callable[[], GatewayProcess], now_ms: int,
                              store: Restartable | None = None, writers: int = 2, visitors: int = 60) -> dict:
    """Writers send one visitor's events per RecordEvents call; the gateway is SIGKILLed right after the
    `visitors`-th acknowledgement, with calls still in flight (and the Redis under it too, when `store` is
    given: its append-only file must hold what it acknowledged); both restarted on the same data, every
    acknowledged visitor's events are counted back through GetSessions."""
    gateway = make_gateway().start()
    acked: dict[str, int] = {}
    lock, enough = threading.Lock(), threading.Event()

    def writer(k: int) -> None:
        i = k
        while not enough.is_set():
            anon = f"kill-{k}-{i}"
            try:
                reply = gateway.stub.RecordEvents(pb.RecordEventsRequest(events=visitor_events(anon, now_ms)),
                                                  timeout=10)
            except grpc.RpcError:
                return  # the kill
            with lock:
                acked[anon] = reply.accepted
                if len(acked) >= visitors:
                    enough.set()
            i += writers

    threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(writers)]
    for t in threads:
        t.start()
    enough.wait(timeout=120)
    sigkill(gateway.process)  # right after the last acknowledgement, the other writer mid-call
    with lock:
        acknowledged = dict(acked)
    if store is not None:
        sigkill(store.process)
        store.start()
    for t in threads:
        t.join(timeout=30)
    gateway.channel.close()
    restarted = make_gateway().start()
    try:
        found = {anon: stored_events(restarted, anon) for anon in acknowledged}
    finally:
        restarted.stop()
    lost = sum(max(0, n - found[anon]) for anon, n in acknowledged.items())
    return {"acknowledged_calls": len(acknowledged), "acknowledged_events": sum(acknowledged.values()),
            "found_events": sum(min(found[a], n) for a, n in acknowledged.items()), "lost_events": lost,
            "store_killed_too": store is not None}


def stored_events(gateway: GatewayProcess, anonymous_id: str) -> int:
    """Events the gateway holds for a visitor, by GetSessions (0 when it knows none)."""
    try:
        reply = gateway.stub.GetSessions(pb.GetSessionsRequest(anonymous_id=anonymous_id, max_sessions=100),
                                         timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise
    return sum(s.n_events for s in reply.sessions)


def redis_restart_under_load(gateway: GatewayProcess, redis: Restartable, customer_id: str, tiles: list[str],
                             now_ms: int, down_s: float = 3.0, recovery_timeout_s: float = 30.0) -> dict:
    """redis-server stopped (SIGTERM) under RankTiles and RecordEvents load and started again after `down_s`:
    the statuses of each while it was down, and the time from its restart to the first OK write."""

    def write(i: int) -> Answer:
        try:
            gateway.stub.RecordEvents(pb.RecordEventsRequest(events=visitor_events(f"rr-{i}", now_ms, 3)), timeout=5)
            return Answer(time.monotonic(), "OK")
        except grpc.RpcError as exc:
            return Answer(time.monotonic(), exc.code().name)

    ranks = Load(rank_call(gateway, customer_id, tiles), 2).start()
    writes = Load(write, 1).start()
    time.sleep(1.0)
    stopped_at = time.monotonic()
    redis.process.terminate()
    redis.process.wait(timeout=10)
    time.sleep(down_s)
    down_until = time.monotonic()
    redis.start()
    back_at = time.monotonic()
    write_ok_at = writes.wait_for(lambda a: a.status == "OK", back_at, recovery_timeout_s)
    rank_ok_at = ranks.wait_for(lambda a: a.status == "OK" and not a.degraded, back_at, recovery_timeout_s)
    time.sleep(0.5)
    rank_answers, write_answers = ranks.stop(), writes.stop()

    def during(answers: list[Answer]) -> dict:
        return dict(Counter(a.status for a in answers if stopped_at + 0.2 <= a.at <= down_until))

    return {"ranks": _summary(rank_answers), "writes": _summary(write_answers),
            "ranks_while_down": during(rank_answers), "writes_while_down": during(write_answers),
            "write_recovery_s": None if write_ok_at is None else round(write_ok_at - back_at, 3),
            "rank_recovery_s": None if rank_ok_at is None else round(rank_ok_at - back_at, 3)}


def fault_gateway(artifacts: Path, manifest: Path, store: str, triton_url: str, now_ms: int, log: Path,
                  **flags: object) -> GatewayProcess:
    """A gateway for the fault runs (not started): the embedding cache and write-behind off (every rank of a
    customer with sessions calls Triton), a 1 s Triton budget, no OTEL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return GatewayProcess(artifacts, store, triton_url, now_ms, env=env, log=log, manifest=manifest,
                          **{"cache_embeddings": False, "embed_on_write": False, "triton_timeout_s": 1.0, **flags})
