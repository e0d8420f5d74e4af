"""LLM labelling: each sampled session gets one taxonomy label from the LLM.

A small model cannot choose well among 15 labels at once (SmolLM2-135M picked the first-listed label for
most sessions), so a lexical retriever shortlists the `shortlist` labels whose evidence (name, description,
typical pages, searches) best matches the session's pages and searches, in an order shuffled per session
to cancel position bias, and the LLM chooses among those under an enum schema. The retriever never sees
the encoder, so what the head later learns comes from the LLM's choices, not from the embedding itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, create_model
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm.auto import tqdm

from training.core.featurizer import normalize_url
from training.core.sessionize import Session
from training.taxonomy.llm import LLMClient, LLMOutputError
from training.taxonomy.summaries import compact_summary
from training.taxonomy.taxonomy import Taxonomy

log = logging.getLogger(__name__)

LABEL_SYSTEM = (
    "You classify one visit to a bank's website by the visitor's intent. Candidate labels:\n{labels}\n"
    'Pick the label that best explains the pages and searches. Reply with JSON {{"label": "<name>"}}.'
)


def session_document(session: Session) -> str:
    return " ".join([*(normalize_url(e.url) for e in session.events), *(e.query or "" for e in session.events)])


@dataclass(frozen=True)
class LabelledSession:
    session_id: str
    label: str | None
    """None when no valid reply came back within the retry bound (reported, never guessed)."""
    candidates: tuple[str, ...]


class Labeller:
    def __init__(self, taxonomy: Taxonomy, shortlist: int = 3) -> None:
        self.taxonomy = taxonomy
        self.shortlist = max(1, min(shortlist, len(taxonomy.labels)))
        self._vectorizer = TfidfVectorizer(token_pattern=r"[a-z0-9]+")
        self._labels = self._vectorizer.fit_transform([lb.document().lower() for lb in taxonomy.labels])

    def candidates(self, session: Session) -> tuple[str, ...]:
        """The best-matching labels, in a per-session pseudo-random order (no label is always first)."""
        scores = (self._vectorizer.transform([session_document(session).lower()]) @ self._labels.T).toarray()[0]
        best = [self.taxonomy.labels[i].name for i in np.argsort(-scores, kind="stable")[: self.shortlist]]
        return tuple(sorted(best, key=lambda n: hashlib.sha1(f"{session.session_id}|{n}".encode()).digest()))

    def prompt(self, candidates: Sequence[str]) -> tuple[str, type[BaseModel]]:
        lines = []
        for name in candidates:
            label = self.taxonomy.get(name)
            pages = f" Typical pages: {', '.join(label.pages[:4])}." if label.pages else ""
            lines.append(f"- {name}: {label.description}{pages}")
        schema = create_model("IntentLabel", label=(Literal[tuple(candidates)], ...))  # validated, not only asked
        return LABEL_SYSTEM.format(labels="\n".join(lines)), schema

    def label(self, client: LLMClient, sessions: Sequence[Session], progress: bool = True) -> list[LabelledSession]:
        out = []
        bar = tqdm(sessions, desc="LLM labels", unit="session", disable=not progress)
        for session in bar:
            candidates = self.candidates(session)
            system, schema = self.prompt(candidates)
            try:
                # room for the longest candidate name (a token per character at worst) and the JSON around it
                budget = 16 + max(len(c) for c in candidates)
                label = client.complete_json(system, compact_summary(session.events), schema, max_tokens=budget).label
            except LLMOutputError as exc:
                log.warning("session %s: no valid label: %s", session.session_id, exc)
                label = None
            out.append(LabelledSession(session.session_id, label, candidates))
            bar.set_postfix(calls=client.stats.calls, cached=client.stats.cache_hits)
        return out
