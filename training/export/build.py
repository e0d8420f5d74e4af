"""`export`: trained artifacts -> ONNX (parity-checked) -> a Triton model repository for cpu or gpu, with its
model manifest.

The manifest (training/core/manifest.py) is written last, at `<repository>/manifest.json`, after every model file and
config of the version: whoever polls it (the gateway) sees a new manifest only once its version is complete.
Its hash goes into the ensemble config (`manifest_hash`), so a served ensemble names the manifest it belongs to.

Before minutes of ONNX work the export checks the ranker: ranker.json must record the sha256 of the encoder.pt
it was fitted on (`meta.encoder_sha256`, written by `make eval`) and it must be this export's encoder; a
ranker without a fingerprint is refused unless `allow_unpinned_ranker` (`--allow-unpinned-ranker`) says to
ship it anyway (the manifest then records `ranker_encoder_sha256: null`). Without a ranker.json the manifest
pins no ranker: Triton serves the repository, the gateway refuses it.

Versions (hot reload): `version` None or "current" rewrites the newest version in place (1 in a new
repository), which is not a hot reload; "next" (or a number above the newest) writes version v+1 beside v.
Triton in model control mode `explicit` then loads it (`python -m training.export load-triton`) while v keeps
serving; the gateway picks up the new manifest once Triton serves its hash. A version that stays loaded beside
another must keep the ensemble's tensors (shapes, label count) and target: Triton shares one config between
a model's versions, so a new version that changes them is refused here (export it into a new repository).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from training.core.featurizer import CONTINUOUS
from training.core.manifest import MANIFEST_FILE, Component, Manifest, ManifestError, sha256_file
from training.core.ranker import Ranker
from training.export.onnx_export import ParityReport, check_parity, example_inputs, export_encoder, export_head
from training.export.repository import (
    ENCODER,
    HEAD,
    PIPELINE,
    ModelShapes,
    ServingConfig,
    served_versions,
    write_repository,
)
from training.pipeline import load_artifacts
from training.taxonomy.distill import IntentHead

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export cannot be done as asked (the CLI reports it and exits 1)."""


class ParityError(ExportError):
    """An exported model disagrees with its reference beyond the stated tolerance: nothing is written."""


@dataclass(frozen=True)
class ExportResult:
    repository: str
    target: str
    onnx: dict[str, str]
    configs: dict[str, str]
    onnx_parity: dict[str, float]
    engine_parity: dict[str, dict[str, float]] | None
    featurizer_version: str
    labels: list[str]
    version: int = 1
    """The repository version written."""
    manifest: str = ""
    """Path of the manifest written beside the models."""
    model_version: str = ""
    """What the gateway reports for this version (the manifest's model_version)."""


@dataclass(frozen=True)
class ExportedModels:
    """The parity-checked ONNX files and the shapes their configs declare."""

    onnx: dict[str, Path]
    shapes: ModelShapes
    parity: ParityReport


def export_models(artifacts: Path, head_path: Path, work_dir: Path) -> ExportedModels:
    """Encoder and head -> ONNX in `work_dir`, refused (ParityError) if they disagree with PyTorch."""
    if not head_path.exists():
        raise FileNotFoundError(f"{head_path} does not exist: train the distilled intent head first "
                                "(`make taxonomy`), or pass --head")
    featurizer, encoder, _ = load_artifacts(artifacts)
    head = IntentHead.load(head_path)
    if head.weights.shape[1] != encoder.cfg.embedding_dim:
        raise ValueError(f"{head_path} expects {head.weights.shape[1]}-d embeddings, the encoder makes "
                         f"{encoder.cfg.embedding_dim}-d ones")
    onnx = {ENCODER: export_encoder(encoder, work_dir / f"{ENCODER}.onnx"),
            HEAD: export_head(head, work_dir / f"{HEAD}.onnx")}
    parity = check_parity(encoder, head, onnx[ENCODER], onnx[HEAD])
    if not parity.ok:
        raise ParityError(f"ONNX differs from PyTorch by {parity.worst:.2e} > {parity.tolerance:.0e}: "
                          f"{parity.max_abs_diff}")
    shapes = ModelShapes(
        n_categorical=len(featurizer.categorical_columns), n_continuous=len(CONTINUOUS),
        embedding_dim=encoder.cfg.embedding_dim, labels=head.labels, max_len=featurizer.config.max_len,
        cardinalities=tuple(featurizer.cardinalities), featurizer_version=featurizer.version,
        taxonomy_version=str(getattr(head, "taxonomy_version", "")))
    return ExportedModels(onnx, shapes, parity)


def export(artifacts: Path, head_path: Path, repository: Path, cfg: ServingConfig, fp16: bool = True,
           work_dir: Path | None = None, *, version: int | str | None = None, ranker: Path | None = None,
           taxonomy: Path | None = None, allow_unpinned_ranker: bool = False) -> ExportResult:
    """Export encoder and head, check ONNX parity, build engines (gpu), write repository version `version`
    (None/"current": the newest, in place; "next": a new one) and its manifest. `ranker` and `taxonomy`
    default to ranker.json and taxonomy.yaml in `artifacts` (either may be absent)."""
    work_dir = work_dir or artifacts / "export"
    ranker = artifacts / "ranker.json" if ranker is None else Path(ranker)
    taxonomy = artifacts / "taxonomy.yaml" if taxonomy is None else Path(taxonomy)
    if cfg.target == "gpu":  # fail before minutes of export, not after
        from training.export.tensorrt_build import gpu_unavailable_reason

        if reason := gpu_unavailable_reason():
            raise ExportError(f"--target gpu needs TensorRT and a GPU: {reason}")
    previous = previous_manifest(repository)
    number = resolve_version(repository, version, previous)
    ranker_encoder = check_ranker(ranker, artifacts / "encoder.pt", allow_unpinned_ranker)
    models = export_models(artifacts, head_path, work_dir)
    model_files, engine_parity = dict(models.onnx), None
    if cfg.target == "gpu":
        model_files, engine_parity = _build_engines(models.onnx, models.shapes, cfg, work_dir, fp16)
    manifest = build_manifest(artifacts, head_path, ranker, taxonomy, ranker_encoder, models.shapes, cfg, number)
    check_compatible(manifest, previous, repository)
    configs = write_repository(repository, models.shapes, cfg, model_files, number, manifest.manifest_hash)
    manifest_path = manifest.write(repository / MANIFEST_FILE)  # last: the version is complete
    result = ExportResult(str(repository), cfg.target, {k: str(v) for k, v in models.onnx.items()},
                          {k: str(v) for k, v in configs.items()}, models.parity.max_abs_diff, engine_parity,
                          models.shapes.featurizer_version, list(models.shapes.labels), number, str(manifest_path),
                          manifest.model_version)
    (work_dir / "export.json").write_text(json.dumps({**asdict(result), "serving": asdict(cfg)}, indent=2))
    log.info("wrote %s version %d (%s, %s): ONNX parity worst %.1e", repository, number, cfg.target,
             manifest.model_version, models.parity.worst)
    return result


def previous_manifest(repository: Path) -> Manifest | None:
    """The repository's manifest before this export, if it has one."""
    path = Path(repository) / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        return Manifest.load(path)
    except ManifestError as exc:
        raise ExportError(f"{exc}: remove it to export afresh") from None


def resolve_version(repository: Path, requested: int | str | None, previous: Manifest | None) -> int:
    """The repository version to write. Versions are those folders of the composing models that hold a model
    file (the tracked `1/` holds only the hand-written model.py until the first export)."""
    existing = sorted(set(served_versions(repository, ENCODER)) | set(served_versions(repository, HEAD)))
    newest = max([*existing, previous.repository_version if previous else 0])
    if requested is None or str(requested) == "current":
        return newest or 1
    if str(requested) == "next":
        if existing and previous is None:
            raise ExportError(f"{repository} has version(s) {existing} but no {MANIFEST_FILE} (exported before "
                              "manifests): export it in place first (--version current), or into a new repository")
        return newest + 1
    try:
        number = int(requested)
    except ValueError:
        raise ExportError(f"--version must be a number, 'next' or 'current', got {requested!r}") from None
    if number < 1:
        raise ExportError(f"--version must be >= 1, got {number}")
    if number < newest:
        raise ExportError(f"version {number} is older than version {newest} in {repository}: Triton serves the "
                          "newest, so an older one would never be served; use --version next")
    return number


def check_ranker(ranker: Path, encoder: Path, allow_unpinned: bool) -> str | None:
    """The encoder fingerprint the ranker was fitted on, checked against the exported encoder.pt.

    Returns it (None when there is no ranker, or an unpinned one is allowed); raises ExportError when the
    ranker was fitted on another encoder, or records none and `allow_unpinned` is off."""
    if not ranker.exists():
        log.warning("no ranker at %s: the manifest pins no ranker, so no gateway will serve this repository "
                    "(`make eval` fits one)", ranker)
        return None
    meta = Ranker.load(ranker).meta
    fitted_on = meta.get("encoder_sha256")
    exported = sha256_file(encoder)
    if fitted_on is None:
        if not allow_unpinned:
            raise ExportError(
                f"{ranker} records no encoder fingerprint (meta.encoder_sha256), so nothing says it was fitted on "
                f"{encoder}: its signal may be another encoder's embedding space. Refit it (`make eval` records the "
                "fingerprint), or pass --allow-unpinned-ranker to export it anyway (the manifest then says "
                "ranker_encoder_sha256: null)")
        log.warning("%s has no encoder fingerprint; exported anyway (--allow-unpinned-ranker)", ranker)
        return None
    if fitted_on != exported:
        raise ExportError(
            f"{ranker} was fitted on encoder {fitted_on[:12]}…, but {encoder} is {exported[:12]}…: refit the ranker "
            "on this encoder (`make eval`), or export the encoder it was fitted on")
    return fitted_on


def build_manifest(artifacts: Path, head_path: Path, ranker: Path, taxonomy: Path, ranker_encoder: str | None,
                   shapes: ModelShapes, cfg: ServingConfig, version: int) -> Manifest:
    """The manifest of this export: each component's file hash and version string."""
    encoder = Component.of(artifacts / "encoder.pt", "")
    head = Component.of(head_path, "")
    ranker_component = None
    if ranker.exists():
        spec = Ranker.load(ranker).spec
        if spec.signal == "embedding" and spec.signal_dim != shapes.embedding_dim:
            raise ExportError(f"{ranker} scores {spec.signal_dim}-d embeddings, the encoder makes "
                              f"{shapes.embedding_dim}-d ones")
        ranker_component = Component.of(ranker, f"{json.loads(ranker.read_text())['format']}:"
                                                f"{spec.signal}-{spec.signal_block}")
    taxonomy_version = shapes.taxonomy_version
    if taxonomy.exists():
        taxonomy_version = str((yaml.safe_load(taxonomy.read_text()) or {}).get("version", ""))
        if shapes.taxonomy_version and taxonomy_version != shapes.taxonomy_version:
            log.warning("%s is taxonomy %s but the head was distilled on %s", taxonomy, taxonomy_version,
                        shapes.taxonomy_version)
    components = {
        "featurizer": Component.of(artifacts / "featurizer.json", shapes.featurizer_version),
        "encoder": Component(encoder.file, encoder.sha256, f"enc-{encoder.sha256[:12]}"),
        "intent_head": Component(head.file, head.sha256, f"head-{head.sha256[:12]}@{shapes.taxonomy_version}"),
        "taxonomy": (Component.of(taxonomy, taxonomy_version) if taxonomy.exists()
                     else Component(taxonomy.name, None, taxonomy_version)),
        "ranker": ranker_component,
    }
    tensors = {"CATEGORICAL": (-1, shapes.n_categorical), "CONTINUOUS": (-1, shapes.n_continuous),
               "EMBEDDING": (shapes.embedding_dim,), "INTENT_PROBS": (len(shapes.labels),)}
    return Manifest(version, components, ranker_encoder, tuple(shapes.labels), tensors, PIPELINE, cfg.target)


def check_compatible(manifest: Manifest, previous: Manifest | None, repository: Path) -> None:
    """Refuse a new version that cannot be loaded beside the previous one (one config serves both)."""
    if previous is None or previous.repository_version == manifest.repository_version:
        return
    problems = []
    if previous.target != manifest.target:
        problems.append(f"target {previous.target} -> {manifest.target}")
    if dict(previous.tensors) != dict(manifest.tensors):
        problems.append(f"tensors {dict(previous.tensors)} -> {dict(manifest.tensors)}")
    if problems:
        raise ExportError(f"version {manifest.repository_version} cannot be served beside version "
                          f"{previous.repository_version} in {repository} (Triton gives every version of a model "
                          f"one config): {'; '.join(problems)}. Export it into a new repository and restart Triton "
                          "on it")


def _build_engines(onnx: dict[str, Path], shapes: ModelShapes, cfg: ServingConfig, work_dir: Path,
                   fp16: bool) -> tuple[dict[str, Path], dict[str, dict[str, float]]]:
    """Encoder in FP16 (or FP32) and head in FP32, then parity against onnxruntime with a stated tolerance."""
    from training.export.tensorrt_build import (
        FP16_TOLERANCE,
        FP32_TOLERANCE,
        EngineSpec,
        build_engine,
        encoder_profile,
        engine_parity,
        head_profile,
    )

    cache = work_dir / "timing.cache"
    plans = {
        ENCODER: build_engine(EngineSpec(onnx[ENCODER], work_dir / f"{ENCODER}.plan", encoder_profile(
            cfg.max_batch_size, shapes.max_len, shapes.n_categorical, shapes.n_continuous), fp16, timing_cache=cache)),
        HEAD: build_engine(EngineSpec(onnx[HEAD], work_dir / f"{HEAD}.plan",
                                      head_profile(cfg.max_batch_size, shapes.embedding_dim), False,
                                      timing_cache=cache)),
    }
    batches = [dict(zip(("CATEGORICAL", "CONTINUOUS"), example_inputs(shapes.cardinalities, shapes.n_continuous, b, n,
                                                                    seed=b), strict=True))
               for b, n in ((1, 1), (1, shapes.max_len), (cfg.max_batch_size, 12), (7, 33))]
    rng = np.random.default_rng(0)
    head_batches = [{"EMBEDDING": rng.standard_normal((b, shapes.embedding_dim)).astype(np.float32)} for b in (1, 9)]
    parity = {ENCODER: engine_parity(plans[ENCODER], onnx[ENCODER], batches),
              HEAD: engine_parity(plans[HEAD], onnx[HEAD], head_batches)}
    tolerance = FP16_TOLERANCE["EMBEDDING"] if fp16 else FP32_TOLERANCE
    if parity[ENCODER]["EMBEDDING"] > tolerance or parity[HEAD]["INTENT_PROBS"] > FP32_TOLERANCE:
        raise ParityError(f"TensorRT engines differ from onnxruntime beyond tolerance: {parity}")
    return plans, parity


__all__ = ["ExportError", "ExportResult", "ExportedModels", "ParityError", "build_manifest", "check_ranker", "export",
           "export_models", "resolve_version"]
