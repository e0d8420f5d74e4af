"""Vectorized sessionizing with training.core.sessionize's rules and order.

Events sort by (visitor, ts, line) — the reference's stable per-visitor sort. An event with a session_id
joins that explicit session; the others cut at gaps over `gap_ms` between consecutive such events. Sessions
are ordered as the reference's stable sort leaves them: (start, session id), then the visitor's first line,
then inactivity sessions before explicit ones, each by first event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.columnar.load import EventColumns
from training.core.sessionize import SESSION_GAP_MS


@dataclass(frozen=True)
class SessionIndex:
    """Sessions in the reference order; `order` lists event rows session after session, each in time order."""

    session_id: pa.Array  # string [S]
    anonymous_id: pa.Array  # string [S]
    visitor: np.ndarray  # int32 [S] anonymous_id code
    start_ms: np.ndarray  # int64 [S]
    end_ms: np.ndarray  # int64 [S]
    offsets: np.ndarray  # int64 [S + 1] into `order`
    order: np.ndarray  # int64 [N] event rows

    def __len__(self) -> int:
        return len(self.start_ms)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def slice(self, start: int, stop: int) -> SessionIndex:
        """Sessions [start, stop) as their own index (views, so a part can be encoded and dropped)."""
        offsets = self.offsets[start:stop + 1]
        return SessionIndex(self.session_id[start:stop], self.anonymous_id[start:stop], self.visitor[start:stop],
                            self.start_ms[start:stop], self.end_ms[start:stop], offsets - offsets[0],
                            self.order[offsets[0]:offsets[-1]])


def sessionize_columns(events: EventColumns, gap_ms: int = SESSION_GAP_MS) -> SessionIndex:
    aid, ts = events.codes["anonymous_id"], events.ts
    sorted_rows = np.lexsort((events.line, ts, aid))
    s_aid, s_ts = aid[sorted_rows], ts[sorted_rows]
    sid_values = events.dicts["session_id"].values
    truthy = np.array([bool(v) for v in sid_values] + [False], dtype=bool)
    s_sid = events.codes["session_id"][sorted_rows]
    explicit = truthy[s_sid]
    n = len(sorted_rows)

    # inactivity sessions: cut between consecutive non-explicit events of a visitor
    gap_pos = np.flatnonzero(~explicit)
    g_aid, g_ts = s_aid[gap_pos], s_ts[gap_pos]
    new = np.ones(len(gap_pos), dtype=bool)
    new[1:] = (g_aid[1:] != g_aid[:-1]) | (g_ts[1:] - g_ts[:-1] > gap_ms)
    del g_aid, g_ts
    session_of = np.empty(n, dtype=np.int32)
    session_of[gap_pos] = np.cumsum(new) - 1
    n_gap = int(new.sum())

    # explicit sessions: one per (visitor, session_id), numbered by first event
    ex_pos = np.flatnonzero(explicit)
    key = s_aid[ex_pos].astype(np.int64) * (len(sid_values) + 1) + s_sid[ex_pos]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    session_of[ex_pos] = n_gap + rank[inverse]
    n_sessions = n_gap + len(first)

    # per-session first/last event (positions in the sorted order are increasing within a session)
    counts = np.bincount(session_of, minlength=n_sessions)
    runs = np.flatnonzero(new)
    first_pos = np.empty(n_sessions, dtype=np.int64)
    last_pos = np.empty(n_sessions, dtype=np.int64)
    first_pos[:n_gap] = gap_pos[runs]
    last_pos[:n_gap] = gap_pos[np.append(runs[1:] - 1, len(gap_pos) - 1)] if n_gap else runs
    _, last_rev = np.unique(key[::-1], return_index=True)
    first_pos[n_gap:][rank] = ex_pos[first]
    last_pos[n_gap:][rank] = ex_pos[len(key) - 1 - last_rev]
    visitor = s_aid[first_pos]
    start, end = s_ts[first_pos], s_ts[last_pos]
    is_explicit = np.arange(n_sessions) >= n_gap

    aid_values = pa.array(events.dicts["anonymous_id"].values, pa.string())
    visitor_names = aid_values.take(pa.array(visitor))
    gap_ids = pc.binary_join_element_wise(visitor_names, pc.cast(pa.array(start), pa.string()), "@")
    sid_first = s_sid[first_pos]
    sid_first = np.where(sid_first < 0, len(sid_values), sid_first)
    explicit_ids = pa.array([*sid_values, ""], pa.string()).take(pa.array(sid_first))
    session_ids = pc.if_else(pa.array(is_explicit), explicit_ids, gap_ids)

    first_line = _visitor_first_line(events, s_aid, sorted_rows)
    final = pc.sort_indices(pa.table({"start": start, "sid": session_ids, "vline": first_line[visitor],
                                      "explicit": is_explicit, "first": first_pos}),
                            sort_keys=[("start", "ascending"), ("sid", "ascending"), ("vline", "ascending"),
                                       ("explicit", "ascending"), ("first", "ascending")]).to_numpy()
    new_offsets = np.zeros(n_sessions + 1, dtype=np.int64)
    np.cumsum(counts[final], out=new_offsets[1:])
    rank_of = np.empty(n_sessions, dtype=np.int32)
    rank_of[final] = np.arange(n_sessions)
    del s_sid, explicit, gap_pos, ex_pos, key, inverse, s_aid, s_ts
    gather = np.argsort(rank_of[session_of], kind="stable")  # events of a session stay in time order
    return SessionIndex(session_ids.take(pa.array(final)), visitor_names.take(pa.array(final)),
                        visitor[final], start[final], end[final], new_offsets, sorted_rows[gather])


def _visitor_first_line(events: EventColumns, s_aid: np.ndarray, sorted_rows: np.ndarray) -> np.ndarray:
    """Each visitor's first line in the file: the reference keeps visitors in first-seen order on ties."""
    first = np.full(len(events.dicts["anonymous_id"].values), np.iinfo(np.int64).max, dtype=np.int64)
    if len(s_aid):
        groups = np.flatnonzero(np.concatenate(([True], s_aid[1:] != s_aid[:-1])))
        first[s_aid[groups]] = np.minimum.reduceat(events.line[sorted_rows], groups)
    return first
