"""helpers.data.synth: FoodieQA format, every dish, EXIF share, determinism, separable pixels."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.data import synth
from helpers.foods import CUISINES, DISH_BY_NAME, DISHES, LOCATIONS
from helpers.tiling import load_image

PER_DISH, SEED, LONG = 6, 0, 256
RECORD_KEYS = {"question", "choices", "answer", "question_type", "food_name", "question_id", "food_meta",
               "question_en", "choices_en"}
META_KEYS = {"main_ingredient", "id", "food_name", "food_type", "food_location", "food_file"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = synth.make_dataset(tmp_path_factory.mktemp("synth") / "set", per_dish=PER_DISH, seed=SEED, long_side=LONG)
    records = json.loads((root / "sivqa_tidy.json").read_text(encoding="utf-8"))
    return root, records


def _images(records):
    """food_file -> food_meta, one per image."""
    return {r["food_meta"]["food_file"]: r["food_meta"] for r in records}


def test_format_fields_and_types(dataset):
    root, records = dataset
    assert isinstance(records, list) and len(records) == 2 * PER_DISH * len(DISHES)
    for k, rec in enumerate(records):
        assert set(rec) == RECORD_KEYS, rec.keys()
        assert isinstance(rec["question"], str) and isinstance(rec["question_en"], str)
        assert isinstance(rec["choices"], list) and len(rec["choices"]) == 4
        assert isinstance(rec["choices_en"], list) and len(rec["choices_en"]) == 4
        assert all(isinstance(c, str) and c for c in rec["choices"] + rec["choices_en"])
        assert len(set(rec["choices"])) == 4 and len(set(rec["choices_en"])) == 4
        assert isinstance(rec["answer"], str) and rec["answer"] in {"0", "1", "2", "3"}
        assert rec["question_id"] == f"vqa-{k}"
        meta = rec["food_meta"]
        assert set(meta) == META_KEYS
        assert isinstance(meta["main_ingredient"], list) and all(isinstance(i, str) for i in meta["main_ingredient"])
        assert isinstance(meta["id"], int) and not isinstance(meta["id"], bool)
        assert meta["food_name"] == rec["food_name"]
        assert meta["food_location"] in LOCATIONS
        assert isinstance(meta["food_file"], str) and meta["food_file"].startswith("images/")
        assert meta["food_file"].endswith(f"{meta['id']}_{DISH_BY_NAME[meta['food_name']].key}.jpeg")
        if rec["question_type"] == "cuisine_type":
            assert (rec["question"], rec["question_en"]) == synth.CUISINE_Q
        else:
            assert rec["question_type"] == "food_name"
            assert (rec["question"], rec["question_en"]) == synth.NAME_Q
    # one cuisine and one dish-name question per image
    per_image = Counter((r["food_meta"]["food_file"], r["question_type"]) for r in records)
    assert set(per_image.values()) == {1} and len(per_image) == len(records)
    assert len({r["food_meta"]["id"] for r in records}) == PER_DISH * len(DISHES)
    assert (root / "README.txt").read_text(encoding="utf-8").startswith(synth.MARKER)
    assert "synthetic" in (root / "README.txt").read_text(encoding="utf-8").lower()


def test_answers_point_at_the_truth(dataset):
    _, records = dataset
    positions = Counter()
    for rec in records:
        meta, a = rec["food_meta"], int(rec["answer"])
        dish = DISH_BY_NAME[meta["food_name"]]
        assert meta["food_type"] == dish.cuisine
        assert meta["main_ingredient"] == list(dish.main_ingredient)
        if rec["question_type"] == "cuisine_type":
            assert rec["choices"][a] == dish.cuisine
            assert rec["choices_en"][a] == CUISINES[dish.cuisine]
            assert all(c in CUISINES for c in rec["choices"])
            assert rec["choices_en"] == [CUISINES[c] for c in rec["choices"]]
        else:
            assert rec["choices"][a] == dish.name
            assert rec["choices_en"][a] == dish.name_en
            assert rec["choices_en"] == [DISH_BY_NAME[c].name_en for c in rec["choices"]]
        positions[a] += 1
    assert set(positions) == {0, 1, 2, 3}  # shuffled, not always in the same slot
    assert max(positions.values()) < 0.45 * len(records)


def test_every_dish_and_enough_cuisines(dataset):
    _, records = dataset
    names = Counter(m["food_name"] for m in _images(records).values())
    assert set(names) == {d.name for d in DISHES}
    assert set(names.values()) == {PER_DISH}
    assert len({r["food_meta"]["food_type"] for r in records}) >= 8


def test_images_decode_with_phone_aspect_ratios(dataset):
    root, records = dataset
    shapes = Counter()
    for rel in _images(records):
        path = root / rel
        assert path.is_file(), rel
        with Image.open(path) as raw:
            assert raw.format == "JPEG"
        img = load_image(path)
        assert max(img.size) == LONG
        ratio = img.width / img.height
        match = [(w, h) for w, h, _ in synth.ASPECTS if abs(ratio / (w / h) - 1) < 0.02]
        assert match, f"{rel}: {img.size} is not a phone aspect ratio"
        shapes[match[0]] += 1
    assert len(shapes) >= 6, shapes
    assert shapes[(4, 3)] + shapes[(3, 4)] >= 0.4 * sum(shapes.values())  # mostly 4:3 / 3:4 like phones
    assert shapes[(3, 1)] + shapes[(1, 3)] >= 1  # and some panoramas


def test_exif_rotated_share_is_upright_after_load(dataset):
    root, records = dataset
    plans = {p.index: p for p in synth.plan_photos(PER_DISH, SEED, LONG)}
    sideways = 0
    for rel, meta in _images(records).items():
        plan = plans[meta["id"]]
        assert plan.food_file == rel and plan.dish.name == meta["food_name"]
        with Image.open(root / rel) as raw:
            orientation = raw.getexif().get(0x0112, 1)
            raw_size = raw.size
        assert orientation == plan.orientation
        upright = load_image(root / rel)
        assert upright.size == (plan.width, plan.height)
        if orientation in (6, 8):
            sideways += 1
            assert raw_size == (plan.height, plan.width)  # an EXIF-blind loader sees it turned
            if plan.width != plan.height:
                assert raw_size != upright.size
            # the upright pixels are the drawing (up to JPEG loss), not a turned copy of it
            drawn = np.asarray(synth.draw_photo(plan.dish, plan.width, plan.height, plan.seed), dtype=float)
            err = np.abs(np.asarray(upright, dtype=float) - drawn).mean()
            assert err < 6, (rel, err)
            if plan.width == plan.height:
                naive = np.asarray(Image.open(root / rel).convert("RGB"), dtype=float)
                assert np.abs(naive - drawn).mean() > 2 * err
        else:
            assert raw_size == upright.size
    n = PER_DISH * len(DISHES)
    assert sideways == round(synth.EXIF_SHARE * n)


def test_deterministic_bytes(tmp_path):
    a = synth.make_dataset(tmp_path / "a", per_dish=1, seed=7, long_side=128)
    b = synth.make_dataset(tmp_path / "b", per_dish=1, seed=7, long_side=128)
    c = synth.make_dataset(tmp_path / "c", per_dish=1, seed=8, long_side=128)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == len(DISHES) + 2
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "sivqa_tidy.json").read_bytes() != (c / "sivqa_tidy.json").read_bytes()
    jpg_a = sorted(a.rglob("*.jpeg"))[0].read_bytes()
    assert all(p.read_bytes() != jpg_a for p in c.rglob("*.jpeg"))


def _centre_histogram(img: Image.Image, levels: int = 8) -> np.ndarray:
    a = np.asarray(img.resize((64, 64), Image.Resampling.BILINEAR)).astype(int)[16:48, 16:48]
    q = a * levels // 256
    idx = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
    h = np.bincount(idx.ravel(), minlength=levels ** 3).astype(float)
    return np.sqrt(h / h.sum())


def test_dishes_are_separable_from_pixels(dataset):
    """Leave-one-out nearest centroid on colour histograms: far above the 1/16 chance level."""
    root, records = dataset
    feats, labels = [], []
    for rel, meta in sorted(_images(records).items()):
        feats.append(_centre_histogram(load_image(root / rel)))
        labels.append(meta["food_name"])
    X, y = np.array(feats), np.array(labels)
    classes = sorted(set(labels))
    correct = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        centroids = np.array([X[keep & (y == c)].mean(0) for c in classes])
        correct += classes[int(np.argmin(((centroids - X[i]) ** 2).sum(1)))] == y[i]
    accuracy = correct / len(y)
    assert accuracy > 0.3, f"nearest-centroid accuracy {accuracy:.2f} (chance {1 / len(classes):.2f})"
    # ... and not trivially memorisable: two photos of the same dish differ a lot
    same = [X[i] for i in range(len(y)) if y[i] == classes[0]]
    assert np.abs(same[0] - same[1]).sum() > 0.5


def test_draw_photo_and_plan_validation():
    img = synth.draw_photo("mapo_tofu", 120, 90, seed=3)
    assert img.size == (120, 90) and img.mode == "RGB"
    assert np.asarray(img).std() > 10  # not a blank canvas
    assert synth.draw_photo(DISHES[0], 64, 64, 1).tobytes() == synth.draw_photo(DISHES[0], 64, 64, 1).tobytes()
    with pytest.raises(ValueError):
        synth.draw_photo("mapo_tofu", 8, 90)
    with pytest.raises(KeyError):
        synth.draw_photo("pizza", 64, 64)
    with pytest.raises(ValueError):
        synth.plan_photos(per_dish=0)
    with pytest.raises(ValueError):
        synth.save_photo(img, "/tmp/never.jpeg", orientation=3)
    plans = synth.plan_photos(per_dish=2, seed=1, long_side=200)
    assert [p.dish.key for p in plans[:16]] == [d.key for d in DISHES]
    assert len({p.seed for p in plans}) == len(plans)


def test_refuses_foreign_folder_and_replaces_own(tmp_path):
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "sivqa_tidy.json").write_text("[]")
    with pytest.raises(FileExistsError, match="refusing"):
        synth.make_dataset(foreign, per_dish=1, long_side=64)
    assert (foreign / "sivqa_tidy.json").read_text() == "[]"
    own = synth.make_dataset(tmp_path / "own", per_dish=2, long_side=64)
    stale = own / "images" / "stale.jpeg"
    stale.write_bytes(b"x")
    synth.make_dataset(own, per_dish=1, long_side=64)
    assert not stale.exists()
    assert len(list(own.rglob("*.jpeg"))) == len(DISHES)


def test_cli_and_contact_sheet(tmp_path, capsys):
    out, sheet = tmp_path / "cli", tmp_path / "sheet.png"
    assert synth.main(["--out", str(out), "--per-dish", "1", "--long-side", "96", "--seed", "2",
                       "--sheet", str(sheet)]) == 0
    assert "16 photos / 32 questions" in capsys.readouterr().out
    assert len(json.loads((out / "sivqa_tidy.json").read_text(encoding="utf-8"))) == 32
    img = Image.open(sheet)
    assert img.size == (4 * 224, 4 * (224 + 224 // 7))
    small = synth.contact_sheet(out, n=5, cell=100, columns=3)
    assert small.size == (300, 2 * (100 + 100 // 7))
    assert synth.main(["--out", str(tmp_path / "bad"), "--per-dish", "0"]) == 2


def test_split_modules_and_reexports():
    from helpers.data import synth_dishes
    from helpers.data import synth_draw

    assert synth.draw_photo is synth_draw.draw_photo and synth.SUPERSAMPLE == synth_draw.SUPERSAMPLE
    assert set(synth_dishes.DRAWERS) == {d.key for d in DISHES} == set(synth_draw._SERVING)
    assert all(callable(f) for f in synth_dishes.DRAWERS.values())


def test_labels_chinese_with_cjk_font_english_without():
    assert synth._label("麻婆豆腐", True) == "麻婆豆腐 Mapo tofu"
    assert synth._label("麻婆豆腐", False) == "Mapo tofu"
    assert synth._label("酸菜鱼", False).strip() == "酸菜鱼"  # not in the catalogue: no English name to show


def test_cjk_font_has_real_chinese_glyphs():
    font, cjk = synth._font(20)
    if not cjk:
        pytest.skip("no CJK font installed (Debian: fonts-wqy-microhei or fonts-noto-cjk)")
    # a font without these glyphs draws the same empty box for both characters
    ma, po = font.getmask("麻"), font.getmask("婆")
    assert ma.getbbox() and po.getbbox()
    assert bytes(ma) != bytes(po)


def _sheet_labels(root, monkeypatch):
    seen = []
    real = synth._label

    def spy(name, cjk):
        seen.append((cjk, real(name, cjk)))
        return seen[-1][1]

    monkeypatch.setattr(synth, "_label", spy)
    synth.contact_sheet(root, n=16, cell=96)
    return seen


def test_contact_sheet_labels_follow_the_font(dataset, monkeypatch):
    root, _ = dataset
    if synth._font(12)[1]:
        labels = _sheet_labels(root, monkeypatch)
        assert len(labels) == 16 and all(cjk for cjk, _ in labels)
        assert {label.split(" ")[0] for _, label in labels} == {d.name for d in DISHES}
    monkeypatch.setattr(synth, "_FONTS", ("no-such-cjk-font.ttc", "DejaVuSans.ttf"))
    assert synth._font(12)[1] is False
    labels = _sheet_labels(root, monkeypatch)
    assert len(labels) == 16 and not any(cjk for cjk, _ in labels)
    assert {label for _, label in labels} == {d.name_en for d in DISHES}
    monkeypatch.setattr(synth, "_FONTS", ("no-such-font.ttf",))
    font, cjk = synth._font(12)
    assert cjk is False and font is not None
