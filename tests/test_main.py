"""``python -m bnviz`` prints its parity report and exits 0 when everything matches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_parity_report_runs():
    out = subprocess.run([sys.executable, "-m", "bnviz"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all match" in out.stdout
    assert out.stdout.count(" match ") >= 9, out.stdout
    assert "same error: ValueError: expected 4D input (got 3D input)" in out.stdout


def test_parity_report_covers_the_family():
    out = subprocess.run([sys.executable, "-m", "bnviz"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    section = out.stdout.split("the family", 1)[1]
    for member in ("BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "RMSNorm"):
        assert section.count(f" {member} ") == 3, (member, section)
    assert "mismatch" not in section
