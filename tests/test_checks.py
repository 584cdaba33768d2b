"""Tests for helpers.data.checks: each kind of broken input is reported with its record and reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers.data.checks import (ImageLimits, check_foodieqa, check_foodieqa_record, check_llava,
                                 check_llava_record, inspect_image, inspect_images, safe_image_path)

REPO = Path(__file__).resolve().parent.parent


def jpeg(path: Path, size=(64, 48), color=(200, 120, 40), orientation=None, mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new(mode, size, color if mode == "RGB" else 0)
    kwargs = {}
    if orientation:
        exif = im.getexif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, "JPEG", **kwargs)
    return path


def sample(image="ok.jpg", question="这是什么菜?", answer="烤羊肉串", **extra) -> dict:
    rec = {"id": extra.pop("id", "s"), "image": image, "conversations": [
        {"from": "human", "value": question + "\n<image>"}, {"from": "gpt", "value": answer}]}
    rec.update(extra)
    return rec


@pytest.fixture()
def root(tmp_path):
    images = tmp_path / "images"
    jpeg(images / "ok.jpg")
    jpeg(images / "sub" / "ok2.jpg", size=(80, 60))
    big = jpeg(images / "full.jpg", size=(640, 480))
    (images / "truncated.jpg").write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    (images / "zero.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("this is not a picture")
    Image.new("CMYK", (64, 48)).save(images / "cmyk.jpg")
    Image.new("I;16", (64, 48)).save(images / "i16.png")
    pal = Image.new("P", (64, 48))
    pal.info["transparency"] = 0
    pal.save(images / "ptrans.png")
    Image.new("LA", (64, 48)).save(images / "la.png")
    jpeg(images / "tiny.jpg", size=(8, 8))
    jpeg(images / "wide.jpg", size=(1200, 40))
    jpeg(images / "rotated.jpg", size=(64, 48), orientation=6)
    outside = jpeg(tmp_path / "outside" / "secret.jpg")
    os.symlink(outside, images / "link.jpg")
    return images


# name -> (record, expected kind, expected field)
BROKEN = {
    "not_an_object": (["a", "list"], "wrong_type", None),
    "missing_conversations": ({"id": "x", "image": "ok.jpg"}, "missing_key", "conversations"),
    "conversations_not_list": ({"image": "ok.jpg", "conversations": "hi"}, "wrong_type", "conversations"),
    "empty_conversations": ({"image": "ok.jpg", "conversations": []}, "empty_conversation", "conversations"),
    "gpt_first": ({"image": "ok.jpg", "conversations": [{"from": "gpt", "value": "a"},
                                                         {"from": "human", "value": "<image>q"}]},
                  "role_order", "conversations[0].from"),
    "unknown_role": ({"image": "ok.jpg", "conversations": [{"from": "human", "value": "<image>q"},
                                                            {"from": "assistant", "value": "a"}]},
                     "bad_role", "conversations[1].from"),
    "turn_without_value": ({"image": "ok.jpg", "conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]},
                           "missing_key", "conversations[0].value"),
    "value_not_string": ({"image": "ok.jpg", "conversations": [{"from": "human", "value": "<image>q"},
                                                                {"from": "gpt", "value": 3}]},
                         "wrong_type", "conversations[1].value"),
    "ends_with_human": ({"image": "ok.jpg", "conversations": [{"from": "human", "value": "<image>q"},
                                                               {"from": "gpt", "value": "a"},
                                                               {"from": "human", "value": "more?"}]},
                        "role_order", "conversations[2].from"),
    "no_image_token": (dict(sample(), conversations=[{"from": "human", "value": "what dish?"},
                                                     {"from": "gpt", "value": "a"}]),
                       "no_image_token", "conversations[0].value"),
    "two_image_tokens": (sample(question="<image>q"), "extra_image_token", "conversations[0].value"),
    "image_token_in_answer": (sample(answer="see <image>"), "image_token_in_answer", "conversations[1].value"),
    "empty_answer": (sample(answer="  "), "empty_answer", "conversations[1].value"),
    "empty_question": (sample(question=""), "empty_question", "conversations[0].value"),
    "missing_image_key": ({"conversations": [{"from": "human", "value": "<image>q"},
                                             {"from": "gpt", "value": "a"}]}, "missing_key", "image"),
    "two_images": (sample(image=["ok.jpg", "ok.jpg"]), "wrong_type", "image"),
    "image_not_string": (sample(image=5), "wrong_type", "image"),
    "bad_id": (sample(id=["x"]), "wrong_type", "id"),
    "bad_image_wh": (sample(image_wh=[[64, -1]]), "wrong_type", "image_wh"),
    "image_wh_mismatch": (sample(image_wh=[[48, 64]]), "image_wh_mismatch", "image_wh"),
    "missing_image": (sample(image="nope.jpg"), "missing_image", "image"),
    "dotdot": (sample(image="../outside/secret.jpg"), "path_escape", "image"),
    "absolute": (sample(image="/etc/hostname"), "absolute_path", "image"),
    "symlink_out": (sample(image="link.jpg"), "symlink_escape", "image"),
    "empty_path": (sample(image=""), "empty_path", "image"),
    "truncated": (sample(image="truncated.jpg"), "truncated", "image"),
    "zero_bytes": (sample(image="zero.jpg"), "empty_file", "image"),
    "not_image": (sample(image="text.jpg"), "not_an_image", "image"),
    "cmyk": (sample(image="cmyk.jpg"), "unsupported_mode", "image"),
    "i16": (sample(image="i16.png"), "unsupported_mode", "image"),
    "palette_alpha": (sample(image="ptrans.png"), "unsupported_mode", "image"),
    "la": (sample(image="la.png"), "unsupported_mode", "image"),
    "too_small": (sample(image="tiny.jpg"), "too_small", "image"),
    "extreme_aspect": (sample(image="wide.jpg"), "extreme_aspect", "image"),
}


@pytest.fixture()
def broken_file(tmp_path, root):
    good = [sample(id="g0"), sample(id="g1", image="sub/ok2.jpg", image_wh=[[80, 60]])]
    records = good + [rec for rec, _, _ in BROKEN.values()]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def test_every_broken_kind_reported_with_index_and_field(broken_file, root):
    rep = check_llava(broken_file, root, workers=1)
    assert len(BROKEN) >= 30
    for offset, (name, (_, kind, fld)) in enumerate(BROKEN.items()):
        index = 2 + offset
        found = [(p.kind, p.field) for p in rep.problems if p.index == index]
        assert (kind, fld) in found, f"{name}: expected {(kind, fld)} at record {index}, got {found}"
    assert not any(p.index in (0, 1) for p in rep.problems), "good records must not be flagged"
    assert rep.checked == len(BROKEN) + 2 == rep.valid + rep.rejected
    assert rep.valid == 2 and rep.rejected == len(BROKEN)
    assert rep.exit_code == 1 and not rep.ok
    assert rep.counts["unsupported_mode"] == 4
    assert rep.images_bad >= 10  # each bad file counted once per path
    text = rep.format(per_kind=1)
    assert f"rejected {len(BROKEN)}" in text and "unsupported_mode (error): 4" in text
    assert text.count("more") >= 1 and text.endswith("REJECTED: fix the problems above")


def test_messages_name_file_record_and_field(broken_file, root):
    rep = check_llava(broken_file, root, workers=1)
    p = next(p for p in rep.problems if p.kind == "truncated")
    assert str(broken_file) in str(p) and f"record {p.index}" in str(p) and "field image" in str(p)


def test_file_level_problems(tmp_path):
    missing = check_llava(tmp_path / "none.json", tmp_path)
    assert [(p.kind, p.index) for p in missing.problems] == [("unreadable_file", None)]
    assert missing.exit_code == 1 and missing.checked == 0
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image": "a.jpg",}]')
    rep = check_llava(bad, tmp_path)
    assert rep.problems[0].kind == "invalid_json" and "line 1" in rep.problems[0].message
    obj = tmp_path / "obj.json"
    obj.write_text('{"image": "a.jpg"}')
    assert check_llava(obj, tmp_path).problems[0].kind == "wrong_top_level_type"
    latin = tmp_path / "latin.json"
    latin.write_bytes('[{"a": "é"}]'.encode("latin-1"))
    assert check_llava(latin, tmp_path).problems[0].kind == "invalid_json"


def test_jsonl_bad_line_is_a_rejected_record(tmp_path, root):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(sample()) + "\n{broken\n" + json.dumps(sample(id="b")) + "\n")
    rep = check_llava(path, root, workers=1)
    assert rep.checked == 3 and rep.rejected == 1
    assert [(p.index, p.kind) for p in rep.errors] == [(1, "invalid_json")]


def test_shared_images_checked_once_and_warnings_do_not_reject(tmp_path, root):
    recs = [sample(id=str(i)) for i in range(5)] + [sample(id="r", image="rotated.jpg"), sample(id="0")]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(recs))
    rep = check_llava(path, root, workers=1)
    assert rep.images_checked == 2
    assert rep.ok and rep.valid == 7 and rep.rejected == 0
    assert {p.kind for p in rep.problems} == {"exif_rotated", "duplicate_id"}
    assert all(p.severity == "warning" for p in rep.problems)


def test_absolute_path_allowed_only_inside_extra_root(tmp_path, root):
    upright = tmp_path / "upright"
    inside = jpeg(upright / "a.jpg")
    path = tmp_path / "t.json"
    path.write_text(json.dumps([sample(image=str(inside)), sample(id="x", image=str(root / "ok.jpg"))]))
    rep = check_llava(path, root, workers=1)  # default extra root: upright/ next to the file
    assert [(p.index, p.kind) for p in rep.errors] == [(1, "absolute_path")]
    assert check_llava(path, root, workers=1, extra_roots=()).rejected == 2


def test_limits_are_keyword_arguments(tmp_path, root):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([sample(image="full.jpg")]))
    assert check_llava(path, root, workers=1).ok
    rep = check_llava(path, root, workers=1, max_pixels=100_000)
    assert [p.kind for p in rep.errors] == ["too_large"]
    assert check_llava(path, root, workers=1, max_aspect=1.2).errors[0].kind == "extreme_aspect"
    assert check_llava(path, root, workers=1, min_side=500).errors[0].kind == "too_small"


def test_jpeg_end_marker_and_trailers(tmp_path):
    full = jpeg(tmp_path / "full.jpg", size=(320, 240))
    data = full.read_bytes()
    (tmp_path / "trailer.jpg").write_bytes(data + b"ftypmp42" + bytes(300))  # motion-photo style
    (tmp_path / "cut.jpg").write_bytes(data[:-2])  # only the end marker missing
    (tmp_path / "cut_mid.jpg").write_bytes(data[: len(data) * 2 // 3])
    assert inspect_image(str(tmp_path / "trailer.jpg"))["problems"] == []
    assert inspect_image(str(tmp_path / "cut_mid.jpg"))["problems"][0][0] == "truncated"
    for always in (False, True):
        assert inspect_image(str(full), ImageLimits(always_decode=always))["problems"] == []
    assert [k for k, *_ in inspect_image(str(tmp_path / "cut.jpg"))["problems"]] == ["truncated"]


def test_truncation_found_even_when_pil_is_told_to_tolerate_it(root):
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert inspect_image(str(root / "truncated.jpg"))["problems"][0][0] == "truncated"
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_inspect_image_reports_upright_size(root):
    info = inspect_image(str(root / "rotated.jpg"))
    assert info["size"] == (64, 48) and info["upright"] == (48, 64) and info["orientation"] == 6
    assert info["problems"] == []


def test_process_pool_gives_same_results(tmp_path):
    paths = [jpeg(tmp_path / f"{i}.jpg", size=(40 + i, 40)) for i in range(20)]
    cut = tmp_path / "cut.jpg"
    whole = jpeg(tmp_path / "big.jpg", size=(400, 300)).read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    paths += [cut, tmp_path / "bad.jpg", paths[0]]
    limits = ImageLimits(always_decode=True)  # every JPEG goes through the pool
    pooled = inspect_images(paths, limits, workers=2)
    serial = inspect_images(paths, limits, workers=1)
    assert pooled == serial and len(pooled) == 22
    assert pooled[str(tmp_path / "7.jpg")]["size"] == (47, 40) and pooled[str(tmp_path / "7.jpg")]["decoded"]
    assert pooled[str(cut)]["problems"][0][0] == "truncated"
    assert pooled[str(tmp_path / "bad.jpg")]["problems"][0][0] == "not_an_image"
    fast = inspect_images(paths, ImageLimits(), workers=2)  # complete JPEGs are not decoded
    assert not fast[str(tmp_path / "7.jpg")]["decoded"] and fast[str(cut)]["decoded"]
    assert {p: r["problems"] for p, r in fast.items()} == {p: r["problems"] for p, r in serial.items()}


def test_safe_image_path():
    assert safe_image_path(Path("/data"), "a/../../x")[1][0] == "path_escape"
    assert safe_image_path(Path("/data"), "a\\..\\x")[1][0] == "path_escape"
    assert safe_image_path(Path("/data"), None)[1][0] == "empty_path"
    assert safe_image_path(Path("/data"), "a/b.jpg") == (Path("/data/a/b.jpg"), None)


def test_record_checks_without_files():
    assert check_llava_record(sample()) == []
    kinds = [k for _, k, _, _ in check_llava_record({"conversations": [{"from": "human", "value": "<image>"}]})]
    assert "missing_key" in kinds and "empty_question" in kinds and "role_order" in kinds


def foodie(i=0, **over):
    rec = {"question": "图片中的食物通常属于哪个菜系?", "choices": ["京菜", "徽菜", "新疆菜", "桂菜"],
           "answer": "2", "question_type": "cuisine_type", "food_name": "烤羊肉串", "question_id": f"vqa-{i}",
           "food_meta": {"food_name": "烤羊肉串", "food_type": "新疆菜", "food_file": "ok.jpg"}}
    rec.update(over)
    return rec


FOODIE_BROKEN = {
    "answer_out_of_range": (foodie(answer="4"), "answer_out_of_range", "answer"),
    "answer_not_index": (foodie(answer="C"), "bad_answer", "answer"),
    "answer_int": (foodie(answer=2), "wrong_type", "answer"),
    "three_choices": (foodie(choices=["a", "b", "c"]), "wrong_choice_count", "choices"),
    "no_choices": (foodie(choices=[]), "empty_choices", "choices"),
    "empty_choice": (foodie(choices=["a", "", "c", "d"]), "empty_choice", "choices[1]"),
    "no_question": ({k: v for k, v in foodie().items() if k != "question"}, "missing_key", "question"),
    "no_food_meta": ({k: v for k, v in foodie().items() if k != "food_meta"}, "missing_key", "food_meta"),
    "no_food_file": (foodie(food_meta={"food_name": "x"}), "missing_key", "food_meta.food_file"),
    "food_file_missing": (foodie(food_meta={"food_name": "x", "food_file": "gone.jpg"}), "missing_image",
                          "food_meta.food_file"),
    "food_file_truncated": (foodie(food_meta={"food_name": "x", "food_file": "truncated.jpg"}), "truncated",
                            "food_meta.food_file"),
    "food_file_escape": (foodie(food_meta={"food_name": "x", "food_file": "../x.jpg"}), "path_escape",
                         "food_meta.food_file"),
    "not_object": ("vqa", "wrong_type", None),
}


def test_foodieqa_checker(tmp_path, root):
    records = [foodie()] + [r for r, _, _ in FOODIE_BROKEN.values()] + [foodie(question_type="mystery")]
    for i, rec in enumerate(records):  # distinct ids: a repeated question_id is a finding of its own
        if isinstance(rec, dict):
            rec["question_id"] = f"vqa-{i}"
    path = tmp_path / "sivqa_tidy.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    rep = check_foodieqa(path, root, workers=1)
    for offset, (name, (_, kind, fld)) in enumerate(FOODIE_BROKEN.items()):
        found = [(p.kind, p.field) for p in rep.problems if p.index == 1 + offset]
        assert (kind, fld) in found, f"{name}: got {found}"
    last = len(records) - 1
    assert [(p.kind, p.severity) for p in rep.problems if p.index == last] == [("unknown_question_type", "warning")]
    assert rep.checked == rep.valid + rep.rejected == len(records)
    assert rep.rejected == len(FOODIE_BROKEN) and rep.valid == 2
    strict = check_foodieqa(path, root, workers=1, question_types=["cuisine_type"])
    assert strict.rejected == len(FOODIE_BROKEN) + 1
    top = tmp_path / "top.json"
    top.write_text("{}")
    assert check_foodieqa(top, root).problems[0].kind == "wrong_top_level_type"
    assert check_foodieqa_record(foodie()) == []


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "helpers.data", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def test_cli_check_exit_codes(tmp_path, root, broken_file):
    bad = run_cli("check", broken_file, "--images", root, "--workers", "1")
    assert bad.returncode == 1, bad.stderr
    assert f"rejected {len(BROKEN)}" in bad.stdout and "truncated" in bad.stdout
    good = tmp_path / "good.json"
    good.write_text(json.dumps([sample()]))
    ok = run_cli("check", good, "--images", root, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] and data["checked"] == data["valid"] == 1
    missing = run_cli("check-foodieqa", tmp_path / "none.json", "--images", root)
    assert missing.returncode == 1 and "unreadable_file" in missing.stdout


def test_a_repository_file_is_shown_relative_to_the_repository():
    from helpers.data.check_report import CheckReport, Problem
    from helpers.settings import REPO_ROOT

    file = str(REPO_ROOT / "artifacts" / "data" / "llava-synth" / "train.json")
    rep = CheckReport(file=file, image_root=str(REPO_ROOT / "artifacts"), checked=1, valid=0, rejected=1)
    rep.problems.append(Problem(file, 0, "image", "missing_image", "no such file"))
    text = rep.format()
    assert text.startswith("artifacts/data/llava-synth/train.json: checked 1") and str(REPO_ROOT) not in text
    assert str(rep.problems[0]).startswith("artifacts/data/llava-synth/train.json: record 0")


def test_problem_lines_show_image_paths_relative_to_the_repository(tmp_path, root, monkeypatch):
    # as if the data lived inside the repository: every path a learner reads is relative to it
    monkeypatch.setattr("helpers.settings.REPO_ROOT", tmp_path)
    path = tmp_path / "train.json"
    path.write_text(json.dumps([sample(image="nope.jpg"), sample(image="ok.jpg", image_wh=[[1, 2]])]), encoding="utf-8")
    rep = check_llava(path, root, workers=1)
    text = rep.format(5)
    assert "train.json: record 0, field image: [missing_image] images/nope.jpg: image file does not exist" in text
    assert "but images/ok.jpg decodes as" in text
    assert str(tmp_path) not in text
    assert str(root / "nope.jpg") in next(p.message for p in rep.problems if p.kind == "missing_image")  # data keeps it
