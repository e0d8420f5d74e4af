"""The taxonomy stage's truth scores skip sessions the generator's truth does not cover (a generated session the
sessionizer split at a 30-minute pause has no hidden intent), instead of failing the whole stage."""

import numpy as np

from training.core.sessionize import Session
from training.taxonomy.distill import fit_head
from training.taxonomy.labelling import LabelledSession
from training.taxonomy.stage import _scores


def test_sessions_without_a_hidden_intent_are_left_out_of_the_truth_scores():
    rng = np.random.default_rng(0)
    labels = ["cards", "loans"] * 10
    emb = np.array([[1.0, 0.0] if x == "cards" else [0.0, 1.0] for x in labels]) + rng.normal(0, 0.1, (20, 2))
    head = fit_head(emb, labels)
    sessions = [Session(f"s{i}", f"a{i}", ()) for i in range(20)]
    labelled = [LabelledSession(s.session_id, x, ("cards", "loans")) for s, x in zip(sessions, labels, strict=True)]
    truth = {s.session_id: f"intent_{x}" for s, x in zip(sessions, labels, strict=True)}
    del truth["s3"], truth["s12"]  # no hidden intent for these two
    report = _scores(head, sessions[:10], labelled[:10], emb[:10], sessions[10:], labelled[10:], emb[10:],
                     [s.session_id for s in sessions], emb, truth)
    assert report["truth"]["n_held_out"] == 18 and report["truth"]["n_eval"] == 9
    assert report["distill"]["n_eval_labels"] == 10  # the LLM-vs-head agreement still counts every label
    assert report["truth"]["nmi_head_all_held_out"] == 1.0


def test_a_two_label_head_predicts_both_labels():
    """sklearn fits a single logit for two classes; the head must still score both (it once always said the first)."""
    x = np.array([[1.0, 0.0], [0.0, 1.0]] * 5)
    head = fit_head(x, ["cards", "loans"] * 5)
    assert list(head.predict(x[:2])) == ["cards", "loans"]
    p = head.probabilities(x[:2])
    assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1) and p[0, 0] > 0.5 and p[1, 1] > 0.5
