"""What ``recompute_batch_norm_stats`` costs in each mode, and what one pass gets wrong.

A resnet-18-shaped network for 32×32 images (a stem and four stages of two basic blocks, 64 to
512 channels: 20 batch norms, 11.2 M parameters), with torch's BatchNorm2d, its running statistics
first set by a few training steps, then recomputed over the same batches in both modes. Prints the
seconds of each mode (median of ``--repeats``), the number of forwards, and per layer the relative
error of one pass's running_var against exact mode's. Run: ``python scripts/exact_stats_cost.py``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import bnviz


def basic_block(cin: int, cout: int, stride: int) -> nn.Module:
    """resnet's basic block: conv-BN-ReLU, conv-BN, plus the (projected) input, ReLU."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                      nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(cout))  # fmt: skip
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.body(x)
            out += self.skip(x)
            return out.relu_()

    return Block()


def resnet18_cifar(classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [basic_block(cin, cout, stride), basic_block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet18_cifar()
    batches = [torch.randn(args.batch_size, 3, 32, 32) * 0.5 + 0.2 for _ in range(args.batches)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x in batches[:4]:  # a few steps, so the network is not at its initialization
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    model.eval()
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    params = sum(p.numel() for p in model.parameters())
    print(f"resnet-18 shape, {norms} batch norms, {params / 1e6:.1f} M parameters; "
          f"{args.batches} batches of {args.batch_size}×3×32×32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    results = {}
    for mode in ("one-pass", "exact", "one-pass", "exact") * args.repeats:
        m = copy.deepcopy(model)
        calls = [0]
        hook = m.register_forward_pre_hook(lambda *_, calls=calls: calls.__setitem__(0, calls[0] + 1))
        start = time.perf_counter()
        bnviz.recompute_batch_norm_stats(m, batches, mode=mode)
        seconds = time.perf_counter() - start
        hook.remove()
        results.setdefault(mode, []).append((seconds, calls[0], m))
    plain = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.no_grad():
            for x in batches:
                model(x)
        plain.append(time.perf_counter() - start)
    print(f"one eval-mode pass over the batches (no statistics): {statistics.median(plain):.2f} s")
    for mode, runs in results.items():
        print(f"mode={mode!r}: {statistics.median(r[0] for r in runs):.2f} s, "
              f"{runs[0][1]} model calls (forwards, most cut short in exact mode)")  # fmt: skip
    exact, one = results["exact"][0][2], results["one-pass"][0][2]
    errors = []
    for (name, a), b in zip(exact.named_modules(), one.modules(), strict=True):
        if isinstance(a, nn.BatchNorm2d):
            errors.append((name, ((b.running_var - a.running_var).abs() / a.running_var).max().item()))
    print("one pass against exact, max relative error of running_var per layer (call order of the modules):")
    for name, err in errors:
        print(f"  {name:24s} {err:.2e}")


if __name__ == "__main__":
    main()
