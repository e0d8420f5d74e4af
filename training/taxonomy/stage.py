"""The taxonomy stage: taxonomy -> LLM labels on a sample -> distilled head -> reports/taxonomy.json.

Splits follow the rest of the platform: the taxonomy is built from training visitors' sessions, the head
learns the LLM labels of a training-visitor sample, and every score is taken on held-out visitors.

Downstream task (for `distill.drop_pct`, in the spirit of TnT-LLM's "7% drop"): recover the session's hidden
intent (the generator's truth) from its label alone, by a label -> intent lookup fitted on the training
sample and scored on the held-out sample (micro F1). drop_pct is the head's relative loss on that task
against the LLM's own labels for the same sessions; negative means the head did better.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

from training.core.featurizer import Featurizer
from training.core.sessionize import Session
from training.encoder.inference import embed_rows, embed_sessions
from training.encoder.model import SessionEncoder
from training.pipeline import load_artifacts, machine_info
from training.sessions import load_session_table, load_truth_intents
from training.taxonomy.distill import IntentHead, fit_head
from training.taxonomy.generate import TaxonomyConfig, cluster_first, minibatch
from training.taxonomy.labelling import LabelledSession, Labeller
from training.taxonomy.llm import LLMClient, LLMConfig
from training.taxonomy.taxonomy import Taxonomy
from training.taxonomy.validate import default_embedder

log = logging.getLogger(__name__)
METHODS = ("cluster_first", "minibatch")


@dataclass(frozen=True)
class StageConfig:
    method: str = "cluster_first"
    pinned: Path | None = None
    """Use this taxonomy file instead of generating one."""
    pool: int = 3000
    """Training-visitor sessions embedded and clustered for the taxonomy."""
    label_train: int = 240
    """LLM-labelled training sessions the head learns from (a fifth of them calibrate its temperature)."""
    label_eval: int = 120
    """LLM-labelled held-out sessions every distillation score is taken on."""
    shortlist: int = 3
    compare: bool = False
    """Also build the other method's taxonomy and score both on the held-out sample."""
    seed: int = 0
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.label_train < 10 or self.label_eval < 5:
            raise ValueError("label_train must be >= 10 and label_eval >= 5")


def build_taxonomy(method: str, sessions: Sequence[Session], embeddings: np.ndarray, client: LLMClient,
                   cfg: TaxonomyConfig) -> Taxonomy:
    if method == "cluster_first":
        return cluster_first(sessions, embeddings, client, cfg, embedder=default_embedder())
    return minibatch(sessions, client, cfg)


def naming_quality(taxonomy: Taxonomy, model: str) -> dict:
    """How the labels were named: first-try acceptance over clusters, the evidence fallback's share of the
    final labels, seconds of real LLM time per cluster named (0 when every reply came from the cache)."""
    records = taxonomy.notes.get("naming", [])
    final = len(taxonomy.labels)
    fallback = sum(lb.source == "evidence" for lb in taxonomy.labels)
    first = sum(r["source"] == "llm" and r["attempts"] == 1 for r in records)
    return {
        "accepted_first_try_pct": round(100 * first / len(records), 1) if records else None,
        "evidence_fallback_pct": round(100 * fallback / final, 1),
        "llm_named_pct": round(100 * sum(lb.source == "llm" for lb in taxonomy.labels) / final, 1),
        "names": list(taxonomy.names),
        "model": model,
        "s_per_label": round(taxonomy.notes.get("naming_llm_seconds", 0.0) / len(records), 3) if records else None,
        "clusters_named": len(records),
    }


def lookup_f1(train_labels: Sequence[str], train_truth: Sequence[str], test_labels: Sequence[str],
              test_truth: Sequence[str]) -> float:
    """Micro F1 of predicting the truth from the label by each label's majority truth on the train part."""
    votes: dict[str, Counter] = {}
    for label, intent in zip(train_labels, train_truth, strict=True):
        votes.setdefault(label, Counter())[intent] += 1
    fallback = Counter(train_truth).most_common(1)[0][0]
    pred = [votes[lb].most_common(1)[0][0] if lb in votes else fallback for lb in test_labels]
    return float(f1_score(test_truth, pred, average="micro"))


def time_llm_labels(client: LLMClient, labeller: Labeller, sessions: Sequence[Session]) -> float:
    """Seconds per label of real (uncached) LLM calls, so the figure holds even when the run was cached."""
    fresh = LLMClient(replace(client.config, cache_dir=None), backend=client.backend)
    started = time.perf_counter()
    labeller.label(fresh, sessions, progress=False)
    return (time.perf_counter() - started) / len(sessions)


LATENCY_SESSIONS = 2000
"""Sessions (the data set's first) that the featurize + encoder latency is timed on."""


def time_encoder(encoder: SessionEncoder, featurizer: Featurizer, sessions: Sequence[Session]) -> float:
    """Seconds per session of featurizing sessions one by one (Featurizer.encode, as the gateway does) and
    embedding them in batches."""
    started = time.perf_counter()
    embed_sessions(encoder, featurizer, sessions)
    return (time.perf_counter() - started) / max(len(sessions), 1)


def time_head(head: IntentHead, embeddings: np.ndarray, repeats: int = 20) -> float:
    """Microseconds per session of the head alone, batched as the serving path batches."""
    head.probabilities(embeddings)
    started = time.perf_counter()
    for _ in range(repeats):
        head.probabilities(embeddings)
    return (time.perf_counter() - started) / repeats / len(embeddings) * 1e6


def label_table(taxonomy: Taxonomy, llm_share: Counter, head_share: Counter, purity: dict) -> str:
    width = max(len(n) for n in taxonomy.names) + 2
    rows = [f"{'intent':<{width}}{'LLM':>6}{'head':>6}  {'hidden intent (purity)':<34}{'named by':<10}description"]
    for label in taxonomy.labels:
        top, share = purity.get(label.name, ("-", 0.0))
        rows.append(f"{label.name:<{width}}{llm_share[label.name]:>6.0%}{head_share[label.name]:>6.0%}  "
                    f"{f'{top} ({share:.0%})':<34}{label.source:<10}{label.description}")
    return "\n".join(rows)


def run_taxonomy(data_dir: Path, artifacts: Path, report_path: Path, cfg: StageConfig = StageConfig(),
                 client: LLMClient | None = None, progress: bool = True) -> dict:
    """Build (or load) the taxonomy, label a sample with the LLM, distill the head; write artifacts + report."""
    rng = np.random.default_rng(cfg.seed)
    table = load_session_table(data_dir)  # columns: only the sampled sessions become objects
    truth = load_truth_intents(data_dir)
    featurizer, encoder, _ = load_artifacts(artifacts)
    holdout = table.holdout()
    training_rows, held_rows = np.flatnonzero(~holdout), np.flatnonzero(holdout)
    pool_rows = training_rows[rng.permutation(len(training_rows))[: cfg.pool]]
    pool = [table[int(i)] for i in pool_rows]
    if len(pool) < cfg.label_train or len(held_rows) < cfg.label_eval:
        raise ValueError(f"{data_dir}: {len(pool)} training and {len(held_rows)} held-out sessions are too few "
                         f"for label_train={cfg.label_train}, label_eval={cfg.label_eval}")
    pool_emb = embed_rows(encoder, featurizer, table, pool_rows)
    client = client or LLMClient(LLMConfig.from_env())

    if cfg.pinned:
        taxonomy = Taxonomy.load(cfg.pinned)
        log.info("pinned taxonomy %s (%s): %d labels", cfg.pinned, taxonomy.version, len(taxonomy.labels))
    else:
        taxonomy = build_taxonomy(cfg.method, pool, pool_emb, client, cfg.taxonomy)
    taxonomy.save(artifacts / "taxonomy.yaml")

    eval_idx = rng.permutation(len(held_rows))[: cfg.label_eval]
    train_s, eval_s = pool[: cfg.label_train], [table[int(held_rows[i])] for i in eval_idx]
    labeller = Labeller(taxonomy, cfg.shortlist)
    llm_calls_before, llm_retries_before = client.stats.calls, client.stats.retries
    labelled = labeller.label(client, train_s + eval_s, progress=progress)
    _write_labels(artifacts / "llm_labels.jsonl", labelled, len(train_s))
    train_l, eval_l = labelled[: len(train_s)], labelled[len(train_s):]

    head = _distill(taxonomy, pool_emb[: len(train_s)], train_l, cfg.seed)
    head.save(artifacts / "intent_head.json")

    held_emb = embed_rows(encoder, featurizer, table, held_rows)
    held_ids = [table.session_ids[i] for i in held_rows]
    eval_emb = held_emb[eval_idx]
    scores = _scores(head, train_s, train_l, pool_emb[: len(train_s)], eval_s, eval_l, eval_emb, held_ids,
                     held_emb, truth)
    llm_s = time_llm_labels(client, labeller, eval_s[:5])
    head_us = time_head(head, held_emb)
    encoder_head_us = time_encoder(encoder, featurizer, table[: LATENCY_SESSIONS]) * 1e6 + head_us

    llm_share = Counter(x.label for x in eval_l if x.label)
    head_share = Counter(head.predict(held_emb))
    report = {
        "taxonomy_size": len(taxonomy.labels),
        "taxonomy": {"version": taxonomy.version, "method": taxonomy.method, "model": taxonomy.model,
                     "file": str(artifacts / "taxonomy.yaml"), "notes": taxonomy.notes},
        "quality": naming_quality(taxonomy, taxonomy.model or client.identity),
        **scores,
        "latency": {"llm_s_per_session": round(llm_s, 3), "head_us_per_session": round(head_us, 3),
                    "featurize_encoder_head_us_per_session": round(encoder_head_us, 1),
                    "head_speedup_over_llm": round(llm_s * 1e6 / head_us),
                    "encoder_plus_head_speedup_over_llm": round(llm_s * 1e6 / encoder_head_us)},
        "llm": {**client.stats.as_dict(), "labelling_calls": client.stats.calls - llm_calls_before,
                "labelling_retries": client.stats.retries - llm_retries_before,
                "shortlist": cfg.shortlist},
        "label_share": {"llm_eval_sample": {k: round(v / max(llm_share.total(), 1), 3) for k, v in llm_share.items()},
                        "head_all_held_out": {k: round(v / len(held_rows), 3) for k, v in head_share.items()}},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "machine": machine_info(),
    }
    from training.taxonomy.drift import record_baseline  # what `intent taxonomy-drift` compares new logs to

    report["drift_baseline"] = str(record_baseline(artifacts, taxonomy, head, held_ids, held_emb, data_dir))
    if cfg.compare:
        report["variants"] = compare_methods(cfg, taxonomy, pool, pool_emb, eval_s, eval_l, truth, client, progress)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    total = max(sum(llm_share.values()), 1)
    report["table"] = label_table(taxonomy, Counter({k: v / total for k, v in llm_share.items()}),
                                  Counter({k: v / len(held_rows) for k, v in head_share.items()}),
                                  scores["truth"]["label_to_intent"])
    return report


def _distill(taxonomy: Taxonomy, emb: np.ndarray, labelled: Sequence[LabelledSession], seed: int) -> IntentHead:
    keep = np.array([i for i, x in enumerate(labelled) if x.label is not None])
    if len(keep) < 10:
        raise ValueError(f"only {len(keep)} sessions got a valid LLM label; the head needs at least 10")
    keep = np.random.default_rng(seed).permutation(keep)
    n_cal = max(len(keep) // 5, 1)
    fit_i, cal_i = keep[n_cal:], keep[:n_cal]
    return fit_head(emb[fit_i], [labelled[i].label for i in fit_i], emb[cal_i], [labelled[i].label for i in cal_i],
                    seed=seed, taxonomy_version=taxonomy.version)


def _scores(head: IntentHead, train_s: Sequence[Session], train_l: Sequence[LabelledSession], train_emb: np.ndarray,
            eval_s: Sequence[Session], eval_l: Sequence[LabelledSession], eval_emb: np.ndarray,
            held_ids: Sequence[str], held_emb: np.ndarray, truth: dict[str, str]) -> dict:
    ok = [i for i, x in enumerate(eval_l) if x.label is not None]
    llm_eval = [eval_l[i].label for i in ok]
    eval_pred = head.predict(eval_emb)
    head_eval = [eval_pred[i] for i in ok]
    agreement = float(f1_score(llm_eval, head_eval, average="micro"))
    report: dict = {"distill": {"llm_vs_head_micro_f1": round(agreement, 4), "n_train_labels": sum(
        x.label is not None for x in train_l), "n_eval_labels": len(ok),
        "llm_invalid_labels": sum(x.label is None for x in [*train_l, *eval_l])}}
    if not truth:
        return report
    # a few sessionized sessions have no hidden intent (the generator's session cut by a 30-minute pause, or
    # two of its sessions run together): the truth scores leave those out
    tr = [i for i, x in enumerate(train_l) if x.label is not None and train_s[i].session_id in truth]
    ok = [i for i in ok if eval_s[i].session_id in truth]
    llm_eval, head_eval = [eval_l[i].label for i in ok], [eval_pred[i] for i in ok]
    train_truth = [truth[train_s[i].session_id] for i in tr]
    eval_truth = [truth[eval_s[i].session_id] for i in ok]
    head_train = head.predict(train_emb[tr])
    f1_llm = lookup_f1([train_l[i].label for i in tr], train_truth, llm_eval, eval_truth)
    f1_head = lookup_f1(head_train, train_truth, head_eval, eval_truth)
    report["distill"].update({
        "downstream_task": "hidden intent from the label by a label->intent lookup fitted on the training sample",
        "downstream_micro_f1": {"llm_labels": round(f1_llm, 4), "head_labels": round(f1_head, 4)},
        "drop_pct": round(100 * (f1_llm - f1_head) / max(f1_llm, 1e-9), 2)})
    known = [i for i, sid in enumerate(held_ids) if sid in truth]
    held_ids, held_emb = [held_ids[i] for i in known], held_emb[known]
    held_truth = [truth[sid] for sid in held_ids]
    held_pred = head.predict(held_emb)
    purity = {}
    for label in set(held_pred):
        intents = Counter(t for p, t in zip(held_pred, held_truth, strict=True) if p == label)
        top, n = intents.most_common(1)[0]
        purity[label] = (top, round(n / sum(intents.values()), 3))
    report["truth"] = {
        "nmi_llm": round(normalized_mutual_info_score(eval_truth, llm_eval), 4),
        "nmi_head": round(normalized_mutual_info_score(eval_truth, head_eval), 4),
        "ari_head": round(adjusted_rand_score(eval_truth, head_eval), 4),
        "nmi_head_all_held_out": round(normalized_mutual_info_score(held_truth, held_pred), 4),
        "ari_head_all_held_out": round(adjusted_rand_score(held_truth, held_pred), 4),
        "n_eval": len(ok), "n_held_out": len(held_ids), "label_to_intent": purity,
    }
    return report


def compare_methods(cfg: StageConfig, chosen: Taxonomy, pool: Sequence[Session], pool_emb: np.ndarray,
                    eval_s: Sequence[Session], eval_l: Sequence[LabelledSession], truth: dict[str, str],
                    client: LLMClient, progress: bool) -> dict:
    """Both generation methods, each scored by its LLM labels on the same held-out sample against the truth."""
    out = {}
    for method in METHODS:
        if method == chosen.method:
            taxonomy, labels = chosen, eval_l
        else:
            taxonomy = build_taxonomy(method, pool, pool_emb, client, cfg.taxonomy)
            labels = Labeller(taxonomy, cfg.shortlist).label(client, eval_s, progress=progress)
        ok = [(x.label, truth[s.session_id]) for x, s in zip(labels, eval_s, strict=True)
              if x.label and s.session_id in truth]
        out[method] = {"taxonomy_size": len(taxonomy.labels), "names": list(taxonomy.names),
                       "nmi_llm": round(normalized_mutual_info_score([t for _, t in ok], [lb for lb, _ in ok]), 4)
                       if ok else None, "invalid_labels": sum(x.label is None for x in labels)}
    return out


def _write_labels(path: Path, labelled: Sequence[LabelledSession], n_train: int) -> None:
    with path.open("w") as fh:
        for i, x in enumerate(labelled):
            fh.write(json.dumps({"session_id": x.session_id, "label": x.label, "candidates": list(x.candidates),
                                 "split": "train" if i < n_train else "eval"}) + "\n")

