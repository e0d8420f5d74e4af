"""ONNX export of the session encoder and the distilled intent head, with a parity check against PyTorch.

Tensor names are the serving contract (model_repository/ and the gateway use them):

    session_encoder  CATEGORICAL int64 [B, L, F], CONTINUOUS float32 [B, L, C]
                     -> EMBEDDING float32 [B, E], EMBEDDING_TO_HEAD (the same values, see below)
    intent_head      EMBEDDING float32 [B, E] -> INTENT_PROBS float32 [B, K]

Why the encoder emits its embedding twice: Triton's ensemble (2.51) prunes steps for a request that asks for a
subset of the outputs by counting each step's unrequested outputs, without looking at other steps consuming
them. With one tensor that is both the ensemble's EMBEDDING output and the head's input, a request for only
INTENT_PROBS (or only EMBEDDING) pruned the encoder and failed with "unexpected deadlock". A second output
(an ONNX Identity) feeds the head, so EMBEDDING alone skips the head and INTENT_PROBS alone still runs both.

The dynamo exporter is used because the legacy one bakes the sequence length into
nn.TransformerEncoder's reshapes; the dynamo one specializes any dimension that is 1 in the example
input, so the example batch and length are both >= 2.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.encoder.model import SessionEncoder
from training.taxonomy.distill import IntentHead

log = logging.getLogger(__name__)

CATEGORICAL, CONTINUOUS, EMBEDDING, INTENT_PROBS = "CATEGORICAL", "CONTINUOUS", "EMBEDDING", "INTENT_PROBS"
EMBEDDING_TO_HEAD = "EMBEDDING_TO_HEAD"
MAX_EXPORT_BATCH = 4096
"""Upper bound declared for the dynamic batch dimension (the server's max_batch_size is far below)."""
PARITY_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 64), (2, 7), (5, 1), (8, 33), (16, 64))
"""(batch, length) pairs checked after export: the corners (1 and max_len) and a few in between."""
FP32_TOLERANCE = 1e-4
"""Max abs difference allowed between onnxruntime and PyTorch in FP32 (embeddings and probabilities)."""


class HeadModule(nn.Module):
    """The intent head as a torch module: softmax((embedding @ W.T + b) / T), for export only."""

    def __init__(self, head: IntentHead) -> None:
        super().__init__()
        self.register_buffer("weights", torch.from_numpy(np.asarray(head.weights, dtype=np.float32)))
        self.register_buffer("bias", torch.from_numpy(np.asarray(head.bias, dtype=np.float32)))
        self.inverse_temperature = 1.0 / float(head.temperature)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.softmax((embedding @ self.weights.T + self.bias) * self.inverse_temperature, dim=-1)


def example_inputs(cardinalities: Sequence[int], n_continuous: int, batch: int, length: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Valid random featurizer-shaped inputs; row 0 of every session is a real event, the tail may be padding."""
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, n, size=(batch, length)) for n in cardinalities], axis=-1).astype(np.int64)
    lengths = rng.integers(1, length + 1, size=batch)
    cat[:, 0, 0] = np.maximum(cat[:, 0, 0], 3)  # a real url id, never PAD
    for i, n in enumerate(lengths):
        cat[i, n:, :] = 0
    cont = rng.standard_normal((batch, length, n_continuous)).astype(np.float32)
    cont[cat[..., 0] == 0] = 0.0
    return cat, cont


def export_encoder(encoder: SessionEncoder, path: Path, opset: int = 18) -> Path:
    """Write `encoder` as ONNX with dynamic batch and length (1..max_len) dimensions."""
    encoder = encoder.eval()
    cfg = encoder.cfg
    cat, cont = example_inputs(cfg.cardinalities, cfg.n_continuous, batch=2, length=min(8, cfg.max_len))
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    length = torch.export.Dim("length", min=1, max=cfg.max_len)
    dims = {0: batch, 1: length}
    _export(encoder, (torch.from_numpy(cat), torch.from_numpy(cont)), path, [CATEGORICAL, CONTINUOUS], [EMBEDDING],
            {"categorical": dims, "continuous": dims}, opset)
    _add_identity_output(path, EMBEDDING, EMBEDDING_TO_HEAD)
    return path


def _add_identity_output(path: Path, source: str, name: str) -> None:
    """Append graph output `name` = Identity(`source`) (same type and shape) to the ONNX file."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    original = next(o for o in graph.output if o.name == source)
    graph.node.append(onnx.helper.make_node("Identity", [source], [name], name=f"{name}_identity"))
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(original)
    copy.name = name
    graph.output.append(copy)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_head(head: IntentHead, path: Path, opset: int = 18) -> Path:
    """Write the calibrated head as ONNX with a dynamic batch dimension."""
    module = HeadModule(head).eval()
    example = torch.zeros(2, head.weights.shape[1], dtype=torch.float32)
    _export(module, (example,), path, [EMBEDDING], [INTENT_PROBS],
            {"embedding": {0: torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)}}, opset)
    return path


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes: dict, opset: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not actionable here
        torch.onnx.export(module, args, str(path), dynamo=True, input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=False, verbose=False)
    log.info("exported %s (%d KiB)", path, path.stat().st_size // 1024)


def onnx_session(path: Path, threads: int = 1):
    """An onnxruntime CPU session (imported lazily: export does not need onnxruntime)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class ParityReport:
    """Largest abs difference between two implementations per (batch, length) pair."""

    max_abs_diff: dict[str, float]
    tolerance: float

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())

    @property
    def ok(self) -> bool:
        return self.worst <= self.tolerance


@torch.inference_mode()
def check_parity(encoder: SessionEncoder, head: IntentHead, encoder_onnx: Path, head_onnx: Path,
                 shapes: Sequence[tuple[int, int]] = PARITY_SHAPES, tolerance: float = FP32_TOLERANCE) -> ParityReport:
    """Compare onnxruntime with PyTorch (encoder) and numpy (head) on the same random inputs."""
    cfg = encoder.cfg
    enc_session, head_session = onnx_session(encoder_onnx), onnx_session(head_onnx)
    diffs: dict[str, float] = {}
    for batch, length in shapes:
        cat, cont = example_inputs(cfg.cardinalities, cfg.n_continuous, batch, min(length, cfg.max_len), seed=batch)
        ref = encoder.eval()(torch.from_numpy(cat), torch.from_numpy(cont)).numpy()
        emb, emb_to_head = enc_session.run([EMBEDDING, EMBEDDING_TO_HEAD], {CATEGORICAL: cat, CONTINUOUS: cont})
        probs = head_session.run([INTENT_PROBS], {EMBEDDING: ref})[0]
        diffs[f"embedding_b{batch}_l{length}"] = float(max(np.abs(emb - ref).max(), np.abs(emb_to_head - ref).max()))
        diffs[f"probs_b{batch}_l{length}"] = float(np.abs(probs - head.probabilities(ref)).max())
    return ParityReport(diffs, tolerance)
