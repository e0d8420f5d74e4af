"""Export and serving: ONNX (and TensorRT) models, the Triton model repository, a launcher for the real
Triton server from the nvidia-pytriton wheel, and perf_analyzer benchmarks.

Importing this package is cheap: torch/onnx/tensorrt are imported by the modules that need them.
"""

__all__ = ["build", "cli", "onnx_export", "perf", "repository", "tensorrt_build", "triton_server"]
