"""Data directory -> featurized shards, the columnar way (the single-machine default)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.columnar.featurize import SessionEncoder, Tokens, fit_featurizer
from training.columnar.load import EventColumns, load_event_columns
from training.columnar.sessionize import SessionIndex, sessionize_columns
from training.core.contract import DataError, LoadReport
from training.core.featurizer import Featurizer, FeaturizerConfig
from training.shards import PART_SESSIONS, SessionColumns, to_table, write_featurized
from training.splits import HOLDOUT_PCT, VALIDATION_PCT, bucket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Featurized:
    """Everything the columnar path computed for one data directory."""

    events: EventColumns
    sessions: SessionIndex
    holdout: np.ndarray  # bool [S]
    featurizer: Featurizer
    columns: SessionColumns
    report: LoadReport


def visitor_buckets(sessions: SessionIndex, events: EventColumns) -> np.ndarray:
    """splits.bucket per session, hashed once per distinct visitor."""
    names = events.dicts["anonymous_id"].values
    return np.array([bucket(v) for v in names] + [100], dtype=np.int8)[sessions.visitor]


def _prepare(data_dir: Path | str, strict: bool) -> tuple[EventColumns, SessionIndex, np.ndarray, LoadReport]:
    """Validated, sessionized events and each session's visitor bucket."""
    report = LoadReport()
    events = load_event_columns(data_dir, report)
    if strict and report.problems:
        raise DataError(f"{len(report.problems)} invalid rows (--strict):\n{report.summary()}")
    if report.problems:
        log.warning("%s", report.summary())
    sessions = sessionize_columns(events)
    log.info("%d events -> %d sessions (columnar)", len(events), len(sessions))
    return events, sessions, visitor_buckets(sessions, events), report


def _fit(events: EventColumns, sessions: SessionIndex, buckets: np.ndarray,
         config: FeaturizerConfig | None, tokens: Tokens) -> Featurizer:
    train = (buckets >= HOLDOUT_PCT) & (buckets >= VALIDATION_PCT)
    return fit_featurizer(events, sessions, train, config, tokens)


def _prepare_encoder(data_dir: Path | str, featurizer: Featurizer | None, config: FeaturizerConfig | None,
                     strict: bool) -> tuple[EventColumns, SessionIndex, np.ndarray, LoadReport, SessionEncoder]:
    """_prepare, then the encoder of `featurizer` (fitted on the training visitors when None): with the
    sessions' hold-out flags."""
    events, sessions, buckets, report = _prepare(data_dir, strict)
    tokens = Tokens(events)
    featurizer = featurizer or _fit(events, sessions, buckets, config, tokens)
    return events, sessions, buckets < HOLDOUT_PCT, report, SessionEncoder(featurizer, events, tokens)


def _encode(encoder: SessionEncoder, sessions: SessionIndex, holdout: np.ndarray) -> SessionColumns:
    lengths, cat, cont = encoder(sessions)
    return SessionColumns(sessions.session_id, sessions.anonymous_id, sessions.start_ms, sessions.end_ms,
                          holdout, lengths.astype(np.int32), cat, cont)


def featurize_events(data_dir: Path | str, featurizer: Featurizer | None = None,
                     config: FeaturizerConfig | None = None, strict: bool = False) -> Featurized:
    """Load, validate, sessionize and featurize in memory; fit the featurizer on training visitors unless given."""
    events, sessions, holdout, report, encoder = _prepare_encoder(data_dir, featurizer, config, strict)
    return Featurized(events, sessions, holdout, encoder.featurizer, _encode(encoder, sessions, holdout), report)


def featurize_dir(data_dir: Path | str, out_dir: Path | str, featurizer: Featurizer | None = None,
                  config: FeaturizerConfig | None = None, strict: bool = False,
                  part_sessions: int = PART_SESSIONS) -> dict:
    """featurize_events written as shards (training.shards), one part encoded at a time; returns _SUCCESS.json."""
    events, sessions, holdout, report, encoder = _prepare_encoder(data_dir, featurizer, config, strict)

    def parts():
        for start in range(0, len(sessions), part_sessions):
            stop = min(start + part_sessions, len(sessions))
            yield to_table(_encode(encoder, sessions.slice(start, stop), holdout[start:stop]))

    return write_featurized(out_dir, parts(), encoder.featurizer, report, len(events), part_sessions)
