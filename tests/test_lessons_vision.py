"""Tests for helpers.lessons.vision (exercises of notebooks 01, 02, 04)."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from helpers import tiling  # noqa: E402
from helpers.lessons import vision as V  # noqa: E402


def test_tokens_per_tile_by_running_the_shuffle():
    assert V.answer_tokens_per_tile(448) == 256
    assert V.answer_tokens_per_tile(896) == 1024
    assert V.check_tokens_per_tile(1024, image_size=896, quiet=True)
    assert not V.check_tokens_per_tile(4096, image_size=896, quiet=True)   # forgot the shuffle


def test_resampler_output_does_not_grow_with_the_image():
    import torch

    from helpers.concepts.blocks import QueryResampler

    torch.manual_seed(0)
    r = QueryResampler(vis_dim=16, llm_dim=32, num_queries=8, dim=16, depth=1, heads=2)
    assert V.answer_resampler_tokens(r, 13 * 1024, 16) == V.answer_resampler_tokens(r, 1024, 16) == 8
    assert V.check_resampler_tokens(8, 8, quiet=True)


def test_image_tokens_follow_tiling():
    for w, h, m in [(1920, 1080, 6), (1920, 1080, 12), (3000, 1000, 6), (448, 448, 6)]:
        assert V.answer_image_tokens(w, h, m) == tiling.image_tokens(w, h, max_num=m)
    assert V.answer_image_tokens(3000, 1000, 6) == 4 * 256      # 3x1 grid + thumbnail
    assert V.check_image_tokens(1024, 3000, 1000, 6, quiet=True)


def test_shuffle_patches_of_the_4x4_example():
    assert V.answer_shuffle_patches(0, 0) == [0, 1, 4, 5]
    assert V.answer_shuffle_patches(0, 1) == [2, 3, 6, 7]
    assert V.check_shuffle_patches([2, 3, 6, 7], quiet=True)
    assert not V.check_shuffle_patches([1, 2, 5, 6], quiet=True)


def test_loss_targets_are_answer_plus_end(tiny_model):
    _, tok = tiny_model
    n_answer = len(tok("川菜，图中的菜是麻婆豆腐", add_special_tokens=False)["input_ids"])
    assert V.answer_loss_targets(tok, "川菜，图中的菜是麻婆豆腐") == n_answer + 1
