"""Tests for helpers.evaluate.evaluation (scoring, parsing, the split, running with an engine, tables),
helpers.evaluate.plots (figures), helpers.gpu (no-GPU behaviour) and helpers.train.runs (run records)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.evaluate.evaluation import EvalResult, evaluate, trained_system_prompt
from helpers.evaluate.tables import comparison_rows, format_table
from helpers.evaluate.items import load_split
from helpers.evaluate.scoring import choice_prompt, names_in, parse_choice, score_course, split_course_answer

CHOICES = ["京菜", "徽菜", "新疆菜", "桂菜"]
DISHES = ["大盘鸡", "烤羊肉串", "肠粉", "北京烤鸭"]


# --------------------------------------------------------------------------- scoring the course format
@pytest.mark.parametrize("text, choice_ok, dish_ok", [
    ("新疆菜，图中的菜是大盘鸡", True, True),
    ("新疆菜,图中的菜是大盘鸡。", True, True),  # ASCII comma, full stop
    ("新疆菜，图中的菜是烤羊肉串", True, False),  # right cuisine, wrong dish
    ("京菜，图中的菜是大盘鸡", False, True),  # wrong cuisine
    ("新疆菜或京菜，图中的菜是大盘鸡", False, True),  # two cuisines named: not an answer
    ("新疆菜，图中的菜是大盘鸡和肠粉", True, False),  # two dishes named
    ("这道菜属于新疆菜，这道菜是大盘鸡", True, True),  # free wording with a known join
    ("新疆菜", True, False),  # no dish at all
    ("", False, False),
    ("菜是菜是菜是菜是", False, False),  # degenerate repetition
])
def test_score_course(text, choice_ok, dish_ok):
    got = score_course(text, "新疆菜", "大盘鸡", CHOICES, DISHES)
    assert got == dict(choice_ok=choice_ok, dish_ok=dish_ok, correct=choice_ok and dish_ok)


def test_dish_question_without_join_counts_the_dish_for_both_parts():
    got = score_course("大盘鸡", "大盘鸡", "大盘鸡", ["大盘鸡", "肠粉"], DISHES)
    assert got["correct"]


def test_names_in_prefers_the_longer_name():
    assert names_in("北京烤鸭", ["烤鸭", "北京烤鸭"]) == ["北京烤鸭"]
    assert names_in("烤鸭和北京烤鸭", ["烤鸭", "北京烤鸭"]) == ["烤鸭", "北京烤鸭"]
    assert names_in("没有", ["烤鸭"]) == []


def test_split_course_answer():
    assert split_course_answer("粤菜，图中的菜是肠粉") == ("粤菜", "肠粉")
    assert split_course_answer("只是一句话") == ("只是一句话", "")


# --------------------------------------------------------------------------- multiple choice
@pytest.mark.parametrize("text, index", [
    ("C", 2), ("c", 2), ("(C)", 2), ("C.", 2), ("**B**", 1), ("答案是 C。", 2), ("答案：b", 1),
    ("正确答案为（D）", 3), ("选项A", 0), ("C. 新疆菜", 2), ("B、徽菜", 1), ("I think the answer is D", 3),
    ("Answer: a", 0), ("新疆菜，图中的菜是大盘鸡", 2), ("桂菜", 3),
    ("A 或 B", None), ("京菜或新疆菜", None), ("不知道", None), ("E", None), ("", None),
])
def test_parse_choice(text, index):
    assert parse_choice(text, CHOICES) == index


def test_choice_prompt_lists_letters():
    prompt = choice_prompt("图片中的食物通常属于哪个菜系?", CHOICES)
    assert "A. 京菜" in prompt and "D. 桂菜" in prompt and prompt.startswith("图片中的食物")


# --------------------------------------------------------------------------- the split
COLOURS = {"a.jpg": (200, 100, 30), "b.jpg": (30, 60, 220)}


def _image(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), COLOURS[path.name]).save(path, quality=95)
    return path


def _which(img) -> str:
    """The test image a PIL image shows (the engine gets pixels, not file names)."""
    r, g, b = img.getpixel((10, 10))
    return min(COLOURS, key=lambda k: sum(abs(x - y) for x, y in zip(COLOURS[k], (r, g, b))))


QUESTIONS = {"cuisine_type": "图片中的食物通常属于哪个菜系?", "food_name": "图片中的菜叫什么名字?"}


def _record(i, image, qtype="cuisine_type", dish="大盘鸡", cuisine="新疆菜", choices=None, answer=2):
    choices = choices or CHOICES
    question = QUESTIONS[qtype]
    return {"id": f"vqa-{i}", "image": image,
            "conversations": [{"from": "human", "value": f"{question}\n<image>"},
                              {"from": "gpt", "value": f"{choices[answer]}，图中的菜是{dish}"}],
            "meta": {"question_type": qtype, "food_name": dish, "cuisine": cuisine, "choices": choices,
                     "answer": answer}}


@pytest.fixture
def split(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    _image(tmp_path / "images" / "b.jpg")
    records = [_record(0, "images/a.jpg"),
               _record(1, "images/a.jpg", "food_name", choices=DISHES, answer=0),
               _record(2, str(tmp_path / "images" / "b.jpg"), dish="肠粉", cuisine="粤菜",
                       choices=["粤菜", "京菜", "川菜", "湘菜"], answer=0)]
    path = tmp_path / "val.json"
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def test_load_split_resolves_images_and_questions(split):
    items = load_split(split, split.parent)
    assert len(items) == 3
    assert items[0].question == "图片中的食物通常属于哪个菜系?"  # <image> removed, as XTuner does
    assert Path(items[0].image).is_file() and Path(items[2].image).is_absolute()
    assert items[1].choices[items[1].answer] == "大盘鸡"
    assert len(load_split(split, split.parent, limit=2)) == 2


@pytest.mark.parametrize("change, words", [
    (lambda r: r["meta"].pop("cuisine"), "record 1 (id 'vqa-1') has no field 'meta.cuisine'"),
    (lambda r: r["meta"].update(answer=7), "record 1 field 'meta.answer'"),
    (lambda r: r.update(conversations=[]), "record 1 field 'conversations'"),
    (lambda r: r.update(image="images/missing.jpg"), "missing.jpg does not exist"),
])
def test_load_split_names_file_record_and_field(split, change, words):
    records = json.loads(split.read_text(encoding="utf-8"))
    change(records[1])
    split.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        load_split(split, split.parent)
    assert words in str(err.value) and "val.json" in str(err.value)


# --------------------------------------------------------------------------- running with an engine
class _Answer:
    def __init__(self, text):
        self.text = text


class ScriptedEngine:
    """Answers from a table keyed by image name; records what it was asked."""

    engine_name = "scripted"
    model_path = "scripted-model"

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def __call__(self, prompts, gen_config=None):
        self.calls.append((list(prompts), gen_config))
        return [_Answer(self.answers[(_which(img), text.splitlines()[0])])
                for text, img in prompts]


def test_evaluate_scores_batches_and_keeps_answers(split):
    items = load_split(split, split.parent)
    q, d = QUESTIONS["cuisine_type"], QUESTIONS["food_name"]
    engine = ScriptedEngine({("a.jpg", q): "新疆菜，图中的菜是大盘鸡", ("a.jpg", d): "大盘鸡，图中的菜是大盘鸡",
                             ("b.jpg", q): "京菜，图中的菜是肠粉"})
    result = evaluate(engine, items, name="t", batch_size=2, progress=False, max_new_tokens=7)
    assert [len(c[0]) for c in engine.calls] == [2, 1]  # batches of two
    assert engine.calls[0][1].max_new_tokens == 7 and not engine.calls[0][1].do_sample
    assert [r["correct"] for r in result.rows] == [True, True, False]
    assert result.rows[2]["choice_ok"] is False and result.rows[2]["dish_ok"] is True
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.by("cuisine")["粤菜"] == dict(n=1, correct=0, accuracy=0.0)
    assert result.by("question_type")["food_name"]["accuracy"] == 1.0
    assert result.engine == "scripted" and result.wrong()[0]["answer"] == "京菜，图中的菜是肠粉"


def test_evaluate_choice_mode_asks_with_options(split):
    items = load_split(split, split.parent)
    q, d = QUESTIONS["cuisine_type"], QUESTIONS["food_name"]
    engine = ScriptedEngine({("a.jpg", q): "C", ("a.jpg", d): "C", ("b.jpg", q): "我选B"})
    result = evaluate(engine, items, mode="choice", progress=False)
    assert "A. 京菜" in engine.calls[0][0][0][0]
    assert [r["picked"] for r in result.rows] == ["C", "C", "B"]
    assert [r["correct"] for r in result.rows] == [True, False, False]
    assert result.rate("parsed") == 1.0


def test_evaluate_rejects_a_short_answer_list(split):
    items = load_split(split, split.parent)

    def broken(prompts, gen_config=None):
        return [_Answer("x")]

    with pytest.raises(RuntimeError, match="returned 1 answers for 3 prompts"):
        evaluate(broken, items, progress=False)
    with pytest.raises(ValueError, match="mode"):
        evaluate(broken, items, mode="letters", progress=False)


def _result(name, correct):
    rows = [dict(id=str(i), image="", question_type=t, cuisine=c, food_name="d", expected="e", reference="r",
                 answer="a", correct=ok, choice_ok=ok, dish_ok=ok)
            for i, (t, c, ok) in enumerate(zip(["cuisine_type", "food_name"] * 2, ["粤菜", "粤菜", "川菜", "川菜"],
                                               correct))]
    return EvalResult(name=name, model_path="m", mode="course", system_prompt=None, engine="e", rows=rows)


def test_result_round_trips_and_compares(tmp_path):
    base, tuned = _result("base", [False] * 4), _result("tuned", [True, True, True, False])
    path = tuned.save(tmp_path / "r.json")
    assert EvalResult.load(path) == tuned
    rows = comparison_rows({"base": base, "tuned": tuned}, by="cuisine")
    assert rows[0] == {"菜系": "全部", "题数": 4, "base": 0.0, "tuned": 0.75}
    assert rows[1:] == [{"菜系": "川菜", "题数": 2, "base": 0.0, "tuned": 0.5},
                        {"菜系": "粤菜", "题数": 2, "base": 0.0, "tuned": 1.0}]
    by_type = comparison_rows({"base": base, "tuned": tuned}, by="question_type")
    assert [r["问题类型"] for r in by_type] == ["全部", "菜系题", "菜名题"]
    assert tuned.summary().startswith("tuned（课程格式）：准确率 75.0%（3/4 题对，菜系对 ")
    text = format_table(rows).splitlines()
    assert text[0].split() == ["菜系", "题数", "base", "tuned"] and text[1].split() == ["全部", "4", "0%", "75%"]
    assert len({len(line.rstrip()) for line in text[2:]}) == 1  # CJK labels keep the columns aligned
    other = _result("other", [True] * 4)
    other.rows[0]["id"] = "99"
    with pytest.raises(ValueError, match="different questions"):
        comparison_rows({"base": base, "other": other})
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not an EvalResult"):
        EvalResult.load(tmp_path / "bad.json")


def test_trained_system_prompt_reads_the_saved_chat_template(tmp_path):
    assert trained_system_prompt(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"system_message": "from config"}))
    assert trained_system_prompt(tmp_path) == "from config"
    (tmp_path / "chat_template_config.json").write_text(json.dumps({"meta_instruction": "trained with"}))
    assert trained_system_prompt(tmp_path) == "trained with"


# --------------------------------------------------------------------------- figures
def test_figures(split):
    pytest.importorskip("matplotlib")
    from helpers.evaluate.plots import gallery, plot_comparison, to_english

    base, tuned = _result("base", [False] * 4), _result("tuned", [True, True, True, False])
    image = str(_image(split.parent / "images" / "a.jpg"))
    for res in (base, tuned):
        for row in res.rows:
            row["image"] = image
    fig = plot_comparison({"base": base, "tuned": tuned})
    assert len(fig.axes) == 2
    from helpers.display import figure_text

    text = figure_text(fig)
    assert {"准确率（%）", "按问题类型", "按菜系", "全部"} <= set(text)
    assert not {"accuracy (%)", "all", "cuisine_type", "food_name"} & set(text)
    fig = gallery({"base": base, "tuned": tuned}, n=3, cols=3, pick="mixed")
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert len(titles) == 3 and all("base" in t and "tuned" in t for t in titles)
    assert sum("✓ tuned" in t for t in titles) >= 1 and sum("✗ tuned" in t for t in titles) >= 1
    assert to_english("粤菜，图中的菜是肠粉") == "Cantonese cuisine，图中的菜是Rice noodle rolls"


# --------------------------------------------------------------------------- GPU monitor without a GPU
def test_gpu_monitor_explains_a_missing_gpu(monkeypatch):
    import helpers.gpu as gpu

    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    ok, reason = gpu.gpu_available()
    assert not ok and "nvidia-smi" in reason
    with gpu.GpuMonitor(interval=0.01) as mon:
        pass
    assert mon.samples == 0 and mon.report().startswith("GPU memory: not measured")


# --------------------------------------------------------------------------- run folders
def test_runs_never_reuse_a_folder_and_point_at_the_latest_finished_one(tmp_path):
    from types import SimpleNamespace

    from helpers.train.runs import latest_run, list_runs, new_run_dir, record_run

    S = SimpleNamespace(runs_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="run notebook 05 first"):
        latest_run(S)
    first, second = new_run_dir(S), new_run_dir(S)
    assert first != second and first.is_dir() and second.is_dir()
    for run in (first, second):
        (run / "merged").mkdir()
        (run / "merged" / "config.json").write_text("{}")
    record_run(first, merged=str(first / "merged"), train_s=1.0)
    record_run(second, train_s=2.0)  # not finished: no merged model, the pointer stays
    assert latest_run(S)["run_dir"] == str(first)
    record_run(second, merged=str(second / "merged"))
    assert latest_run(S)["train_s"] == 2.0 and len(list_runs(S)) == 2
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        record_run(first, merged=str(tmp_path / "nowhere"))
    assert latest_run(S)["merged"] == str(second / "merged")  # the refused record changed nothing


def test_gpu_monitor_keeps_the_peak(monkeypatch):
    import helpers.gpu as gpu

    readings = iter([1000.0, 5000.0, 3000.0] + [2000.0] * 1000)
    monkeypatch.setattr(gpu, "gpu_available", lambda: (True, ""))
    monkeypatch.setattr(gpu, "gpu_snapshot", lambda: [dict(index=0, name="Fake GPU", used_mib=next(readings),
                                                           total_mib=81920.0, util_pct=50.0)])
    mon = gpu.GpuMonitor(interval=0.001)
    mon._sample(), mon._sample(), mon._sample()  # what the thread does, made deterministic
    assert mon.peak_mib == {0: 5000.0} and mon.baseline_mib == {0: 1000.0}
    assert "peak 4.9 GiB of 80 GiB" in mon.report() and "in use before: 1.0 GiB" in mon.report()
    with mon:  # the thread samples too and stops cleanly
        pass
    assert mon.samples > 3
