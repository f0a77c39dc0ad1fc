"""One rank of the /data-parallel page's run: a real gloo process holding one slice of the batch.

Kept lean on purpose — torch and bnviz's core only, no plotly, no streamlit — because the page
starts its ranks from a fork server that has imported this module once: every rank is then a
cheap fork sharing torch's memory instead of a fresh interpreter importing it again.

Each rank draws the whole seeded batch, keeps its own slice, and runs bnviz.SyncBatchNorm
(statistics of the whole batch, exchanged with gloo collectives) and a plain bnviz.BatchNorm
(its own slice's statistics) in training mode, forward and backward, then reports plain numbers.
"""

from __future__ import annotations

import datetime
import math
import os
from typing import Any

import torch
import torch.distributed as dist

import bnviz
from bnviz.explorer.data import sample_batch, upstream_gradient
from bnviz.hosting import procmem

GLOO_TIMEOUT = datetime.timedelta(seconds=15)  # a collective waiting on a dead rank fails after this
FAULT_ENV = "BNVIZ_DP_FAULT"  # "rank:<r>": rank r dies before the backward's collective (for the tests)
# (read by the parent when it starts a world, and passed to the ranks: forks of the fork server
# inherit the server's environment, not the parent's current one)


def full_batch(sizes: tuple[int, ...], sample: tuple[int, ...], dist_name: str, seed: int) -> tuple[torch.Tensor, ...]:
    """The concatenated batch of every rank and its fixed upstream gradient (the same on every
    rank and in the parent: seeded)."""
    shape = (sum(sizes), *sample)
    return sample_batch(dist_name, shape, seed, 0), upstream_gradient(shape, seed)


def seeded_layer(cls: type, channels: int) -> torch.nn.Module:
    m = cls(channels)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 1.5, channels))
        m.bias.copy_(torch.linspace(-0.5, 0.5, channels))
    return m


def rank_main(rank: int, world: int, init_file: str, sizes: tuple[int, ...], sample: tuple[int, ...],
              dist_name: str, seed: int, results: Any, fault: str = "") -> None:  # fmt: skip
    """The body of rank ``rank``: join the group, run its slice, put its numbers on ``results``
    (plain numbers and numpy arrays: a tensor would be shared by a file descriptor that dies
    with this process)."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's connections on the loopback interface only
    torch.set_num_threads(1)
    dies = fault == f"rank:{rank}"
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                timeout=GLOO_TIMEOUT)  # fmt: skip
        x, upstream = full_batch(sizes, sample, dist_name, seed)
        start = sum(sizes[:rank])
        xs, gs = x[start : start + sizes[rank]], upstream[start : start + sizes[rank]]
        channels = sample[0]
        sync, plain = seeded_layer(bnviz.SyncBatchNorm, channels), seeded_layer(bnviz.BatchNorm, channels)
        xr = xs.clone().requires_grad_()
        y = sync(xr)
        if dies:
            os._exit(3)  # mid-run: the others wait in the backward's all_reduce
        (grad,) = torch.autograd.grad(y, [xr], gs)  # an empty rank too: it joins the backward's collective
        per_channel = sizes[rank] * math.prod(sample[1:])  # plain batch norm needs more than one value
        y_plain = plain(xs) if per_channel > 1 else None
        dims = [0, *range(2, xs.dim())]
        var, mean = torch.var_mean(xs.double(), dims, correction=0) if xs.numel() else (None, None)
        results.put((rank, {
            "count": sizes[rank],
            "mean": None if mean is None else mean.tolist(),
            "var": None if var is None else var.tolist(),
            "running_mean": sync.running_mean.double().tolist(),
            "running_var": sync.running_var.double().tolist(),
            "y": y.detach().numpy(),
            "grad": grad.numpy(),
            "y_plain": None if y_plain is None else y_plain.detach().numpy(),
            "private_bytes": procmem.private_bytes(),  # what this fork holds alone, at its fullest
        }))  # fmt: skip
    except Exception as exc:  # reported by the parent, with the rank
        results.put((rank, {"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
