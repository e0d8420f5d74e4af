"""Per-dependency health: background probes of Triton and the store, the gRPC health statuses they drive, and a
Prometheus gauge per dependency.

Health service names (grpc.health.v1, docs/deploy.md):
  ""  and  intent.gateway.v1.IntentGatewayService   SERVING while the gateway can answer anything at all: it
        has a model snapshot (always, once started: a down Triton or store only degrades answers or fails
        writes with UNAVAILABLE) and is not shutting down. Readiness and liveness probes read this one.
  intent.gateway.v1.IntentGatewayService/triton     SERVING while Triton answers the ensemble's readiness.
  intent.gateway.v1.IntentGatewayService/store      SERVING while the session store answers a read.
`gateway_dependency_up{dependency="triton"|"store"}` is 1 or 0 likewise.

A probe runs whatever requests do, so a dependency that comes back is noticed without traffic: while it fails,
the probe retries after 0.1 s, doubling up to `cap_s` (1 s); the first answer resets the backoff, and `on_up`
callbacks run (the app asks its model reloader to verify Triton at once, so answers stop being degraded
within about a second of Triton being ready, however long it was away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health, health_pb2
from prometheus_client import Gauge

from gateway.api import SERVICE_NAME
from gateway.telemetry import METRICS

log = logging.getLogger("gateway")
TRITON_HEALTH = f"{SERVICE_NAME}/triton"
STORE_HEALTH = f"{SERVICE_NAME}/store"
DEPENDENCY_UP = Gauge("gateway_dependency_up", "1 while a dependency (triton, store) answers the gateway's "
                      "background probe, 0 while it does not", ["dependency"], registry=METRICS.registry)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
Listener = Callable[[bool], Awaitable[None]]


class DependencyProbe:
    """Calls `check()` in the background: every `interval_s` while it answers; after a failure, again after
    `base_s`, doubling up to `cap_s`; an answer resets the backoff. `up` is None until the first outcome."""

    def __init__(self, name: str, check: Callable[[], Awaitable[object]], *, interval_s: float = 1.0,
                 base_s: float = 0.1, cap_s: float = 1.0, timeout_s: float = 1.0) -> None:
        self.name, self.check = name, check
        self.interval_s, self.base_s, self.cap_s, self.timeout_s = interval_s, base_s, cap_s, timeout_s
        self.up: bool | None = None
        self.delay_s = base_s
        self.listeners: list[Listener] = []
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    async def probe(self) -> bool:
        """One check now; updates `up`, the gauge and the backoff, and tells the listeners of a change."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.check()
            up = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            up = False
            if self.up is not False:
                log.warning("%s not answering (%s)", self.name, type(exc).__name__)
        self.delay_s = self.interval_s if up else (self.base_s if self.up is not False
                                                   else min(self.delay_s * 2, self.cap_s))
        if up != self.up:
            if up and self.up is False:
                log.info("%s answers again", self.name)
            self.up = up
            DEPENDENCY_UP.labels(self.name).set(1 if up else 0)
            for listener in self.listeners:
                await listener(up)
        return up

    def poke(self) -> None:
        """Probe now instead of at the next interval (a request just saw the dependency fail)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"probe-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.probe()
            except asyncio.CancelledError:
                raise
            except Exception:  # a listener's bug must not end the probing
                log.exception("%s probe failed", self.name)
            with contextlib.suppress(TimeoutError):  # not wait_for: see ModelReloader._run
                async with asyncio.timeout(self.delay_s):
                    await self._wake.wait()
            self._wake.clear()


class GatewayHealth:
    """The grpc.health.v1 servicer of the gateway: the main service's status and one per dependency probe."""

    def __init__(self, probes: dict[str, DependencyProbe]) -> None:
        """`probes`: health service name -> its probe."""
        self.servicer = health.aio.HealthServicer()
        self.probes = probes
        self.shutting_down = False
        for name, probe in probes.items():
            probe.listeners.append(self._listener(name))

    def _listener(self, name: str) -> Listener:
        async def changed(up: bool) -> None:
            if not self.shutting_down:
                await self.servicer.set(name, SERVING if up else NOT_SERVING)
        return changed

    async def start(self) -> None:
        """The main service SERVING, each dependency as its probe last saw it (NOT_SERVING before any)."""
        for name in ("", SERVICE_NAME):
            await self.servicer.set(name, SERVING)
        for name, probe in self.probes.items():
            await self.servicer.set(name, SERVING if probe.up else NOT_SERVING)

    async def shutdown(self) -> None:
        """Every service NOT_SERVING, for good (load balancers stop sending calls)."""
        self.shutting_down = True
        await self.servicer.enter_graceful_shutdown()
