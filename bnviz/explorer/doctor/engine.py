"""The /doctor page's engine: sample checkpoints bnviz builds itself (a digits CNN, healthy or with
one planted fault), ``bnviz.diagnose`` on each with its model and test batches, and the same on a
visitor's upload — read in a worker process (``weights_only`` for ``.pt``, bnviz's own reader for
``.safetensors``) under a memory and a time limit, so that a hostile file can only be refused."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bnviz.diagnosis import diagnose
from bnviz.explorer.contract import Progress, Stopped, check_stop, ignore, never
from bnviz.explorer.digits import load_digits
from bnviz.explorer.doctor.url import DoctorConfig
from bnviz.safe_load import load_state_dict_bytes, write_safetensors

STEPS = 300
BATCH = 64
LR = 0.05
SEED = 0
TEST_BATCH = 64  # the diagnosis's batches: the 359 test images in batches of 64
UPLOAD_DEADLINE_S = 60.0


def build(bias: bool = False, momentum: float = 0.1) -> nn.Sequential:
    """The sample network, its layers named as a reader would: two conv → batch norm → ReLU
    blocks and a linear → batch norm → ReLU head on 8 × 8 digits."""
    torch.manual_seed(SEED)
    return nn.Sequential(OrderedDict([
        ("image", nn.Unflatten(1, (1, 8, 8))),
        ("conv1", nn.Conv2d(1, 8, 3, padding=1, bias=bias)), ("bn1", nn.BatchNorm2d(8, momentum=momentum)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False)), ("bn2", nn.BatchNorm2d(16, momentum=momentum)),
        ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * 4 * 4, 32, bias=False)), ("bn3", nn.BatchNorm1d(32, momentum=momentum)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(32, 10)),
    ]))  # fmt: skip


def train(net: nn.Module, stopped: Stopped = never) -> nn.Module:
    """``STEPS`` steps of SGD with momentum on shuffled digits batches (seeded), then eval mode."""
    data = load_digits()
    g = torch.Generator().manual_seed(SEED)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
    net.train()
    for step in range(STEPS):
        if step % 50 == 0:
            check_stop(stopped)
        idx = torch.randint(0, len(data.train_x), (BATCH,), generator=g)
        loss = nn.functional.cross_entropy(net(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def sample_model(name: str, stopped: Stopped = never) -> nn.Module:
    """The sample ``name`` (a key of ``SAMPLES``): trained, with its fault planted."""
    net = train(build(bias=name == "redundant-bias", momentum=0.99 if name == "keras-momentum" else 0.1), stopped)
    bn1, bn2 = net.bn1, net.bn2
    with torch.no_grad():
        if name == "never-updated":
            bn2.reset_running_stats()
        elif name == "nan":
            bn1.running_var[3] = float("nan")
        elif name == "dead-channels":
            bn2.weight[[2, 7, 11]] = 0.0
    return net


def accuracy(net: nn.Module) -> float:
    """Eval-mode accuracy on the 359 test images (NaN outputs count as wrong)."""
    data = load_digits()
    with torch.no_grad():
        return float((net.eval()(data.test_x).argmax(1) == data.test_y).float().mean())


@dataclass(frozen=True)
class DoctorReport:
    """A diagnosis as plain data: the report's ``to_dict()``, and for a sample its name, its eval
    accuracy and its state dict as ``.safetensors`` bytes (to try the command line on)."""

    config: DoctorConfig | None
    report: dict[str, Any]
    accuracy: float | None = None
    file: bytes | None = None
    file_name: str | None = None

    @property
    def verdict(self) -> str:
        severities = {f["severity"] for f in self.report["findings"]}
        return "error" if "error" in severities else "warning" if "warning" in severities else "clean"


def run(config: DoctorConfig, stopped: Stopped = never, progress: Progress = ignore) -> DoctorReport:
    """Build and train the sample, diagnose it with its model and the test images in batches."""
    net = sample_model(config.sample, stopped)
    check_stop(stopped)
    test = load_digits().test_x
    batches = list(test.split(TEST_BATCH))
    report = diagnose(net, batches)
    return DoctorReport(config, report.to_dict(), accuracy(net), write_safetensors(net.state_dict()),
                        f"bnviz-sample-{config.sample}.safetensors")  # fmt: skip


def diagnose_upload(name: str, data: bytes) -> dict[str, Any]:
    """In a worker process (``workers.read_upload``): read ``data`` as the state dict file ``name``
    and diagnose it. A file refused raises ``CheckpointError`` (or ``diagnose``'s ``ValueError``)."""
    state = load_state_dict_bytes(name, data)
    del data
    return diagnose(state).to_dict()
