"""A closed-loop load generator: a fixed number of calls from a few concurrent workers, timed one by one.

Every harness that measures a served API through its own client (typed RankTiles, the KServe v2 reranker,
Triton) measures it with `measure`, so their latencies and throughputs are counted alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np


async def measure(call: Callable[[int], Awaitable[object]], concurrency: int, requests: int) -> dict:
    """`requests` calls from `concurrency` workers (call `i` gets its index); latency percentiles in ms and
    completed calls per second. The first few calls (up to 4) warm channels and servers up and are not counted."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    for i in range(min(concurrency, 4)):  # warm-up: channels, Triton's first calls
        await call(i)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "throughput_per_s": round(len(ms) / wall, 1), "requests": len(ms)}
