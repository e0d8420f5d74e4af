"""GPU check for a lent device machine: what TensorRT is there, encoder FP16 vs FP32 drift, GPU throughput.

Run there with the trained encoder and featurized real sessions carried along:
    python3 scripts/gpu_check.py --encoder artifacts/encoder.pt --sessions .cache/gpu/sessions.npz --out $OUT
It needs only torch and numpy (the device image has no pydantic), so it imports the model module alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def load_model_module(root: Path):
    spec = importlib.util.spec_from_file_location("encoder_model", root / "training" / "encoder" / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["encoder_model"] = module
    spec.loader.exec_module(module)
    return module


def tensorrt_status() -> dict:
    status = {"python_module": importlib.util.find_spec("tensorrt") is not None}
    libs = subprocess.run("ldconfig -p | grep -c libnvinfer", shell=True, capture_output=True, text=True)
    status["libnvinfer_entries"] = int(libs.stdout.strip() or 0)
    return status


@torch.inference_mode()
def throughput(encoder, batch: int, length: int, n_cat: int, n_cont: int, cards, half: bool, reps: int = 50) -> float:
    cat = torch.stack([torch.randint(1, c, (batch, length)) for c in cards[:n_cat]], dim=-1).cuda()
    cont = torch.randn(batch, length, n_cont, device="cuda")
    model = encoder.half() if half else encoder.float()
    cont = cont.half() if half else cont
    for _ in range(5):
        model(cat, cont)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(reps):
        model(cat, cont)
    torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--sessions", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    model = load_model_module(root)
    doc = torch.load(args.encoder, map_location="cpu", weights_only=True)
    encoder = model.SessionEncoder(model.EncoderConfig.from_dict(doc["encoder_config"]))
    encoder.load_state_dict(doc["state_dict"])
    encoder.eval()
    data = np.load(args.sessions)
    cat, cont = torch.from_numpy(data["categorical"]), torch.from_numpy(data["continuous"])
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "tensorrt": tensorrt_status()}
    with torch.inference_mode():
        cpu = encoder(cat, cont).numpy()
        gpu = encoder.cuda()(cat.cuda(), cont.cuda()).cpu().numpy()
        half = encoder.half()(cat.cuda(), cont.cuda().half()).float().cpu().numpy()
    report["parity"] = {"sessions": int(cat.shape[0]), "padded_length": int(cat.shape[1]),
                        "fp32_gpu_vs_cpu_max_abs": float(np.abs(gpu - cpu).max()),
                        "fp16_gpu_vs_fp32_cpu_max_abs": float(np.abs(half - cpu).max()),
                        "fp16_gpu_vs_fp32_cpu_p99_abs": float(np.percentile(np.abs(half - cpu), 99))}
    cards, n_cont = encoder.cfg.cardinalities, encoder.cfg.n_continuous
    report["sessions_per_s"] = {
        f"{'fp16' if h else 'fp32'}_b{b}_l{length}": round(throughput(encoder, b, length, len(cards), n_cont, cards, h))
        for h in (False, True) for length in (16, 64) for b in (1, 64, 1024)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
