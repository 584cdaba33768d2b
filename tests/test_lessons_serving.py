"""Tests for helpers.lessons.serving and helpers.lessons.evaluation (notebooks 03 and 06)."""
from __future__ import annotations

import pytest

from helpers.lessons import evaluation as E
from helpers.lessons import serving as V


def test_kv_cache_is_a_share_of_free_memory():
    assert V.answer_kv_cache_gib(80, 5, 0.4) == pytest.approx(30.0)
    assert 105 < V.answer_kv_cache_gib(139.8, 4.4, 0.8) < 112     # not 0.8 x 139.8 = 112
    assert V.check_kv_cache_gib(30, quiet=True) and not V.check_kv_cache_gib(32, quiet=True)


def test_images_in_session():
    assert V.answer_images_in_session(8192, 13) == 2
    assert V.answer_images_in_session(2048, 1) == 7


def test_greedy_ignores_temperature(tiny_model_dir):
    pytest.importorskip("transformers")
    from helpers.serve.cpu_engine import TransformersEngine
    from helpers.data.synth_draw import draw_photo

    with TransformersEngine(tiny_model_dir) as pipe:
        assert V.answer_same_without_do_sample(pipe, ("图中是什么?", draw_photo("mapo_tofu", 448, 448, seed=0)), 4)


def test_choice_analysis_and_confusions():
    from helpers.evaluate.evaluation import EvalResult

    mc = EvalResult("t", "m", "choice", None, "x", rows=[
        dict(parsed=True, correct=True), dict(parsed=True, correct=False), dict(parsed=False, correct=False),
        dict(parsed=False, correct=False)])
    a = E.choice_analysis(mc)
    assert (a["accuracy"], a["parsed"], a["chance"], a["accuracy_parsed"]) == (0.25, 0.5, 0.25, 0.5)
    course = EvalResult("t", "m", "course", None, "x", rows=[
        dict(food_name="麻婆豆腐", answer="川菜，图中的菜是北京烤鸭", dish_ok=False, correct=False),
        dict(food_name="麻婆豆腐", answer="川菜，图中的菜是北京烤鸭", dish_ok=False, correct=False),
        dict(food_name="麻婆豆腐", answer="川菜，图中的菜是麻婆豆腐", dish_ok=True, correct=True)])
    rows = E.dish_confusions(course)
    assert rows[0]["照片里的菜"] == "麻婆豆腐" and rows[0]["模型说的菜"] == "北京烤鸭" and rows[0]["次数"] == 2
    assert E.check_chance_percent(25, quiet=True)


# --------------------------------------------------------------------------- notebook 06: <image> after the question
def test_image_position_direction_ignores_a_couple_of_answers():
    assert E.image_position_direction(0.875, 0.604, n=48) == "下降"
    assert E.image_position_direction(0.50, 0.54, n=48) == "不变"   # 2 answers of 48: noise
    assert E.image_position_direction(0.50, 0.60, n=48) == "上升"
    assert E.image_position_direction(0.5, 0.4, n=10) == "不变"      # 1 answer of 10 is below 2 answers


def test_check_image_after_says_right_wrong_or_asks_for_a_direction(capsys):
    effect = {"direction": "下降"}
    assert E.check_image_after("下降", effect) is True
    assert E.check_image_after("上升", effect) is False and "提示" in capsys.readouterr().out
    assert E.check_image_after(0.6, effect) is False and "之一" in capsys.readouterr().out
    assert E.check_image_after(None, effect) is None


def test_image_position_effect_moves_only_the_image(monkeypatch, tmp_path):
    """A fake engine that answers right only when the image comes first: the lesson sees the drop."""
    from PIL import Image

    from helpers.evaluate.items import EvalItem
    import helpers.serve.pipeline as pipeline

    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    items = [EvalItem(id=str(i), image=str(tmp_path / "a.jpg"), question="图片中的食物通常属于哪个菜系?",
                      reference="川菜，图中的菜是麻婆豆腐", question_type="cuisine_type", food_name="麻婆豆腐",
                      cuisine="川菜", choices=("川菜", "粤菜", "京菜", "沪菜"), answer=0) for i in range(12)]
    seen = []

    class Fake:
        engine_name = "fake"

        def __call__(self, prompts, gen_config=None):
            seen.extend(text for text, _ in prompts)
            return [type("R", (), {"text": "川菜，图中的菜是麻婆豆腐" if t.startswith("<image>\n") else "粤菜"})()
                    for t, _ in prompts]

    monkeypatch.setattr(pipeline, "make_pipeline", lambda *a, **k: Fake())
    effect = E.image_position_effect("model", items, n=6)
    assert effect["n"] == 6 and len(seen) == 12
    assert seen[0] == "<image>\n图片中的食物通常属于哪个菜系?" and seen[-1] == "图片中的食物通常属于哪个菜系?\n<image>"
    assert (effect["before"].accuracy, effect["after"].accuracy, effect["direction"]) == (1.0, 0.0, "下降")
