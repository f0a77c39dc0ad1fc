"""Tolerance-based comparison of two screenshots (PIL only)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageChops

CHANNEL_THRESHOLD = 48  # a pixel differs when some channel moved by more than this (of 255)
MAX_DIFFERENT = 0.005  # at most this share of pixels may differ (anti-aliasing, font hinting)
MAX_HEIGHT_DRIFT = 8  # pixels of height difference tolerated (then the overlap is compared)


def compare_png(actual: Path, expected: Path, diff_path: Path) -> str | None:
    """None when the images agree within tolerance; else what differs (and a diff image is written:
    differing pixels in red over a faded copy of the expected image)."""
    a = Image.open(actual).convert("RGB")
    e = Image.open(expected).convert("RGB")
    if a.width != e.width or abs(a.height - e.height) > MAX_HEIGHT_DRIFT:
        return f"size {a.size} differs from the baseline's {e.size}"
    height = min(a.height, e.height)
    a, e = a.crop((0, 0, a.width, height)), e.crop((0, 0, e.width, height))
    delta = ImageChops.difference(a, e).convert("L")
    mask = delta.point(lambda v: 255 if v > CHANNEL_THRESHOLD else 0)
    different = sum(mask.histogram()[255:]) / (a.width * height)
    if different <= MAX_DIFFERENT:
        return None
    faded = Image.blend(e, Image.new("RGB", e.size, "white"), 0.7)
    faded.paste(Image.new("RGB", e.size, (255, 0, 0)), mask=mask)
    diff_path.parent.mkdir(parents=True, exist_ok=True)
    faded.save(diff_path)
    return f"{different:.2%} of pixels differ (tolerance {MAX_DIFFERENT:.2%})"
