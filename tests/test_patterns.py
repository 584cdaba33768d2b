"""Tests for helpers.concepts.patterns: alignment modules, pixel shuffle, splicing, cost table."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from helpers.concepts import blocks, walkthrough
from helpers.concepts import patterns as P


def test_pixel_shuffle_merges_2x2_blocks_in_row_col_channel_order():
    # Each patch's two channels hold its (row, col); a merged token must list its 2x2 block
    # row by row: (2i, 2j), (2i, 2j+1), (2i+1, 2j), (2i+1, 2j+1).
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    grid = torch.stack([rows, cols], -1).float().unsqueeze(0)  # (1, 4, 4, 2)
    out = blocks.pixel_shuffle(grid)
    assert out.shape == (1, 2, 2, 8)
    assert out[0, 1, 0].tolist() == [2, 0, 2, 1, 3, 0, 3, 1]
    assert out[0, 0, 1].tolist() == [0, 2, 0, 3, 1, 2, 1, 3]


def test_pixel_shuffle_matches_the_tiny_model(tiny_model):
    model, _ = tiny_model
    x = torch.randn(3, 32, 32, 16)
    assert torch.equal(blocks.pixel_shuffle(x, 0.5), model.pixel_shuffle(x, scale_factor=0.5))


def test_pixel_shuffle_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        blocks.pixel_shuffle(torch.zeros(1, 5, 5, 2))
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        blocks.pixel_shuffle(torch.zeros(5, 5, 2))


def test_projectors_shapes_and_parameter_counts():
    vis = torch.randn(2, 1024, 32)
    assert blocks.LinearProjector(32, 48)(vis).shape == (2, 1024, 48)
    assert blocks.MLPProjector(32, 48)(vis).shape == (2, 1024, 48)
    internvl = blocks.MLPProjector(32, 48, downsample_ratio=0.5)
    assert internvl(vis).shape == (2, 256, 48)
    # LayerNorm(128) + Linear(128, 48) + Linear(48, 48): InternVL's mlp1 layout
    assert P.count_params(internvl) == 2 * 128 + 128 * 48 + 48 + 48 * 48 + 48
    with pytest.raises(ValueError, match="square"):
        internvl(torch.randn(1, 1000, 32))


def test_mlp_projector_equals_internvl_mlp1_on_the_same_weights(tiny_model):
    model, _ = tiny_model
    cfg = model.config
    proj = blocks.MLPProjector(cfg.vision_config.hidden_size, cfg.llm_config.hidden_size, 0.5)
    proj.mlp.load_state_dict(model.mlp1.state_dict())
    vit = torch.randn(2, 1024, cfg.vision_config.hidden_size)
    expected = model.mlp1(model.pixel_shuffle(vit.reshape(2, 32, 32, -1)).reshape(2, 256, -1))
    torch.testing.assert_close(proj(vit), expected)


def test_resampler_output_size_does_not_depend_on_input_tokens():
    r = blocks.QueryResampler(vis_dim=16, llm_dim=24, num_queries=8, dim=16, depth=1, heads=2)
    assert r(torch.randn(2, 100, 16)).shape == (2, 8, 24)
    assert r(torch.randn(2, 7, 16)).shape == (2, 8, 24)


def test_gated_cross_attention_starts_as_identity_and_keeps_sequence_length():
    block = blocks.GatedCrossAttention(llm_dim=16, vis_dim=8, heads=2)
    x, vis = torch.randn(2, 5, 16), torch.randn(2, 30, 8)
    torch.testing.assert_close(block(x, vis), x)  # gates are 0 at initialisation
    with torch.no_grad():
        block.attn_gate.fill_(1.0)
    out = block(x, vis)
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_tiny_decoder_with_cross_attention_needs_vision():
    dec = P.TinyDecoder(vocab=50, dim=16, depth=4, heads=2, xattn_every=2, vis_dim=8)
    assert sorted(dec.xattn) == ["0", "2"]
    ids = torch.randint(0, 50, (1, 6))
    assert dec(ids, vision=torch.randn(1, 9, 8)).shape == (1, 6, 50)
    with pytest.raises(ValueError, match="vision="):
        dec(ids)


def test_tiny_decoder_is_causal():
    torch.manual_seed(0)
    dec = P.TinyDecoder(vocab=30, dim=16, depth=2, heads=2).eval()
    a = torch.tensor([[1, 2, 3, 4]])
    b = torch.tensor([[1, 2, 3, 9]])
    with torch.no_grad():
        torch.testing.assert_close(dec(a)[:, :3], dec(b)[:, :3])


def test_splice_replaces_exactly_the_placeholders():
    ids = torch.tensor([[1, 7, 7, 7, 2]])
    emb = torch.zeros(1, 5, 3)
    vis = torch.arange(9.0).reshape(3, 3)
    out = P.splice_visual_tokens(ids, emb, vis, placeholder_id=7)
    assert torch.equal(out[0, 1:4], vis) and out[0, 0].abs().sum() == 0 and out[0, 4].abs().sum() == 0
    assert emb.abs().sum() == 0  # input untouched
    with pytest.raises(ValueError, match="3 placeholder tokens .* 2 visual tokens"):
        P.splice_visual_tokens(ids, emb, vis[:2], 7)


def test_encoders_token_counts():
    assert blocks.ImageEncoder(224, 16, 16, 1, 2)(torch.zeros(1, 3, 224, 224)).shape == (1, 196, 16)
    assert blocks.AudioEncoder(16, 1, 2)(torch.zeros(2, 32000)).shape == (2, 100, 16)  # 50 frames / s
    video = blocks.VideoEncoder(frames=4, image_size=64, patch_size=16, dim=16, depth=1, heads=2)
    assert video(torch.zeros(1, 4, 3, 64, 64)).shape == (1, 4 * 16 // 4, 16)


def test_mini_mllm_end_to_end_and_bad_modality():
    m = P.MiniMLLM(vocab=40, dim=16, enc_dim=16, placeholders={"image": 5, "audio": 6})
    ids = torch.tensor([[1] + [5] * 196 + [6] * 50 + [2]])
    out = m(ids, {"image": torch.zeros(1, 3, 224, 224), "audio": torch.zeros(1, 16000)})
    assert out.shape == (1, 248, 40)
    with pytest.raises(ValueError, match="unknown modalities"):
        P.MiniMLLM(placeholders={"smell": 9})


def test_trace_shapes_lists_children_in_call_order():
    seq = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    rows = P.trace_shapes(seq, torch.zeros(5, 4))
    assert rows == [("0", (5, 3)), ("1", (5, 3)), ("2", (5, 2)), ("output", (5, 2))]
    assert "output" in P.format_trace(rows)


def test_model_sizes_read_from_the_config_match_strategy_costs_defaults():
    import inspect

    from helpers.reference_configs import REFERENCE_CONFIGS

    sizes = walkthrough.model_sizes(REFERENCE_CONFIGS["InternVL2-2B"])
    defaults = inspect.signature(walkthrough.strategy_costs).parameters
    assert sizes == {k: defaults[k].default for k in sizes} == dict(vis_tokens=1024, vis_dim=1024, llm_dim=2048,
                                                                     llm_layers=24)


def test_cost_table_shows_millions_under_chinese_headers():
    rows = walkthrough.cost_table(walkthrough.strategy_costs())
    assert list(rows[0]) == ["策略", "代表模型", "每图块进入 LLM 序列的 token", "新增参数 (M)"]
    assert [(r["每图块进入 LLM 序列的 token"], r["新增参数 (M)"]) for r in rows[:4]] == [
        (1024, 2.1), (1024, 6.3), (256, 12.6), (32, 115.8)]


def test_strategy_costs_at_internvl2_2b_sizes():
    rows = {r["strategy"]: r for r in walkthrough.strategy_costs()}
    internvl = rows["pixel shuffle + MLP"]
    # InternVL2-2B's mlp1: LayerNorm(4096) + Linear(4096, 2048) + Linear(2048, 2048)
    assert internvl["params"] == 2 * 4096 + 4096 * 2048 + 2048 + 2048 * 2048 + 2048
    assert internvl["tokens_in_sequence"] == 256
    assert rows["线性投影器"]["params"] == 1024 * 2048 + 2048
    assert rows["查询重采样器"]["tokens_in_sequence"] == 32
    flamingo = [r for r in rows.values() if r["models"] == "Flamingo"][0]
    assert flamingo["tokens_in_sequence"] == 0
    assert flamingo["params"] > rows["查询重采样器"]["params"]
