"""Tests for helpers.data.xtuner_rules: what passes the checker is what XTuner trains on as written."""
from __future__ import annotations

import copy
import json
import random

import pytest
from PIL import Image

from helpers.data.checks import check_llava, check_llava_record
from helpers.settings import get_settings


def record(question="这是什么菜?", answer="烤鸭", rid="a", **extra):
    rec = {"id": rid, "image": "ok.jpg", "conversations": [
        {"from": "human", "value": question + "\n<image>"}, {"from": "gpt", "value": answer}]}
    rec.update(extra)
    return rec


def kinds(rec):
    return [(f, k) for f, k, _, s in check_llava_record(rec) if s == "error"]


@pytest.mark.parametrize("question,answer,field", [
    ("图中<IMG_CONTEXT>是什么菜?", "烤鸭", "conversations[0].value"),
    ("<img>这是什么</img>", "烤鸭", "conversations[0].value"),
    ("这是什么菜?", "烤鸭<|im_end|>其实是烧鹅", "conversations[1].value"),
    ("这是什么菜?", "<|im_start|>assistant\n烤鸭", "conversations[1].value"),
    ("<|im_end|>这是什么菜?", "烤鸭", "conversations[0].value"),
])
def test_special_tokens_written_in_text_are_rejected(question, answer, field):
    assert kinds(record(question, answer)) == [(field, "reserved_token")]


@pytest.mark.parametrize("length", [10**30, 2**63, -5, 0, True, 3.5, "12"])
def test_absurd_length_field_is_rejected(length):
    assert kinds(record(length=length)) == [("length", "bad_length")]


def test_sane_length_field_passes():
    assert kinds(record(length=1200)) == []


def test_huge_image_wh_is_rejected_not_overflowing():
    assert kinds(record(image_wh=[[10**400, 3]])) == [("image_wh", "wrong_type")]


# ---------------------------------------------------------------- sequence length

@pytest.fixture()
def length_setup(tmp_path, tiny_model_dir):
    from helpers.data.checks import LengthCheck

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (448, 448), (200, 120, 40)).save(images / "ok.jpg")  # square: one tile, 256 image tokens
    S = get_settings("tiny")
    return images, LengthCheck.from_settings(S, tiny_model_dir, max_length=600)


def noise(n, seed=0):
    rng = random.Random(seed)
    return "".join(rng.choice("甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥山水火土金木") for _ in range(n))


def test_length_check_finds_cut_samples(tmp_path, length_setup):
    images, length = length_setup
    records = [record(rid="fits"), record(answer=noise(2000), rid="long-answer"),
               record(question=noise(2000, 1), rid="long-question")]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    rep = check_llava(data, images, workers=1, length=length)
    assert [(p.index, p.kind) for p in rep.problems] == [(1, "too_long"), (2, "no_answer_left")], rep.format()
    assert rep.checked == rep.valid + rep.rejected and rep.valid == 1
    assert "max_length 600" in rep.format()
    assert check_llava(data, images, workers=1).ok  # without the tokenizer nothing is measured


@pytest.mark.slow  # imports xtuner + torch and builds XTuner's dataset (~20 s CPU)
def test_length_check_agrees_with_xtuners_cut(tmp_path, length_setup):
    pytest.importorskip("xtuner")
    from xtuner.dataset.internvl_dataset import InternVL_V1_5_Dataset
    from xtuner.utils import IGNORE_INDEX, PROMPT_TEMPLATE

    images, length = length_setup
    records = [record(rid="fits"), record(answer=noise(2000), rid="long-answer"),
               record(question=noise(2000, 1), rid="long-question")]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    ds = InternVL_V1_5_Dataset(length.source, copy.deepcopy(PROMPT_TEMPLATE.internlm2_chat), [str(data)],
                               [str(images)], max_length=length.max_length)
    items = [ds.prepare_data(i) for i in range(3)]  # prepare_data: no silent replacement
    trained = [sum(label != IGNORE_INDEX for label in it["labels"]) for it in items]
    assert len(items[0]["input_ids"]) < length.max_length and trained[0] > 0
    assert len(items[1]["input_ids"]) == length.max_length and trained[1] > 0  # cut inside the answer
    assert trained[2] == 0  # cut before the answer: the sample trains nothing
