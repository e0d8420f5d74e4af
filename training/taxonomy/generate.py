"""Taxonomy generation, two ways, both ending in the same review pass.

- `cluster_first` (default): KMeans on session embeddings; the LLM names and describes each cluster from
  its distinctive pages, searches and a few exemplar sessions. Robust with a small model, because each
  call asks one easy question about a coherent group.
- `minibatch` (TnT-LLM, Wan et al. 2024): the LLM proposes a taxonomy from a minibatch of sessions, then
  updates it with each further minibatch. Needs a capable model; kept to measure against.

`review` then merges duplicates: same name, or a near-identical pair the LLM confirms is one intent, and
enforces the size bound.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm.auto import tqdm

from training.core.featurizer import normalize_url
from training.core.sessionize import Session
from training.taxonomy.llm import LLMClient, LLMOutputError
from training.taxonomy.summaries import compact_summary
from training.taxonomy.taxonomy import NAME_PATTERN, Label, Taxonomy, merge_pair, merge_same_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaxonomyConfig:
    clusters: int = 16
    """KMeans clusters named by the LLM (cluster_first); duplicates merge afterwards."""
    exemplars: int = 4
    """Sessions nearest each centroid shown to the LLM per naming call."""
    candidates: int = 3
    """Naming calls per cluster, each on different exemplars; the best-grounded name wins."""
    min_labels: int = 8
    max_labels: int = 20
    minibatch_size: int = 5
    minibatches: int = 4
    review_similarity: float = 0.6
    """Label pairs whose evidence is at least this similar (TF-IDF cosine of pages, searches and name words)
    are put to the LLM for merging; SmolLM2 says "same" too readily below that."""
    seed: int = 0


class LabelReply(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)  # the limits hold for the text that is kept

    name: str = Field(pattern=NAME_PATTERN, description="short snake_case intent name, 2-4 words")
    description: str = Field(min_length=10, max_length=120, description="one short sentence: what the visitor wants")


class TaxonomyReply(BaseModel):
    labels: list[LabelReply] = Field(min_length=2, max_length=20)


class SameReply(BaseModel):
    same: bool


NAME_SYSTEM = (
    "You name the intent of a group of visitors to a bank's website. You see the pages that set the group "
    "apart, their searches and a few example sessions. Reply with JSON: a short snake_case name for the "
    'visitors\' goal (2-4 words, for example "mortgage_refinance_research") and a one-sentence description '
    "of what they want (at most 15 words)."
)
PROPOSE_SYSTEM = (
    "You build a taxonomy of visitor intents for a bank's website. Each label is a short snake_case name "
    "(2-4 words) and a one-sentence description. Reply with JSON {\"labels\": [...]}."
)
SAME_SYSTEM = (
    "Two intent labels from a bank website's taxonomy are shown with their typical pages. Answer with JSON "
    '{"same": true} only if they describe the same visitor goal, otherwise {"same": false}.'
)


# ------------------------------------------------------------------------------------------ cluster-first


def distinctive_pages(sessions: Sequence[Session], background: Counter, n_background: int, top: int = 5
                      ) -> tuple[str, ...]:
    """Pages most typical of the group: share of its sessions visiting them, weighted by lift over all."""
    inside = Counter(p for s in sessions for p in {normalize_url(e.url) for e in s.events})
    def score(page: str) -> float:
        share = inside[page] / len(sessions)
        return share * np.log1p(share / max(background[page] / n_background, 1e-9))
    return tuple(sorted(inside, key=score, reverse=True)[:top])


def frequent_searches(sessions: Sequence[Session], top: int = 3) -> tuple[str, ...]:
    counts = Counter(e.query.strip().lower() for s in sessions for e in s.events if e.query)
    return tuple(q for q, _ in counts.most_common(top))


def grounding(name: str, pages: Sequence[str], searches: Sequence[str]) -> float:
    """Share of the name's words found in the cluster's evidence: 'auto_loan_rates' 1.0, 'fabio_fabio' 0.0."""
    evidence = set(re.findall(r"[a-z]+", " ".join([*pages, *searches]).lower()))
    words = name.split("_")
    return sum(w in evidence or w.rstrip("s") in evidence for w in words) / len(words)


def cluster_first(sessions: Sequence[Session], embeddings: np.ndarray, client: LLMClient,
                  cfg: TaxonomyConfig = TaxonomyConfig()) -> Taxonomy:
    """Cluster the embeddings; per cluster, ask for a name from `candidates` disjoint exemplar sets and keep
    the best-grounded reply (a weak model often answers one view with noise and another well); then review."""
    k = min(cfg.clusters, len(sessions))
    km = KMeans(n_clusters=k, n_init=4, random_state=cfg.seed).fit(embeddings)
    background = Counter(p for s in sessions for p in {normalize_url(e.url) for e in s.events})
    labels, scores = [], []
    for c in tqdm(range(k), desc="name clusters", unit="cluster"):
        members = np.flatnonzero(km.labels_ == c)
        nearest = members[np.argsort(np.linalg.norm(embeddings[members] - km.cluster_centers_[c], axis=1))]
        group = [sessions[i] for i in members]
        pages, searches = distinctive_pages(group, background, len(sessions)), frequent_searches(group)
        header = (f"Pages that set the group apart: {', '.join(pages)}\n"
                  f"Frequent searches: {'; '.join(searches) or 'none'}\n"
                  f"Group size: {len(members)} sessions. Examples:\n")
        replies = []
        for view in range(cfg.candidates):
            shown = nearest[view * cfg.exemplars:(view + 1) * cfg.exemplars]
            prompt = header + "\n---\n".join(compact_summary(sessions[i].events) for i in shown)
            try:
                replies.append(client.complete_json(NAME_SYSTEM, prompt, LabelReply))
            except LLMOutputError as exc:
                log.warning("cluster %d view %d: no valid name: %s", c, view, exc)
        if not replies:
            log.warning("cluster %d (%d sessions) got no valid name, skipped", c, len(members))
            continue
        best = max(replies, key=lambda r: grounding(r.name, pages, searches))
        scores.append(round(grounding(best.name, pages, searches), 2))
        labels.append(Label(best.name, best.description.strip(), pages, searches))
    notes = {"clusters": k, "cluster_sizes": np.bincount(km.labels_, minlength=k).tolist(), "grounding": scores}
    return review(Taxonomy(tuple(merge_same_name(labels)), "cluster_first", client.identity, notes), client, cfg)


# ------------------------------------------------------------------------------------------ minibatch


def minibatch(sessions: Sequence[Session], client: LLMClient, cfg: TaxonomyConfig = TaxonomyConfig()) -> Taxonomy:
    """TnT-LLM: propose from the first minibatch, update with each further one, then review."""
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(sessions))
    batches = [order[i * cfg.minibatch_size:(i + 1) * cfg.minibatch_size] for i in range(cfg.minibatches)]
    current: list[Label] = []
    for step, batch in enumerate(tqdm(batches, desc="taxonomy minibatches", unit="batch")):
        examples = "\n---\n".join(compact_summary(sessions[i].events) for i in batch)
        if current:
            listing = "\n".join(f"- {lb.name}: {lb.description}" for lb in current)
            prompt = (f"Current taxonomy:\n{listing}\n\nNew sessions:\n{examples}\n\nReturn the updated taxonomy: "
                      "keep good labels, add intents the new sessions show, merge duplicates.")
        else:
            prompt = f"Sessions:\n{examples}\n\nPropose intent labels that cover these sessions."
        try:
            reply = client.complete_json(PROPOSE_SYSTEM, prompt, TaxonomyReply, max_tokens=1024)
        except LLMOutputError as exc:
            log.warning("minibatch %d got no valid taxonomy, kept the previous one: %s", step, exc)
            continue
        current = merge_same_name(Label(r.name, r.description.strip()) for r in reply.labels)
    if not current:
        raise ValueError("the LLM produced no valid taxonomy from any minibatch")
    return review(Taxonomy(tuple(current), "minibatch", client.identity), client, cfg)


# ------------------------------------------------------------------------------------------ review


def label_similarity(labels: Sequence[Label]) -> np.ndarray:
    """Cosine similarity of the labels' documents (name, description, pages, searches)."""
    vec = TfidfVectorizer(token_pattern=r"[a-z0-9]+")
    docs = vec.fit_transform([lb.document(description=False).lower() for lb in labels])
    sim = (docs @ docs.T).toarray()
    np.fill_diagonal(sim, -1.0)
    return sim


def review(taxonomy: Taxonomy, client: LLMClient, cfg: TaxonomyConfig) -> Taxonomy:
    """Merge pairs the LLM confirms are one intent (most similar first, never below min_labels), then
    merge the most similar pairs until at most max_labels remain."""
    labels = list(taxonomy.labels)
    asked, merged = 0, []
    while len(labels) > cfg.min_labels:
        sim = label_similarity(labels)
        pairs = [(i, j) for i, j in zip(*np.nonzero(np.triu(sim >= cfg.review_similarity)), strict=True)]
        pairs.sort(key=lambda p: -sim[p])
        pair = next((p for p in pairs if _same_intent(client, labels[p[0]], labels[p[1]])), None)
        asked += len(pairs) if pair is None else pairs.index(pair) + 1
        if pair is None:
            break
        merged.append(_merge_at(labels, *pair))
    while len(labels) > cfg.max_labels:
        sim = label_similarity(labels)
        merged.append(_merge_at(labels, *np.unravel_index(np.argmax(sim), sim.shape)))
    notes = {**taxonomy.notes, "review_questions": asked, "merged": merged}
    return Taxonomy(tuple(labels), taxonomy.method, taxonomy.model, notes)


def _same_intent(client: LLMClient, a: Label, b: Label) -> bool:
    prompt = "\n".join(f"{lb.name}: {lb.description} Typical pages: {', '.join(lb.pages) or 'unknown'}"
                       for lb in (a, b))
    try:
        return client.complete_json(SAME_SYSTEM, prompt, SameReply).same
    except LLMOutputError:
        return False


def _merge_at(labels: list[Label], i: int, j: int) -> str:
    """Merge labels[j] into labels[i] in place; returns 'kept <- dropped' for the notes."""
    i, j = int(i), int(j)
    keep, drop = labels[i], labels[j]
    labels[i] = merge_pair(keep, drop)
    del labels[j]
    return f"{keep.name} <- {drop.name}"
