"""Tests for helpers.concepts.lmdeploy_engines: tensor listing and tp split against real checkpoints, config tables
against the installed LMDeploy."""
from __future__ import annotations

import json
import struct

import pytest

from helpers.reference_configs import REFERENCE_CONFIGS
from helpers.concepts.architecture import count_parameters
from helpers.concepts.lmdeploy_engines import FEATURES, FIELD_NOTES
from helpers.concepts.tensor_parallel import (TP_RULES, checkpoint_tensors, classify_tensor, reference_tensors,
                                              tp_split)
from helpers.settings import get_settings

TINY = get_settings().tiny_model_path


def _write_safetensors(path, tensors: dict):
    """A header-only-valid safetensors file: {name: (shape, dtype)} with zero-filled data."""
    sizes = {"BF16": 2, "F32": 4}
    header, offset = {}, 0
    for name, (shape, dtype) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


# --------------------------------------------------------------------------- tensors and tp


@pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="tiny checkpoint missing (make tiny)")
def test_reference_tensors_equal_the_tiny_checkpoint():
    on_disk = checkpoint_tensors(TINY)
    assert reference_tensors(TINY) == on_disk
    for name in on_disk:  # every real tensor has a rule
        classify_tensor(name)


def test_reference_tensors_count_internvl2_2b_like_the_architecture_module():
    tensors = reference_tensors(REFERENCE_CONFIGS["InternVL2-2B"])
    total = tp_split(tensors, tp=1)[-1]["参数量"]
    assert total == count_parameters(REFERENCE_CONFIGS["InternVL2-2B"])["total"] == 2_205_754_368


def test_reference_tensors_refuse_other_llms():
    with pytest.raises(NotImplementedError, match="Qwen2ForCausalLM"):
        reference_tensors(REFERENCE_CONFIGS["InternVL2-1B"])


@pytest.mark.parametrize("name, part, split", [
    ("vision_model.encoder.layers.3.attn.qkv.weight", "ViT 注意力（按头切分）", True),
    ("vision_model.encoder.layers.3.ls2", "ViT 层归一化与 layer scale", False),
    ("vision_model.embeddings.position_embedding", "ViT 嵌入（patch 卷积、位置、class token）", False),
    ("mlp1.3.bias", "MLP 投影器 mlp1", False),
    ("language_model.model.layers.0.feed_forward.w2.weight", "LLM MLP（按中间维切分）", True),
    ("language_model.output.weight", "LLM 输出层 lm_head", False),
    ("language_model.model.tok_embeddings.weight", "LLM 词嵌入", False),
])
def test_classify_tensor(name, part, split):
    assert classify_tensor(name) == (part, split)


def test_unknown_tensor_is_named():
    with pytest.raises(ValueError, match="vision_model.head.weight"):
        classify_tensor("vision_model.head.weight")


def test_tp_split_divides_only_the_split_parts():
    tensors = reference_tensors(REFERENCE_CONFIGS["InternVL2-2B"])
    one, four = tp_split(tensors, tp=1), tp_split(tensors, tp=4)
    assert [r["部分"] for r in one] == [r["部分"] for r in four]
    for a, b in zip(one[:-1], four[:-1]):
        assert a["参数量"] == b["参数量"] == a["每卡参数量"]
        expected = -(-a["参数量"] // 4) if b["tp 切分"] == "切分" else a["参数量"]
        assert b["每卡参数量"] == expected
    assert four[-1]["每卡参数量"] == sum(r["每卡参数量"] for r in four[:-1])
    replicated = sum(r["参数量"] for r in one[:-1] if r["tp 切分"] == "每卡一份")
    assert replicated < four[-1]["每卡参数量"] < one[-1]["参数量"]
    # bf16: 2 bytes a parameter
    assert one[-1]["每卡 MiB"] == pytest.approx(2 * one[-1]["参数量"] / 2**20, abs=0.01)
    with pytest.raises(ValueError, match="tp must be"):
        tp_split(tensors, tp=0)


def test_rules_cover_parts_in_declared_order():
    rows = tp_split(reference_tensors(REFERENCE_CONFIGS["InternVL2-2B"]), tp=2)
    assert [r["部分"] for r in rows[:-1]] == [part for _, part, _ in TP_RULES]


def test_checkpoint_tensors_reads_shards_and_reports_bad_files(tmp_path):
    _write_safetensors(tmp_path / "a.safetensors", {"mlp1.0.weight": ((8,), "F32")})
    _write_safetensors(tmp_path / "b.safetensors", {"mlp1.0.bias": ((8,), "BF16")})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"mlp1.0.weight": "a.safetensors", "mlp1.0.bias": "b.safetensors"}}))
    assert checkpoint_tensors(tmp_path) == {"mlp1.0.weight": ((8,), "F32"), "mlp1.0.bias": ((8,), "BF16")}
    rows = tp_split(tmp_path, tp=2)
    assert rows[0]["参数量"] == 16 and rows[0]["每卡 MiB"] == round((8 * 4 + 8 * 2) / 2**20, 2)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(ValueError, match="bad/model.safetensors"):
        checkpoint_tensors(bad)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        checkpoint_tensors(tmp_path / "nowhere")


# --------------------------------------------------------------------------- config tables (need LMDeploy)


@pytest.fixture(scope="module")
def lmdeploy():
    return pytest.importorskip("lmdeploy")


def test_fields_come_from_the_installed_dataclasses(lmdeploy):
    import dataclasses

    from helpers.concepts.lmdeploy_engines import engine_config_fields, field_overlap

    fields = engine_config_fields()
    assert list(fields["pytorch"]) == [f.name for f in dataclasses.fields(lmdeploy.PytorchEngineConfig)]
    assert fields["pytorch"]["cache_max_entry_count"] == lmdeploy.PytorchEngineConfig().cache_max_entry_count
    overlap = field_overlap()
    assert {"session_len", "cache_max_entry_count", "tp"} <= set(overlap["both"])
    assert "adapters" in overlap["pytorch_only"]
    assert not set(overlap["turbomind_only"]) & set(overlap["pytorch_only"])


def test_every_noted_field_exists(lmdeploy):
    from helpers.concepts.lmdeploy_engines import config_comparison

    rows = config_comparison()
    assert [r["field"] for r in rows] == list(FIELD_NOTES)
    for row in rows:  # a note for a field no config has would have raised
        assert row["TurbomindEngineConfig"] != "—" or row["PytorchEngineConfig"] != "—"
    adapters = next(r for r in rows if r["field"] == "adapters")
    assert adapters["TurbomindEngineConfig"] == "—" and adapters["PytorchEngineConfig"] == "None"


def test_unknown_field_is_refused(lmdeploy):
    from helpers.concepts.lmdeploy_engines import config_comparison

    with pytest.raises(KeyError, match="session_length"):
        config_comparison(["session_length"])


def test_feature_support_agrees_with_the_fields(lmdeploy):
    from helpers.concepts.lmdeploy_engines import engine_config_fields, feature_support

    fields = engine_config_fields()
    rows = feature_support()
    assert len(rows) == len(FEATURES)
    for row in rows:
        assert (row["TurboMind"] == "✓") == (row["字段"] in fields["turbomind"])
        assert (row["PyTorch"] == "✓") == (row["字段"] in fields["pytorch"])


def test_engines_here_says_why_not(lmdeploy):
    import torch

    from helpers.concepts.lmdeploy_engines import engines_here

    rows = {r["engine"]: r for r in engines_here()}
    assert set(rows) == {"TurboMind", "PyTorch"}
    assert rows["PyTorch"]["usable"] == torch.cuda.is_available()
    for row in rows.values():
        assert row["usable"] or row["why"]
