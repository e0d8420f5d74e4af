"""Two gloo ranks on CPU train the encoder to the single-process result for the same global batch and seed.

The data set goes through the real shard format (write_featurized -> ShardDataset) and the ranks rendezvous
over loopback with torch.multiprocessing, as torchrun would set them up. Dropout is 0 (the configuration the
equivalence is exact for: distributed.py's docstring); everything else is the default objective, visitor
positives and in-batch negatives included, which only match because the embeddings are all-gathered.

Tolerance: the two runs compute the same sums in a different order (each rank's masked-event sum and its half
of the batch, then DDP's all-reduce, against one batch in one process), so they agree to float32 rounding:
measured 2.4e-7 at most after 18 steps; 1e-5 absolute leaves room for other BLAS builds while the training
moves the weights by far more (asserted too). One exception, left out of the weight comparison: the key part
of attention's in_proj_bias. Softmax is shift-invariant, so its true gradient is exactly zero and what it
gets is rounding noise, which AdamW normalises into steps of ~lr whatever their size: the two runs' noise
differs, so those entries differ by up to ~5e-4. They cannot change the output, which is why the test also
compares the embeddings both encoders give the validation sessions, to the same 1e-5.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.core.featurizer import Featurizer, pad_batch
from training.encoder.distributed import Rank, shard_splits, train_distributed
from training.encoder.train import TrainConfig, build_encoder, load_checkpoint, train_encoder
from training.sessions import load_sessions
from training.shards import SessionColumns, to_table, write_featurized
from training.synthetic import GeneratorConfig, generate

WORLD = 2
PER_RANK_BATCH = 16
ATOL = 1e-5


def _cfg() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=PER_RANK_BATCH * WORLD, seed=5, d_model=16, embedding_dim=16,
                       n_layers=1, dropout=0.0, device="cpu")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("ddp_raw")
    generate(GeneratorConfig(visitors=120, seed=13, days=14), raw)
    data = load_sessions(raw)
    featurizer = Featurizer.fit(s.events for s in data.part(holdout=False))
    encoded = [featurizer.encode(s.events) for s in data.sessions]
    cols = SessionColumns(
        session_id=[s.session_id for s in data.sessions], anonymous_id=[s.anonymous_id for s in data.sessions],
        start_ms=np.array([s.start_ms for s in data.sessions]), end_ms=np.array([s.end_ms for s in data.sessions]),
        holdout=np.array(data.holdout), lengths=np.array([len(c) for c, _ in encoded]),
        categorical=np.concatenate([c for c, _ in encoded]), continuous=np.concatenate([x for _, x in encoded]))
    out = tmp_path_factory.mktemp("ddp_shards")
    write_featurized(out, [to_table(cols)], featurizer, data.report, events=sum(len(c) for c, _ in encoded),
                     part_sessions=40)  # several parts, so reading across parts is exercised
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, shards: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        featurizer, train, val, train_v, val_v = shard_splits(shards)
        train_distributed(featurizer, train, val, _cfg(), out, Rank(rank, WORLD, torch.device("cpu")),
                          train_v, val_v)
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one_process_with_the_same_global_batch(shards: Path, tmp_path: Path) -> None:
    featurizer, train, val, train_v, val_v = shard_splits(shards)
    assert len(train) > 4 * PER_RANK_BATCH * WORLD and len(val) > 2  # several steps, a validation pass

    mp.start_processes(_rank_main, args=(_free_port(), shards, tmp_path / "ddp"), nprocs=WORLD, join=True,
                       start_method="spawn")
    torch.manual_seed(_cfg().seed)
    _, history = train_encoder(featurizer, train, val, _cfg(), tmp_path / "single", train_v, val_v)

    _, meta = load_checkpoint(tmp_path / "ddp" / "encoder.pt")
    assert meta["featurizer_version"] == featurizer.version
    assert meta["metrics"]["world_size"] == WORLD
    ddp_history = json.loads((tmp_path / "ddp" / "train_metrics.json").read_text())
    for mine, theirs in zip(ddp_history, history, strict=True):  # the global batch's losses, not one rank's
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-3)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], abs=1e-3)
    last, _ = load_checkpoint(tmp_path / "ddp" / "encoder_last.pt")
    single_last, _ = load_checkpoint(tmp_path / "single" / "encoder_last.pt")
    torch.manual_seed(_cfg().seed)
    init = build_encoder(featurizer, _cfg()).state_dict()
    moved = max(float((single_last.state_dict()[k] - init[k]).abs().max()) for k in init)
    assert moved > 100 * ATOL  # the runs trained; agreeing within ATOL is not agreeing on doing nothing
    mine, theirs = last.state_dict(), single_last.state_dict()
    for name in [k for k in theirs if k.endswith("self_attn.in_proj_bias")]:
        d = theirs[name].numel() // 3  # [query | key | value]: the key bias has no gradient (see the docstring)
        mine[name], theirs[name] = (torch.cat([t[name][:d], t[name][2 * d:]]) for t in (mine, theirs))
    diffs = {k: float((mine[k] - v).abs().max()) for k, v in theirs.items()}
    worst = max(diffs, key=diffs.__getitem__)
    assert diffs[worst] <= ATOL, f"{worst} differs by {diffs[worst]:.2e}"
    batch = pad_batch([val[i] for i in range(len(val))])
    cat, cont = torch.from_numpy(batch.categorical), torch.from_numpy(batch.continuous)
    with torch.no_grad():  # what export and serving use: the embeddings, where the key bias cancels
        gap = float((last(cat, cont) - single_last(cat, cont)).abs().max())
    assert gap <= ATOL, f"embeddings differ by {gap:.2e}"
    assert meta["metrics"]["epoch"] == load_checkpoint(tmp_path / "single" / "encoder.pt")[1]["metrics"]["epoch"]


def test_torchrun_cli_with_uneven_slices_writes_the_single_process_checkpoint(shards: Path, tmp_path: Path) -> None:
    """What a user starts: torchrun with 3 ranks and 1 session per rank, so the 2-session batches the
    length buckets leave give one rank nothing to encode; it still joins every collective."""
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
           "-m", "training.encoder.distributed", "--shards", str(shards), "--out", str(out), "--epochs", "1",
           "--batch-size", "1", "--d-model", "16", "--embedding-dim", "16", "--n-layers", "1", "--dropout", "0",
           "--seed", "5", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank0" in done.stderr and "rank1" not in done.stderr and "rank2" not in done.stderr

    featurizer, train, val, train_v, val_v = shard_splits(shards)
    assert Featurizer.load(out / "featurizer.json").version == featurizer.version
    ddp, meta = load_checkpoint(out / "encoder.pt")
    assert meta["metrics"]["world_size"] == 3 and meta["train_config"]["batch_size"] == 3
    cfg = replace(_cfg(), epochs=1, batch_size=3)
    single, _ = train_encoder(featurizer, train, val, cfg, tmp_path / "single", train_v, val_v)
    batch = pad_batch([val[i] for i in range(len(val))])
    cat, cont = torch.from_numpy(batch.categorical), torch.from_numpy(batch.continuous)
    with torch.no_grad():
        gap = float((ddp(cat, cont) - single(cat, cont)).abs().max())
    assert gap <= ATOL, f"embeddings differ by {gap:.2e}"
