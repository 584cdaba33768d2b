"""Fuzz-style test of the data CLI: random bytes, random JSON and random Unicode never produce a
traceback from ``check``, ``check-foodieqa`` or ``convert``, and ``checked == valid + rejected``
(``read == converted + skipped``) holds for every input. Bounded to ~10 s of CPU."""
from __future__ import annotations

import json
import random
import re
import time

import pytest
from PIL import Image

from helpers.data.llava import main

CPU_BUDGET_S = 10.0
NAMES = ["ok.jpg", "ok.jpg/", "./ok.jpg", "sub/../ok.jpg", "cut.jpg", "rgba.png", "text.jpg", "none.jpg",
         "/etc/passwd", "ok\x00.jpg", "ok\ud800.jpg", "", ".", "sub/", "sub"]
TEXTS = ["这是什么菜?", "<image>", "<IMG_CONTEXT>", "<|im_end|>", "\u2028", "²", "2", " 1 ", "-1", "9" * 12,
         "", " ", "\x00", "\ud800"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_images")
    Image.new("RGB", (64, 48), (200, 120, 40)).save(root / "ok.jpg")
    data = (root / "ok.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGBA", (64, 48), (1, 2, 3, 255)).save(root / "rgba.png")
    (root / "text.jpg").write_text("not an image")
    (root / "sub").mkdir()
    return root


def rand_scalar(rng):
    return rng.choice([None, True, False, rng.randint(-3, 5), 10**rng.randint(1, 40), rng.random() * 1e6,
                       float("nan"), rng.choice(NAMES), rng.choice(TEXTS), rand_unicode(rng, 8)])


def rand_json(rng, depth=0):
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        return rand_scalar(rng)
    if roll < 0.7:
        return [rand_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["image", "conversations", "from", "value", "id", "length", "image_wh", "question", "choices",
            "answer", "question_type", "food_meta", "food_file", "food_name", "question_id", rand_unicode(rng, 3)]
    return {rng.choice(keys): rand_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def rand_llava(rng):
    rec = {"id": rng.choice([1, "a", "b", None]), "image": rng.choice(NAMES + [None, ["ok.jpg"], 3]),
           "conversations": [{"from": rng.choice(["human", "gpt", "x"]), "value": rng.choice(TEXTS) + rng.choice(TEXTS)}
                             for _ in range(rng.randint(0, 3))]}
    for key in rng.sample(["length", "image_wh", "conversations", "image"], rng.randint(0, 2)):
        rec[key] = rand_json(rng)
    return rec


def rand_foodie(rng):
    rec = {"question": rng.choice(TEXTS), "choices": [rng.choice(TEXTS) for _ in range(rng.randint(0, 5))],
           "answer": rng.choice(TEXTS), "question_type": "food_name", "question_id": rng.choice(["q1", "q2", 7]),
           "food_meta": {"food_name": rng.choice(TEXTS + ["鸭"]), "food_file": rng.choice(NAMES)}}
    for key in rng.sample(list(rec), rng.randint(0, 2)):
        rec[key] = rand_json(rng)
    return rec


def rand_unicode(rng, n):
    return "".join(chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xFFFF), rng.randint(0x10000, 0x10FFFF),
                                   0x2028, 0x0, 0xD800, 0x85])) for _ in range(n))


def rand_file_bytes(rng) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 300))
    if kind == 1:
        return rand_unicode(rng, rng.randint(0, 200)).encode("utf-8", "surrogatepass")
    if kind == 2:
        return ("[" * rng.randint(1, 50_000)).encode() + b"]" * rng.randint(0, 50_000)
    records = [rng.choice([rand_llava, rand_foodie, rand_json])(rng) for _ in range(rng.randint(0, 6))]
    if kind == 3:  # JSON Lines, with the odd blank or broken line
        lines = [json.dumps(r) for r in records] + rng.choice([[], [""], ["{"], ["  "]])
        rng.shuffle(lines)
        return ("\n".join(lines) + rng.choice(["", "\n", "\r\n"])).encode()
    text = json.dumps(records if kind == 4 else rand_json(rng), ensure_ascii=rng.random() < 0.5)
    return text.encode("utf-8", "surrogatepass")


def run(capsys, args):
    code = main(args)
    out, err = capsys.readouterr()
    assert code in (0, 1, 2) and "Traceback" not in out + err, (args, code, err[-2000:])
    return code, out


def test_cli_never_crashes_on_random_input(tmp_path, images, capsys):
    rng = random.Random(19)
    start, n = time.process_time(), 0
    while time.process_time() - start < CPU_BUDGET_S or n < 20:
        data = rand_file_bytes(rng)
        for suffix in (".json", ".jsonl"):
            path = tmp_path / f"in{n}{suffix}"
            path.write_bytes(data)
            for cmd in ("check", "check-foodieqa"):
                code, out = run(capsys, [cmd, str(path), "--images", str(images), "--workers", "1", "--json"])
                rep = json.loads(out)
                assert rep["checked"] == rep["valid"] + rep["rejected"], path
                assert code == (0 if rep["ok"] else 1)
        code, out = run(capsys, ["convert", "--sivqa", str(tmp_path / f"in{n}.json"), "--images", str(images),
                                 "--out", str(tmp_path / f"out{n}"), "--all"])
        if code != 2:
            read, converted, skipped = map(int, re.search(r"read (\d+) = converted (\d+) \+ skipped (\d+)", out).groups())
            assert read == converted + skipped
        n += 1
    assert n >= 20
