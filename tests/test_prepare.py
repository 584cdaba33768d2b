"""Tests for helpers.data.prepare: ensure_data draws and converts only what is missing."""
import json
from types import SimpleNamespace

import pytest

from helpers.data import prepare


def _settings(tmp_path, synthetic=True):
    return SimpleNamespace(sivqa_file=tmp_path / "sivqa_tidy.json", data_root=tmp_path, llava_dir=tmp_path / "llava",
                           data_is_synthetic=synthetic, synth_images_per_dish=1, seed=0, synth_long_side=64,
                           synth_val_fraction=0.25)


def test_existing_data_is_left_alone(tmp_path):
    S = _settings(tmp_path)
    S.sivqa_file.write_text("[]")
    S.llava_dir.mkdir()
    for name in ("train", "val"):
        (S.llava_dir / f"{name}.json").write_text(json.dumps([]))
    paths = prepare.ensure_data(S)
    assert paths["train"] == S.llava_dir / "train.json" and paths["sivqa"] == S.sivqa_file
    assert set(prepare.ensure_data(S, llava=False)) == {"sivqa", "images"}


def test_real_data_that_is_missing_is_never_drawn(tmp_path):
    with pytest.raises(FileNotFoundError, match="FOODIEQA_ROOT"):
        prepare.ensure_data(_settings(tmp_path, synthetic=False))
    assert not any(tmp_path.iterdir())


def test_example_photos_pick_the_nearest_to_4_3_and_the_widest(tmp_path):
    from PIL import Image

    S = _settings(tmp_path)
    sizes = {"a.jpg": (160, 120), "b.jpg": (300, 100), "c.jpg": (100, 100), "d.jpg": (161, 120)}
    for name, size in sizes.items():
        Image.new("RGB", size, "white").save(tmp_path / name)
    S.sivqa_file.write_text(json.dumps([{"food_meta": {"food_file": n}} for n in sizes]))
    a, b = prepare.example_photos(S)
    assert (a.size, b.size) == ((160, 120), (300, 100))  # 1.33 is nearer to 4:3 than 1.34
    S.sivqa_file.write_text(json.dumps([{"food_meta": {"food_file": "c.jpg"}}]))  # one aspect: draw two
    a, b = prepare.example_photos(S)
    assert (a.size, b.size) == ((896, 672), (896, 299))
