"""Data directory -> featurized shards, the columnar way (the single-machine default)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.columnar.featurize import encode_sessions, fit_featurizer
from training.columnar.load import EventColumns, load_event_columns
from training.columnar.sessionize import SessionIndex, sessionize_columns
from training.core.contract import DataError, LoadReport
from training.core.featurizer import Featurizer, FeaturizerConfig
from training.shards import PART_SESSIONS, SessionColumns, to_table, write_featurized
from training.splits import is_holdout

log = logging.getLogger(__name__)

FIT_VALIDATION_PCT = 30
"""training.pipeline.VALIDATION_PCT: the featurizer is fitted on visitors outside hold-out and validation."""


@dataclass(frozen=True)
class Featurized:
    """Everything the columnar path computed for one data directory."""

    events: EventColumns
    sessions: SessionIndex
    holdout: np.ndarray  # bool [S]
    featurizer: Featurizer
    columns: SessionColumns
    report: LoadReport


def visitor_mask(sessions: SessionIndex, events: EventColumns, pct: int | None = None) -> np.ndarray:
    """is_holdout per session, hashed once per distinct visitor."""
    names = events.dicts["anonymous_id"].values
    flags = np.array([is_holdout(v) if pct is None else is_holdout(v, pct) for v in names] + [False], dtype=bool)
    return flags[sessions.visitor]


def featurize_events(data_dir: Path | str, featurizer: Featurizer | None = None,
                     config: FeaturizerConfig | None = None, strict: bool = False) -> Featurized:
    """Load, validate, sessionize and featurize; fit the featurizer on training visitors unless given one."""
    report = LoadReport()
    events = load_event_columns(data_dir, report)
    if strict and report.problems:
        raise DataError(f"{len(report.problems)} invalid rows (--strict):\n{report.summary()}")
    if report.problems:
        log.warning("%s", report.summary())
    sessions = sessionize_columns(events)
    holdout = visitor_mask(sessions, events)
    if featurizer is None:
        train = ~holdout & ~visitor_mask(sessions, events, FIT_VALIDATION_PCT)
        featurizer = fit_featurizer(events, sessions, train, config)
    lengths, cat, cont = encode_sessions(featurizer, events, sessions)
    columns = SessionColumns(sessions.session_id, sessions.anonymous_id, sessions.start_ms, sessions.end_ms,
                             holdout, lengths.astype(np.int32), cat, cont)
    log.info("%d events -> %d sessions (columnar)", len(events), len(sessions))
    return Featurized(events, sessions, holdout, featurizer, columns, report)


def featurize_dir(data_dir: Path | str, out_dir: Path | str, featurizer: Featurizer | None = None,
                  config: FeaturizerConfig | None = None, strict: bool = False,
                  part_sessions: int = PART_SESSIONS) -> dict:
    """featurize_events written as shards (training.shards); returns the _SUCCESS.json content."""
    done = featurize_events(data_dir, featurizer, config, strict)
    return write_featurized(out_dir, [to_table(done.columns)], done.featurizer, done.report, len(done.events),
                            part_sessions)
