"""TensorRT engines from the exported ONNX (TensorRT 10 Python API), with a parity check against onnxruntime.

Needs the `gpu` extra (`pip install -e '.[gpu]'`) and an NVIDIA GPU; nothing here is imported by the CPU path.
The pinned tensorrt matches the TensorRT inside the Triton container the plans are served by
(nvcr.io/nvidia/tritonserver:24.10-py3 = Triton 2.51 = TensorRT 10.5): a plan only loads in the TensorRT
version (and on the GPU architecture) that built it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FP16_TOLERANCE = {"EMBEDDING": 2e-2, "INTENT_PROBS": 1e-2}
"""Max abs difference allowed between an FP16 engine and onnxruntime FP32. Embeddings are layer-normed and
projected (values of order 1), and FP16 carries ~3 decimal digits through 2 Transformer layers. The head is
always built in FP32 (a [K, E] matmul costs nothing); its probabilities, bounded by 1, only inherit the
embedding's error, which the softmax damps."""
FP32_TOLERANCE = 1e-3
"""FP32 engines may still pick TF32 tactics on Ampere+ (10-bit mantissa in matmuls), hence not 1e-4."""


def gpu_unavailable_reason() -> str | None:
    """Why TensorRT engines cannot be built here (None when they can): the reason tests skip with."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install -e '.[gpu]' on a machine with an NVIDIA GPU)"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch (TensorRT builds and runs engines on a GPU)"
    return None


@dataclass(frozen=True)
class ShapeRange:
    """One optimization-profile entry: the min / opt / max shape of a dynamic input."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineSpec:
    """What to build: one engine per ONNX file, FP16 or FP32, over the given shape ranges."""

    onnx: Path
    plan: Path
    profile: Mapping[str, ShapeRange]
    fp16: bool = True
    workspace_bytes: int = 1 << 30
    timing_cache: Path | None = None
    """Read when present and written back after the build: re-builds skip most kernel timing."""


def encoder_profile(max_batch: int, max_len: int, n_categorical: int, n_continuous: int,
                    opt_len: int = 16) -> dict[str, ShapeRange]:
    """Batch 1..max_batch, length 1..max_len; tuned for a half-full batch of typical (short) sessions."""
    opt_b = max(1, max_batch // 2)
    return {
        "CATEGORICAL": ShapeRange((1, 1, n_categorical), (opt_b, opt_len, n_categorical),
                                  (max_batch, max_len, n_categorical)),
        "CONTINUOUS": ShapeRange((1, 1, n_continuous), (opt_b, opt_len, n_continuous),
                                 (max_batch, max_len, n_continuous)),
    }


def head_profile(max_batch: int, embedding_dim: int) -> dict[str, ShapeRange]:
    return {"EMBEDDING": ShapeRange((1, embedding_dim), (max(1, max_batch // 2), embedding_dim),
                                    (max_batch, embedding_dim))}


def build_engine(spec: EngineSpec) -> Path:
    """Parse the ONNX, set the profile and precision, build and serialize the plan (and the timing cache)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(spec.onnx.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {spec.onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    if spec.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, shapes in spec.profile.items():
        profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
    cache_bytes = spec.timing_cache.read_bytes() if spec.timing_cache and spec.timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {spec.onnx} (see the log above)")
    spec.plan.parent.mkdir(parents=True, exist_ok=True)
    spec.plan.write_bytes(bytes(plan))
    if spec.timing_cache is not None:
        spec.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        spec.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built %s (%s, %d KiB)", spec.plan, "fp16" if spec.fp16 else "fp32", spec.plan.stat().st_size // 1024)
    return spec.plan


class EngineRunner:
    """Runs a serialized plan on CUDA with torch tensors as device buffers (used by the parity check)."""

    def __init__(self, plan: Path) -> None:
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"could not deserialize {plan} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        stream = torch.cuda.Stream()
        keep = []
        for name in self.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.float16 if self.engine.get_tensor_dtype(name) == self._trt.DataType.HALF else torch.float32
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {k: v.float().cpu().numpy() for k, v in outputs.items()}


def engine_parity(plan: Path, onnx: Path, batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Max abs difference per output between the engine and onnxruntime over `batches` of inputs."""
    from training.export.onnx_export import onnx_session

    runner, session = EngineRunner(plan), onnx_session(onnx)
    worst: dict[str, float] = dict.fromkeys(runner.outputs, 0.0)
    for feeds in batches:
        got = runner(feeds)
        want = dict(zip(runner.outputs, session.run(runner.outputs, dict(feeds)), strict=True))
        for name in runner.outputs:
            worst[name] = max(worst[name], float(np.abs(got[name] - want[name]).max()))
    return worst
