"""Shared fixtures: a small synthetic data directory generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.synthetic import GeneratorConfig, generate


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    generate(GeneratorConfig(visitors=2500, seed=11), out)
    return out
