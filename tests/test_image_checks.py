"""Tests for helpers.data.image_checks: opaque alpha is a good photo; what the end-marker shortcut cannot see is said."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers.data.checks import ImageLimits, check_llava, inspect_image


def photo(size=(640, 480), seed=0):
    rng = np.random.default_rng(seed)
    small = (rng.random((size[1] // 16, size[0] // 16, 3)) * 255).astype("uint8")
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def test_rgba_png_with_every_pixel_opaque_is_accepted(tmp_path):
    rgba = photo().convert("RGBA")  # alpha 255 everywhere: what one real FoodieQA photo is
    rgba.save(tmp_path / "opaque.png")
    la = Image.new("LA", (64, 48), (90, 255))
    la.save(tmp_path / "opaque_la.png")
    for name in ("opaque.png", "opaque_la.png"):
        info = inspect_image(str(tmp_path / name))
        assert info["problems"] == [] and info["decoded"], (name, info)


def test_rgba_png_with_a_transparent_pixel_is_refused(tmp_path):
    rgba = photo().convert("RGBA")
    rgba.putpixel((3, 4), (10, 20, 30, 0))
    rgba.save(tmp_path / "hole.png")
    kinds = [(k, s) for k, _, s in inspect_image(str(tmp_path / "hole.png"))["problems"]]
    assert kinds == [("unsupported_mode", "error")]


def test_palette_transparency_only_counts_when_used(tmp_path):
    pal = Image.new("P", (64, 48), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "unused.png", transparency=0)  # index 0 is transparent, no pixel uses it
    assert inspect_image(str(tmp_path / "unused.png"))["problems"] == []
    pal.putpixel((0, 0), 0)
    pal.save(tmp_path / "used.png", transparency=0)
    assert inspect_image(str(tmp_path / "used.png"))["problems"][0][0] == "unsupported_mode"


@pytest.fixture()
def cut_with_marker(tmp_path):
    full = tmp_path / "images" / "cut.jpg"
    full.parent.mkdir()
    photo().save(full, "JPEG", quality=90)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2] + b"\xff\xd9")  # cut short, end marker appended
    return full


def test_truncated_jpeg_with_end_marker_what_the_check_sees(tmp_path, cut_with_marker):
    rec = {"id": "a", "image": "cut.jpg", "conversations": [{"from": "human", "value": "q\n<image>"},
                                                            {"from": "gpt", "value": "a"}]}
    data = tmp_path / "train.json"
    data.write_text(json.dumps([rec]))
    fast = check_llava(data, cut_with_marker.parent, workers=1)
    assert fast.ok and "cut short and then given an end marker" in fast.format()  # says what it cannot see
    deep = check_llava(data, cut_with_marker.parent, workers=1, always_decode=True)
    assert [(p.kind, p.severity) for p in deep.problems] == [("grey_tail", "warning")]


def test_complete_jpeg_has_no_grey_tail(tmp_path):
    photo().save(tmp_path / "full.jpg", "JPEG", quality=90)
    assert inspect_image(str(tmp_path / "full.jpg"), ImageLimits(always_decode=True))["problems"] == []


def test_a_folder_named_like_an_image_is_reported(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    assert inspect_image(str(tmp_path / "dir.jpg"))["problems"][0][0] == "unreadable_image"
