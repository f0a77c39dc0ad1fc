"""The /doctor page's URL: which sample checkpoint to show (an upload cannot travel in a link)."""

from __future__ import annotations

from dataclasses import dataclass

from bnviz.explorer.query import Param, QuerySpec, choice
from bnviz.explorer.workers import UPLOAD_WORKER_BYTES
from bnviz.hosting.memory import BASE, MB

SAMPLES = {  # name -> what is planted (the healthy one: nothing)
    "healthy": "a small digits CNN trained properly (300 steps, batch 64)",
    "never-updated": "the same network, the running statistics of bn2 reset after training",
    "nan": "the same network, a NaN written into one channel of bn1.running_var",
    "keras-momentum": "the same network trained with momentum=0.99 in every batch norm (Keras' value)",
    "dead-channels": "the same network, γ of 3 of bn2's 16 channels set to 0",
    "redundant-bias": "the same network with bias=True on conv1, the conv before bn1",
}
MAX_UPLOAD_MB = 100  # .streamlit/config.toml's server.maxUploadSize: a resnet50 state dict is 97.8 MB


@dataclass(frozen=True)
class DoctorConfig:
    """One sample's view; hashable, so it keys the app's cache."""

    sample: str = "healthy"

    def estimate_bytes(self) -> int:
        """A digits CNN (about 15,000 parameters), the 1,438 training images and its batches."""
        return BASE + 16 * MB

    def refusal(self) -> str | None:
        """Why this is not run, or None."""
        return None if self.sample in SAMPLES else f"unknown sample; choose one of {', '.join(SAMPLES)}"


def upload_bytes(size: int) -> int:
    """What diagnosing an upload of ``size`` bytes adds to the server: the bytes sent to a worker
    (a copy), the tensors it loads (one more), the report, and the worker's own pages."""
    return BASE + UPLOAD_WORKER_BYTES + 2 * size


DOCTOR = QuerySpec[DoctorConfig]([Param("sample", "sample", choice(tuple(SAMPLES)))])
