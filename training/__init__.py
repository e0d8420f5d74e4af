"""Offline side of the intent platform: synthetic worlds, encoder, taxonomy, evaluation, export, and the serving core.

`training.core` is the torch-free serving core (data contract, sessionizer, featurizer, ranker, manifest) that
the gateway imports too, and the only part of this package it may import (import-linter contracts). Importing
this package itself is cheap and imports nothing, so the gateway image carries `training/__init__.py` and
`training/core/` alone. Torch lives under `training.encoder`.
"""
