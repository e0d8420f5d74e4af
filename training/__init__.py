"""Offline side of the intent platform: synthetic worlds, encoder, taxonomy, evaluation, export.

It builds on the torch-free serving core (`core`: data contract, sessionizer, featurizer, ranker, manifest),
never the reverse. Importing this package is cheap; torch lives under `training.encoder`.
"""
