"""The model set a request uses (`ModelSnapshot`), its checks against the model manifest, and hot reload
(`ModelReloader`): a new Triton repository version plus its manifest replace the served set without a restart
and without failing or mixing in-flight requests.

A snapshot is immutable: featurizer, ranker, labels, the manifest and the Triton ensemble version it pins.
Each request reads the gateway's current snapshot once, at its start, and uses only that one: its Triton call
is pinned to the snapshot's ensemble version, its cache keys and entries carry the snapshot's manifest hash,
and its answer reports the snapshot's `model_version`. A reload builds a new snapshot beside the old one and
swaps one reference; requests that started before keep theirs.

When is a new set used? The reloader checks, every `reload_poll_s` seconds and on SIGHUP:
  1. the manifest file (GATEWAY_MANIFEST): if it changed, the new manifest must match the featurizer.json and
     ranker.json in the artifacts directory (sha256), else the reload is refused (logged once, counted in
     `gateway_model_reloads_total{result="refused"}`) and the old set keeps serving;
  2. what Triton serves: the ensemble config's `manifest_hash` and `repository_version`. The new set is
     applied once Triton serves exactly its hash (`result="applied"`); until then it waits (`pending`): the
     export writes the manifest before Triton loads the version (explicit model control), and the old version
     keeps answering meanwhile. If Triton serves neither the current nor the new manifest, it is not used:
     answers degrade until they agree (`refused`), since its models belong to other artifacts.
Triton drops the old ensemble version as soon as the new one is ready, maybe before the next poll: a request
pinned to it then gets VersionGone, asks for the newest snapshot at once (`newer_than`, one check for all of
them) and is retried once on it, whole, so it still answers from one set.

At start-up the same checks refuse to start (ManifestError, ModelMismatch) instead of degrading; only an
unreachable Triton is waited for (answers degrade until the first successful check).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from prometheus_client import Counter

from gateway.config import GatewayConfig
from gateway.telemetry import METRICS
from gateway.triton_client import ModelMismatch, ServedModel, TritonIntentClient
from training.core.featurizer import Featurizer
from training.core.manifest import FILE_NAMES, Manifest, ManifestError
from training.core.ranker import Ranker

log = logging.getLogger("gateway")
DAY_MS = 86_400_000
RELOADS = Counter("gateway_model_reloads", "new model sets seen by the reloader, by result: applied, pending "
                  "(Triton does not serve it yet), refused (it disagrees with the artifacts or with Triton; "
                  "the old set keeps serving)", ["result"], registry=METRICS.registry)
NOT_VERIFIED = "model server not verified yet"


@dataclass(frozen=True)
class ModelSnapshot:
    """Everything one request uses, fixed at its start (see the module docstring)."""

    featurizer: Featurizer | None
    ranker: Ranker
    labels: tuple[str, ...]
    model_version: str
    """Reported in every answer: the manifest's model_version."""
    cache_tag: str
    """Part of every cache key and entry header: the manifest hash."""
    embedding_dim: int
    lookback_ms: int
    manifest: Manifest | None = None
    triton_version: str = ""
    """The ensemble version every Triton call is pinned to ("" = unpinned, the manifest-less path)."""
    max_batch: int = 64
    unserved: str = ""
    """Why Triton must not be called with this set (not verified yet, or Triton serves another manifest);
    empty when it may be. Answers degrade with this reason."""

    @classmethod
    def unpinned(cls, cfg: GatewayConfig, ranker: Ranker, labels, version: str, featurizer: Featurizer | None = None
                 ) -> ModelSnapshot:
        """A set without a manifest (the stand-alone `Gateway(cfg, store, intents, ranker)` of tests and the
        KServe transformer before it has a manifest): Triton calls are not pinned, the version is Triton's.
        Without labels (a client that never reached Triton) Triton is not called: its answers could not be
        shaped into 0 intent columns, so they degrade instead."""
        spec = ranker.spec
        model_version = f"{version or 'unknown'}+ranker-{spec.signal}-{spec.signal_block}"
        return cls(featurizer, ranker, tuple(labels), model_version, version or "unknown", spec.signal_dim,
                   lookback_ms(cfg, ranker), unserved="" if labels else NOT_VERIFIED)

    def served_by(self, served: ServedModel) -> ModelSnapshot:
        """This set, verified to be what Triton serves (batch limit from its config)."""
        return replace(self, max_batch=served.max_batch, unserved="")


def lookback_ms(cfg: GatewayConfig, ranker: Ranker) -> int:
    """The lookback window: the configured one, else the ranker's own training lookback (30 days if none)."""
    return int((cfg.lookback_days or float(ranker.meta.get("lookback_days", 30))) * DAY_MS)


def load_snapshot(cfg: GatewayConfig, manifest: Manifest | None = None) -> ModelSnapshot:
    """The manifest (cfg.manifest, unless given) and the artifacts it pins, checked: ManifestError names every
    file that does not hash to the manifest's value. The snapshot is not verified against Triton yet."""
    manifest = manifest or Manifest.load(cfg.manifest)
    artifacts = Path(cfg.artifacts)
    files = {name: artifacts / FILE_NAMES[name] for name in ("featurizer", "ranker")}
    manifest.require_match(files, require=("ranker",), where=cfg.manifest)
    featurizer = Featurizer.load(files["featurizer"])
    ranker = Ranker.load(files["ranker"])
    if manifest.check(files):  # replaced between the check and the load: nothing mixed is ever served
        raise ManifestError(f"{artifacts}: featurizer.json or ranker.json changed while being loaded; try again")
    if ranker.spec.signal == "embedding" and ranker.spec.signal_dim != manifest.embedding_dim:
        raise ManifestError(f"{files['ranker']} scores {ranker.spec.signal_dim}-d embeddings, the manifest's "
                            f"encoder makes {manifest.embedding_dim}-d ones")
    if manifest.ranker_encoder_sha256 is None:
        log.warning("the manifest %s pins a ranker without an encoder fingerprint (exported with "
                    "--allow-unpinned-ranker)", manifest.model_version)
    return ModelSnapshot(featurizer, ranker, manifest.labels, manifest.model_version, manifest.manifest_hash,
                         manifest.embedding_dim, lookback_ms(cfg, ranker), manifest,
                         str(manifest.repository_version), unserved=NOT_VERIFIED)


def _describe(served: ServedModel) -> str:
    return (f"manifest_hash {served.manifest_hash or 'none'} (repository version "
            f"{served.repository_version or 'unknown'})")


class ModelReloader:
    """Keeps the gateway's snapshot in step with the manifest file and Triton (see the module docstring).

    `publish(snapshot)` installs a snapshot (the Gateway's reference swap). One check runs at a time; the poll
    loop runs between `start()` and `stop()`."""

    def __init__(self, cfg: GatewayConfig, intents: TritonIntentClient, initial: ModelSnapshot,
                 publish: Callable[[ModelSnapshot], None], timeout_s: float = 5.0) -> None:
        self.cfg, self.intents, self.publish, self.timeout_s = cfg, intents, publish, timeout_s
        self.path = Path(cfg.manifest)
        self.current = initial
        self._seen = self._signature()
        self._candidate: ModelSnapshot | None = None
        self._reported: set[tuple] = set()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def _signature(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _set(self, snapshot: ModelSnapshot) -> None:
        self.current = snapshot
        self.publish(snapshot)

    def _report(self, result: str, key: tuple, message: str, *args) -> None:
        """Log and count a reload outcome once per distinct cause (a poll every few seconds repeats it)."""
        if (result, *key) in self._reported:
            return
        self._reported.add((result, *key))
        RELOADS.labels(result).inc()
        (log.warning if result == "refused" else log.info)(message, *args)

    # -- start-up ---------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Verify Triton serves the manifest: ModelMismatch if it serves another one (start-up refuses), a
        warning if it cannot be reached (answers degrade until a later check succeeds)."""
        try:
            served = await self.intents.served(self.timeout_s)
        except Exception as exc:
            log.warning("Triton at %s not reachable yet (%s): rankings are degraded until it is",
                        self.cfg.triton_url, type(exc).__name__)
            return
        manifest = self.current.manifest
        problems = manifest.check_served(served.params) if manifest is not None else []
        if problems:
            raise ModelMismatch(
                f"Triton at {self.cfg.triton_url} serves {self.intents.model} with {_describe(served)}, but the "
                f"gateway's manifest {self.path} is {manifest.model_version} ({manifest.manifest_hash}): "
                f"{'; '.join(map(str, problems))}. Load the repository version this manifest describes into Triton "
                "(`python -m training.export load-triton`), or point GATEWAY_MANIFEST at the manifest of the "
                "repository Triton serves")
        self._set(self.current.served_by(served))

    # -- reload -----------------------------------------------------------------------------------------
    async def refresh(self) -> ModelSnapshot:
        """One check of the manifest file and of Triton; returns the (possibly new) current snapshot."""
        async with self._lock:
            await self._check()
            return self.current

    async def newer_than(self, snapshot: ModelSnapshot) -> ModelSnapshot | None:
        """After Triton refused `snapshot`'s version: the newest usable snapshot if it is another one (checking
        at once unless a concurrent request already did), else None."""
        async with self._lock:
            if self.current is snapshot:
                await self._check()
            newest = self.current
        if newest is snapshot or newest.unserved:
            return None
        return newest

    def request(self) -> None:
        """Check soon (SIGHUP)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="model-reloader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        poll = self.cfg.reload_poll_s
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that lands as the event is set
            # (a stop right after a request), and this loop would then never end
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll if poll > 0 else None):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model reload check failed")

    def _load_candidate(self) -> ModelSnapshot | None:
        """The set the manifest file describes now, if it changed and differs from the current one (None: no
        change, or it was refused)."""
        signature = self._signature()
        if signature == self._seen:
            return self._candidate
        try:
            manifest = Manifest.load(self.path)
        except (OSError, ValueError) as exc:
            self._report("refused", ("manifest", signature), "model reload refused, keeping %s: %s",
                         self.current.model_version, exc)
            return None
        if manifest.manifest_hash == self.current.cache_tag:
            self._seen, self._candidate = signature, None
            return None
        if self._candidate is not None and self._candidate.cache_tag == manifest.manifest_hash:
            self._seen = signature
            return self._candidate
        try:
            candidate = load_snapshot(self.cfg, manifest)
        except (OSError, ValueError) as exc:  # retried at every check: the artifacts may still be on their way
            self._report("refused", ("artifacts", manifest.manifest_hash, str(exc)),
                         "model reload to %s refused, keeping %s: %s", manifest.model_version,
                         self.current.model_version, exc)
            return None
        self._seen, self._candidate = signature, candidate
        return candidate

    async def _check(self) -> None:
        current = self.current
        candidate = self._load_candidate()
        try:
            served = await self.intents.served(self.timeout_s)
        except Exception as exc:  # unreachable: keep what we have; inference calls degrade on their own
            log.debug("reload check: Triton not reachable (%s)", type(exc).__name__)
            return

        def serves(snapshot: ModelSnapshot) -> bool:
            return (served.manifest_hash == snapshot.cache_tag
                    and served.repository_version == snapshot.triton_version)

        if candidate is not None and serves(candidate):
            self._set(candidate.served_by(served))
            self._candidate = None
            self._report("applied", (candidate.cache_tag,), "model set %s applied (was %s)",
                         candidate.model_version, current.model_version)
        elif serves(current):
            if current.unserved:
                self._set(current.served_by(served))
                log.info("Triton serves %s: model calls resume", current.model_version)
            if candidate is not None:
                self._report("pending", (candidate.cache_tag,), "model set %s waits for Triton to serve it "
                             "(Triton serves %s)", candidate.model_version, current.model_version)
        else:
            why = (f"Triton serves {self.intents.model} with {_describe(served)}, not the gateway's "
                   f"{current.model_version}" + (f" nor {candidate.model_version}" if candidate else ""))
            self._report("refused", ("triton", served.manifest_hash, served.repository_version, current.cache_tag),
                         "model server refused: %s; answers are degraded until they agree (load the matching "
                         "version into Triton, or deploy its manifest and artifacts)", why)
            if not current.unserved:
                self._set(replace(current, unserved=why))
