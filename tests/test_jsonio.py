"""Tests for helpers.data.jsonio: files XTuner would choke on are reported per line, never crash the checker."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from helpers.data.checks import check_llava


@pytest.fixture()
def root(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(images / "ok.jpg")
    return images


def record(i=0, question="这是什么菜?"):
    return {"id": f"r{i}", "image": "ok.jpg", "conversations": [
        {"from": "human", "value": question + "\n<image>"}, {"from": "gpt", "value": "烤鸭"}]}


def deep(n: int) -> str:
    return "[" * n + "]" * n


def check(tmp_path, root, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    rep = check_llava(path, root, workers=1)
    assert rep.checked == rep.valid + rep.rejected
    return rep


def test_blank_line_is_a_rejected_record_and_line_numbers_stay_right(tmp_path, root):
    lines = [json.dumps(record(0)), "", json.dumps(record(2)), "   ", "{not json"]
    rep = check(tmp_path, root, "train.jsonl", "\n".join(lines) + "\n")
    assert rep.checked == 5 and rep.valid == 2
    kinds = {p.index: p.kind for p in rep.problems}
    assert kinds == {1: "blank_line", 3: "blank_line", 4: "invalid_json"}
    assert "line 5" in next(p.message for p in rep.problems if p.index == 4)


def test_xtuner_fails_on_a_blank_line(tmp_path):
    """The fact behind blank_line: XTuner's loader json.loads every line of the file."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    with open(path) as f, pytest.raises(json.JSONDecodeError):
        [json.loads(line) for line in f]  # xtuner.dataset.internvl_dataset.load_json_or_jsonl


def test_u2028_inside_a_string_does_not_split_the_line(tmp_path, root):
    text = json.dumps(record(0, "第一句\u2028第二句"), ensure_ascii=False) + "\n" + json.dumps(record(1)) + "\n"
    rep = check(tmp_path, root, "train.jsonl", text)
    assert rep.checked == rep.valid == 2, rep.format()


def test_crlf_lines_are_lines(tmp_path, root):
    rep = check(tmp_path, root, "train.jsonl", json.dumps(record(0)) + "\r\n" + json.dumps(record(1)) + "\r\n")
    assert rep.checked == rep.valid == 2


@pytest.mark.parametrize("name,text,checked,kind,index", [
    ("whole.json", '{"a":' * 100_000 + "1" + "}" * 100_000, 0, "too_deep", None),
    ("list.json", deep(100_000), 1, "too_deep", 0),
    ("one.json", "[" + json.dumps(record(0)) + "," + deep(100_000) + "," + json.dumps(record(2)) + "]", 3,
     "too_deep", 1),
    ("line.jsonl", json.dumps(record(0)) + "\n" + deep(100_000) + "\n", 2, "too_deep", 1),
    ("mild.json", "[" + deep(200) + "]", 1, "too_deep", 0),
    ("bigint.json", "[" + "9" * 5000 + "]", 0, "invalid_json", None),
    ("bigint.jsonl", "9" * 5000 + "\n", 1, "invalid_json", 0),
])
def test_deep_nesting_and_huge_numbers_are_reported(tmp_path, root, name, text, checked, kind, index):
    rep = check(tmp_path, root, name, text)
    assert rep.checked == checked and not rep.ok
    assert (index, kind) in [(p.index, p.kind) for p in rep.problems], rep.format()
    if checked:
        assert rep.valid == checked - 1


def test_reader_directly():
    from helpers.data.jsonio import InvalidRecord, jsonl_lines

    assert jsonl_lines("a\rb\r\nc\n\n") == ["a", "b", "c", ""]
    bad = InvalidRecord("x", "blank_line")
    assert isinstance(bad, str) and bad.kind == "blank_line"
