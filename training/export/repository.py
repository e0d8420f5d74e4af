"""The Triton model repository: session_encoder -> intent_head, wired as the ensemble intent_pipeline.

    <repository>/
      manifest.json                  the model manifest of the newest version (training/core/manifest.py; build.py)
      session_encoder/config.pbtxt   <v>/model.onnx + <v>/model.py + <v>/params.json (cpu)  |  <v>/model.plan (gpu)
      intent_head/config.pbtxt       <v>/model.onnx + <v>/model.py (cpu)  |  <v>/model.plan (gpu)
                  labels.txt
      intent_pipeline/config.pbtxt   <v>/ (empty: an ensemble has no model file)
                      labels.txt     names INTENT_PROBS' columns (label_filename), for Triton's classification

Versions (hot reload, see build.py): an export writes one repository version v (1 by default; `--version next`
writes v+1 beside v). Triton shares a model's config.pbtxt between all its versions, so
  * the ensemble's steps are pinned to `model_version: v` (never -1: "latest" resolves per step, so one request
    could run encoder v and head v+1 while the head loads) and the ensemble keeps only its newest version
    (`version_policy latest 1`; its config carries the manifest's `manifest_hash` and `repository_version`);
  * the composing models keep their newest two versions (`version_policy_latest`, default 2), so the ensemble
    version being replaced still finds its own steps while its in-flight requests finish;
  * what differs between versions of one composing model cannot live in its config: the encoder's
    vocabulary sizes, max_len and length buckets are in `<v>/params.json`, which its model.py prefers over the
    config's parameters; tensor shapes must stay the same across versions (build.py refuses otherwise).

Targets: `gpu` writes `platform: "tensorrt_plan"` models (serve in the NGC Triton container); `cpu` writes
python-backend models that run the ONNX with onnxruntime, because the Triton in the PyPI wheel has only the
python backend. The configs are rendered as commented text (they are read by people) and every one is
parsed against Triton's model-config proto in the tests.

Batching sessions of different lengths: Triton's dynamic batcher only concatenates requests whose
non-batch dimensions agree. On cpu the sequence inputs are `allow_ragged_batch`, so requests of any
length share a batch and model.py pads them itself (to the longest of each length bucket). TensorRT
plans take one dense tensor, so on gpu only same-length requests batch together: clients that want
batching there pad to a few fixed lengths (padding is masked, the embedding does not change).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Target = Literal["cpu", "gpu"]
TARGETS: tuple[Target, ...] = ("cpu", "gpu")
ENCODER, HEAD, PIPELINE = "session_encoder", "intent_head", "intent_pipeline"
VERSION = "1"
"""The version folder the hand-written model.py files are kept in (and the default repository version)."""
LABELS_FILE = "labels.txt"
PARAMS_FILE = "params.json"
"""Per-version parameters of a python-backend model (the config's parameters are shared by every version)."""
PYTHON_MODELS = Path(__file__).resolve().parents[2] / "model_repository"
"""Where the hand-written model.py files live (tracked in git); copied into other repository paths."""


@dataclass(frozen=True)
class ServingConfig:
    """The knobs of the served models (the defaults are what bench-triton measured best on 2 CPU cores)."""

    target: Target = "cpu"
    max_batch_size: int = 64
    """Largest batch the dynamic batcher forms (and the TensorRT profile's max batch)."""
    dynamic_batching: bool = True
    """Off only to measure what batching buys (bench-triton's second variant)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes the batcher waits for (up to max_queue_delay_us); empty = send what is queued."""
    max_queue_delay_us: int = 0
    """How long a request may wait for company. 0: batches form only from requests that queued while the
    instance was busy, which on CPU is what raises throughput without adding latency at low load."""
    encoder_instances: int = 1
    head_instances: int = 1
    ort_threads: int = 1
    """onnxruntime intra-op threads per python-backend instance (cpu target)."""
    length_buckets: tuple[int, ...] = (8, 16, 32, 64)
    """cpu: requests in one batch are padded to the longest within these length buckets (one onnxruntime
    call per bucket) instead of to the longest overall; most sessions are short."""
    version_policy_latest: int = 2
    """The composing models serve their newest N versions: 2 keeps version v-1 loaded beside v, so requests of
    the ensemble version being replaced finish on v-1 entirely (the ensemble itself always keeps 1)."""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} outside 1..max_batch_size={self.max_batch_size}")
        if min(self.encoder_instances, self.head_instances, self.ort_threads, self.version_policy_latest) < 1:
            raise ValueError("instance counts, ort_threads and version_policy_latest must be >= 1")


@dataclass(frozen=True)
class ModelShapes:
    """The tensor sizes the configs declare, read from the exported artifacts."""

    n_categorical: int
    n_continuous: int
    embedding_dim: int
    labels: tuple[str, ...]
    max_len: int
    cardinalities: tuple[int, ...]
    featurizer_version: str
    taxonomy_version: str = ""


# -- rendering --------------------------------------------------------------------------------------------
def _tensor(name: str, dtype: str, dims: Sequence[int], extra: Sequence[str] = ()) -> str:
    lines = [f'    name: "{name}"', f"    data_type: {dtype}", f"    dims: [ {', '.join(map(str, dims))} ]", *extra]
    return "  {\n" + "\n".join(lines) + "\n  }"


def _tensors(kind: str, tensors: Sequence[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]"


def _parameters(params: dict[str, str]) -> str:
    return "\n".join(f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}'
                     for k, v in params.items())


def _policy(latest: int) -> str:
    return f"version_policy: {{ latest: {{ num_versions: {latest} }} }}"


def _scheduling(cfg: ServingConfig, instances: int) -> str:
    kind = "KIND_GPU" if cfg.target == "gpu" else "KIND_CPU"
    parts = [f"instance_group [ {{ count: {instances} kind: {kind} }} ]"]
    if cfg.dynamic_batching:
        body = [f"  preferred_batch_size: [ {', '.join(map(str, cfg.preferred_batch_sizes))} ]"] \
            if cfg.preferred_batch_sizes else []
        body.append(f"  max_queue_delay_microseconds: {cfg.max_queue_delay_us}")
        parts.append("dynamic_batching {\n" + "\n".join(body) + "\n}")
    parts.append(_policy(cfg.version_policy_latest))
    return "\n".join(parts)


def _header(name: str, what: str, cfg: ServingConfig) -> str:
    runtime = 'platform: "tensorrt_plan"' if cfg.target == "gpu" else 'backend: "python"'
    return (f"# {what}\n# Written by `python -m training.export export --target {cfg.target}`; edit ServingConfig, "
            f"not this file.\nname: \"{name}\"\n{runtime}\nmax_batch_size: {cfg.max_batch_size}")


def encoder_params(shapes: ModelShapes, cfg: ServingConfig) -> dict[str, str]:
    """The encoder's parameters: in its config (the newest version's) and, on cpu, in each version's
    params.json (what that version's model.py uses)."""
    params = {"featurizer_version": shapes.featurizer_version, "max_len": str(shapes.max_len)}
    if cfg.target == "cpu":
        params |= {"cardinalities": json.dumps(list(shapes.cardinalities)),
                   "intra_op_num_threads": str(cfg.ort_threads),
                   "length_buckets": ",".join(map(str, cfg.length_buckets))}
    return params


def encoder_config(shapes: ModelShapes, cfg: ServingConfig) -> str:
    ragged = ["    allow_ragged_batch: true"] if cfg.target == "cpu" else []
    inputs = _tensors("input", [
        _tensor("CATEGORICAL", "TYPE_INT64", [-1, shapes.n_categorical], ragged),
        _tensor("CONTINUOUS", "TYPE_FP32", [-1, shapes.n_continuous], ragged),
    ])
    outputs = _tensors("output", [_tensor("EMBEDDING", "TYPE_FP32", [shapes.embedding_dim]),
                                  _tensor("EMBEDDING_TO_HEAD", "TYPE_FP32", [shapes.embedding_dim])])
    params = encoder_params(shapes, cfg)
    what = ("session_encoder: featurized session [L events] -> embedding. Inputs are the featurizer's arrays "
            "(url id 0 = padding); L is 1..max_len.\n# EMBEDDING_TO_HEAD repeats EMBEDDING for the ensemble's head "
            "step (see training/export/onnx_export.py for why).")
    return "\n".join([_header(ENCODER, what, cfg), inputs, outputs, _scheduling(cfg, cfg.encoder_instances),
                      _parameters(params)]) + "\n"


def head_config(shapes: ModelShapes, cfg: ServingConfig) -> str:
    inputs = _tensors("input", [_tensor("EMBEDDING", "TYPE_FP32", [shapes.embedding_dim])])
    outputs = _tensors("output", [_tensor("INTENT_PROBS", "TYPE_FP32", [len(shapes.labels)],
                                          [f'    label_filename: "{LABELS_FILE}"'])])
    params = {"intra_op_num_threads": str(cfg.ort_threads)} if cfg.target == "cpu" else {}
    what = "intent_head: embedding -> calibrated intent probabilities (distilled from the LLM's labels)."
    parts = [_header(HEAD, what, cfg), inputs, outputs, _scheduling(cfg, cfg.head_instances)]
    return "\n".join(parts + ([_parameters(params)] if params else [])) + "\n"


def pipeline_config(shapes: ModelShapes, cfg: ServingConfig, version: int = 1, manifest_hash: str = "") -> str:
    """The ensemble for repository version `version`: both steps pinned to it (see the module docstring)."""
    inputs = _tensors("input", [_tensor("CATEGORICAL", "TYPE_INT64", [-1, shapes.n_categorical]),
                                _tensor("CONTINUOUS", "TYPE_FP32", [-1, shapes.n_continuous])])
    outputs = _tensors("output", [
        _tensor("EMBEDDING", "TYPE_FP32", [shapes.embedding_dim]),
        _tensor("INTENT_PROBS", "TYPE_FP32", [len(shapes.labels)], [f'    label_filename: "{LABELS_FILE}"']),
    ])
    steps = f"""ensemble_scheduling {{
  step [
    {{
      model_name: "{ENCODER}"
      model_version: {version}
      input_map {{ key: "CATEGORICAL" value: "CATEGORICAL" }}
      input_map {{ key: "CONTINUOUS" value: "CONTINUOUS" }}
      output_map {{ key: "EMBEDDING" value: "EMBEDDING" }}
      output_map {{ key: "EMBEDDING_TO_HEAD" value: "session_embedding" }}
    }},
    {{
      model_name: "{HEAD}"
      model_version: {version}
      input_map {{ key: "EMBEDDING" value: "session_embedding" }}
      output_map {{ key: "INTENT_PROBS" value: "INTENT_PROBS" }}
    }}
  ]
}}"""
    header = (f"# intent_pipeline: the served entry point, {ENCODER} -> {HEAD}. Clients send featurized sessions"
              f" and read EMBEDDING and INTENT_PROBS;\n# manifest_hash names the model manifest (manifest.json) of "
              f"this repository version: the gateway refuses an ensemble\n# exported with another one. Steps are "
              f"pinned to version {version}; only the newest ensemble version is served.\n"
              f"name: \"{PIPELINE}\"\nplatform: \"ensemble\"\nmax_batch_size: {cfg.max_batch_size}")
    params = _parameters({"featurizer_version": shapes.featurizer_version,
                          "taxonomy_version": shapes.taxonomy_version, "labels": ",".join(shapes.labels),
                          "manifest_hash": manifest_hash, "repository_version": str(version)})
    policy = _policy(1)
    return "\n".join([header, inputs, outputs, steps, policy, params]) + "\n"


# -- writing ----------------------------------------------------------------------------------------------
def write_repository(repository: Path, shapes: ModelShapes, cfg: ServingConfig, model_files: dict[str, Path],
                     version: int = 1, manifest_hash: str = "") -> dict[str, Path]:
    """Write configs, labels and model files of repository version `version`; `model_files` maps ENCODER/HEAD
    to the .onnx (cpu) or .plan (gpu).

    Returns the written config paths by model name. Files of the other target in the version folder are
    removed, so a switch from gpu to cpu (or back) leaves no stale model behind. Other versions' folders are
    left as they are (build.py decides which version to write).
    """
    want = "model.onnx" if cfg.target == "cpu" else "model.plan"
    stale = "model.plan" if cfg.target == "cpu" else "model.onnx"
    configs = {ENCODER: encoder_config(shapes, cfg), HEAD: head_config(shapes, cfg),
               PIPELINE: pipeline_config(shapes, cfg, version, manifest_hash)}
    written: dict[str, Path] = {}
    for name, text in configs.items():
        version_dir = repository / name / str(version)
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / stale).unlink(missing_ok=True)
        (version_dir / PARAMS_FILE).unlink(missing_ok=True)
        if name in model_files:
            shutil.copyfile(model_files[name], version_dir / want)
            if cfg.target == "cpu":
                _copy_python_model(name, version_dir / "model.py")
        if name == ENCODER and cfg.target == "cpu":
            (version_dir / PARAMS_FILE).write_text(json.dumps(encoder_params(shapes, cfg), indent=1) + "\n")
        if name in (HEAD, PIPELINE):
            (repository / name / LABELS_FILE).write_text("\n".join(shapes.labels) + "\n")
        (repository / name / "config.pbtxt").write_text(text)
        written[name] = repository / name / "config.pbtxt"
    return written


def served_versions(repository: Path, name: str = ENCODER) -> list[int]:
    """The version folders of `name` that hold a model file (or, for the ensemble, exist), ascending."""
    folder = Path(repository) / name
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        if child.is_dir() and child.name.isdigit() and (
                name == PIPELINE or (child / "model.onnx").exists() or (child / "model.plan").exists()):
            found.append(int(child.name))
    return sorted(found)


def _copy_python_model(name: str, dest: Path) -> None:
    source = PYTHON_MODELS / name / VERSION / "model.py"
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing: the hand-written python-backend model of {name}")
    if source.resolve() != dest.resolve():
        shutil.copyfile(source, dest)
