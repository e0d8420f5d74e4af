"""`export`: trained artifacts -> ONNX (parity-checked) -> a Triton model repository for cpu or gpu."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.featurizer import CONTINUOUS
from training.export.onnx_export import ParityReport, check_parity, example_inputs, export_encoder, export_head
from training.export.repository import ENCODER, HEAD, ModelShapes, ServingConfig, write_repository
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
           work_dir: Path | None = None) -> ExportResult:
    """Export encoder and head, check ONNX parity, build engines (gpu), write the repository."""
    work_dir = work_dir or artifacts / "export"
    if cfg.target == "gpu":  # fail before minutes of export, not after
        from training.export.tensorrt_build import gpu_unavailable_reason

        if reason := gpu_unavailable_reason():
            raise ExportError(f"--target gpu needs TensorRT and a GPU: {reason}")
    models = export_models(artifacts, head_path, work_dir)
    model_files, engine_parity = dict(models.onnx), None
    if cfg.target == "gpu":
        model_files, engine_parity = _build_engines(models.onnx, models.shapes, cfg, work_dir, fp16)
    configs = write_repository(repository, models.shapes, cfg, model_files)
    result = ExportResult(str(repository), cfg.target, {k: str(v) for k, v in models.onnx.items()},
                          {k: str(v) for k, v in configs.items()}, models.parity.max_abs_diff, engine_parity,
                          models.shapes.featurizer_version, list(models.shapes.labels))
    (work_dir / "export.json").write_text(json.dumps({**asdict(result), "serving": asdict(cfg)}, indent=2))
    log.info("wrote %s (%s): ONNX parity worst %.1e", repository, cfg.target, models.parity.worst)
    return result


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


__all__ = ["ExportError", "ExportResult", "ExportedModels", "ParityError", "export", "export_models"]
