"""Tests for helpers.concepts.architecture: parameter arithmetic against real modules and model cards."""
from __future__ import annotations

import json

import pytest

from helpers.concepts import architecture as A
from helpers import reference_configs


def test_count_formula_equals_numel_of_the_tiny_model(tiny_model):
    model, _ = tiny_model
    by_formula = A.count_parameters(model.config)
    by_numel = A.module_parameters(model)
    assert by_formula == by_numel
    assert by_formula["total"] == sum(p.numel() for p in model.parameters())


def test_count_from_a_checkpoint_dir_and_from_its_json(tiny_model_dir):
    from_dir = A.count_parameters(tiny_model_dir)
    from_json = A.count_parameters(json.loads((tiny_model_dir / "config.json").read_text()))
    assert from_dir == from_json and from_dir["total"] > 0


@pytest.mark.parametrize("norm_type,qk_norm,qkv_bias", [("rms_norm", True, False), ("layer_norm", False, True)])
def test_vision_formula_matches_an_instantiated_internvit(norm_type, qk_norm, qkv_bias):
    pytest.importorskip("torch")
    from helpers.internvl.configuration_intern_vit import InternVisionConfig
    from helpers.internvl.modeling_intern_vit import InternVisionModel

    vc = dict(hidden_size=40, intermediate_size=96, num_hidden_layers=2, num_attention_heads=5, patch_size=14,
              image_size=112, qkv_bias=qkv_bias, qk_normalization=qk_norm, norm_type=norm_type)
    model = InternVisionModel(InternVisionConfig(**vc))
    assert A.vision_parameters(vc) == sum(p.numel() for p in model.parameters())


def test_qwen2_formula_matches_transformers():
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    lc = dict(architectures=["Qwen2ForCausalLM"], hidden_size=64, intermediate_size=160, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False)
    cfg = transformers.Qwen2Config(**{k: v for k, v in lc.items() if k != "architectures"})
    model = transformers.Qwen2ForCausalLM(cfg)
    assert A.llm_parameters(lc) == sum(p.numel() for p in model.parameters())
    tied = dict(lc, tie_word_embeddings=True)
    assert A.llm_parameters(tied) == A.llm_parameters(lc) - 300 * 64


def test_reference_configs_agree_with_published_sizes():
    for name, cfg in reference_configs.REFERENCE_CONFIGS.items():
        total_b = A.count_parameters(cfg)["total"] / 1e9
        assert total_b == pytest.approx(reference_configs.PUBLISHED_SIZES_B[name], rel=0.01), name
    v15 = A.count_parameters(reference_configs.REFERENCE_CONFIGS["InternVL-Chat-V1-5"])
    # InternVL 1.5 model card: ViT 5.54B, MLP 116.43M, LLM 19.86B
    assert round(v15["vision_model"] / 1e9, 2) == 5.54
    assert round(v15["mlp1"] / 1e6, 2) == 116.43
    assert round(v15["language_model"] / 1e9, 2) == 19.86


def test_internvit_6b_with_all_48_layers_is_the_5_9b_model():
    vc = dict(reference_configs.REFERENCE_CONFIGS["InternVL-Chat-V1-5"]["vision_config"], num_hidden_layers=48)
    assert A.vision_parameters(vc) / 1e6 == pytest.approx(5903, rel=0.002)  # InternViT-6B-448px-V1-0 card


def test_unknown_llm_and_missing_fields_are_reported():
    with pytest.raises(NotImplementedError, match="Phi3"):
        A.llm_parameters(dict(architectures=["Phi3ForCausalLM"], hidden_size=8, intermediate_size=8,
                              num_attention_heads=2, vocab_size=10, num_hidden_layers=1))
    with pytest.raises(KeyError, match="llm_config has no field 'vocab_size'"):
        A.llm_parameters(dict(architectures=["Qwen2ForCausalLM"], hidden_size=8, intermediate_size=8,
                              num_attention_heads=2, num_hidden_layers=1))
    with pytest.raises(FileNotFoundError):
        A.count_parameters("/nonexistent/model")


def test_tokens_and_budget():
    assert A.tokens_per_tile(reference_configs.REFERENCE_CONFIGS["InternVL2-2B"]) == 256
    rows = A.token_budget(8192, range(1, 14))
    assert [r["tiles"] for r in rows] == list(range(1, 14))
    assert rows[0]["image_tokens"] == 258 and rows[-1]["image_tokens"] == 13 * 256 + 2
    assert all(r["image_tokens"] + r["left_for_text"] == 8192 for r in rows)


def test_facts_are_consistent():
    f = A.INTERNVL_1_5
    assert f["vit_layers_original"] - f["vit_layers_kept"] == 3
    assert sum(f["stage1_mix_percent"].values()) == pytest.approx(100.0)
    assert sum(f["stage1_ocr_split_percent"].values()) == pytest.approx(f["stage1_mix_percent"]["OCR"])
    assert f["vit_layers_kept"] == reference_configs.REFERENCE_CONFIGS["InternVL-Chat-V1-5"]["vision_config"]["num_hidden_layers"]


def test_markdown_table():
    text = A.markdown_table([{"a": 1, "b": 2}, {"a": 3}])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 |  |"]
    with pytest.raises(ValueError):
        A.markdown_table([])


def test_v15_component_table_counts_the_published_model():
    rows = A.v15_component_table()
    assert [r["部分"] for r in rows] == ["视觉编码器", "投影器 mlp1", "语言模型", "合计"]
    assert rows[0]["结构"] == "45 层，宽 3200，patch 14，输入 448 px" and rows[0]["参数"] == "5.54B"
    assert rows[-1]["参数"] == f"{reference_configs.PUBLISHED_SIZES_B['InternVL-Chat-V1-5']:.2f}B"
    assert rows[1]["结构"].startswith("LayerNorm(12800)")


def test_tiling_table_rows_follow_the_tiling_rules():
    rows = A.tiling_table([(4032, 3024), (448, 448)], max_nums=(6, 12))
    assert [(r["照片"], r["max_num"]) for r in rows] == [("4032x3024", 6), ("4032x3024", 12), ("448x448", 6),
                                                        ("448x448", 12)]
    assert rows[1] == {"照片": "4032x3024", "宽/高": 1.33, "max_num": 12, "网格 列x行": "4x3", "图块(含缩略图)": 13,
                       "视觉 token": 13 * 256}
    assert rows[2]["图块(含缩略图)"] == 1 and rows[2]["视觉 token"] == 256  # one tile: no thumbnail


def test_demo_max_num_is_the_checkpoints_own(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "config.json").write_text(json.dumps({"max_dynamic_patch": 6}))
    assert A.demo_max_num(SimpleNamespace(profile="tiny", tiny_model_path=tmp_path, max_dynamic_patch=1)) == 6
    assert A.demo_max_num(SimpleNamespace(profile="full", tiny_model_path=tmp_path, max_dynamic_patch=12)) == 12
