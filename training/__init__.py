"""Offline side of the intent platform: data contract, synthetic bank, featurizer, encoder, taxonomy.

Importing this package is cheap and torch-free: the gateway imports `training.featurizer`
and `training.contract`, which are numpy/pydantic-only. Torch lives under `training.encoder`.
"""
