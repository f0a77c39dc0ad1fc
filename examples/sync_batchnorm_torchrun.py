"""bnviz.SyncBatchNorm under torchrun: a tiny conv model trained for a few steps on gloo (CPU).

    torchrun --standalone --nproc-per-node 2 examples/sync_batchnorm_torchrun.py

Every rank builds the same model and the same full batch, trains on its own slice of it under
``DistributedDataParallel`` with the batch norms converted to ``bnviz.SyncBatchNorm``, and trains a
copy on the whole batch by itself for comparison. Each rank prints the mean of its own slice (what a
plain BatchNorm would normalize with), the synced statistics (the whole batch's, the same on every
rank) and whether its parameters and running statistics match the full-batch copy.
"""

from __future__ import annotations

import copy
import gc

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import bnviz

STEPS, BATCH = 3, 8


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 1)
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch of one step, the same on every rank; its samples spread differently."""
    g = torch.Generator().manual_seed(step)
    spread = torch.linspace(0.5, 3.0, BATCH).view(-1, 1, 1, 1)
    return torch.randn(BATCH, 3, 5, 5, generator=g) * spread + 1, torch.randn(BATCH, 1, generator=g)


def fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:+.4f}" for v in t.tolist()) + "]"


def main() -> None:
    dist.init_process_group("gloo")  # rank, world size and rendezvous from torchrun's environment
    rank, world = dist.get_rank(), dist.get_world_size()
    full = model()  # trained on the whole batch, in this process alone
    ddp = DistributedDataParallel(bnviz.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(full)))
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (full, ddp)]
    for step in range(STEPS):
        x, t = batch(step)
        mine, target = x.chunk(world)[rank], t.chunk(world)[rank]
        for m, opt, (xs, ts) in ((full, opts[0], (x, t)), (ddp, opts[1], (mine, target))):
            opt.zero_grad()
            F.mse_loss(m(xs), ts).backward()
            opt.step()
    sync_bn, full_bn = ddp.module[1], full[1]
    with torch.no_grad():  # the BatchNorm's input, channel means: this rank's slice, and the whole batch
        local_mean, whole_mean = (ddp.module[0](xs).mean((0, 2, 3)) for xs in (mine, x))
    pairs = zip(ddp.module.state_dict().values(), full.state_dict().values(), strict=True)
    matches = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in pairs)
    for r in range(world):  # one rank at a time, so the lines do not interleave
        if r == rank:
            print(
                f"rank {rank}/{world}: local batch of {len(mine)}: channel means {fmt(local_mean)}; "
                f"the whole batch of {len(x)} (what every rank normalizes with): {fmt(whole_mean)}"
            )
            print(
                f"rank {rank}/{world}: synced running_mean {fmt(sync_bn.running_mean)} running_var "
                f"{fmt(sync_bn.running_var)}; trained on the full batch in one process: "
                f"{fmt(full_bn.running_mean)} {fmt(full_bn.running_var)}"
            )
            print(f"rank {rank}/{world}: matches the full batch: {matches}", flush=True)
        dist.barrier()
    # DDP's reducer holds the process group: release it first, so that no communication thread of
    # its outlives the group (gloo then aborts with "terminate called without an active exception")
    del ddp, opts, sync_bn
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
