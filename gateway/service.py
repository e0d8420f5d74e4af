"""The gateway's logic (`Gateway`) and its gRPC face (`GatewayServicer`).

RankTiles: the customer's links -> their visitors' sessions that ended in the lookback window
(`select_sessions`) -> (cached per session version and model manifest, else one Triton call for all, pinned
to the snapshot's ensemble version) embeddings and intent
probabilities -> the ranker's pre-login signal, pooled by `ranker.pool_sessions` (recency weights at the
ranker's half-life, from each session's end to now, plus the recency features; the plain mean for format
1/2 rankers), the same function the evaluation pools with -> tile scores. When Triton is down or slower than
`triton_timeout_s`, the same ranker scores the tiles with the no-session input and the answer says `degraded`.
Writes hand the visitors they touch to the write-behind embedder (gateway/embedder.py), which usually fills
that cache before the app asks.

Every answer comes from one model snapshot (gateway/snapshot.py: featurizer, ranker, labels, manifest, Triton
version), read once at the request's start, and reports its `model_version`. Cache keys are
`<manifest hash>:<session id>:<event count>`, filed under the session's visitor, and entries carry a header
(gateway/store/base.py): an entry of another model set is a miss, never a wrong answer.

Privacy by construction (gateway/privacy.py): every customer and visitor id is replaced by its keyed pseudonym
here, before the store sees it, so the store, its session ids and its cache keys hold pseudonyms only; reads
and ForgetCustomer look under the pseudonyms of every configured key. ForgetCustomer deletes, tombstones and
drops the write-behind work of the customer's visitors. No log line, span attribute or error message carries
an id: they say counts and reasons.

A store that fails (StoreUnavailable) degrades RankTiles to the baseline order ("session store unavailable");
a failing cache read is a miss and a failing cache write is ignored; writes raise it (UNAVAILABLE, retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import grpc
import numpy as np

from gateway import auth, rpc
from gateway.api import pb, pb_grpc
from gateway.config import GatewayConfig
from gateway.embedder import WriteBehindEmbedder
from gateway.errors import GatewayError, failed_precondition, invalid_argument, not_found
from gateway.privacy import Pseudonymizer
from gateway.retention import RetentionTask
from gateway.snapshot import ModelSnapshot
from gateway.store import Forgotten, SessionStore, StoreUnavailable, pack_cache_entry, unpack_cache_entry
from gateway.telemetry import METRICS, child_span
from gateway.triton_client import SessionIntents, TritonIntentClient, VersionGone
from gateway.validation import EventLimits, check_rank_request, require_ids, to_events
from training.core.contract import Event, parse_ts
from training.core.ranker import RECENCY_FEATURES, Ranker
from training.core.sessionize import Session, sessionize

log = logging.getLogger("gateway")
T = TypeVar("T")
DAY_MS = 86_400_000
SESSION_READ_PAD_MS = DAY_MS
"""Events are read this much before the lookback so that a session which started before the window but
ended inside it is whole, as the evaluation sees it (a session cut by 30-minute gaps spanning more than a
day, or an explicit session_id reused over days, would be cut short)."""
STORE_DOWN = "session store unavailable"
"""degraded_reason of a RankTiles answered without the store."""
DEADLINE_MARGIN_S = 0.02
"""Left of the caller's deadline after the model call: time to rank and answer."""


def select_sessions(events: Iterable[Event], now_ms: int, lookback_ms: int, max_sessions: int) -> list[Session]:
    """The sessions the ranker pools at `now_ms`, chosen as the evaluation chooses them
    (`EvalData.linked_before`): sessionize the events, keep the sessions that *ended* in [now - lookback, now]
    (whole, including events before the window's start; a session still going on after now is left out, as a
    replay with `as_of` would otherwise see the future), then the `max_sessions` most recent by start."""
    sessions = [s for s in sessionize(events) if now_ms - lookback_ms <= s.end_ms <= now_ms]
    return sorted(sessions, key=lambda s: s.start_ms)[-max_sessions:]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Recorded:
    """RecordEvents' outcome: stored, links made, evicted by the per-visitor cap, refused as forgotten."""
    accepted: int
    links: int
    evicted: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Ranking:
    tiles: list[tuple[str, float]]
    intents: list[tuple[str, float]]
    sessions_used: int
    degraded: bool
    reason: str
    model_version: str


class Gateway:
    """The gateway's logic over one store, one Triton client and the current model snapshot.

    `snapshot` is replaced whole by a reload (gateway/snapshot.py); every request reads it once at its start and
    uses only that one (`_rank_on`, `_intents_on`), so an answer never mixes two model sets. `refresh(snapshot)`
    (given by ServingApp) returns a newer snapshot when Triton no longer serves `snapshot`'s version: the
    request is then retried once, whole, on it. Built as `Gateway(cfg, store, intents, ranker)` (no manifest),
    the snapshot is `ModelSnapshot.unpinned` from the ranker and the client's labels and version.
    """

    def __init__(self, cfg: GatewayConfig, store: SessionStore, intents: TritonIntentClient,
                 ranker: Ranker | None = None, snapshot: ModelSnapshot | None = None,
                 refresh: Callable[[ModelSnapshot], Awaitable[ModelSnapshot | None]] | None = None,
                 pseudonyms: Pseudonymizer | None = None) -> None:
        """`pseudonyms` (default: from cfg's id_hash_key, else the generated local key) maps every id before
        the store sees it."""
        self.cfg, self.store, self.intents = cfg, store, intents
        self.ids = pseudonyms or Pseudonymizer.from_config(cfg)
        self.event_limits = EventLimits.from_config(cfg)
        if snapshot is None:
            if ranker is None:
                raise ValueError("Gateway needs a ranker or a snapshot")
            snapshot = ModelSnapshot.unpinned(cfg, ranker, intents.labels, getattr(intents, "version", ""),
                                              getattr(intents, "featurizer", None))
        self.snapshot = snapshot
        self.refresh = refresh
        self.fixed_now = parse_ts(cfg.as_of) if cfg.as_of else None
        self.embedder: WriteBehindEmbedder | None = None
        if cfg.embed_on_write and cfg.cache_embeddings:
            self.embedder = WriteBehindEmbedder(store, self._embed_on_write, lambda: self.read_since_ms(),
                                                cfg.max_sessions, cfg.embed_delay_ms / 1000, cfg.max_pending_writes)
        self.retention = RetentionTask(store, cfg.retention_interval_s, self.now_ms)

    async def start(self) -> None:
        """Start the background work: write-behind embedding and retention (every retention_interval_s)."""
        if self.embedder is not None:
            self.embedder.start()
        self.retention.start()

    async def stop(self) -> None:
        await self.retention.stop()
        if self.embedder is not None:
            await self.embedder.stop()

    # the current snapshot's parts, for callers that read them outside a request
    @property
    def ranker(self) -> Ranker:
        return self.snapshot.ranker

    @property
    def lookback_ms(self) -> int:
        return self.snapshot.lookback_ms

    @property
    def model_version(self) -> str:
        return self.snapshot.model_version

    def now_ms(self) -> int:
        return self.fixed_now if self.fixed_now is not None else int(time.time() * 1000)

    def read_since_ms(self, now_ms: int | None = None, snapshot: ModelSnapshot | None = None) -> int:
        """Where reading a customer's events starts: the lookback plus `SESSION_READ_PAD_MS`."""
        lookback = (snapshot or self.snapshot).lookback_ms
        return (self.now_ms() if now_ms is None else now_ms) - lookback - SESSION_READ_PAD_MS

    # -- writes

    def _pseudonymous(self, event: Event) -> Event:
        """The event as the store keeps it: its visitor and customer ids replaced by their pseudonyms."""
        customer = self.ids.customer(event.customer_id) if event.customer_id else None
        return event.model_copy(update={"anonymous_id": self.ids.visitor(event.anonymous_id),
                                        "customer_id": customer})

    async def record(self, messages: Sequence[pb.WebEvent]) -> Recorded:
        """Store a batch (all or nothing); its login events link their visitor (needs the identity:link scope).
        Events of forgotten visitors or customers are refused and counted."""
        # a replay (as_of) records history around its own now: only the wall clock bounds it (validation.py)
        now = None if self.fixed_now is not None else self.now_ms()
        events = to_events(messages, self.cfg.max_batch_events, now_ms=now, limits=self.event_limits)
        logins = [i for i, e in enumerate(events) if e.customer_id and e.event_type == "login"]
        if logins:
            auth.require_scope("identity:link", f"events[{logins[0]}].customer_id")
        stored = [self._pseudonymous(e) for e in events]
        result = await self.store.append(stored, self.now_ms())
        links = 0
        for i in logins:
            e = stored[i]
            with contextlib.suppress(Forgotten):  # its event was refused (and counted) by the append
                links += (await self.store.link(e.anonymous_id, e.customer_id, "login", e.ts))[1]
        if result.accepted or links:
            self.touched(e.anonymous_id for e in stored)
        return Recorded(result.accepted, links, result.evicted, result.refused)

    async def link(self, anonymous_id: str, customer_id: str) -> tuple[pb.IdentityLink, bool]:
        """LinkIdentity: the link under the current key's pseudonyms; FAILED_PRECONDITION (without the ids)
        for a customer or visitor forgotten within forget_tombstone_days."""
        anon = self.ids.visitor(anonymous_id)
        try:
            link, created = await self.store.link(anon, self.ids.customer(customer_id), "api", self.now_ms())
        except Forgotten:
            raise failed_precondition("identity", "the customer or the visitor was forgotten recently "
                                      f"(ForgetCustomer): links are refused for {self.cfg.forget_tombstone_days:g} "
                                      "days") from None
        if created:
            self.touched([anon])
        return pb.IdentityLink(anonymous_id=anonymous_id, customer_id=customer_id, linked_at=iso(link.linked_at_ms),
                               source=pb.LINK_SOURCE_LOGIN if link.source == "login" else pb.LINK_SOURCE_API), created

    async def unlink(self, anonymous_id: str, customer_id: str) -> bool:
        """UnlinkIdentity under every key's pseudonyms."""
        removed = False
        for anon in self.ids.visitor_all(anonymous_id):
            for customer in self.ids.customer_all(customer_id):
                removed = await self.store.unlink(anon, customer) or removed
        return removed

    async def forget(self, customer_id: str) -> tuple[int, int]:
        """ForgetCustomer: everything about the customer under every key (links, their visitors' events and
        cached embeddings, events carrying the customer), their pending write-behind work, and a tombstone;
        (links deleted, events deleted)."""
        forgot = await self.store.forget_customer(self.ids.customer_all(customer_id), self.now_ms())
        if self.embedder is not None:
            self.embedder.forget(forgot.visitors)
        METRICS.forgotten.inc()
        log.info("forgot a customer: %d links, %d events, %d visitors tombstoned", forgot.links, forgot.events,
                 len(forgot.visitors))  # never an id in the log
        return forgot.links, forgot.events

    def touched(self, anonymous_ids: Iterable[str]) -> None:
        """Visitors whose events or links changed: their sessions may need embedding."""
        if self.embedder is not None:
            self.embedder.submit(anonymous_ids)

    async def _embed_on_write(self, sessions: Sequence[Session]) -> str:
        _, reason, _ = await self.intents_for(sessions, self.cfg.embed_timeout_s, path="write")
        return reason

    # -- reads

    async def sessions_of(self, anonymous_ids: Sequence[str], since_ms: int) -> list[Session]:
        """The recent sessions of visitors given by their pseudonyms."""
        events: list[Event] = []
        for anon in anonymous_ids:
            events += await self.store.events(anon, since_ms)
        sessions = sorted(sessionize(events), key=lambda s: s.start_ms)
        return sessions[-self.cfg.max_sessions:]

    async def visitor_sessions(self, anonymous_id: str) -> list[Session]:
        """A visitor's sessions (by its id) under every key's pseudonym."""
        return await self.sessions_of(self.ids.visitor_all(anonymous_id), 0)

    async def is_linked(self, customer_id: str) -> bool:
        for customer in self.ids.customer_all(customer_id):
            if await self.store.links(customer):
                return True
        return False

    async def intents_for(self, sessions: Sequence[Session], timeout_s: float | None = None, path: str = "read",
                          snapshot: ModelSnapshot | None = None
                          ) -> tuple[SessionIntents | None, str, ModelSnapshot]:
        """Per-session embeddings and probabilities on `snapshot` (default: the current one), from the cache or
        one Triton call, (None, why) when late or unavailable; retried once on a newer snapshot when Triton no
        longer serves its version. Also returns the snapshot the intents belong to."""

        async def attempt(snap: ModelSnapshot) -> tuple[SessionIntents | None, str, ModelSnapshot]:
            return (*await self._intents_on(snap, sessions, timeout_s, path), snap)

        async def gone(snap: ModelSnapshot, why: str) -> tuple[SessionIntents | None, str, ModelSnapshot]:
            return None, why, snap

        return await self._on_served_snapshot(snapshot or self.snapshot, attempt, gone)

    async def _on_served_snapshot(self, snapshot: ModelSnapshot, attempt: Callable[[ModelSnapshot], Awaitable[T]],
                                  gone: Callable[[ModelSnapshot, str], Awaitable[T]]) -> T:
        """`attempt(snapshot)`; when Triton no longer serves its version (VersionGone), once more, whole, on the
        newer snapshot `refresh` gives; when there is none or that one is gone too, `gone(last tried, why)`."""
        try:
            return await attempt(snapshot)
        except VersionGone:
            newer = await self._newer(snapshot)
        if newer is not None:
            try:
                return await attempt(newer)
            except VersionGone:
                snapshot = newer
        return await gone(snapshot, f"model version {snapshot.triton_version} is no longer served")

    async def _newer(self, snapshot: ModelSnapshot) -> ModelSnapshot | None:
        return None if self.refresh is None else await self.refresh(snapshot)

    async def _intents_on(self, snap: ModelSnapshot, sessions: Sequence[Session], timeout_s: float | None,
                          path: str, use_cache: bool = True) -> tuple[SessionIntents | None, str]:
        """Intents of `sessions` under one snapshot: cache entries of its manifest, else Triton pinned to its
        version. Raises VersionGone (the caller retries on a newer snapshot); other failures degrade.
        `use_cache` False (sessions that are not the store's) neither reads nor writes the cache."""
        timeout_s = self.cfg.triton_timeout_s if timeout_s is None else timeout_s
        dim, k = snap.embedding_dim, len(snap.labels)
        if not sessions:
            return SessionIntents(np.zeros((0, dim), np.float32), np.zeros((0, k), np.float32)), ""
        keys = [f"{snap.cache_tag}:{s.session_id}:{len(s.events)}" for s in sessions]
        use_cache = use_cache and self.cfg.cache_embeddings
        emb, probs = np.zeros((len(sessions), dim), np.float32), np.zeros((len(sessions), k), np.float32)
        missing = []
        for i, key in enumerate(keys):
            entry = unpack_cache_entry(await self._cache_get(sessions[i].anonymous_id, key), snap.cache_tag, dim,
                                       k) if use_cache else None
            if entry is None:
                missing.append(i)  # absent, or written by another model set or layout: a miss
            else:
                emb[i], probs[i] = entry
        if missing:
            if snap.unserved:
                return None, snap.unserved
            METRICS.embedded.labels(path).inc(len(missing))
            timeout_s = self._budget(timeout_s) if path == "read" else timeout_s
            try:
                fresh = await asyncio.wait_for(
                    self.intents.infer([sessions[i].events for i in missing], timeout_s, snap), timeout_s)
            except VersionGone:
                raise
            except TimeoutError:
                return None, f"model server slower than {timeout_s * 1000:.0f} ms"
            except Exception as exc:  # any model-server failure degrades, never fails the caller
                log.warning("triton call failed: %s", type(exc).__name__)  # its message may quote a request
                return None, f"model server unavailable: {type(exc).__name__}"
            if fresh.embeddings.shape[1] != dim or fresh.probabilities.shape[1] != k:
                log.warning("Triton answered %s embeddings and %s probabilities, the manifest says %d and %d",
                            fresh.embeddings.shape, fresh.probabilities.shape, dim, k)
                return None, "model server answered other shapes than the manifest's"
            for j, i in enumerate(missing):
                emb[i], probs[i] = fresh.embeddings[j], fresh.probabilities[j]
                if use_cache:
                    await self._cache_put(sessions[i].anonymous_id, keys[i],
                                          pack_cache_entry(snap.cache_tag, emb[i], probs[i]))
        return SessionIntents(emb, probs), ""

    def _budget(self, timeout_s: float) -> float:
        """The model call's budget: timeout_s, or less when the caller's deadline is nearer."""
        left = rpc.remaining_s()
        return timeout_s if left is None else max(0.001, min(timeout_s, left - DEADLINE_MARGIN_S))

    async def _cache_get(self, visitor: str, key: str) -> bytes | None:
        """A cache entry, or None: a store that cannot answer is a miss."""
        try:
            return await self.store.cache_get(visitor, key)
        except StoreUnavailable:
            METRICS.store_unavailable.labels("cache_get").inc()
            return None

    async def _cache_put(self, visitor: str, key: str, value: bytes) -> None:
        """Cache an entry; a store that cannot take it is ignored (the entry is only an optimization)."""
        try:
            await self.store.cache_put(visitor, key, value)
        except StoreUnavailable:
            METRICS.store_unavailable.labels("cache_put").inc()

    def top_intents(self, probs: np.ndarray, n: int = 3, labels: Sequence[str] | None = None
                    ) -> list[tuple[str, float]]:
        labels = self.snapshot.labels if labels is None else labels
        return [(labels[i], float(probs[i])) for i in np.argsort(-probs)[:n]]

    async def customer_sessions(self, customer_id: str, now_ms: int | None = None,
                                snapshot: ModelSnapshot | None = None) -> list[Session]:
        """The customer's linked sessions the ranker pools at `now_ms` (default: now), see `select_sessions`,
        under every key's pseudonym of the customer id."""
        snapshot = snapshot or self.snapshot
        now = self.now_ms() if now_ms is None else now_ms
        events: list[Event] = []
        for customer in self.ids.customer_all(customer_id):
            events += await self.store.customer_events(customer, self.read_since_ms(now, snapshot))
        return select_sessions(events, now, snapshot.lookback_ms, self.cfg.max_sessions)

    async def rank(self, request: pb.RankTilesRequest) -> Ranking:
        """RankTiles on the snapshot current at the request's start; retried once, whole, on a newer snapshot
        if Triton dropped that one's version meanwhile (else the degraded, no-session ranking)."""

        async def degraded(snap: ModelSnapshot, why: str) -> Ranking:
            return await self._rank_on(request, snap, degraded=why)

        return await self._on_served_snapshot(self.snapshot, lambda snap: self._rank_on(request, snap), degraded)

    async def _rank_on(self, request: pb.RankTilesRequest, snap: ModelSnapshot, degraded: str = "") -> Ranking:
        self._check_rank_request(request, snap)
        now = self.now_ms()
        with child_span("store.lookup") as span:
            try:
                sessions = await self.customer_sessions(request.customer_id, now, snap)
            except StoreUnavailable:
                METRICS.store_unavailable.labels("lookup").inc()
                sessions, degraded = [], STORE_DOWN
            span.set_attribute("sessions", len(sessions))
        if degraded:
            intents, reason = None, degraded
        else:
            intents, reason = await self._intents_on(snap, sessions, None, "read")
        return self.rank_with(request, sessions, intents, reason, now, snap)

    async def rank_events(self, request: pb.RankTilesRequest, messages: Sequence[pb.WebEvent]) -> Ranking:
        """The stateless variant (the KServe transformer's EVENTS input): the request check, session selection
        and ranking on the caller's events instead of the store's, under the snapshot current at the start.
        `request.customer_id` is only checked, never looked up. The embedding cache is neither read nor written:
        it is keyed by session id (visitor and start time) and length, which a caller's events could share with
        a stored session while differing from it. A Triton that no longer serves the snapshot's version
        degrades the answer (the caller retries; a reload is the reloader's business)."""
        snap = self.snapshot
        self._check_rank_request(request, snap)
        now = self.now_ms()
        events = (to_events(messages, self.cfg.max_batch_events, now_ms=now, limits=self.event_limits)
                  if messages else [])
        sessions = select_sessions(events, now, snap.lookback_ms, self.cfg.max_sessions)
        try:
            intents, reason = await self._intents_on(snap, sessions, None, "read", use_cache=False)
        except VersionGone:
            intents, reason = None, f"model version {snap.triton_version} is no longer served"
        return self.rank_with(request, sessions, intents, reason, now, snap)

    def rank_with(self, request: pb.RankTilesRequest, sessions: Sequence[Session], intents: SessionIntents | None,
                  reason: str, now_ms: int | None = None, snapshot: ModelSnapshot | None = None) -> Ranking:
        """The ranking core shared by RankTiles and the KServe v2 endpoint: tile scores from session intents.
        The sessions are pooled at `now_ms` (default: now) by the ranker's `pool_sessions`, with each session's
        end time, exactly as the evaluation pools them at an impression's time. `snapshot` (default: the
        current one) must be the one the intents were computed under."""
        snap = snapshot or self.snapshot
        with child_span("rank") as span:
            spec = snap.ranker.spec
            now = self.now_ms() if now_ms is None else now_ms
            # embeddings and intent probabilities share each session's weight: one pooling for both
            pooled = (spec.pool(np.hstack([intents.embeddings, intents.probabilities]), [s.end_ms for s in sessions],
                                now) if sessions and intents is not None else None)
            has_session = pooled is not None and pooled.has_session
            signal = pooled.signal[:spec.signal_dim] if has_session else np.zeros(spec.signal_dim, np.float32)
            recency = pooled.recency if has_session else np.zeros(len(RECENCY_FEATURES))
            n, ctx = len(request.tile_ids), request.context
            features = spec.features(
                list(request.tile_ids), [0] * n, [ctx.segment] * n, [ctx.tenure_months] * n,
                [list(ctx.products_held)] * n, np.tile(signal, (n, 1)), [has_session] * n,
                np.tile(recency, (n, 1)))
            scores = snap.ranker.score(features)
            order = np.argsort(-scores, kind="stable")
            width = intents.embeddings.shape[1] if intents is not None else spec.signal_dim
            explanation = self.top_intents(pooled.signal[width:], labels=snap.labels) if has_session else []
            span.set_attribute("tiles", n)
            span.set_attribute("degraded", intents is None)
            return Ranking([(request.tile_ids[i], float(scores[i])) for i in order], explanation,
                           len(sessions) if has_session else 0, intents is None, reason, snap.model_version)

    def _check_rank_request(self, request: pb.RankTilesRequest, snapshot: ModelSnapshot | None = None) -> None:
        check_rank_request(request, (snapshot or self.snapshot).ranker.spec.tiles, self.cfg)


class GatewayServicer(pb_grpc.IntentGatewayServiceServicer):
    """The typed gRPC face: validates, calls `Gateway`, converts back. GatewayError becomes its status here;
    anything else (StoreUnavailable included) is gateway/rpc.py's to map."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def _guard(self, context: grpc.aio.ServicerContext, call):
        try:
            return await call
        except GatewayError as exc:
            await context.abort_with_status(exc.status)

    async def RecordEvents(self, request, context):
        r = await self._guard(context, self.gw.record(request.events))
        return pb.RecordEventsResponse(accepted=r.accepted, links_created=r.links, evicted=r.evicted,
                                       refused_forgotten=r.refused)

    async def LinkIdentity(self, request, context):
        async def do():
            require_ids(anonymous_id=request.anonymous_id, customer_id=request.customer_id)
            return await self.gw.link(request.anonymous_id, request.customer_id)
        link, created = await self._guard(context, do())
        return pb.LinkIdentityResponse(created=created, link=link)

    async def UnlinkIdentity(self, request, context):
        async def do():
            require_ids(anonymous_id=request.anonymous_id, customer_id=request.customer_id)
            return await self.gw.unlink(request.anonymous_id, request.customer_id)
        return pb.UnlinkIdentityResponse(removed=await self._guard(context, do()))

    async def ForgetCustomer(self, request, context):
        async def do():
            require_ids(customer_id=request.customer_id)
            return await self.gw.forget(request.customer_id)
        links, events = await self._guard(context, do())
        return pb.ForgetCustomerResponse(links_deleted=links, events_deleted=events)

    async def GetSessions(self, request, context):
        return await self._guard(context, self._get_sessions(request))

    async def _get_sessions(self, request: pb.GetSessionsRequest) -> pb.GetSessionsResponse:
        """By customer: the linked visitors' sessions, each visitor named by its pseudonym (the store knows no
        other name); by visitor: its sessions under the caller's own id."""
        subject = request.WhichOneof("subject")
        if subject is None:
            raise invalid_argument([("subject", "set anonymous_id or customer_id")])
        if not 0 <= request.max_sessions <= 100:
            raise invalid_argument([("max_sessions", "must be between 0 and 100")])
        value = getattr(request, subject)
        require_ids(**{subject: value})
        snap = self.gw.snapshot  # one model set for the whole answer
        if subject == "customer_id":
            if not await self.gw.is_linked(value):
                raise not_found("customer", "no linked web visitor")
            sessions = await self.gw.customer_sessions(value, snapshot=snap)
        else:
            sessions = await self.gw.visitor_sessions(value)
            if not sessions:
                raise not_found("visitor", "no recorded events")
        sessions = sessions[-(request.max_sessions or self.gw.cfg.max_sessions):]
        intents, _, snap = await self.gw.intents_for(sessions, snapshot=snap)
        if intents is None:
            METRICS.degraded.labels("GetSessions").inc()
        out = pb.GetSessionsResponse(degraded=intents is None, model_version=snap.model_version)
        for i, s in enumerate(sessions):
            anon, session_id = s.anonymous_id, s.session_id
            if subject == "anonymous_id":  # echo the caller's id, not its pseudonym
                anon, session_id = value, session_id.replace(s.anonymous_id, value, 1)
            msg = out.sessions.add(session_id=session_id, anonymous_id=anon, start=iso(s.start_ms),
                                   end=iso(s.events[-1].ts), n_events=len(s.events))
            if intents is not None:
                msg.intents.extend(pb.IntentScore(label=lb, probability=p)
                                   for lb, p in self.gw.top_intents(intents.probabilities[i], labels=snap.labels))
                if request.include_embedding:
                    msg.embedding.extend(intents.embeddings[i].tolist())
        return out

    async def RankTiles(self, request, context):
        r = await self._guard(context, self.gw.rank(request))
        if r.degraded:
            METRICS.degraded.labels("RankTiles").inc()
            log.warning("degraded ranking: %s", r.reason)  # never an id in the log
        return pb.RankTilesResponse(
            tiles=[pb.RankedTile(tile_id=t, score=s) for t, s in r.tiles],
            intents=[pb.IntentScore(label=lb, probability=p) for lb, p in r.intents],
            sessions_used=r.sessions_used, degraded=r.degraded, degraded_reason=r.reason,
            model_version=r.model_version)
