"""Deterministic hold-out split by visitor, so no visitor's sessions leak across train and hold-out."""

from __future__ import annotations

import hashlib

HOLDOUT_PCT = 20
VALIDATION_PCT = 30
"""Visitors in hash buckets [HOLDOUT_PCT, VALIDATION_PCT) validate pre-training; the rest train (and the featurizer
is fitted on them alone), whichever path featurizes: row-level, columnar, Spark or distributed."""


def bucket(anonymous_id: str) -> int:
    """The visitor's hash bucket, 0-99: stable across runs and machines (unlike hash())."""
    return int(hashlib.sha1(anonymous_id.encode()).hexdigest()[:8], 16) % 100


def is_holdout(anonymous_id: str, pct: int = HOLDOUT_PCT) -> bool:
    return bucket(anonymous_id) < pct
