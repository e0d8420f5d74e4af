"""What the export checks before it writes a version: the ranker's encoder fingerprint, which version to write,
and whether a new version can be served beside the old one (training/export/build.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from training.core.manifest import Component, Manifest, sha256_bytes, sha256_file
from training.core.ranker import FeatureSpec, Ranker
from training.export.build import ExportError, check_compatible, check_ranker, resolve_version
from training.export.cli import main

TENSORS = {"CATEGORICAL": (-1, 9), "CONTINUOUS": (-1, 6), "EMBEDDING": (4,), "INTENT_PROBS": (2,)}


def ranker(path, **meta) -> None:
    spec = FeatureSpec(("t1",), ("card",), ("mass",), 1, "embedding", 4, np.zeros(4, np.float32),
                       np.ones(4, np.float32))
    Ranker(spec, np.zeros(len(spec.feature_names()), np.float32), 0.0, meta).save(path)


def manifest(version: int, **changes) -> Manifest:
    sha = sha256_bytes(b"x")
    components = {n: Component(n, sha, "v") for n in ("featurizer", "encoder", "intent_head", "taxonomy", "ranker")}
    return replace(Manifest(version, components, sha, ("a", "b"), TENSORS), **changes)


def test_a_ranker_fitted_on_another_encoder_is_refused(tmp_path):
    encoder = tmp_path / "encoder.pt"
    encoder.write_bytes(b"weights")
    ranker(tmp_path / "ranker.json", encoder_sha256=sha256_file(encoder))
    assert check_ranker(tmp_path / "ranker.json", encoder, allow_unpinned=False) == sha256_file(encoder)
    ranker(tmp_path / "ranker.json", encoder_sha256=sha256_bytes(b"other weights"))
    for allow in (False, True):  # a known mismatch is never overridden
        with pytest.raises(ExportError, match=r"was fitted on encoder .* refit the ranker"):
            check_ranker(tmp_path / "ranker.json", encoder, allow_unpinned=allow)


def test_a_ranker_without_a_fingerprint_needs_the_override(tmp_path):
    encoder = tmp_path / "encoder.pt"
    encoder.write_bytes(b"weights")
    ranker(tmp_path / "ranker.json")
    with pytest.raises(ExportError, match=r"records no encoder fingerprint.*--allow-unpinned-ranker"):
        check_ranker(tmp_path / "ranker.json", encoder, allow_unpinned=False)
    assert check_ranker(tmp_path / "ranker.json", encoder, allow_unpinned=True) is None
    assert check_ranker(tmp_path / "absent.json", encoder, allow_unpinned=False) is None  # no ranker: none pinned


def test_the_cli_says_how_to_get_past_an_unpinned_ranker(small_artifacts, tmp_path, caplog):
    import shutil

    artifacts = tmp_path / "artifacts"
    shutil.copytree(small_artifacts, artifacts)
    ranker(artifacts / "ranker.json")
    code = main(["export", "--artifacts", str(artifacts), "--head", str(artifacts / "intent_head.json"),
                 "--repository", str(tmp_path / "repo")])
    assert code == 1 and "--allow-unpinned-ranker" in caplog.text
    assert not (tmp_path / "repo").exists()  # refused before anything was written


def _version(repo, name, number, model=True):
    folder = repo / name / str(number)
    folder.mkdir(parents=True)
    if model:
        (folder / "model.onnx").write_bytes(b"m")


def test_which_version_is_written(tmp_path):
    repo = tmp_path / "repo"
    assert resolve_version(repo, None, None) == 1 == resolve_version(repo, "next", None)
    _version(repo, "session_encoder", 1, model=False)  # the tracked folder with only model.py: no version yet
    assert resolve_version(repo, "next", None) == 1
    (repo / "session_encoder" / "1" / "model.onnx").write_bytes(b"m")
    assert resolve_version(repo, "current", None) == 1
    with pytest.raises(ExportError, match=r"no manifest\.json"):
        resolve_version(repo, "next", None)
    previous = manifest(1)
    assert resolve_version(repo, "next", previous) == 2
    _version(repo, "session_encoder", 2)
    assert resolve_version(repo, None, manifest(2)) == 2 and resolve_version(repo, "next", manifest(2)) == 3
    assert resolve_version(repo, 5, manifest(2)) == 5
    with pytest.raises(ExportError, match="older than version 2"):
        resolve_version(repo, 1, manifest(2))
    with pytest.raises(ExportError, match="'next' or 'current'"):
        resolve_version(repo, "newest", manifest(2))


def test_a_version_that_cannot_share_the_config_is_refused(tmp_path):
    check_compatible(manifest(2), manifest(1), tmp_path)  # same tensors and target
    check_compatible(manifest(1, labels=("x", "y", "z"),  # in place: nothing else stays loaded
                              tensors={**TENSORS, "INTENT_PROBS": (3,)}), manifest(1), tmp_path)
    with pytest.raises(ExportError, match=r"tensors .*INTENT_PROBS.*\(3,\).*new repository"):
        check_compatible(manifest(2, tensors={**TENSORS, "INTENT_PROBS": (3,)}), manifest(1), tmp_path)
    with pytest.raises(ExportError, match="target cpu -> gpu"):
        check_compatible(manifest(2, target="gpu"), manifest(1), tmp_path)
