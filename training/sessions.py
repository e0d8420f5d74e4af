"""Load a data directory into sessions with their hold-out flag (and hidden intents, when a truth/ exists)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from training.core.contract import LoadReport, load_events
from training.core.sessionize import Session, sessionize
from training.splits import is_holdout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionData:
    sessions: list[Session]
    holdout: list[bool]
    report: LoadReport

    def part(self, holdout: bool) -> list[Session]:
        return [s for s, h in zip(self.sessions, self.holdout, strict=True) if h == holdout]


def load_sessions(data_dir: Path | str, strict: bool = False, report_dir: Path | None = None) -> SessionData:
    """Validate events (problems logged and, with report_dir, written out), then sessionize."""
    report = LoadReport()
    events = load_events(Path(data_dir), report, strict=strict)
    if report.problems:
        log.warning("%s", report.summary())
        if report_dir is not None:
            report.write_problems(report_dir / "invalid_rows.jsonl")
    sessions = sessionize(events)
    log.info("%d events -> %d sessions from %d visitors", len(events), len(sessions),
             len({s.anonymous_id for s in sessions}))
    return SessionData(sessions, [is_holdout(s.anonymous_id) for s in sessions], report)


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
