"""Tests for helpers.data.pathsafe: image paths that cannot open are reported, never raised, and never pass."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from helpers.data.checks import check_llava, safe_image_path


@pytest.fixture()
def root(tmp_path):
    images = tmp_path / "images"
    (images / "u").mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 120, 40)).save(images / "u" / "x.jpg")
    return images


def record(image, rid="a"):
    return {"id": rid, "image": image, "conversations": [{"from": "human", "value": "这是什么?\n<image>"},
                                                         {"from": "gpt", "value": "烤鸭"}]}


HOSTILE = {  # path -> kind
    "u/x\x00.jpg": "bad_path_chars",
    "u/\ud800x.jpg": "bad_path_chars",
    "u/x.jpg\udcff": "bad_path_chars",
    "u/x.jpg/": "not_a_file_path",
    "u/x.jpg/.": "not_a_file_path",
    "u/": "not_a_file_path",
    ".": "not_a_file_path",
}


@pytest.mark.parametrize("rel,kind", list(HOSTILE.items()))
def test_hostile_paths_are_reported_not_raised(root, rel, kind):
    path, err = safe_image_path(root, rel)
    assert path is None and err[0] == kind


def test_hostile_paths_in_a_file_are_rejected_per_record(tmp_path, root):
    records = [record("u/x.jpg")] + [record(p, f"r{i}") for i, p in enumerate(HOSTILE)]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records), encoding="utf-8")  # json escapes the surrogates as \ud800
    rep = check_llava(data, root, workers=1)
    assert rep.checked == rep.valid + rep.rejected == len(records)
    assert rep.valid == 1 and rep.rejected == len(HOSTILE)
    for i, kind in enumerate(HOSTILE.values(), start=1):
        assert [(p.kind, p.field) for p in rep.problems if p.index == i] == [(kind, "image")]


def test_xtuner_cannot_open_what_pathlib_normalises(root):
    """Why a trailing '/' or '/.' must be refused: pathlib hides it, XTuner's open does not."""
    from pathlib import Path

    assert (Path(root) / "u/x.jpg/.").is_file()  # pathlib normalised the '/.' away
    with pytest.raises(OSError):
        Image.open(os.path.join(root, "u/x.jpg/."))  # what XTuner's get_image does


def test_good_and_normalisable_paths_pass(root):
    for rel in ("u/x.jpg", "./u/x.jpg", "u//x.jpg"):
        path, err = safe_image_path(root, rel)
        assert err is None and path.is_file()


def test_image_key_and_short_repr():
    from helpers.data.pathsafe import image_key, short_repr

    assert image_key("/data", "./u//x.jpg") == image_key("/data", "u/x.jpg") == "u/x.jpg"
    assert len(short_repr(list(range(10_000)))) < 100
