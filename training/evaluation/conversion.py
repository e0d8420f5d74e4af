"""Conversion prediction: which product a linked customer converts to, from their pre-conversion web sessions.

Each representation (mean session embedding, LLM label histogram, mean distilled intent probabilities,
bag-of-pages) feeds the same standardized multinomial logistic regression; predictions come from stratified
5-fold cross-validation over customers, repeated per seed, scored by micro F1 (accuracy: one label each).
Only sessions that ended before the customer's first conversion, and whose link was known then, are used.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.evaluation.features import ConversionTable, EvalData, SessionSignals
from training.evaluation.metrics import micro_f1

log = logging.getLogger(__name__)
FOLDS = 5


def _folds(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    counts = Counter(y)
    n_splits = max(2, min(FOLDS, max(counts.values())))
    # classes rarer than the fold count still appear in some test folds; sklearn only warns about them
    strat = np.array([label if counts[label] >= n_splits else "__rare__" for label in y])
    return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), strat))


def _cv_predict(x_fn, y: np.ndarray, seed: int) -> np.ndarray:
    """Cross-validated predictions; `x_fn(train_idx, test_idx)` gives (x_train, x_test) per fold."""
    pred = np.empty(len(y), dtype=object)
    for tr, te in _folds(y, seed):
        x_tr, x_te = x_fn(tr, te)
        if len(set(y[tr])) < 2:
            pred[te] = y[tr][0]
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000, random_state=seed))
        pred[te] = model.fit(x_tr, y[tr]).predict(x_te)
    return pred.astype(str)


def bag_features(docs: Sequence[str], dim: int, seed: int):
    def fn(tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tfidf = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, sublinear_tf=True)
        a = tfidf.fit_transform([docs[i] for i in tr])
        svd = TruncatedSVD(n_components=max(1, min(dim, a.shape[1] - 1)), random_state=seed)
        return svd.fit_transform(a), svd.transform(tfidf.transform([docs[i] for i in te]))
    return fn


def conversion_predictions(data: EvalData, conv: ConversionTable, signals: SessionSignals, customers: Sequence[str],
                           methods: Sequence[str], seeds: Sequence[int], bag_dim: int = 64
                           ) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """(true products, {method: [predictions per seed]}) for `customers` (each must have a linked session)."""
    where = {c: i for i, c in enumerate(conv.customer)}
    rows = [where[c] for c in customers]
    y = conv.product[rows]
    sessions = [conv.session_rows[i] for i in rows]
    out: dict[str, list[np.ndarray]] = {}
    for method in methods:
        if method == "bag_of_pages":
            pages = data.sessions.documents()
            docs = [" ".join(pages[i] for i in ix) for ix in sessions]
            out[method] = [_cv_predict(bag_features(docs, bag_dim, s), y, s) for s in seeds]
            continue
        vec, has = signals.pooled(method, sessions)
        if not has.all():
            log.warning("%s: %d of %d customers have no %s signal (zeros used)", method, int((~has).sum()),
                        len(has), method)
        x = np.column_stack([vec, ~has])
        out[method] = [_cv_predict(lambda tr, te, x=x: (x[tr], x[te]), y, s) for s in seeds]
        log.info("conversion %s: micro F1 %s", method, [round(micro_f1(y, p), 4) for p in out[method]])
    return y, out
