"""Training and embedding-inference throughput (sessions/s), with the machine it ran on."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from training.core.featurizer import Featurizer
from training.encoder.inference import embed_encoded
from training.encoder.train import TrainConfig, build_encoder, pick_device, train_encoder
from training.pipeline import machine_info
from training.sessions import load_sessions


def bench_train(data_dir: Path, report_path: Path, epochs: int = 2, device: str = "auto") -> dict:
    data = load_sessions(data_dir)
    sessions = data.part(holdout=False)
    t0 = time.perf_counter()
    featurizer = Featurizer.fit(s.events for s in sessions)
    encoded = [featurizer.encode(s.events) for s in sessions]
    featurize_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        _, history = train_encoder(featurizer, encoded, encoded[:256], TrainConfig(epochs=epochs, device=device),
                                   Path(tmp))
    torch_device = pick_device(device)
    encoder = build_encoder(featurizer, TrainConfig()).to(torch_device).eval()
    inference = {}
    for batch_size in (1, 16, 256):
        sample = encoded[: 2000 if batch_size > 1 else 300]
        t0 = time.perf_counter()
        embed_encoded(encoder, sample, batch_size=batch_size)
        inference[f"batch_{batch_size}"] = round(len(sample) / (time.perf_counter() - t0), 1)
    lengths = [len(c) for c, _ in encoded]
    report = {
        "n_sessions": len(sessions),
        "mean_session_len": round(sum(lengths) / len(lengths), 2),
        "featurize_sessions_per_s": round(len(sessions) / featurize_s, 1),
        "train_sessions_per_s": max(r["sessions_per_s"] for r in history),
        "train_epochs": history,
        "inference_sessions_per_s": inference,
        "device": str(torch_device),  # the GPU's name, if any, is in machine["cuda"]
        "machine": machine_info(),
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    return report
