"""Tests for helpers.data.convert: hostile FoodieQA entries are skipped with a reason, never abort the
conversion, and what is written passes the course's checker without leaking photos into val."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from helpers.data.checks import check_llava
from helpers.data.llava import foodieqa_to_llava, load_llava, main

DISHES = ["烤羊肉串", "白切鸡", "锅包肉"]


def entry(rel, dish, qid, question="图中是什么菜?", answer="0"):
    return {"question": question, "choices": [dish, "甲", "乙", "丙"], "answer": answer,
            "question_type": "food_name", "food_name": dish, "question_id": qid,
            "food_meta": {"food_name": dish, "food_type": "某菜", "food_file": rel}}


@pytest.fixture()
def root(tmp_path):
    root = tmp_path / "foodie"
    for d, dish in enumerate(DISHES):
        for k in range(4):
            path = root / "images" / f"d{d}" / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (96 + 8 * k, 64), (40 * d, 90, 30 * k)).save(path, "JPEG")
    return root


def write(root, records):
    (root / "sivqa_tidy.json").write_text(json.dumps(records), encoding="utf-8")  # escapes lone surrogates
    return root / "sivqa_tidy.json"


def clean(root):
    return [entry(f"d{d}/{k}.jpg", dish, f"vqa-{d}-{k}") for d, dish in enumerate(DISHES) for k in range(4)]


def test_superscript_answer_is_skipped_not_fatal(tmp_path, root):
    records = clean(root) + [entry("d0/0.jpg", "烤羊肉串", "bad", answer="²")]
    rep = foodieqa_to_llava(write(root, records), root, tmp_path / "out", workers=1)
    assert rep.read == rep.converted + rep.skipped and rep.skipped == 1
    assert [(p.index, p.kind) for p in rep.problems if p.severity == "error"] == [(len(records) - 1, "bad_answer")]


def test_one_photo_two_spellings_lands_in_one_split(tmp_path, root):
    records = clean(root)
    for rec in list(records):  # every photo asked about again under another spelling of its path
        twin = json.loads(json.dumps(rec))
        twin["food_meta"]["food_file"] = "./" + rec["food_meta"]["food_file"].replace("/", "//")
        twin["question_id"] += "-twin"
        records.append(twin)
    out = tmp_path / "out"
    rep = foodieqa_to_llava(write(root, records), root, out, val_fraction=0.5, workers=1)
    train = {r["image"] for r in load_llava(out / "train.json")}
    val = {r["image"] for r in load_llava(out / "val.json")}
    assert train and val and not train & val
    assert rep.train_images + rep.val_images == len(train | val) == 12
    assert all(not p.startswith("./") and "//" not in p for p in train | val)


def test_duplicate_question_ids_are_reported_and_made_unique(tmp_path, root):
    records = clean(root)
    records[5]["question_id"] = records[2]["question_id"]
    out = tmp_path / "out"
    rep = foodieqa_to_llava(write(root, records), root, out, val_fraction=0.0, workers=1)
    assert [(p.index, p.kind, p.severity) for p in rep.problems] == [(5, "duplicate_id", "warning")]
    ids = [r["id"] for r in load_llava(out / "train.json")]
    assert len(ids) == len(set(ids)) == len(records)


def test_question_with_image_marker_converts_to_a_valid_record(tmp_path, root):
    records = clean(root)
    records[0]["question"] = "<image>\n图中是什么菜?"
    records[1]["question"] = "<image>"  # nothing left once the marker goes: skipped
    out = tmp_path / "out"
    rep = foodieqa_to_llava(write(root, records), root, out, val_fraction=0.0, workers=1)
    assert rep.skipped == 1
    check = check_llava(out / "train.json", rep.image_root, workers=1)
    assert check.ok and check.checked == len(records) - 1, check.format()


def test_paths_xtuner_cannot_open_are_never_written(tmp_path, root):
    records = clean(root) + [entry("d0/0.jpg/", "烤羊肉串", "slash"), entry("d0/0.jpg/.", "烤羊肉串", "dot"),
                             entry("d0/\x00.jpg", "烤羊肉串", "nul"), entry("d0/\ud800.jpg", "烤羊肉串", "sur")]
    out = tmp_path / "out"
    rep = foodieqa_to_llava(write(root, records), root, out, val_fraction=0.0, workers=1)
    assert rep.skipped == 4 and rep.converted == 12
    assert check_llava(out / "train.json", rep.image_root, workers=1).ok


def test_cli_out_is_an_existing_file(tmp_path, root, capsys):
    write(root, clean(root))
    target = tmp_path / "not_a_folder"
    target.write_text("x")
    code = main(["convert", "--sivqa", str(root / "sivqa_tidy.json"), "--images", str(root), "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "not_a_folder" in err and "Traceback" not in err


def test_cli_all_prints_every_problem(tmp_path, root, capsys):
    records = clean(root) + [entry("missing.jpg", "烤羊肉串", f"m{i}") for i in range(30)]
    args = ["convert", "--sivqa", str(write(root, records)), "--images", str(root), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    assert capsys.readouterr().out.count("missing_image") == 20
    assert main(args + ["--all"]) == 1
    assert capsys.readouterr().out.count("missing_image") == 30
