"""The taxonomy stage: taxonomy -> LLM labels on a sample -> distilled head -> reports/taxonomy.json.

Splits follow the rest of the platform: the taxonomy is built from training visitors' sessions, the head
learns the LLM labels of a training-visitor sample, and every score is taken on held-out visitors.

Downstream task (for `distill.drop_pct`, in the spirit of TnT-LLM's "7% drop"): recover the session's hidden
intent (the generator's truth) from its label alone, by a label -> intent lookup fitted on the training
sample and scored on the held-out sample (micro F1). drop_pct is the head's relative loss on that task
against the LLM's own labels for the same sessions; negative means the head did better.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

from training.core.sessionize import Session
from training.encoder.inference import embed_sessions
from training.pipeline import load_artifacts, machine_info
from training.sessions import load_sessions, load_truth_intents
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


def _sample(items: Sequence[Session], n: int, rng: np.random.Generator) -> list[Session]:
    return [items[i] for i in rng.permutation(len(items))[:n]]


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
    data = load_sessions(data_dir)
    truth = load_truth_intents(data_dir)
    featurizer, encoder, _ = load_artifacts(artifacts)
    embed = functools.partial(embed_sessions, encoder, featurizer)
    pool = _sample(data.part(holdout=False), cfg.pool, rng)
    held_out = data.part(holdout=True)
    if len(pool) < cfg.label_train or len(held_out) < cfg.label_eval:
        raise ValueError(f"{data_dir}: {len(pool)} training and {len(held_out)} held-out sessions are too few "
                         f"for label_train={cfg.label_train}, label_eval={cfg.label_eval}")
    pool_emb = embed(pool)
    client = client or LLMClient(LLMConfig.from_env())

    if cfg.pinned:
        taxonomy = Taxonomy.load(cfg.pinned)
        log.info("pinned taxonomy %s (%s): %d labels", cfg.pinned, taxonomy.version, len(taxonomy.labels))
    else:
        taxonomy = build_taxonomy(cfg.method, pool, pool_emb, client, cfg.taxonomy)
    taxonomy.save(artifacts / "taxonomy.yaml")

    eval_idx = rng.permutation(len(held_out))[: cfg.label_eval]
    train_s, eval_s = pool[: cfg.label_train], [held_out[i] for i in eval_idx]
    labeller = Labeller(taxonomy, cfg.shortlist)
    llm_calls_before, llm_retries_before = client.stats.calls, client.stats.retries
    labelled = labeller.label(client, train_s + eval_s, progress=progress)
    _write_labels(artifacts / "llm_labels.jsonl", labelled, len(train_s))
    train_l, eval_l = labelled[: len(train_s)], labelled[len(train_s):]

    head = _distill(taxonomy, pool_emb[: len(train_s)], train_l, cfg.seed)
    head.save(artifacts / "intent_head.json")

    started = time.perf_counter()
    held_emb = embed(held_out)
    encoder_s = time.perf_counter() - started
    eval_emb = held_emb[eval_idx]
    scores = _scores(head, train_s, train_l, pool_emb[: len(train_s)], eval_s, eval_l, eval_emb, held_out,
                     held_emb, truth)
    llm_s = time_llm_labels(client, labeller, eval_s[:5])
    head_us = time_head(head, held_emb)
    encoder_head_us = encoder_s / len(held_out) * 1e6 + head_us

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
                        "head_all_held_out": {k: round(v / len(held_out), 3) for k, v in head_share.items()}},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "machine": machine_info(),
    }
    from training.taxonomy.drift import record_baseline  # what `intent taxonomy-drift` compares new logs to

    report["drift_baseline"] = str(record_baseline(artifacts, taxonomy, head, held_out, held_emb, data_dir))
    if cfg.compare:
        report["variants"] = compare_methods(cfg, taxonomy, pool, pool_emb, eval_s, eval_l, truth, client, progress)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    total = max(sum(llm_share.values()), 1)
    report["table"] = label_table(taxonomy, Counter({k: v / total for k, v in llm_share.items()}),
                                  Counter({k: v / len(held_out) for k, v in head_share.items()}),
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
            held_out: Sequence[Session], held_emb: np.ndarray, truth: dict[str, str]) -> dict:
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
    known = [i for i, s in enumerate(held_out) if s.session_id in truth]
    held_out, held_emb = [held_out[i] for i in known], held_emb[known]
    held_truth = [truth[s.session_id] for s in held_out]
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
        "n_eval": len(ok), "n_held_out": len(held_out), "label_to_intent": purity,
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

