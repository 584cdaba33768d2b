"""Tests for helpers.data.llava: FoodieQA -> LLaVA conversion, split, EXIF baking, stats, CLI."""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers.data.checks import check_foodieqa, check_llava
from helpers.data.llava import (ANSWER_JOIN, dataset_stats, find_image_root, foodieqa_to_llava, load_llava, main,
                                split_answer, split_images)
from helpers.settings import get_settings
from helpers.tiling import image_tokens, tile_count

REPO = Path(__file__).resolve().parent.parent
DISHES = [("烤羊肉串", "新疆菜"), ("白切鸡", "粤菜"), ("锅包肉", "东北菜"), ("麻婆豆腐", "川菜"), ("北京烤鸭", "京菜")]
CUISINES = ["新疆菜", "粤菜", "东北菜", "川菜", "京菜"]


def write_jpeg(path: Path, size, orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (180, 90, 30))
    im.paste((20, 200, 20), (0, 0, size[0] // 2, size[1] // 3))  # a corner that shows the rotation
    kwargs = {}
    if orientation:
        exif = im.getexif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, "JPEG", quality=90, **kwargs)


def make_foodieqa(root: Path, images_per_dish=(4, 3, 2, 5, 1), sub="images", rotate_every=5) -> list:
    """A small FoodieQA-format set: two questions per image (cuisine, dish)."""
    records, n = [], 0
    for (dish, cuisine), count in zip(DISHES, images_per_dish):
        for k in range(count):
            rel = f"{dish}_{k}/{n}_IMG.jpeg"
            write_jpeg(root / sub / rel, (96 + 8 * k, 64), orientation=6 if n % rotate_every == 0 else None)
            meta = {"main_ingredient": ["肉"], "id": n, "food_name": dish, "food_type": cuisine,
                    "food_location": "餐馆", "food_file": rel}
            choices = [cuisine] + [c for c in CUISINES if c != cuisine][:3]
            random.Random(n).shuffle(choices)
            records.append({"question": "图片中的食物通常属于哪个菜系?", "choices": choices,
                            "answer": str(choices.index(cuisine)), "question_type": "cuisine_type",
                            "food_name": dish, "question_id": f"vqa-{2 * n}", "food_meta": meta})
            names = [dish] + [d for d, _ in DISHES if d != dish][:3]
            records.append({"question": "图片中的菜叫什么?", "choices": names, "answer": "0",
                            "question_type": "food_name", "food_name": dish, "question_id": f"vqa-{2 * n + 1}",
                            "food_meta": meta})
            n += 1
    (root / "sivqa_tidy.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return records


@pytest.fixture()
def foodie(tmp_path):
    root = tmp_path / "foodie"
    records = make_foodieqa(root)
    return root, records


def convert(root, out, **kw):
    kw.setdefault("workers", 1)
    return foodieqa_to_llava(root / "sivqa_tidy.json", root, out, **kw)


def test_split_by_image_every_dish_in_val_deterministic(foodie, tmp_path):
    root, records = foodie
    rep = convert(root, tmp_path / "a")
    train, val = load_llava(tmp_path / "a" / "train.json"), load_llava(tmp_path / "a" / "val.json")
    assert rep.read == rep.converted == len(records) == len(train) + len(val) and rep.skipped == 0
    train_imgs = {r["meta"]["food_file"] for r in train}
    val_imgs = {r["meta"]["food_file"] for r in val}
    assert not train_imgs & val_imgs
    val_dishes = {r["meta"]["food_name"] for r in val}
    assert val_dishes >= {"烤羊肉串", "白切鸡", "锅包肉", "麻婆豆腐"}  # every dish with >= 2 images
    assert {r["meta"]["food_name"] for r in train} >= val_dishes - {"北京烤鸭"}  # each keeps a train image
    assert rep.val_images == len(val_imgs) and rep.train_images == len(train_imgs)
    # same seed, shuffled input order -> same split; another seed -> another split
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    (root / "sivqa_tidy.json").write_text(json.dumps(shuffled, ensure_ascii=False), encoding="utf-8")
    convert(root, tmp_path / "b")
    assert {r["meta"]["food_file"] for r in load_llava(tmp_path / "b" / "val.json")} == val_imgs
    other = [split_images({f"{d}/{i}": d for d in "abc" for i in range(8)}, 0.25, s) for s in range(4)]
    assert len({frozenset(v) for v in other}) > 1 and all(len(v) == 6 for v in other)


def test_round_trip_reproduces_questions_answers_dishes_paths(foodie, tmp_path):
    root, records = foodie
    out = tmp_path / "out"
    convert(root, out)
    back = {r["id"]: r for r in load_llava(out / "train.json") + load_llava(out / "val.json")}
    assert len(back) == len(records)
    for src in records:
        rec = back[src["question_id"]]
        human, gpt = rec["conversations"]
        assert human == {"from": "human", "value": src["question"] + "\n<image>"}
        answer, dish = split_answer(gpt["value"])
        assert gpt["value"] == src["choices"][int(src["answer"])] + ANSWER_JOIN + src["food_meta"]["food_name"]
        assert answer == src["choices"][int(src["answer"])] and dish == src["food_meta"]["food_name"]
        assert rec["meta"]["food_file"] == src["food_meta"]["food_file"]
        assert rec["meta"]["choices"][rec["meta"]["answer"]] == answer
        assert rec["meta"]["question_type"] == src["question_type"]
        assert rec["meta"]["cuisine"] == src["food_meta"]["food_type"]
        if not os.path.isabs(rec["image"]):
            assert rec["image"] == src["food_meta"]["food_file"]
    assert check_llava(out / "train.json", find_image_root(root, ["x"]) / "images", workers=1).ok


def test_exif_baked_upright(foodie, tmp_path):
    root, records = foodie
    out = tmp_path / "out"
    rep = convert(root, out)
    rotated = {r["food_meta"]["food_file"] for r in records if r["food_meta"]["id"] % 5 == 0}
    assert rep.exif_baked == len(rotated) > 0
    assert rep.image_root == str(root / "images")
    for rec in load_llava(out / "train.json") + load_llava(out / "val.json"):
        src = root / "images" / rec["meta"]["food_file"]
        if rec["meta"]["food_file"] in rotated:
            assert rec["image"] == str((out / "upright" / rec["meta"]["food_file"]).resolve())
            with Image.open(rec["image"]) as im, Image.open(src) as orig:
                assert im.size == (orig.height, orig.width)  # turned 90 degrees
                assert im.getexif().get(0x0112, 1) == 1
                assert rec["image_wh"] == [list(im.size)]
                # orientation 6: the original's top-left corner ends up top-right
                assert im.convert("RGB").getpixel((im.width - 3, 3))[1] > 150
        else:
            with Image.open(src) as orig:
                assert rec["image_wh"] == [list(orig.size)]
    for split in ("train", "val"):
        rep_check = check_llava(out / f"{split}.json", rep.image_root, workers=1)
        assert rep_check.ok and not rep_check.problems, rep_check.format()
    # without baking, records keep the sideways file and the checker warns about it
    raw = convert(root, tmp_path / "raw", bake_exif=False)
    assert raw.exif_baked == 0 and not (tmp_path / "raw" / "upright").exists()
    warned = check_llava(tmp_path / "raw" / "train.json", raw.image_root, workers=1)
    assert warned.ok and "exif_rotated" in warned.counts


def test_skipped_records_are_counted_with_reason(foodie, tmp_path):
    root, records = foodie
    broken = [dict(records[0], answer="7"),
              dict(records[1], food_meta=dict(records[1]["food_meta"], food_file="missing/x.jpeg")),
              {k: v for k, v in records[2].items() if k != "choices"}, "not a record"]
    (root / "images" / "bad.jpeg").write_bytes(b"\xff\xd8\xff")
    broken.append(dict(records[3], food_meta=dict(records[3]["food_meta"], food_file="bad.jpeg")))
    data = records + broken
    (root / "sivqa_tidy.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    rep = convert(root, tmp_path / "out")
    n = len(records)
    assert rep.read == len(data) and rep.skipped == len(broken) and rep.converted == n
    assert rep.read == rep.converted + rep.skipped
    got = {(p.index, p.field, p.kind) for p in rep.problems}
    assert {(n, "answer", "answer_out_of_range"), (n + 1, "food_meta.food_file", "missing_image"),
            (n + 2, "choices", "missing_key"), (n + 3, None, "wrong_type")} <= got
    assert any(p.index == n + 4 and p.field == "food_meta.food_file" for p in rep.problems)
    assert f"skipped {len(broken)}" in str(rep) and "record" in str(rep)
    written = load_llava(tmp_path / "out" / "train.json") + load_llava(tmp_path / "out" / "val.json")
    assert len(written) == n
    with pytest.raises(ValueError, match=rf"record {n}, field answer"):
        convert(root, tmp_path / "strict", strict=True)


def test_unreadable_input_raises_naming_the_file(tmp_path):
    bad = tmp_path / "sivqa_tidy.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="sivqa_tidy.json.*list"):
        foodieqa_to_llava(bad, tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="val_fraction"):
        split_images({"a": "x"}, 1.0, 0)


def test_food_file_relative_to_data_root(tmp_path):
    root = tmp_path / "flat"
    make_foodieqa(root, sub="")
    assert find_image_root(root, ["烤羊肉串_0/0_IMG.jpeg"]) == root
    rep = convert(root, tmp_path / "out")
    assert rep.skipped == 0 and rep.image_root == str(root)


class CharTokenizer:
    """One token per character; <|...|> and <img>/</img> count as one (like special tokens)."""

    def encode(self, text, add_special_tokens=True):
        import re
        return [0] * (len(re.findall(r"<\|[^|]+\|>|</?img>|.", text, flags=re.S)) + int(add_special_tokens))


def test_dataset_stats(foodie, tmp_path):
    root, records = foodie
    rep = convert(root, tmp_path / "out", val_fraction=0.0)
    train = load_llava(tmp_path / "out" / "train.json")
    assert len(train) == len(records)
    S = get_settings("tiny", max_length=300)
    stats = dataset_stats(train, rep.image_root, tokenizer=CharTokenizer(), settings=S)
    assert stats["n_samples"] == len(records) and stats["n_images"] == len(records) // 2
    dishes = {r["dish"]: r for r in stats["per_dish"]}
    assert dishes["麻婆豆腐"] == {"dish": "麻婆豆腐", "cuisine": "川菜", "samples": 10, "images": 5}
    assert sum(r["samples"] for r in stats["per_cuisine"]) == len(records)
    assert {q["question_type"]: q["samples"] for q in stats["question_types"]} == {
        "cuisine_type": len(records) // 2, "food_name": len(records) // 2}
    tiling = dict(min_num=S.min_dynamic_patch, max_num=S.max_dynamic_patch, image_size=S.image_size,
                  use_thumbnail=S.use_thumbnail)
    for row in stats["images"]:
        assert row["tiles"] == tile_count(row["width"], row["height"], **tiling)
        assert row["image_tokens"] == image_tokens(row["width"], row["height"], **tiling)
    rotated = next(r for r in stats["images"] if r["image"].endswith("0_IMG.jpeg"))
    assert rotated["height"] > rotated["width"]  # EXIF-upright size
    s0 = stats["samples"][0]
    human, gpt = train[0]["conversations"]
    assert s0["answer_chars"] == len(gpt["value"])
    system = "<|im_start|>system\nYou are an AI assistant whose name is InternLM (书生·浦语).<|im_end|>"
    prompt = "<|im_start|>user\n" + human["value"].replace("<image>", "").strip() + "<|im_end|><|im_start|>assistant\n"
    expect_text = CharTokenizer().encode(system + prompt) .__len__() + len(CharTokenizer().encode(
        gpt["value"] + "<|im_end|>", False))
    assert s0["text_tokens"] == expect_text
    assert s0["seq_tokens"] == expect_text + 3 + s0["image_tokens"]  # <img>, </img>, "\n"
    assert stats["over_max_length"] == sum(s["seq_tokens"] > 300 for s in stats["samples"]) > 0
    plain = dataset_stats(train, rep.image_root, settings=S)
    assert plain["samples"][0]["seq_tokens"] is None and plain["answer_tokens"] == {"n": 0}


def test_cli_convert_and_check(foodie, tmp_path):
    root, records = foodie
    out = tmp_path / "cli"
    assert main(["convert", "--sivqa", str(root / "sivqa_tidy.json"), "--images", str(root),
                 "--out", str(out), "--val-fraction", "0.25", "--seed", "3"]) == 0
    assert len(load_llava(out / "train.json")) + len(load_llava(out / "val.json")) == len(records)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "helpers.data", "check", str(out / "val.json"), "--images",
                          str(root / "images")], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout + run.stderr
    assert main(["check-foodieqa", str(root / "sivqa_tidy.json"), "--images", str(root)]) == 0
    (root / "sivqa_tidy.json").write_text("[1, 2")
    assert main(["convert", "--sivqa", str(root / "sivqa_tidy.json"), "--images", str(root),
                 "--out", str(out)]) == 2


def test_synthetic_set_integration(tmp_path):
    """Optional: a small set drawn by helpers.data.synth converts, splits and checks cleanly."""
    synth = pytest.importorskip("helpers.data.synth")
    root = synth.make_dataset(tmp_path / "synth", per_dish=3, long_side=320)
    rep = foodieqa_to_llava(root / "sivqa_tidy.json", root, tmp_path / "llava", 0.25, 0, workers=1)
    assert rep.skipped == 0 and rep.converted == rep.read > 0
    assert rep.dishes_in_val == rep.dishes == 16
    assert check_foodieqa(root / "sivqa_tidy.json", root, workers=1).ok
    for split in ("train", "val"):
        rep_check = check_llava(tmp_path / "llava" / f"{split}.json", rep.image_root, workers=1)
        assert rep_check.ok and "exif_rotated" not in rep_check.counts, rep_check.format()


@pytest.mark.slow  # importing xtuner + torch and building the dataset: ~20 s CPU
def test_stats_match_xtuner_dataset(foodie, tmp_path):
    """Optional: XTuner's own InternVL dataset reads the converted file (upright absolute paths
    included) and its token counts equal :func:`dataset_stats`'s, sample by sample."""
    pytest.importorskip("xtuner")
    S = get_settings("tiny")
    if not (S.tiny_model_path / "config.json").exists():
        pytest.skip("tiny model not built yet (make tiny)")
    from transformers import AutoTokenizer
    from xtuner.dataset.internvl_dataset import InternVL_V1_5_Dataset
    from xtuner.utils import PROMPT_TEMPLATE

    root, _ = foodie
    rep = convert(root, tmp_path / "out", val_fraction=0.0)
    train = load_llava(tmp_path / "out" / "train.json")
    # The checkpoint the settings read their tile limit from (the notebook-02 base once it exists).
    ds = InternVL_V1_5_Dataset(str(S.base_model_path), copy.deepcopy(PROMPT_TEMPLATE.internlm2_chat),
                               [str(tmp_path / "out" / "train.json")], [rep.image_root], max_length=S.max_length)
    tok = AutoTokenizer.from_pretrained(str(S.base_model_path), trust_remote_code=True)
    stats = dataset_stats(train, rep.image_root, tokenizer=tok, settings=S)
    for i, row in enumerate(stats["samples"]):
        item = ds[i]
        assert len(item["input_ids"]) == row["seq_tokens"], (i, row)
        assert item["pixel_values"].shape[0] * 256 == row["image_tokens"]


def test_load_llava_names_a_blank_jsonl_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "a"}\n\n{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="record 1: line 2 is blank"):
        load_llava(path)


def test_cli_check_all_and_length_check_notes(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rec = {"image": "gone.jpg", "conversations": [{"from": "human", "value": "q\n<image>"},
                                                  {"from": "gpt", "value": "a"}]}
    data = tmp_path / "train.json"
    data.write_text(json.dumps([dict(rec, id=i) for i in range(5)]))
    args = ["check", str(data), "--images", str(images), "--workers", "1", "--tokenizer", str(tmp_path / "none")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert out.count("[missing_image]") == 3 and "... 2 more" in out
    assert "length check: not run: no tokenizer in" in out
    assert main(args + ["--all"]) == 1
    assert capsys.readouterr().out.count("[missing_image]") == 5
    assert main(args + ["--no-length"]) == 1
    assert "length check: not run (--no-length)" in capsys.readouterr().out
