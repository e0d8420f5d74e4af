"""Taxonomy generation, two ways, both ending in the same review pass.

- `cluster_first` (default): KMeans on session embeddings; per cluster its evidence against the whole site
  (`evidence.cluster_evidence`: pages, path words, searches and event types by lift, near-universal pages
  weighted to nothing), a few candidate names built from that evidence, and one LLM call that picks a name
  under an enum and says the visitors' goal in a short phrase. Every reply is validated (`validate`) and
  re-asked with the reason; a cluster whose replies all fail is named from its evidence (`source: evidence`).
  A small model can do this: it chooses and polishes, it does not invent.
- `minibatch` (TnT-LLM, Wan et al. 2024): the LLM proposes a taxonomy from a minibatch of sessions, then
  updates it with each further minibatch. Needs a capable model; kept to measure against.

`review` then merges duplicates: same name, or a near-identical pair the LLM confirms is one intent, and
enforces the size bound.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm.auto import tqdm

from training.core.featurizer import normalize_url
from training.core.sessionize import Session
from training.taxonomy.evidence import Evidence, SiteStats, candidate_names, cluster_evidence
from training.taxonomy.llm import LLMClient, LLMOutputError
from training.taxonomy.summaries import compact_summary
from training.taxonomy.taxonomy import NAME_PATTERN, Label, Taxonomy, merge_pair, merge_same_name
from training.taxonomy.validate import MAX_DESCRIPTION_WORDS, Embedder, LabelRejected, LabelValidator

NAMING_TOKENS = 64

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaxonomyConfig:
    clusters: int = 16
    """KMeans clusters named by the LLM (cluster_first); duplicates merge afterwards."""
    candidates: int = 5
    """Names built from each cluster's evidence (`evidence.candidate_names`); the LLM picks one under an enum."""
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
    "You name what a group of visitors to a financial website wants. You see the pages, searches and actions "
    "that set the group apart, and a list of names built from them. Pick the name from the list that best "
    "fits. Then give the products or tasks they are looking for as a short lower-case phrase of two to six "
    "words taken from the pages or searches. Reply with JSON with the keys name and goal."
)
"""No worked examples: with two in the prompt (a refinance and a stolen-card cluster) SmolLM2-135M copied an
example's phrase into 9 of 16 clusters of the second world (`validate` rejects such echoes)."""
GOAL_PREFIX = "Visitors are looking for"
"""The description is `GOAL_PREFIX + goal + '.'`: a 135M model writes a short phrase well and a sentence
badly (asked for a sentence it rambled past 25 words on half the clusters of the second world)."""
GOAL_PATTERN = r"^[a-z][a-z ,'-]{5,60}$"
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


def naming_prompt(ev: Evidence, candidates: Sequence[str]) -> str:
    return f"{ev.prompt()}\nNames: {', '.join(candidates)}"


class _NamedClusterBase(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)
    label_validator: ClassVar[LabelValidator | None] = None

    @property
    def description(self) -> str:
        return describe(self.goal)

    @model_validator(mode="after")
    def _valid(self) -> _NamedClusterBase:
        if self.label_validator is not None:
            try:
                self.label_validator.check(self.name, self.description)
            except LabelRejected as exc:
                raise ValueError(str(exc)) from None
        return self


def reply_model(candidates: Sequence[str], validator: LabelValidator | None) -> type[BaseModel]:
    """The reply schema for one cluster: a name from the candidates (an enum the grammar enforces) and a goal
    phrase the grammar keeps short and lower case; `validator` checks the name and the description the goal
    makes (`describe`) on every reply, and its reason is what the client feeds back on a retry."""
    model = create_model("NamedCluster", __base__=_NamedClusterBase,
                         name=(Literal[tuple(candidates)], ...),
                         goal=(str, Field(pattern=GOAL_PATTERN)))
    model.label_validator = validator
    return model


_DANGLING = re.compile(r"(?:[\s,'-]+|\s+(?:and|or|a|an|the|of|to|for|with|in|on|at|by|from|their|your|is|are))+$")


def describe(goal: str) -> str:
    """'mortgage refinance rates and' -> 'Visitors are looking for mortgage refinance rates.' (a phrase the grammar cut
    at its length bound loses its dangling function words and commas; 'total-checking' reads 'total checking')."""
    phrase = _DANGLING.sub("", " " + goal.replace("-", " ").strip()).strip()
    return f"{GOAL_PREFIX} {phrase}."


def evidence_label(ev: Evidence, candidates: Sequence[str]) -> Label:
    """The deterministic label from the evidence alone: the first candidate name, a templated sentence."""
    terms = [t for t, _ in ev.terms]
    name = candidates[0] if candidates else "_".join(terms[:2]) or "unnamed"
    focus = ", ".join(terms[:3]) if terms else name.replace("_", " ")
    description = f"Visitors look at {focus}"
    if ev.search_list:
        description += f", searching for {ev.search_list[0]}"
    description = " ".join(description.split()[:MAX_DESCRIPTION_WORDS]) + "."
    return Label(name, description, ev.page_list, ev.search_list, ev.event_list, source="evidence")


@dataclass
class NamingRecord:
    """How one cluster got its name (for the taxonomy notes and the report's quality block)."""

    cluster: int
    size: int
    candidates: list[str]
    name: str
    source: str
    attempts: int
    reason: str = ""


def name_cluster(ev: Evidence, client: LLMClient, validator: LabelValidator, cluster: int = 0, limit: int = 5
                 ) -> tuple[Label, NamingRecord]:
    """Candidates from the evidence -> the LLM picks one and describes it -> validated, else the evidence label."""
    candidates = [c for c in candidate_names(ev, limit) if _passes(validator, c)]
    if not candidates:
        label = evidence_label(ev, candidate_names(ev))
        return label, NamingRecord(cluster, ev.size, [], label.name, "evidence", 0, "no candidate name passed")
    retries = client.stats.retries
    try:
        reply = client.complete_json(NAME_SYSTEM, naming_prompt(ev, candidates), reply_model(candidates, validator),
                                     max_tokens=NAMING_TOKENS)
    except LLMOutputError as exc:
        log.warning("cluster %d: no accepted label after %d attempts, named from its evidence: %s",
                    cluster, exc.attempts, exc)
        label = evidence_label(ev, candidates)
        return label, NamingRecord(cluster, ev.size, candidates, label.name, "evidence", exc.attempts, str(exc)[:300])
    attempts = client.stats.retries - retries + 1
    label = Label(reply.name, reply.description, ev.page_list, ev.search_list, ev.event_list, source="llm")
    return label, NamingRecord(cluster, ev.size, candidates, label.name, "llm", attempts)


def _passes(validator: LabelValidator, name: str) -> bool:
    try:
        validator.check_name(name)
        return True
    except LabelRejected:
        return False


def cluster_first(sessions: Sequence[Session], embeddings: np.ndarray, client: LLMClient,
                  cfg: TaxonomyConfig = TaxonomyConfig(), embedder: Embedder | None = None) -> Taxonomy:
    """Cluster the embeddings; per cluster, its evidence against the whole site (`evidence.cluster_evidence`),
    candidate names built from that evidence, one LLM call that picks a name under an enum and writes a
    description, validated (`validate.LabelValidator`, retried with the reason); then review."""
    k = min(cfg.clusters, len(sessions))
    km = KMeans(n_clusters=k, n_init=4, random_state=cfg.seed).fit(embeddings)
    site = SiteStats.of(sessions)
    labels, records = [], []
    seconds = client.stats.seconds
    started = time.perf_counter()
    for c in tqdm(range(k), desc="name clusters", unit="cluster"):
        group = [sessions[i] for i in np.flatnonzero(km.labels_ == c)]
        ev = cluster_evidence(group, site)
        validator = LabelValidator(ev.vocabulary, ev.text(), NAME_SYSTEM, embedder)
        label, record = name_cluster(ev, client, validator, c, cfg.candidates)
        labels.append(label)
        records.append(record)
    notes = {"clusters": k, "cluster_sizes": np.bincount(km.labels_, minlength=k).tolist(),
             "naming": [asdict(r) for r in records],
             "naming_llm_seconds": round(client.stats.seconds - seconds, 2),
             "naming_wall_seconds": round(time.perf_counter() - started, 2)}
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
