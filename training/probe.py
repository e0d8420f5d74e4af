"""Evidence that the embedding carries intent: a linear probe against a bag-of-pages baseline.

Both representations have the same width; both feed the same logistic regression trained on the
training visitors' sessions and scored on held-out visitors' sessions against the hidden intents.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.core.featurizer import normalize_url
from training.core.sessionize import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeScore:
    accuracy: float
    macro_f1: float


def probe_predict(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Standardize + multinomial logistic regression fitted on the train part; its labels for the test part."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    return model.fit(train_x, train_y).predict(test_x)


def probe(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str],
          seed: int = 0) -> ProbeScore:
    """Accuracy and macro F1 of `probe_predict` on the test part."""
    pred = probe_predict(train_x, train_y, test_x, seed)
    return ProbeScore(float(accuracy_score(test_y, pred)), float(f1_score(test_y, pred, average="macro")))


def page_document(session: Session) -> str:
    return " ".join(normalize_url(e.url) for e in session.events)


def bag_of_documents(train: Sequence[str], test: Sequence[str], dim: int, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Bag of pages: TF-IDF over the page documents' normalized paths (`page_document`,
    SessionTable.documents), reduced to `dim` with truncated SVD (fitted on train only)."""
    tfidf = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, sublinear_tf=True)
    train_docs = tfidf.fit_transform(list(train))
    svd = TruncatedSVD(n_components=min(dim, train_docs.shape[1] - 1), random_state=seed)
    return svd.fit_transform(train_docs), svd.transform(tfidf.transform(list(test)))
