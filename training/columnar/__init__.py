"""The columnar single-machine path: events -> Arrow -> vectorized validation, sessionizing and featurizing.

Same results as the row-level reference (training.core.contract / sessionize / featurizer): rows that the
vectorized checks cannot accept go through the contract's own model, so every problem is reported alike, and
the featurizer's own token functions run once per distinct value.
"""

from training.columnar.featurize import encode_sessions, fit_featurizer
from training.columnar.load import EventColumns, load_event_columns
from training.columnar.sessionize import SessionIndex, sessionize_columns

__all__ = ["EventColumns", "SessionIndex", "encode_sessions", "fit_featurizer", "load_event_columns",
           "sessionize_columns"]
