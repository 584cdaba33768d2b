"""Tests for helpers.lessons.lora (exercises and counts of notebook 05)."""
from __future__ import annotations

import pytest

from helpers.lessons import lora as L


def test_internvl2_2b_trainable_includes_the_output_head():
    t = L.internvl2_2b_trainable()
    assert t["layers"] == 125_829_120                       # 24 layers x 5 linear layers
    assert t["head"] == 128 * (2048 + 92_553) == 12_108_928  # InternLM2's head is named `output`
    assert round(t["total"] / 1e6, 1) == 150.5
    assert 286 < t["mib_16bit"] < 288                        # the upstream course's LoRA file: 288 MB


def test_xtuner_wraps_the_internlm2_head(tiny_model):
    pytest.importorskip("xtuner")
    model, _ = tiny_model
    targets = L.xtuner_lora_targets(model.language_model)
    assert "output" in targets and {"wqkv", "wo", "w1", "w2", "w3"} <= set(targets)
    assert set(L.xtuner_lora_targets(model.vision_model)) >= {"qkv", "proj", "fc1", "fc2"}


def test_vit_lora_and_layer_counts():
    assert L.lora_params(2048, 2048, 128) == 524_288
    assert L.check_lora_params(524_288, quiet=True)
    assert round(L.vit_lora_params() / 1e6, 1) == 50.3
    assert L.check_vit_lora_millions(50, quiet=True)


def test_iterations_follow_the_recipe():
    pytest.importorskip("mmengine")
    from helpers.settings import get_settings

    S = get_settings("tiny")
    per_epoch = -(-100 // S.batch_size)
    assert L.answer_iterations(S, 100, 3) == 3 * per_epoch // S.accumulative_counts
    assert L.check_iterations(L.answer_iterations(S, 100, 3), L.answer_iterations(S, 100, 3), quiet=True)


def test_course_speed_recipe_gives_the_profile_reason_for_accumulation():
    from helpers.train.speed_recipes import speed_reasons
    from helpers.train.xtuner_config import OVERRIDE_REASONS

    assert speed_reasons("course")["accumulative_counts"] == OVERRIDE_REASONS["accumulative_counts"]
    assert "global batch" in speed_reasons("recommended")["accumulative_counts"]
    assert speed_reasons() == speed_reasons("recommended")
