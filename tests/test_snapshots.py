"""The screenshot comparison passes on near-identical images and fails, with a diff image, otherwise."""

from __future__ import annotations

from PIL import Image, ImageDraw

from tests.snapshots import compare_png


def _image(path, box=None, size=(200, 100)):
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), "match", fill="black")
    if box:
        draw.rectangle(box, fill="red")
    img.save(path)
    return path


def test_identical_and_nearly_identical_pass(tmp_path):
    a = _image(tmp_path / "a.png")
    assert compare_png(a, _image(tmp_path / "b.png"), tmp_path / "d.png") is None
    assert compare_png(a, _image(tmp_path / "c.png", box=(0, 0, 2, 2)), tmp_path / "d.png") is None  # 9 px


def test_changed_region_fails_with_a_diff_image(tmp_path):
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png", box=(50, 50, 90, 90))
    problem = compare_png(a, b, tmp_path / "diff.png")
    assert problem and "of pixels differ" in problem
    assert (tmp_path / "diff.png").exists()


def test_size_change_fails(tmp_path):
    a, b = _image(tmp_path / "a.png"), _image(tmp_path / "b.png", size=(200, 140))
    assert "size" in compare_png(a, b, tmp_path / "diff.png")
