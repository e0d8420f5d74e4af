"""Load a data directory into sessions with their hold-out flag (and hidden intents, when a truth/ exists)."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from training.core.contract import DataError, Event, LoadReport, load_events
from training.core.sessionize import Session, sessionize
from training.splits import HOLDOUT_PCT, is_holdout

if TYPE_CHECKING:
    from training.columnar import EventColumns, SessionIndex
    from training.columnar.featurize import Tokens
    from training.core.featurizer import Featurizer
    from training.shards import FlatSessions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionData:
    sessions: list[Session]
    holdout: list[bool]
    report: LoadReport

    def part(self, holdout: bool) -> list[Session]:
        return [s for s, h in zip(self.sessions, self.holdout, strict=True) if h == holdout]


def load_sessions(data_dir: Path | str, strict: bool = False, report_dir: Path | None = None,
                  columnar: bool = True) -> SessionData:
    """Validate events (problems logged and, with report_dir, written out), then sessionize.

    `columnar=True` validates and sessionizes with training.columnar (same report, same sessions) and builds
    the Event objects afterwards without re-validating them; False is the row-level reference.
    """
    report = LoadReport()
    if columnar:
        sessions = _columnar_sessions(Path(data_dir), report, strict)
    else:
        sessions = sessionize(load_events(Path(data_dir), report, strict=strict))
    if report.problems:
        log.warning("%s", report.summary())
        if report_dir is not None:
            report.write_problems(report_dir / "invalid_rows.jsonl")
    log.info("%d events -> %d sessions from %d visitors", sum(len(s.events) for s in sessions), len(sessions),
             len({s.anonymous_id for s in sessions}))
    return SessionData(sessions, [is_holdout(s.anonymous_id) for s in sessions], report)


def _columnar_sessions(data_dir: Path, report: LoadReport, strict: bool) -> list[Session]:
    """Sessions from the columnar path; events are already valid, so they are constructed, not validated."""
    table = load_session_table(data_dir, report, strict)
    collecting = gc.isenabled()
    gc.disable()  # millions of new acyclic objects: the cyclic collector would rescan them again and again
    try:
        built = table.build_events(table.index.order)
        bounds = table.index.offsets.tolist()
        return [Session(sid, aid, tuple(built[bounds[i]:bounds[i + 1]]))
                for i, (sid, aid) in enumerate(zip(table.session_ids, table.anonymous_ids, strict=True))]
    finally:
        if collecting:
            gc.enable()


def load_session_table(data_dir: Path | str, report: LoadReport | None = None, strict: bool = False) -> SessionTable:
    """The data directory's sessions as columns (training.columnar). Problems go to `report`; without one they
    are logged here, as load_sessions logs them."""
    from training.columnar import load_event_columns, sessionize_columns

    problems = report if report is not None else LoadReport()
    events = load_event_columns(data_dir, problems)
    if strict and problems.problems:
        raise DataError(f"{len(problems.problems)} invalid rows (--strict):\n{problems.summary()}")
    if report is None and problems.problems:
        log.warning("%s", problems.summary())
    return SessionTable(events, sessionize_columns(events))


ITER_SESSIONS = 4096
"""Sessions a SessionTable builds at once when iterated: the Event objects alive at a time."""


class SessionTable(Sequence[Session]):
    """Sessions as the columnar path holds them (about 40 bytes per event; as Event objects, about 1.3 KB).

    Ids and bounds are lists and arrays; a session's Event objects are built when it is read and not kept, so
    a pass over a bank's sessions holds one at a time. The passes that need every session's events have their
    own column paths: `documents` (bag of pages) and `encoded` (the featurizer's arrays)."""

    def __init__(self, events: EventColumns, index: SessionIndex) -> None:
        self.events, self.index = events, index
        self.session_ids: list[str] = index.session_id.to_pylist()
        self.anonymous_ids: list[str] = index.anonymous_id.to_pylist()
        self.start_ms: np.ndarray = np.asarray(index.start_ms, dtype=np.int64)
        self.end_ms: np.ndarray = np.asarray(index.end_ms, dtype=np.int64)
        self._documents: list[str] | None = None
        self._encoded: dict[str, FlatSessions] = {}
        self._tokens: Tokens | None = None

    def __len__(self) -> int:
        return len(self.session_ids)

    @overload
    def __getitem__(self, i: int) -> Session: ...

    @overload
    def __getitem__(self, i: slice) -> list[Session]: ...

    def __getitem__(self, i: int | slice) -> Session | list[Session]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"session {i} out of range ({len(self)})")
        i %= len(self)
        rows = self.index.order[self.index.offsets[i]:self.index.offsets[i + 1]]
        return Session(self.session_ids[i], self.anonymous_ids[i], tuple(self.build_events(rows)))

    def holdout(self) -> np.ndarray:
        """splits.is_holdout of each session's visitor (hashed once per visitor), as SessionData.holdout."""
        from training.columnar.run import visitor_buckets

        return visitor_buckets(self.index, self.events) < HOLDOUT_PCT

    def __iter__(self) -> Iterator[Session]:
        """Every session in order, built ITER_SESSIONS at a time (one lookup pass per chunk, not per session)."""
        bounds = self.index.offsets
        for start in range(0, len(self), ITER_SESSIONS):
            stop = min(start + ITER_SESSIONS, len(self))
            first = int(bounds[start])
            built = self.build_events(self.index.order[first:int(bounds[stop])])
            edges = (bounds[start:stop + 1] - first).tolist()
            for k, i in enumerate(range(start, stop)):
                yield Session(self.session_ids[i], self.anonymous_ids[i], tuple(built[edges[k]:edges[k + 1]]))

    def build_events(self, rows: np.ndarray) -> list[Event]:
        """Event objects of event rows `rows`, values looked up in the columns' dictionaries."""
        events = self.events
        fields: dict[str, list] = {}
        for name, dictionary in events.dicts.items():
            codes = events.codes[name][rows]
            values = np.array([*dictionary.values, None], dtype=object)
            fields[name] = values[np.where(codes < 0, len(values) - 1, codes)].tolist()
        fields["ts"] = events.ts[rows].tolist()
        dwell = events.dwell_ms[rows]
        fields["dwell_ms"] = np.where(dwell < 0, None, dwell).tolist()
        names = list(fields)
        collecting = gc.isenabled()
        gc.disable()  # many new acyclic objects: the cyclic collector would rescan them again and again
        try:
            return [_event(dict(zip(names, row, strict=True))) for row in zip(*fields.values(), strict=True)]
        finally:
            if collecting:
                gc.enable()

    def tokens(self) -> Tokens:
        """The columns' token tables (normalize_url and the rest once per distinct value), shared by
        `documents` and `encoded`."""
        if self._tokens is None:
            from training.columnar.featurize import Tokens

            self._tokens = Tokens(self.events)
        return self._tokens

    def documents(self) -> list[str]:
        """training.probe.page_document of every session (its normalized pages, space-separated), from the
        URL column: normalize_url runs once per distinct URL."""
        if self._documents is None:
            pages = np.array(self.tokens().url, dtype=object)
            codes = self.events.codes["url"][self.index.order]
            bounds = self.index.offsets.tolist()
            self._documents = [" ".join(pages[codes[bounds[i]:bounds[i + 1]]]) for i in range(len(self))]
        return self._documents

    def encoded(self, featurizer: Featurizer) -> FlatSessions:
        """Featurizer.encode of every session, as one flat data set (training.columnar.SessionEncoder); kept
        per featurizer version, since evaluation asks for it more than once."""
        from training.columnar.featurize import SessionEncoder
        from training.shards import FlatSessions

        if featurizer.version not in self._encoded:
            lengths, cat, cont = SessionEncoder(featurizer, self.events, self.tokens())(self.index)
            self._encoded[featurizer.version] = FlatSessions(lengths, cat, cont)
        return self._encoded[featurizer.version]


def _event(values: dict) -> Event:
    """An Event from values the contract already accepted: pydantic's model_construct without its per-call cost
    (about 5x faster; equal to the validated model, which compares field values)."""
    event = object.__new__(Event)
    object.__setattr__(event, "__dict__", values)
    object.__setattr__(event, "__pydantic_fields_set__", set(values))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


def load_truth_intents(data_dir: Path | str) -> dict[str, str]:
    """session_id -> hidden intent, from the generator's truth/ folder (evaluation only)."""
    path = Path(data_dir) / "truth" / "sessions.jsonl"
    if not path.exists():
        return {}
    with path.open() as fh:
        return {row["session_id"]: row["intent"] for row in map(json.loads, fh)}


def data_world(data_dir: Path | str) -> dict:
    """What a data directory is: {"name", "synthetic"}. The synthetic world it was generated from (truth/
    generator_config.json's `world`; a config without the field is the first generator's, now called `weak`),
    else a user's directory, named by its folder."""
    config = Path(data_dir) / "truth" / "generator_config.json"
    if config.exists():
        return {"name": str(json.loads(config.read_text()).get("world") or "weak"), "synthetic": True}
    return {"name": Path(data_dir).resolve().name, "synthetic": False}
