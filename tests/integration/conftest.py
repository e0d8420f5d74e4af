"""Integration tests: everything here starts a real server (Triton, redis-server, the gateway, the KServe
transformer, the local LLM) or runs a pipeline stage end to end, and is marked `integration` (`make test-unit`
leaves it out).

Shared servers: one Triton on the exported CPU repository (`triton`) and one KServe transformer in front of
it (`transformer`) serve the whole session. The modules that use them run one after another, and each is
stopped as soon as the last test that needs it is done (an idle Triton's onnxruntime threads would otherwise
spin beside every later test on a small machine). Fixtures that need a server of their own (Triton with
tracing, a gateway on a fresh store) stay in their modules.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.faults import RedisCluster, RedisProcess
from harness.fuzz import ranker_tiles
from harness.processes import start_transformer, stop
from harness.workload import busiest_visitor
from training.export.triton_server import TritonServer

HERE = Path(__file__).parent
DAY_MS = 86_400_000
SHARED = ("triton", "transformer")
"""Session fixtures that start a server, stopped after the last test that uses them (see the module doc)."""
_running: dict[str, Callable[[], object]] = {}  # shared fixture -> how to stop it, while it runs
_last_user: dict[str, int] = {}  # shared fixture -> index of the last item of the run that uses it
_index: dict[str, int] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests `integration`, and run the modules that use a shared server together, in
    their order (module by module, so no module fixture is set up twice)."""
    positions = [i for i, item in enumerate(items) if HERE in item.path.parents]
    mine = [items[i] for i in positions]
    for item in mine:
        item.add_marker(pytest.mark.integration)
    modules = list(dict.fromkeys(item.path for item in mine))
    shared = {item.path for item in mine if any(name in _fixtures(item) for name in SHARED)}
    rank = {path: (path not in shared, n) for n, path in enumerate(modules)}
    for i, item in zip(positions, sorted(mine, key=lambda item: rank[item.path]), strict=True):
        items[i] = item


def _fixtures(item: pytest.Item) -> list[str]:
    return getattr(item, "fixturenames", [])


def _shared(name: str, stop_it: Callable[[], object]) -> None:
    _running[name] = stop_it


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    if not _running:
        return
    items = item.session.items
    if not _index:
        _index.update({it.nodeid: n for n, it in enumerate(items)})
        _last_user.update({name: max(n for n, it in enumerate(items) if name in _fixtures(it))
                           for name in SHARED if any(name in _fixtures(it) for it in items)})
    here = _index.get(item.nodeid, len(items))
    for name in reversed(list(_running)):  # the transformer before the Triton behind it
        if _last_user.get(name, -1) <= here:
            _running.pop(name)()


@pytest.fixture(scope="session")
def triton(gw_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The real Triton on `gw_repository` (default settings), one for the session."""
    with TritonServer(gw_repository, workdir=tmp_path_factory.mktemp("triton")) as server:
        _shared("triton", server.stop)
        yield server
        _running.pop("triton", None)


@pytest.fixture(scope="session")
def gw_artifacts(small_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving artifacts plus a seeded ranker over the bank's tiles with the embedding signal, pinned to
    their encoder (meta.encoder_sha256, as `make eval` records it)."""
    from training.bank import SEGMENTS, TILES
    from training.core.manifest import sha256_file
    from training.core.ranker import FeatureSpec, Ranker

    out = tmp_path_factory.mktemp("gw_artifacts")
    for name in ("featurizer.json", "encoder.pt", "intent_head.json"):
        shutil.copy(small_artifacts / name, out / name)
    spec = FeatureSpec(tuple(TILES), tuple(TILES.values()), tuple(sorted(SEGMENTS)), 4, "embedding", 64,
                       np.zeros(64, np.float32), np.ones(64, np.float32))
    n = len(spec.feature_names())
    Ranker(spec, np.random.default_rng(0).normal(0, 0.3, n).astype(np.float32), -2.0,
           {"lookback_days": 3650.0, "encoder_sha256": sha256_file(out / "encoder.pt")}).save(out / "ranker.json")
    return out


@pytest.fixture(scope="session")
def gw_repository(gw_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`gw_artifacts` exported (ONNX, parity-checked) into a CPU model repository with its model manifest
    (manifest.json, pinning the ranker too): what the shared Triton serves and every gateway and transformer
    here is checked against (the same models as `exported_cpu`)."""
    from training.export.build import export
    from training.export.repository import ServingConfig

    out = tmp_path_factory.mktemp("gw_exported")
    export(gw_artifacts, gw_artifacts / "intent_head.json", out / "model_repository", ServingConfig(),
           work_dir=out / "work")
    return out / "model_repository"


@pytest.fixture(scope="session")
def visitor(small_data: Path) -> tuple[str, list]:
    """A real visitor's events from the synthetic bank (the busiest of the first sessions'), and its id."""
    events = busiest_visitor(small_data)
    return events[0].anonymous_id, events


@pytest.fixture(scope="session")
def transformer(triton: TritonServer, gw_artifacts: Path, visitor, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[int, int]]:
    """`python -m gateway.kserve_transformer` in front of the shared Triton: (http_port, grpc_port). With auth none:
    its users (perf_analyzer, tritonclient in test_kserve_perf_analyzer.py) send no bearer token;
    test_kserve_transformer.py proves the token check on a transformer of its own."""
    log = tmp_path_factory.mktemp("kserve") / "kserve.log"
    process, http_port, grpc_port = start_transformer(triton, gw_artifacts, visitor[1][-1].ts + DAY_MS,
                                                      log, timeout_s=60, extra=("--auth", "none"))
    _shared("transformer", lambda: stop(process))
    yield http_port, grpc_port
    _running.pop("transformer", None)
    stop(process)


@pytest.fixture(scope="module")
def own_triton(gw_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton of the module's own on the shared repository, not started: fault and resilience tests start it
    late, kill and restart it."""
    server = TritonServer(gw_repository, workdir=tmp_path_factory.mktemp("own_triton"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def now_ms() -> int:
    """The wall clock once per module: what a gateway without `as_of` calls now."""
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def tiles(gw_artifacts: Path) -> list[str]:
    """Six candidate tiles the exported ranker knows."""
    return list(ranker_tiles(gw_artifacts)[:6])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """redis-server with `appendfsync always` (what the chart runs), on a free loopback port."""
    server = RedisProcess(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real 3-node Redis Cluster on loopback (no replicas, AOF with `appendfsync always` on every node),
    shared by a module's tests and stopped after it; tests tell theirs apart by the ids they use or flush it."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def store_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """kind -> a store URL, for store-parametrized fixtures: sqlite (a file in tmp_path), redis (this test's own
    redis-server) or redis-cluster (the module's cluster, flushed); the servers start only when asked for."""

    def url(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite://{tmp_path / 'gateway.db'}"
        if kind == "redis":
            return request.getfixturevalue("redis_server").url
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url

    return url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
