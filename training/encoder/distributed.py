"""Data-parallel pre-training of the session encoder over featurized shards, started with torchrun.

    torchrun --nproc-per-node 2 -m training.encoder.distributed --shards DIR --out DIR

Why a global batch plan instead of a per-rank sampler: the objective's contrastive loss takes its negatives
from the batch, and its masked-event loss averages over the batch's masked events. If each rank drew its own
batch, a step on W ranks would be W small batches (fewer negatives, other averages), not one big one. Here
every rank draws the *same* plan with the same seed as ``training.encoder.train`` (length-bucketed, shuffled
global batches of ``batch_size x world`` sessions, the same visitor partners, augmentations and masks), then
encodes only its own contiguous slice of each batch; the pooled embeddings are all-gathered (with gradients)
so NT-Xent sees the whole global batch, and the masked-event sums are scaled by the global masked count. The
summed gradient is then the single-process gradient of the same batch: with dropout 0 a W-rank run reproduces
``train_encoder`` with ``batch_size = per-rank batch x W`` up to float reduction order
(tests/integration/test_ddp_training.py). With dropout > 0 each rank draws its own dropout masks.

The cheap numpy work (plan, augmentation, masking) is replicated on every rank; the model's forward and
backward, the expensive part, is split. Each rank holds the shard directory's flat buffers (ShardDataset).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.core.featurizer import Featurizer
from training.encoder.model import SessionEncoder
from training.encoder.objectives import ObjectiveConfig, PretrainingHeads, Views, make_views, nt_xent
from training.encoder.train import (
    Encoded,
    TrainConfig,
    build_encoder,
    epoch_batches,
    group_codes,
    optimizer_and_schedule,
    save_checkpoint,
)
from training.shards import shard_splits
from training.splits import VALIDATION_PCT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rank:
    rank: int
    world: int
    device: torch.device


class PretrainStep(nn.Module):
    """Encoder + pre-training heads behind one forward, so DDP sees one forward per step."""

    def __init__(self, encoder: SessionEncoder, heads: PretrainingHeads) -> None:
        super().__init__()
        self.encoder, self.heads = encoder, heads

    def forward(self, cat1: torch.Tensor, cont1: torch.Tensor, where: torch.Tensor, cat2: torch.Tensor,
                cont2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(url logits, event-type logits) at the masked positions `where`, and both views' projections."""
        h1, m1 = self.encoder.hidden(cat1, cont1)
        z1 = self.heads.projection(self.encoder.pool(h1, m1))
        z2 = self.heads.projection(self.encoder(cat2, cont2))
        return self.heads.url(h1[where]), self.heads.event_type(h1[where]), z1, z2


def slice_bounds(n: int, world: int) -> np.ndarray:
    """Row offsets of each rank's contiguous slice of an n-row batch (sizes differ by at most one)."""
    return np.concatenate([[0], np.cumsum([len(a) for a in np.array_split(np.arange(n), world)])])


class _GatherRows(torch.autograd.Function):
    """all_gather along rows whose backward hands each rank the summed gradient of its own rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def sharded_losses(step: nn.Module, views: Views, groups: np.ndarray | None, me: Rank, cfg: ObjectiveConfig
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """This rank's share of one global batch: (the loss to backpropagate, the global batch's losses).

    Every rank computes NT-Xent on the gathered embeddings; the gather's backward sums the W identical copies
    of each row's gradient and DDP averages over ranks, so the step's gradient is the global batch's. The
    masked-event sums are divided by the global masked count and multiplied by W for the same reason."""
    n = len(views.view1.lengths)
    bounds = slice_bounds(n, me.world)
    sizes = np.diff(bounds)
    rows_per_rank = int(sizes.max())
    lo, hi = int(bounds[me.rank]), int(bounds[me.rank + 1])
    # Pad every slice to rows_per_rank (repeating a row, never masked, never gathered) so the gather is even.
    rows = np.arange(lo, hi) if hi > lo else np.zeros(0, np.int64)
    pad = np.full(rows_per_rank - len(rows), rows[-1] if len(rows) else 0, np.int64)
    take = np.concatenate([rows, pad]).astype(np.int64)
    where_np = views.chosen[take].copy()
    where_np[len(rows):] = False
    dev = me.device
    url_logits, event_logits, z1, z2 = step(
        torch.from_numpy(views.masked[take]).to(dev), torch.from_numpy(views.view1.continuous[take]).to(dev),
        torch.from_numpy(where_np).to(dev), torch.from_numpy(views.view2.categorical[take]).to(dev),
        torch.from_numpy(views.view2.continuous[take]).to(dev))
    target = torch.from_numpy(views.view1.categorical[take]).to(dev)[torch.from_numpy(where_np).to(dev)]
    n_masked = int(views.chosen.sum())
    url_sum = F.cross_entropy(url_logits, target[:, 0], reduction="sum")
    event_sum = F.cross_entropy(event_logits, target[:, 2], reduction="sum")
    valid = torch.from_numpy(np.concatenate([np.arange(r * rows_per_rank, r * rows_per_rank + s)
                                             for r, s in enumerate(sizes)])).to(dev)
    z1_all, z2_all = _GatherRows.apply(z1)[valid], _GatherRows.apply(z2)[valid]
    contrastive = nt_xent(z1_all, z2_all, cfg.temperature, None if groups is None else torch.from_numpy(groups).to(dev))
    scale = me.world / n_masked
    loss = cfg.mem_weight * (url_sum + event_sum) * scale + cfg.contrastive_weight * contrastive
    sums = torch.stack([url_sum.detach(), event_sum.detach()])
    dist.all_reduce(sums)
    mem_url, mem_event = (float(v) / n_masked for v in sums)
    c = float(contrastive.detach())
    return loss, {"loss": cfg.mem_weight * (mem_url + mem_event) + cfg.contrastive_weight * c,
                  "mem_url": mem_url, "mem_event": mem_event, "contrastive": c}


def run_epoch(step: nn.Module, data: Encoded, cfg: TrainConfig, rng: np.random.Generator, me: Rank, desc: str,
              optimizer: torch.optim.Optimizer | None = None,
              scheduler: torch.optim.lr_scheduler.OneCycleLR | None = None,
              groups: np.ndarray | None = None) -> dict[str, float]:
    """train._run_epoch's loop over global batches of cfg.batch_size, each rank stepping on its slice."""
    training = optimizer is not None
    step.train(training)
    sums: dict[str, float] = {}
    n = 0
    batches, partner = epoch_batches(data, cfg, rng, groups)
    by_visitor = partner is not None
    params = [p for p in step.parameters()]
    with torch.set_grad_enabled(training):
        for idx in (bar := tqdm(batches, desc=desc, unit="batch", leave=False, disable=me.rank != 0)):
            partners = [data[i] for i in partner[idx]] if partner is not None else None
            views = make_views([data[i] for i in idx], partners, rng, cfg.objective)
            loss, losses = sharded_losses(step, views, groups[idx] if by_visitor else None, me, cfg.objective)
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                if scheduler is not None and scheduler.last_epoch + 1 < scheduler.total_steps:
                    scheduler.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            n += len(idx)
            bar.set_postfix(loss=f"{losses['loss']:.3f}")
    return {k: v / max(n, 1) for k, v in sums.items()}


def train_distributed(featurizer: Featurizer, train: Encoded, val: Encoded, cfg: TrainConfig, out_dir: Path,
                      me: Rank, train_visitors: Sequence[str] | None = None,
                      val_visitors: Sequence[str] | None = None) -> list[dict]:
    """train.train_encoder on W ranks; `cfg.batch_size` is the *global* batch. Rank 0 writes the same
    checkpoints (encoder_last.pt, encoder.pt by validation loss) and train_metrics.json; returns the history."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    encoder = build_encoder(featurizer, cfg).to(me.device)
    heads = PretrainingHeads(cfg.d_model, cfg.embedding_dim, featurizer.cardinalities[0],
                             featurizer.cardinalities[2]).to(me.device)
    module = PretrainStep(encoder, heads)
    step = DistributedDataParallel(module, device_ids=[me.device.index] if me.device.type == "cuda" else None)
    if me.rank > 0:  # rank 0 keeps train.py's torch stream (so one rank is train.py); the others their own
        torch.manual_seed(cfg.seed + 1_000_003 * me.rank)
    optimizer, scheduler = optimizer_and_schedule(encoder, heads, cfg, len(train))
    train_groups = group_codes(train_visitors) if train_visitors is not None else None
    val_groups = group_codes(val_visitors) if val_visitors is not None else None
    history: list[dict] = []
    best = float("inf")
    if me.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    log.info("training on %d x %s (%s): %d train / %d validation sessions, global batch %d", me.world, me.device,
             dist.get_backend(), len(train), len(val), cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_m = run_epoch(step, train, cfg, rng, me, f"epoch {epoch}/{cfg.epochs}", optimizer, scheduler,
                            train_groups)
        seconds = time.perf_counter() - t0
        val_m = run_epoch(step, val, cfg, np.random.default_rng(cfg.seed + 1), me, "validate", groups=val_groups)
        row = {"epoch": epoch, "seconds": round(seconds, 2), "sessions_per_s": round(len(train) / seconds, 1),
               "world_size": me.world, **{f"train_{k}": round(v, 4) for k, v in train_m.items()},
               **{f"val_{k}": round(v, 4) for k, v in val_m.items()}}
        history.append(row)
        log.info("epoch %d: train loss %.3f, val loss %.3f, %.0f sessions/s", epoch, train_m["loss"],
                 val_m["loss"], row["sessions_per_s"])
        if me.rank == 0:
            save_checkpoint(out_dir / "encoder_last.pt", encoder, featurizer, cfg, row)
            if val_m["loss"] < best:
                best = val_m["loss"]
                save_checkpoint(out_dir / "encoder.pt", encoder, featurizer, cfg, row)
    if me.rank == 0:
        (out_dir / "train_metrics.json").write_text(json.dumps(history, indent=2))
    dist.barrier()
    return history


def init_rank(device: str = "auto") -> Rank:
    """Join the torchrun (or env://) process group: NCCL with one GPU per local rank, else gloo on CPU."""
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if device == "cuda" and not use_cuda:
        raise ValueError("--device cuda but no CUDA device is visible")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Rank(dist.get_rank(), dist.get_world_size(), dev)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m training.encoder.distributed",
                                description="Data-parallel pre-training of the session encoder over featurized "
                                            "shards (gloo on CPU, NCCL on GPU).")
    p.add_argument("--shards", type=Path, required=True, help="featurized shard directory (_SUCCESS.json)")
    p.add_argument("--out", type=Path, required=True, help="where rank 0 writes encoder.pt, featurizer.json")
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="sessions per rank per step; the global batch is this x world size")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--d-model", type=int, default=d.d_model)
    p.add_argument("--embedding-dim", type=int, default=d.embedding_dim)
    p.add_argument("--n-layers", type=int, default=d.n_layers)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--positives", choices=("visitor", "view"), default=d.objective.positives)
    p.add_argument("--mem-weight", type=float, default=d.objective.mem_weight, help="masked event modelling weight")
    p.add_argument("--validation-pct", type=int, default=VALIDATION_PCT)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    me = init_rank(args.device)
    logging.basicConfig(level=logging.INFO if me.rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank{me.rank} %(name)s %(message)s")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size * me.world, lr=args.lr, seed=args.seed,
                      d_model=args.d_model, embedding_dim=args.embedding_dim, n_layers=args.n_layers,
                      dropout=args.dropout, device=str(me.device))
    cfg = replace(cfg, objective=replace(cfg.objective, positives=args.positives,
                                                  mem_weight=args.mem_weight))
    try:
        split = shard_splits(args.shards, args.validation_pct)
        if min(len(split.train), len(split.validation)) < 2:  # a contrastive batch needs two sessions
            raise ValueError(f"{args.shards}: {len(split.train)} training / {len(split.validation)} validation "
                             "sessions; need 2+ each")
        if me.rank == 0:
            args.out.mkdir(parents=True, exist_ok=True)
            split.featurizer.save(args.out / "featurizer.json")
        train_distributed(split.featurizer, split.train, split.validation, cfg, args.out, me, split.train_visitors,
                          split.validation_visitors)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
