"""Taxonomy drift: the distilled head's label mix on new logs against the mix recorded when the taxonomy was
pinned (PSI, Jensen-Shannon distance), and clusters of new sessions far from every label (candidate intents).

The baseline is recorded by the taxonomy stage (`record_baseline`, into `<artifacts>/taxonomy_baseline.json`)
on the held-out visitors' sessions it already embeds: the head's label shares, its confidence, and per label
the centroid of its sessions' (L2-normalized) embeddings with a radius (the 95th percentile of those sessions'
distance to it). `intent taxonomy-drift` (`run_drift`) embeds the new logs with the same encoder and head and
compares. Nothing here reads a generator's truth/: any data directory in the contract's format works.

Thresholds (documented in docs/taxonomy_drift.md):
- PSI, the industry's rule of thumb: < 0.1 stable, 0.1-0.25 watch, > 0.25 drifted; per label the same rule on
  the label's one-vs-rest (two-bin) PSI.
- Jensen-Shannon distance (base 2, in [0, 1]): the same three bands, derived from PSI's by the small-drift
  approximation PSI ~ chi^2 ~ 8 ln(2) JSD, i.e. distance = sqrt(psi / (8 ln 2)): 0.134 and 0.212.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.core.featurizer import normalize_url
from training.core.manifest import sha256_file
from training.core.sessionize import Session
from training.taxonomy.distill import IntentHead
from training.taxonomy.summaries import compact_summary
from training.taxonomy.taxonomy import Taxonomy

log = logging.getLogger(__name__)

BASELINE_FILE = "taxonomy_baseline.json"
PSI_STABLE, PSI_DRIFTED = 0.1, 0.25
"""PSI bands: below PSI_STABLE stable, up to PSI_DRIFTED watch, above drifted."""
EPS = 1e-4
"""Share given to an empty bin before PSI's logarithm (then renormalized)."""
RADIUS_QUANTILE = 0.95
"""A label's radius: this quantile of its baseline sessions' distance to the label's centroid."""
CANDIDATE_MIN_LIFT = 2.0
"""A candidate intent's most distinctive path token or search is at least this many times as common in it as
on the whole site; a cluster with nothing that distinct is the known labels' usual outliers, not a new intent."""
LOW_CONFIDENCE_QUANTILE = 0.05
REFERENCE_SIZE, KNN_K, KNN_QUANTILE = 2000, 10, 0.99
"""The density test: a sample of REFERENCE_SIZE baseline embeddings; a session is also far when its distance to
the KNN_K-th nearest of them is beyond the KNN_QUANTILE of the baseline sessions' own (independent of how tight
the labels are: an LLM head's broad labels can cover every session with some label's radius)."""
"""Low head confidence: below this quantile of the baseline's top-label probability."""


def js_threshold(psi_value: float) -> float:
    """The JS distance (base 2) that corresponds to a PSI for small drifts: sqrt(psi / (8 ln 2))."""
    return math.sqrt(psi_value / (8 * math.log(2)))


JS_STABLE, JS_DRIFTED = round(js_threshold(PSI_STABLE), 3), round(js_threshold(PSI_DRIFTED), 3)


# ------------------------------------------------------------------------------------------ distributions


def _as_dist(p: Sequence[float] | np.ndarray, eps: float = 0.0) -> np.ndarray:
    x = np.asarray(p, dtype=float)
    if x.ndim != 1 or len(x) == 0 or (x < 0).any() or x.sum() <= 0:
        raise ValueError(f"a distribution needs non-negative weights with a positive sum, got {p!r}")
    x = x / x.sum()
    if eps:
        x = np.maximum(x, eps)
        x = x / x.sum()
    return x


def psi_terms(expected: Sequence[float], actual: Sequence[float], eps: float = EPS) -> np.ndarray:
    """Each bin's contribution (a - e) ln(a / e) to the population stability index (empty bins get `eps`)."""
    e, a = _as_dist(expected, eps), _as_dist(actual, eps)
    if len(e) != len(a):
        raise ValueError(f"distributions of different lengths: {len(e)} and {len(a)}")
    return (a - e) * np.log(a / e)


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = EPS) -> float:
    """Population stability index: sum over bins of (a - e) ln(a / e); 0 for identical distributions."""
    return float(psi_terms(expected, actual, eps).sum())


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance, base 2: sqrt of the JS divergence, 0 for identical, 1 for disjoint supports."""
    a, b = _as_dist(p), _as_dist(q)
    if len(a) != len(b):
        raise ValueError(f"distributions of different lengths: {len(a)} and {len(b)}")
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return math.sqrt(max(0.5 * kl(a) + 0.5 * kl(b), 0.0))


def band(value: float, stable: float, drifted: float) -> str:
    return "stable" if value < stable else "watch" if value <= drifted else "drifted"


def sampling_psi(n_labels: int, n_expected: int, n_actual: int) -> float:
    """PSI that sampling alone gives two samples of one distribution, on average: (K - 1)(1/n1 + 1/n2).
    (PSI is the symmetric KL divergence; for close distributions it is a chi-square with K - 1 degrees of
    freedom scaled by 1/n1 + 1/n2.) A PSI near this floor is noise, whatever its band."""
    return (n_labels - 1) * (1 / max(n_expected, 1) + 1 / max(n_actual, 1))


def compare_shares(names: Sequence[str], expected: Sequence[float], actual: Sequence[float], n_expected: int,
                   n_actual: int) -> dict:
    """Overall and per-label PSI / JS distance between two label distributions over `names`."""
    e, a = _as_dist(expected), _as_dist(actual)
    terms = psi_terms(e, a)
    total_psi, total_js = float(terms.sum()), js_distance(e, a)
    labels = {}
    for i, name in enumerate(names):
        two_e, two_a = [e[i], 1 - e[i]], [a[i], 1 - a[i]]
        label_psi = psi(two_e, two_a)
        labels[name] = {"baseline_share": round(float(e[i]), 4), "new_share": round(float(a[i]), 4),
                        "change_pp": round(100 * float(a[i] - e[i]), 2), "psi_term": round(float(terms[i]), 4),
                        "psi": round(label_psi, 4), "js_distance": round(js_distance(two_e, two_a), 4),
                        "status": band(label_psi, PSI_STABLE, PSI_DRIFTED)}
    return {"psi": round(total_psi, 4), "js_distance": round(total_js, 4),
            "status": band(total_psi, PSI_STABLE, PSI_DRIFTED),
            "js_status": band(total_js, JS_STABLE, JS_DRIFTED),
            "sampling_psi": round(sampling_psi(len(names), n_expected, n_actual), 4), "labels": labels}


# ------------------------------------------------------------------------------------------ baseline


def _unit(emb: np.ndarray) -> np.ndarray:
    return emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9, None)


@dataclass(frozen=True)
class Baseline:
    """What the head saw when the taxonomy was pinned (one JSON file beside the taxonomy)."""

    taxonomy_version: str
    labels: tuple[str, ...]
    """The head's labels, in the head's order (centroids and radii follow it)."""
    counts: dict[str, int]
    n_sessions: int
    confidence_low: float
    """LOW_CONFIDENCE_QUANTILE of the top-label probability."""
    centroids: list[list[float]]
    radii: list[float]
    outlier_share: float
    """Share of the baseline's own sessions far from every label's centroid (the rate to expect by chance)."""
    meta: dict = field(default_factory=dict)
    reference: list[list[float]] = field(default_factory=list)
    """A sample of the baseline's L2-normalized embeddings (the density test; empty: centroid test only)."""
    knn_radius: float = 0.0

    def far(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per session: nearest label, distance over radius, and whether it is far (outside every label's
        radius, or beyond the density test's radius)."""
        nearest, ratio = novelty(np.asarray(self.centroids), np.asarray(self.radii), emb)
        far = ratio > 1
        if self.reference:
            far |= knn_distance(np.asarray(self.reference), emb) > self.knn_radius
        return nearest, ratio, far

    @property
    def shares(self) -> dict[str, float]:
        return {k: v / max(self.n_sessions, 1) for k, v in self.counts.items()}

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))  # compact: the reference sample is 2,000 x E numbers
        return path

    @classmethod
    def load(cls, path: Path | str) -> Baseline:
        doc = json.loads(Path(path).read_text())
        return cls(**{**doc, "labels": tuple(doc["labels"])})


def novelty(centroids: np.ndarray, radii: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per session: the nearest label (index) and its distance over that label's radius, minimized over labels
    (> 1: outside every label's radius, i.e. far from every label)."""
    u = _unit(emb)
    sq = (u * u).sum(1)[:, None] + (centroids * centroids).sum(1)[None, :] - 2 * u @ centroids.T
    dist = np.sqrt(np.clip(sq, 0, None)) / radii[None, :]
    return dist.argmin(axis=1), dist.min(axis=1)


def knn_distance(reference: np.ndarray, emb: np.ndarray, k: int = KNN_K, skip_self: bool = False) -> np.ndarray:
    """Distance of each (normalized) embedding to its k-th nearest reference embedding; with skip_self, exact
    matches (the session itself in the reference) are left out."""
    u, out = _unit(emb), np.zeros(len(emb))
    for start in range(0, len(u), 2048):
        d = np.sqrt(np.clip(2 - 2 * u[start:start + 2048] @ reference.T, 0, None))
        if skip_self:
            d[d < 1e-6] = np.inf
        kk = min(k, d.shape[1]) - 1
        out[start:start + 2048] = np.partition(d, kk, axis=1)[:, kk]
    return out


def compute_baseline(head: IntentHead, embeddings: np.ndarray, taxonomy_version: str, meta: dict | None = None
                     ) -> Baseline:
    """The head's label counts, confidence and per-label embedding centroids / radii on these sessions."""
    if len(embeddings) < 2:
        raise ValueError(f"{len(embeddings)} sessions are too few for a drift baseline")
    if len(embeddings) < 20 * len(head.labels):
        log.warning("drift baseline from %d sessions for %d labels: its shares and radii are rough",
                    len(embeddings), len(head.labels))
    p = head.probabilities(embeddings)
    pred = p.argmax(axis=1)
    unit = _unit(embeddings)
    centroids, own = np.zeros((len(head.labels), unit.shape[1])), []
    for k in range(len(head.labels)):
        members = unit[pred == k]
        centroids[k] = members.mean(axis=0) if len(members) else unit.mean(axis=0)
        own.append(np.linalg.norm(members - centroids[k], axis=1))
    everyone = float(np.quantile(np.concatenate(own), RADIUS_QUANTILE))
    # a label with few sessions borrows the pooled radius (a quantile of 4 distances means little)
    radii = np.array([float(np.quantile(d, RADIUS_QUANTILE)) if len(d) >= 20 else everyone for d in own])
    radii = np.clip(radii, 1e-6, None)
    reference = unit[np.sort(np.random.default_rng(0).permutation(len(unit))[:REFERENCE_SIZE])].astype(float).round(4)
    knn_radius = float(np.quantile(knn_distance(reference, embeddings, skip_self=True), KNN_QUANTILE))
    counts = Counter(int(i) for i in pred)
    base = Baseline(taxonomy_version, tuple(head.labels), {lb: counts.get(k, 0) for k, lb in enumerate(head.labels)},
                    len(embeddings), float(np.quantile(p.max(axis=1), LOW_CONFIDENCE_QUANTILE)),
                    np.round(centroids, 6).tolist(), np.round(radii, 6).tolist(), 0.0, meta or {},
                    reference.tolist(), round(knn_radius, 6))
    return replace(base, outlier_share=float(base.far(embeddings)[2].mean()))


def _identity(artifacts: Path) -> dict:
    """The files a baseline is only valid with (the head and the encoder behind its embeddings)."""
    return {name: sha256_file(artifacts / name) for name in ("intent_head.json", "encoder.pt")
            if (artifacts / name).exists()}


def record_baseline(artifacts: Path, taxonomy: Taxonomy, head: IntentHead, sessions: Sequence[Session],
                    embeddings: np.ndarray, data_dir: Path | str | None = None) -> Path:
    """The taxonomy stage's drift baseline: `compute_baseline` on its held-out sessions, saved as
    <artifacts>/taxonomy_baseline.json (what `intent taxonomy-drift` compares new logs against)."""
    meta = {"recorded": datetime.now(UTC).isoformat(timespec="seconds"), "data": str(data_dir or ""),
            "sessions": "held-out visitors", "taxonomy_file": str(artifacts / "taxonomy.yaml"),
            "sha256": _identity(artifacts)}
    path = compute_baseline(head, embeddings, taxonomy.version, meta).save(artifacts / BASELINE_FILE)
    log.info("drift baseline of %d sessions -> %s", len(sessions), path)
    return path


# ------------------------------------------------------------------------------------------ evidence


_TOKEN = re.compile(r"[a-z]+")


def path_tokens(url: str) -> set[str]:
    """Words of a URL's normalized path: '/auto-loans/rates?x=1' -> {'auto', 'loans', 'rates'} (ids dropped)."""
    return {t for t in _TOKEN.findall(normalize_url(url).replace(":id", "")) if len(t) > 1}


def _session_terms(session: Session) -> dict[str, set[str]]:
    return {"path_tokens": set().union(*(path_tokens(e.url) for e in session.events)),
            "pages": {normalize_url(e.url) for e in session.events},
            "searches": {e.query.strip().lower() for e in session.events if e.query and e.query.strip()},
            "event_types": {e.event_type for e in session.events}}


def distinctive(inside: Counter, n_inside: int, background: Counter, n_background: int, top: int = 8,
                min_sessions: int = 3) -> list[dict]:
    """Terms most typical of a group against the whole site: share of the group's sessions with the term times
    log(lift), lift = that share over the share of all sessions with it. A term every session has (sign-in,
    home) has lift ~1 and scores ~0, so shared pages drop out without a hand list."""
    rows = []
    for term, n in inside.items():
        if n < min_sessions:
            continue
        share, base = n / n_inside, background[term] / n_background
        lift = share / max(base, 1e-9)
        if lift > 1.1:
            rows.append({"term": term, "share": round(share, 3), "lift": round(lift, 2),
                         "score": share * math.log(lift)})
    rows.sort(key=lambda r: -r["score"])
    return [{k: v for k, v in r.items() if k != "score"} for r in rows[:top]]


def _kmeans_pick(x: np.ndarray, max_k: int, min_size: int, seed: int) -> np.ndarray:
    """Cluster assignments: KMeans with k (1..max_k) picked by silhouette; k = 1 unless a split is clear."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best, best_score = np.zeros(len(x), dtype=int), 0.1
    for k in range(2, min(max_k, len(x) // max(min_size, 1)) + 1):
        assign = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
        sample = min(len(x), 2000)
        score = silhouette_score(x, assign, sample_size=sample, random_state=seed)
        if score > best_score:
            best, best_score = assign, score
    return best


def _merge_same_evidence(assign: np.ndarray, idx: np.ndarray, terms: list[dict], background: dict, n: int,
                         top: int = 6, jaccard: float = 0.5) -> np.ndarray:
    """Clusters whose top distinctive path tokens mostly agree are one candidate (KMeans splits a big new
    intent in embedding space, e.g. by funnel stage, while its evidence is the same)."""
    assign = assign.copy()
    while True:
        groups = np.unique(assign)
        tops = {}
        for c in groups:
            inside = Counter(t for i in idx[assign == c] for t in terms[i]["path_tokens"])
            rows = distinctive(inside, int((assign == c).sum()), background["path_tokens"], n, top=top)
            tops[c] = {r["term"] for r in rows}
        pair = next(((a, b) for i, a in enumerate(groups) for b in groups[i + 1:]
                     if tops[a] and tops[b] and len(tops[a] & tops[b]) / len(tops[a] | tops[b]) >= jaccard), None)
        if pair is None:
            return assign
        assign[assign == pair[1]] = pair[0]


def candidate_intents(sessions: Sequence[Session], emb: np.ndarray, far: np.ndarray, nearest: np.ndarray,
                      ratio: np.ndarray, confidence: np.ndarray, labels: Sequence[str], min_share: float = 0.01,
                      max_candidates: int = 6, seed: int = 0) -> list[dict]:
    """Clusters of the sessions far from every label, each with its share of all new sessions and its
    evidence (distinctive path tokens, searches, event types and pages against all new sessions)."""
    n = len(sessions)
    min_size = max(10, math.ceil(min_share * n))
    idx = np.flatnonzero(far)
    if len(idx) < min_size:
        return []
    terms = [_session_terms(s) for s in sessions]
    background = {kind: Counter(t for st in terms for t in st[kind]) for kind in terms[0]}
    unit = _unit(emb[idx])
    assign = _merge_same_evidence(_kmeans_pick(unit, max_candidates, min_size, seed), idx, terms, background, n)
    out = []
    for c in np.unique(assign):
        members = idx[assign == c]
        if len(members) < min_size:
            continue
        centre = unit[assign == c].mean(axis=0)
        nearest_members = members[np.argsort(np.linalg.norm(_unit(emb[members]) - centre, axis=1))[:3]]
        near = Counter(labels[int(k)] for k in nearest[members]).most_common(1)[0][0]
        evidence = {kind: distinctive(Counter(t for i in members for t in terms[i][kind]), len(members),
                                      background[kind], n, top=8 if kind == "path_tokens" else 5)
                    for kind in background}
        lifts = [r["lift"] for kind in ("path_tokens", "searches") for r in evidence[kind]]
        if max(lifts, default=0.0) < CANDIDATE_MIN_LIFT:
            continue
        out.append({"sessions": len(members), "share": round(len(members) / n, 4),
                    "mean_confidence": round(float(confidence[members].mean()), 3),
                    "nearest_label": near, "distance_over_radius": round(float(np.median(ratio[members])), 3),
                    "evidence": evidence,
                    "examples": [compact_summary(sessions[i].events, max_pages=6) for i in nearest_members]})
    out.sort(key=lambda r: -r["sessions"])
    return out


# ------------------------------------------------------------------------------------------ the verb


@dataclass(frozen=True)
class DriftConfig:
    max_sessions: int = 20000
    """New sessions embedded at most (a uniform sample of bigger logs)."""
    min_cluster_share: float = 0.01
    """A candidate intent holds at least this share of the new sessions (and at least 10 sessions)."""
    max_candidates: int = 6
    seed: int = 0


def baseline_from_data(data_dir: Path, artifacts: Path, taxonomy: Taxonomy, head: IntentHead, featurizer, encoder
                       ) -> Baseline:
    """The baseline as the taxonomy stage records it (held-out visitors of `data_dir`), computed now."""
    from training.encoder.inference import embed_rows  # torch: only when a baseline is computed here
    from training.sessions import load_session_table

    table = load_session_table(data_dir)
    held_out = np.flatnonzero(table.holdout())
    meta = {"recorded": datetime.now(UTC).isoformat(timespec="seconds"), "data": str(data_dir),
            "sessions": "held-out visitors", "computed_by": "taxonomy-drift --baseline-data",
            "sha256": _identity(artifacts)}
    return compute_baseline(head, embed_rows(encoder, featurizer, table, held_out), taxonomy.version, meta)


def resolve_baseline(path: Path, baseline_data: Path | None, artifacts: Path, taxonomy: Taxonomy,
                     head: IntentHead, featurizer, encoder) -> tuple[Baseline, str]:
    """The recorded baseline if it matches this taxonomy, head and encoder; else one computed from
    `baseline_data`, with the reason logged; else a clear error."""
    problem = None
    if not path.exists():
        problem = f"no drift baseline at {path} (the taxonomy stage records one when it pins a taxonomy)"
    else:
        baseline = Baseline.load(path)
        recorded = baseline.meta.get("sha256", {})
        stale = [name for name, digest in _identity(artifacts).items() if recorded.get(name) not in (None, digest)]
        if baseline.taxonomy_version != taxonomy.version:
            problem = (f"{path} was recorded for taxonomy {baseline.taxonomy_version}, "
                       f"not {taxonomy.version}")
        elif tuple(baseline.labels) != tuple(head.labels):
            problem = f"{path} was recorded for a head with other labels"
        elif stale:
            problem = f"{path} was recorded with another {' and '.join(stale)} than {artifacts} holds now"
        else:
            return baseline, str(path)
    if baseline_data is None:
        raise FileNotFoundError(f"{problem}: run `intent taxonomy` again, or pass --baseline-data DIR (the logs "
                                "the taxonomy was pinned on) to compute the baseline now")
    log.warning("%s: computing the baseline from --baseline-data %s (its held-out visitors, as the stage does)",
                problem, baseline_data)
    return baseline_from_data(baseline_data, artifacts, taxonomy, head, featurizer, encoder), \
        f"computed from {baseline_data}"


def run_drift(data_dir: Path, artifacts: Path, report_path: Path, taxonomy_path: Path | None = None,
              baseline_path: Path | None = None, baseline_data: Path | None = None,
              cfg: DriftConfig = DriftConfig()) -> dict:
    """New logs through the encoder and head against the pinned taxonomy's baseline -> report (and its table)."""
    from training.encoder.inference import embed_rows
    from training.pipeline import load_artifacts
    from training.sessions import load_session_table

    taxonomy_path = taxonomy_path or artifacts / "taxonomy.yaml"
    baseline_path = baseline_path or artifacts / BASELINE_FILE
    taxonomy = Taxonomy.load(taxonomy_path)
    head = IntentHead.load(artifacts / "intent_head.json")
    if head.taxonomy_version and head.taxonomy_version != taxonomy.version:
        raise ValueError(f"{artifacts / 'intent_head.json'} predicts taxonomy {head.taxonomy_version}, but "
                         f"{taxonomy_path} is {taxonomy.version}: pass the taxonomy the head was distilled for")
    featurizer, encoder, _ = load_artifacts(artifacts)
    baseline, source = resolve_baseline(baseline_path, baseline_data, artifacts, taxonomy, head, featurizer, encoder)

    table = load_session_table(data_dir)  # columns; only the sessions compared become objects
    pick = np.arange(len(table))
    if len(table) > cfg.max_sessions:
        pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(table))[: cfg.max_sessions])
    if len(pick) < 2:
        raise ValueError(f"{data_dir}: {len(pick)} sessions, too few to compare")
    sessions = [table[int(i)] for i in pick]
    emb = embed_rows(encoder, featurizer, table, pick)
    p = head.probabilities(emb)
    pred, confidence = p.argmax(axis=1), p.max(axis=1)

    names = list(dict.fromkeys([*head.labels, *taxonomy.names]))  # the taxonomy's labels the head never predicts
    base_counts = np.array([baseline.counts.get(n, 0) for n in names], dtype=float)
    new_counts = np.array([np.sum(pred == head.labels.index(n)) if n in head.labels else 0 for n in names],
                          dtype=float)
    shares = compare_shares(names, base_counts, new_counts, baseline.n_sessions, len(sessions))
    for name in names:
        in_label = pred == head.labels.index(name) if name in head.labels else np.zeros(len(pred), bool)
        shares["labels"][name]["new_mean_confidence"] = (round(float(confidence[in_label].mean()), 3)
                                                         if in_label.any() else None)

    nearest, ratio, far = baseline.far(emb)
    by_centroid = ratio > 1
    candidates = candidate_intents(sessions, emb, far, nearest, ratio, confidence, head.labels,
                                   cfg.min_cluster_share, cfg.max_candidates, cfg.seed)
    report = {
        "data": str(data_dir), "artifacts": str(artifacts),
        "taxonomy": {"file": str(taxonomy_path), "version": taxonomy.version, "size": len(taxonomy.labels)},
        "baseline": {"file": str(baseline_path), "source": source, "n_sessions": baseline.n_sessions,
                     "recorded": baseline.meta.get("recorded"), "data": baseline.meta.get("data")},
        "n_sessions": len(sessions),
        "thresholds": {"psi": {"stable_below": PSI_STABLE, "drifted_above": PSI_DRIFTED},
                       "js_distance": {"stable_below": JS_STABLE, "drifted_above": JS_DRIFTED,
                                       "derived": "sqrt(psi / (8 ln 2)), the small-drift equivalent of PSI's bands"},
                       "far_from_every_label": "distance to each label's centroid over its radius (the "
                                               f"{RADIUS_QUANTILE:.0%} quantile of its baseline sessions' "
                                               "distances) > 1 for all labels, or distance to the "
                                               f"{KNN_K}th nearest of {REFERENCE_SIZE} baseline sessions beyond "
                                               f"the baseline's own {KNN_QUANTILE:.0%} quantile",
                       "low_confidence_below": round(baseline.confidence_low, 4)},
        "distribution": shares,
        "novelty": {"far_share": round(float(far.mean()), 4), "baseline_far_share": round(baseline.outlier_share, 4),
                    "excess_far_share": round(float(far.mean()) - baseline.outlier_share, 4),
                    "far_by_centroids_share": round(float(by_centroid.mean()), 4),
                    "far_by_density_only_share": round(float((far & ~by_centroid).mean()), 4),
                    "low_confidence_share": round(float((confidence < baseline.confidence_low).mean()), 4),
                    "baseline_low_confidence_share": LOW_CONFIDENCE_QUANTILE,
                    "mean_confidence": round(float(confidence.mean()), 4)},
        "candidate_intents": candidates,
        "config": asdict(cfg),
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    report["table"] = drift_table(report)
    return report


def drift_table(report: dict) -> str:
    """The report on one screen: per label shares, PSI and JS distance; then the candidate intents."""
    d, nov = report["distribution"], report["novelty"]
    labels = d["labels"]
    width = max([len(n) for n in labels] + [10]) + 2
    rows = [f"{'intent':<{width}}{'baseline':>9}{'new':>8}{'change':>9}{'PSI':>8}{'JS dist':>9}  status"]
    for name, r in sorted(labels.items(), key=lambda kv: -kv[1]["psi"]):
        rows.append(f"{name:<{width}}{r['baseline_share']:>9.1%}{r['new_share']:>8.1%}{r['change_pp']:>+8.1f}pp"
                    f"{r['psi']:>8.3f}{r['js_distance']:>9.3f}  {r['status']}")
    rows += ["", f"overall    PSI {d['psi']:.3f} ({d['status']}; stable < {PSI_STABLE}, drifted > {PSI_DRIFTED}; "
                 f"sampling alone ~{d['sampling_psi']:.3f}), JS distance {d['js_distance']:.3f} ({d['js_status']})",
             f"novelty    {nov['far_share']:.1%} of {report['n_sessions']:,} new sessions far from every label "
             f"(baseline {nov['baseline_far_share']:.1%}); low confidence {nov['low_confidence_share']:.1%} "
             f"(baseline {nov['baseline_low_confidence_share']:.0%})"]
    cands = report["candidate_intents"]
    if not cands:
        rows.append("candidates none (no cluster of far sessions above the minimum share)")
    elif nov["excess_far_share"] < report["config"]["min_cluster_share"]:
        rows.append(f"           (far sessions only {100 * nov['excess_far_share']:+.1f}pp over the baseline's own: "
                    "the clusters below are most likely the known labels' usual outliers)")
    for i, c in enumerate(cands, 1):
        ev = c["evidence"]
        tokens = ", ".join(f"{t['term']} x{t['lift']:.1f}" for t in ev["path_tokens"][:6]) or "-"
        searches = "; ".join(f"{t['term']} x{t['lift']:.1f}" for t in ev["searches"][:3]) or "-"
        rows.append(f"candidate {i}: {c['share']:.1%} of sessions ({c['sessions']}), nearest {c['nearest_label']} "
                    f"at {c['distance_over_radius']:.2f}x its radius, confidence {c['mean_confidence']:.2f}")
        rows.append(f"           path tokens (lift): {tokens}")
        rows.append(f"           searches (lift): {searches}")
    return "\n".join(rows)
