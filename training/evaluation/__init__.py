"""Offline evaluation of the paper's two tasks: tile ranking (macro Recall@1, log loss against an app-only
baseline) and conversion prediction (micro F1), on a later time window, with seeds and bootstrap intervals.

The ranker it fits is served from the torch-free `training.core.ranker`; importing this package loads nothing heavy.
"""

__all__ = ["conversion", "evaluate", "features", "metrics", "need", "oracle", "ranking", "report", "robustness",
           "signals"]
