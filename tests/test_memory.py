"""Tests for helpers.concepts.memory: formulas against counted parameters, and their monotonicity."""
import json
from pathlib import Path

import pytest

from helpers.concepts.architecture import count_parameters
from helpers.concepts.memory import (estimate_vs_measured, ADAM_BYTES, BF16, MODELS, activation_bytes, deepspeed_for,
                                     kv_cache_bytes_per_token, lora_parameters, memory_table, serving_memory,
                                     serving_table, serving_weight_bytes, trainable_parameters, training_memory)
from helpers.models import tiny_config

TINY = tiny_config(vocab_size=8011)


def _tiny_model():
    torch = pytest.importorskip("torch")
    from helpers.internvl.configuration_internvl_chat import InternVLChatConfig
    from helpers.internvl.modeling_internvl_chat import InternVLChatModel

    with torch.device("meta"):
        return InternVLChatModel(InternVLChatConfig(**json.loads(json.dumps(TINY))))


def test_weight_bytes_match_counted_tiny_parameters():
    model = _tiny_model()
    counted = sum(p.numel() for p in model.parameters())
    assert count_parameters(TINY)["total"] == counted
    m = training_memory(TINY, "full", zero_stage=0, gpus=1)
    assert m["weights"] == BF16 * counted
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vision_model."))
    assert m["trainable"] == trainable
    assert m["optimizer"] == ADAM_BYTES * trainable
    assert m["gradients"] == BF16 * trainable


def test_lora_parameters_match_the_tiny_llm_linear_layers():
    # LoRA rank r on Linear(in, out) adds r x (in + out); XTuner targets every LLM linear but the head.
    torch = pytest.importorskip("torch")
    llm = _tiny_model().language_model
    linears = [(n, m) for n, m in llm.named_modules() if isinstance(m, torch.nn.Linear)]
    assert {n.rsplit(".", 1)[-1] for n, _ in linears} == {"wqkv", "wo", "w1", "w2", "w3", "output"}
    expected = sum(8 * (m.in_features + m.out_features) for n, m in linears if not n.endswith("output"))
    assert lora_parameters(TINY, r=8) == expected


def test_kv_cache_per_token_from_shapes():
    # InternVL2-2B: 24 layers x 8 KV heads x head_dim 128, keys + values, bf16.
    assert kv_cache_bytes_per_token(MODELS["InternVL2-2B"]) == 2 * 24 * 8 * 128 * 2
    # tiny: 2 layers x 1 KV head x head_dim 64; tp cannot split one head further.
    assert kv_cache_bytes_per_token(TINY) == 2 * 2 * 1 * 64 * 2
    assert kv_cache_bytes_per_token(TINY, tp=4) == kv_cache_bytes_per_token(TINY)


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_stages_never_need_more_memory(name):
    cfg = MODELS[name]
    for method in ("lora", "full"):
        totals = [training_memory(cfg, method, stage, gpus=8)["total"] for stage in (0, 1, 2, 3)]
        assert totals == sorted(totals, reverse=True)
        assert totals[3] < totals[0]
        # one GPU: ZeRO partitions nothing
        one = {training_memory(cfg, method, stage, gpus=1)["total"] for stage in (0, 1, 2, 3)}
        assert len(one) == 1


@pytest.mark.parametrize("name", list(MODELS))
def test_serving_memory_falls_with_tp_and_grows_with_cache(name):
    cfg = MODELS[name]
    w = [serving_memory(cfg, tp)["weights"] for tp in (1, 2, 4, 8)]
    assert w == sorted(w, reverse=True) and w[-1] < w[0]
    assert serving_memory(cfg, 1, 1000)["total"] > serving_memory(cfg, 1, 10)["total"]
    # embeddings, lm_head, mlp1 and norms are replicated, so tp=2 saves less than half
    assert w[1] > w[0] / 2


@pytest.mark.parametrize("name", list(MODELS))
def test_serving_weights_split_by_tensor(name):
    cfg = MODELS[name]
    # tp=1: every parameter once, in bf16
    assert serving_weight_bytes(cfg, 1) == BF16 * count_parameters(cfg)["total"]
    # the split part halves again from tp=2 to tp=4, the replicated part never shrinks
    w1, w2, w4 = (serving_weight_bytes(cfg, tp) for tp in (1, 2, 4))
    assert w2 - w4 == pytest.approx((w1 - w2) / 2)
    lc = cfg["llm_config"]
    replicated = w1 - 2 * (w1 - w2)
    assert replicated >= BF16 * 2 * lc["vocab_size"] * lc["hidden_size"]  # tok_embeddings + output
    # LMDeploy 0.18 splits InternViT's attention and MLP too: the ViT is not whole on every GPU
    vit = BF16 * count_parameters(cfg)["vision_model"]
    assert replicated < BF16 * (2 * lc["vocab_size"] * lc["hidden_size"] + count_parameters(cfg)["mlp1"]) + vit / 10
    # a w4a16 LLM shrinks only the LLM's attention and MLP weights
    assert serving_weight_bytes(cfg, 1, weight_bytes=0.5625) > w1 / 4


def test_memory_estimate_close_to_the_measured_peak():
    # A committed fixture (from benchmarks/results, named in it): the 2B-shaped checkpoint fine-tuned on one GPU
    # (LoRA, ZeRO-2, peak memory allocated by PyTorch as mmengine logs it). The estimate must stay within 20 %.
    data = json.loads((Path(__file__).resolve().parent / "fixtures" / "finetune_peak_memory.json").read_text())
    for row in data["rows"]:
        m = training_memory(MODELS["InternVL2-2B"], "lora", 2, 1, micro_batch=row["batch"],
                            tokens=data["sample"]["tokens"], tiles=data["sample"]["tiles"],
                            checkpointing=row["checkpointing"])
        assert m["total"] / 2**30 == pytest.approx(row["peak_alloc_gb"], rel=0.2), row["recipe"]
    assert {r["recipe"] for r in data["rows"]} == {"upstream", "lean"}


def test_estimate_vs_measured_rows():
    rows = estimate_vs_measured()
    assert rows and all(0.8 <= r["实测/估算"] <= 1.2 for r in rows)


def test_deepspeed_stage_choice():
    assert deepspeed_for(MODELS["InternVL2-2B"], gpus=1) == "deepspeed_zero2"
    # 26B LoRA: its 52 GB of bf16 weights plus activations overflow one 80 GB card whatever ZeRO does
    # on one GPU; on 2 GPUs ZeRO-3 splits the weights and it fits
    assert deepspeed_for(MODELS["InternVL2-26B"], gpus=1) is None
    assert deepspeed_for(MODELS["InternVL2-26B"], gpus=2) == "deepspeed_zero3"
    assert deepspeed_for(MODELS["InternVL2-26B"], gpus=2, gpu_gib=141) == "deepspeed_zero2"
    assert deepspeed_for(MODELS["InternVL2-8B"], gpus=8, method="full") == "deepspeed_zero2"
    assert deepspeed_for(MODELS["InternVL2-8B"], gpus=2, method="full") is None


def test_lora_trains_far_fewer_parameters_than_full():
    for cfg in MODELS.values():
        assert trainable_parameters(cfg, "lora") < trainable_parameters(cfg, "full") / 10
        lora = training_memory(cfg, "lora", 2, 1)
        full = training_memory(cfg, "full", 2, 1)
        assert lora["optimizer"] < full["optimizer"]


def test_activation_estimate_behaves():
    cfg = MODELS["InternVL2-2B"]
    ckpt = activation_bytes(cfg, 3751, 4, checkpointing=True)
    no_ckpt = activation_bytes(cfg, 3751, 4, checkpointing=False)
    assert ckpt < no_ckpt
    assert activation_bytes(cfg, 3751, 2) < ckpt
    assert activation_bytes(cfg, 3751, 4, freeze_vit=False) > ckpt


def test_models_and_tables():
    assert round(count_parameters(MODELS["InternVL2-26B"])["total"] / 1e9, 1) == 25.5
    rows = memory_table(gpus=(1, 8))
    assert len(rows) == 3 * 2 * 2 * 2
    assert all(r["total"] > 0 for r in rows)
    assert [r["tp"] for r in serving_table(tps=(1, 2))][:2] == [1, 2]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="zero_stage"):
        training_memory(TINY, zero_stage=4)
    with pytest.raises(ValueError, match="method"):
        trainable_parameters(TINY, "qlora")
    with pytest.raises(ValueError, match="tp"):
        serving_memory(TINY, tp=0)
