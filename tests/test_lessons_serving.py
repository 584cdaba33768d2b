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
