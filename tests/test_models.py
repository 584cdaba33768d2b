"""Tests for helpers.models and the remote-code InternVL2 implementation in helpers.internvl.

Run in both environments (transformers 4.48 / 5.x). Shared model: ``tiny_model`` (conftest).
"""
from __future__ import annotations

import copy
import json
import re
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import tokenizer
from helpers import models
from helpers.prompts import build_query  # noqa: E402
from helpers.settings import INTERNVL2_SYSTEM_PROMPT, XTUNER_SYSTEM_PROMPT  # noqa: E402

QUESTION = "图片中的菜叫什么名字?"


def _pv(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 448, 448, generator=g)


def _remote(model, name):
    """The remote-code module (transformers_modules...) that defines ``model``'s class or a sibling."""
    module = sys.modules[type(model).__module__]
    return sys.modules[module.__name__.rsplit(".", 1)[0] + "." + name]


# --------------------------------------------------------------------------- build


def test_build_is_deterministic_and_small(tmp_path, tiny_model_dir, capsys):
    assert models.main(["build-tiny", "--out", str(tmp_path / "a"), "--seed", "0"]) == 0
    assert str(tmp_path / "a") in capsys.readouterr().out
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in names:  # same seed -> byte-identical files, whichever environment built the shared one
        assert (tmp_path / "a" / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    assert sum(p.stat().st_size for p in tiny_model_dir.iterdir()) < 50 * 2**20
    for required in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "generation_config.json", "modeling_internvl_chat.py"):
        assert required in names
    # a second call with the same seed reuses the build; another seed gives other weights
    assert models.build_tiny(tmp_path / "a", seed=0) == tmp_path / "a"
    models.build_tiny(tmp_path / "b", seed=1)
    assert (tmp_path / "b" / "model.safetensors").read_bytes() != (tmp_path / "a" / "model.safetensors").read_bytes()
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() == (tmp_path / "a" / "tokenizer.json").read_bytes()


def test_build_refuses_foreign_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("not a model")
    with pytest.raises(FileExistsError, match="not a tiny build"):
        models.build_tiny(tmp_path / "x")


def test_config_json_has_official_keys(tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "internvl_chat" and cfg["architectures"] == ["InternVLChatModel"]
    assert cfg["auto_map"]["AutoModel"] == "modeling_internvl_chat.InternVLChatModel"
    expected = dict(template="internlm2-chat", force_image_size=448, downsample_ratio=0.5, ps_version="v2",
                    select_layer=-1, dynamic_image_size=True, use_thumbnail=True, min_dynamic_patch=1,
                    max_dynamic_patch=6, use_backbone_lora=0, use_llm_lora=0, torch_dtype="bfloat16")
    assert {k: cfg[k] for k in expected} == expected
    llm, vit = cfg["llm_config"], cfg["vision_config"]
    assert llm["architectures"] == ["InternLM2ForCausalLM"] and llm["model_type"] == "internlm2"
    assert llm["hidden_size"] // llm["num_attention_heads"] == 64  # LMDeploy's CUDA-graph needs head_dim 64
    assert llm["num_attention_heads"] % llm["num_key_value_heads"] == 0 and not llm["tie_word_embeddings"]
    assert vit["model_type"] == "intern_vit_6b" and (vit["image_size"], vit["patch_size"]) == (448, 14)
    for key in ("norm_type", "qk_normalization", "qkv_bias", "layer_norm_eps", "hidden_act", "drop_path_rate"):
        assert key in vit
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    tok = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
    assert gen["eos_token_id"] == [im_end, 2]
    assert llm["vocab_size"] == max(t["id"] for t in tok["added_tokens"]) + 1


# --------------------------------------------------------------------------- loading, names


def test_loads_with_auto_classes(tiny_model_dir):
    kw = {"dtype" if transformers.__version__.startswith("5") else "torch_dtype": torch.float32}
    model, info = transformers.AutoModel.from_pretrained(str(tiny_model_dir), trust_remote_code=True,
                                                         output_loading_info=True, **kw)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(model).__name__ == "InternVLChatModel"
    assert type(model.language_model).__name__ == "InternLM2ForCausalLM"
    assert model.num_image_token == 256 and model.template == "internlm2-chat"
    assert model.system_message == INTERNVL2_SYSTEM_PROMPT
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_model_dir), trust_remote_code=True)
    assert len(tok) == model.config.llm_config.vocab_size


# A fresh process that first unpickles a config (importing the remote module the plain way) and
# then asks transformers for the class by name: transformers runs the module a second time.
# LMDeploy's tensor-parallel workers (mp executor) do exactly this, then pickle the config back.
_RERUN_WORKER = """
import pickle, sys
import transformers.dynamic_module_utils as dynamic
dynamic.init_hf_modules()  # the remote-code cache on sys.path, as a spawned worker inherits it
config = pickle.loads(sys.stdin.buffer.read())
from transformers import AutoConfig
again = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
assert type(again) is not type(config), "transformers did not run the module again: nothing tested"
back = pickle.loads(pickle.dumps(config))
assert back.to_dict() == config.to_dict() and type(back) is type(again)
print("ok")
"""


@pytest.mark.parametrize("checkpoint", ["tiny_model_dir", "replica_dir"])
def test_config_pickles_after_transformers_reruns_its_module(checkpoint, request):
    """LMDeploy's tp workers on the tiny build and on the published layout (through the loading rule)."""
    import copy
    import pickle
    import subprocess

    from helpers.model_dir import runnable_dir

    path = runnable_dir(request.getfixturevalue(checkpoint))
    config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=True)
    assert copy.deepcopy(config).to_dict() == config.to_dict()
    done = subprocess.run([sys.executable, "-c", _RERUN_WORKER, str(path)], input=pickle.dumps(config),
                          capture_output=True, timeout=300)
    assert done.returncode == 0 and done.stdout.decode().strip().endswith("ok"), done.stderr.decode()[-2000:]


PARAM_PATTERNS = [
    r"vision_model\.embeddings\.(class_embedding|position_embedding|patch_embedding\.(weight|bias))",
    r"vision_model\.encoder\.layers\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])\.(weight|bias)",
    r"vision_model\.encoder\.layers\.\d+\.(norm[12]\.(weight|bias)|ls[12])",
    r"mlp1\.[013]\.(weight|bias)",
    r"language_model\.model\.tok_embeddings\.weight",
    r"language_model\.model\.layers\.\d+\.attention\.(wqkv|wo)\.weight",
    r"language_model\.model\.layers\.\d+\.feed_forward\.w[123]\.weight",
    r"language_model\.model\.layers\.\d+\.(attention_norm|ffn_norm)\.weight",
    r"language_model\.model\.norm\.weight",
    r"language_model\.output\.weight",
]


def test_parameter_names_follow_the_official_checkpoint(tiny_model):
    model, _ = tiny_model
    names = [n for n, _ in model.named_parameters()]
    unmatched = [n for n in names if not any(re.fullmatch(p, n) for p in PARAM_PATTERNS)]
    assert not unmatched
    for p in PARAM_PATTERNS:
        assert any(re.fullmatch(p, n) for n in names), p
    cfg = model.config
    shapes = dict(model.named_parameters())
    head_dim = cfg.llm_config.hidden_size // cfg.llm_config.num_attention_heads
    qkv_rows = (cfg.llm_config.num_attention_heads + 2 * cfg.llm_config.num_key_value_heads) * head_dim
    assert shapes["language_model.model.layers.0.attention.wqkv.weight"].shape == (qkv_rows, cfg.llm_config.hidden_size)
    assert shapes["vision_model.embeddings.position_embedding"].shape == (1, 1 + (448 // 14) ** 2,
                                                                           cfg.vision_config.hidden_size)
    assert shapes["mlp1.1.weight"].shape == (cfg.llm_config.hidden_size, 4 * cfg.vision_config.hidden_size)


# --------------------------------------------------------------------------- tokenizer and prompt


def test_tokenizer(tiny_model):
    _, tok = tiny_model
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    text = "川菜，图中的菜是麻婆豆腐。Mapo tofu is from Sichuan! 世界½😀"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok(text, add_special_tokens=False).input_ids == ids[1:]
    for special in tokenizer.ADDED_SPECIAL:
        tid = tok.convert_tokens_to_ids(special)
        assert tok(special, add_special_tokens=False).input_ids == [tid], special
    ctx = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert tok("<img>" + "<IMG_CONTEXT>" * 5 + "</img>", add_special_tokens=False).input_ids.count(ctx) == 5


def test_chat_template_matches_model_prompt(tiny_model):
    model, tok = tiny_model
    messages = [{"role": "user", "content": "<image>\n" + QUESTION}, {"role": "assistant", "content": "川菜"},
                {"role": "user", "content": "它属于哪个菜系?"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt, _ = build_query(model, "它属于哪个菜系?", history=[("<image>\n" + QUESTION, "川菜")])
    assert rendered == prompt
    assert prompt == ("<|im_start|>system\n" + INTERNVL2_SYSTEM_PROMPT + "<|im_end|><|im_start|>user\n<image>\n"
                      + QUESTION + "<|im_end|><|im_start|>assistant\n川菜<|im_end|><|im_start|>user\n它属于哪个菜系?"
                      "<|im_end|><|im_start|>assistant\n")
    with_system = tok.apply_chat_template([{"role": "system", "content": "S"}] + messages[:1], tokenize=False,
                                          add_generation_prompt=True)
    assert with_system.startswith("<|im_start|>system\nS<|im_end|><|im_start|>user\n")


def test_build_query_expands_images(tiny_model):
    model, _ = tiny_model
    prompt, question = build_query(model, QUESTION, [3])
    assert question == "<image>\n" + QUESTION
    assert prompt.count("<IMG_CONTEXT>") == 3 * 256 and prompt.count("<img>") == 1
    assert "<img>" + "<IMG_CONTEXT>" * 768 + "</img>\n" + QUESTION in prompt
    # an explicit <image> is kept where it is; no image -> nothing added
    prompt, question = build_query(model, f"{QUESTION}\n<image>", [1])
    assert question == f"{QUESTION}\n<image>" and prompt.count("<IMG_CONTEXT>") == 256
    assert build_query(model, QUESTION)[1] == QUESTION


# --------------------------------------------------------------------------- inference


def test_chat_with_history(tiny_model):
    model, tok = tiny_model
    pv = _pv(2)
    answer, history = model.chat(tok, pv, QUESTION, dict(max_new_tokens=6), return_history=True)
    assert isinstance(answer, str) and history == [("<image>\n" + QUESTION, answer)]
    answer2, history = model.chat(tok, pv, "它属于哪个菜系?", dict(max_new_tokens=6), history=history,
                                  return_history=True)
    assert isinstance(answer2, str) and len(history) == 2 and history[1][0] == "它属于哪个菜系?"
    assert isinstance(model.chat(tok, None, "你好", dict(max_new_tokens=4)), str)
    with pytest.raises(ValueError, match="num_patches_list"):
        model.chat(tok, pv, QUESTION, dict(max_new_tokens=2), num_patches_list=[3])


def _greedy_ids(model, tok, pv, question, n, **kw):
    prompt, _ = build_query(model, question, [len(pv)] if pv is not None else [])
    enc = tok(prompt, return_tensors="pt")
    return model.generate(pixel_values=pv, input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                          max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id, **kw)


def test_batch_chat_equals_single_chats(tiny_model):
    model, tok = tiny_model
    pv_a, pv_b = _pv(1, seed=1), _pv(2, seed=2)
    questions = [QUESTION, "图片中的食物通常属于哪个菜系? 请用一句话回答。"]
    answers = model.batch_chat(tok, torch.cat([pv_a, pv_b]), questions, dict(max_new_tokens=6),
                               num_patches_list=[1, 2])
    assert answers == [model.chat(tok, pv_a, questions[0], dict(max_new_tokens=6)),
                       model.chat(tok, pv_b, questions[1], dict(max_new_tokens=6))]
    assert tok.padding_side == "right"  # restored after left-padding the batch


def test_generate_with_cache_equals_without(tiny_model):
    model, tok = tiny_model
    pv = _pv(1, seed=3)
    cached = _greedy_ids(model, tok, pv, QUESTION, 12, use_cache=True)
    uncached = _greedy_ids(model, tok, pv, QUESTION, 12, use_cache=False)
    assert cached.shape == (1, 12)
    assert cached.tolist() == uncached.tolist()


def test_generate_stops_at_im_end_by_default(tiny_model):
    model, tok = tiny_model
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert list(model.generation_config.eos_token_id) == [im_end, tok.eos_token_id]

    class ForceImEndThird(transformers.LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] == 2:  # ids generated so far (generation starts from embeddings)
                scores[:] = -1e9
                scores[:, im_end] = 0
            return scores

    prompt, _ = build_query(model, QUESTION, [1])
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(pixel_values=_pv(1), input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                         max_new_tokens=10, logits_processor=transformers.LogitsProcessorList([ForceImEndThird()]))
    assert out.shape == (1, 3) and out[0, -1].item() == im_end
    # chat() also accepts a GenerationConfig object
    answer = model.chat(tok, _pv(1), QUESTION, transformers.GenerationConfig(max_new_tokens=3, do_sample=False))
    assert isinstance(answer, str)


def test_kv_cache_logits_match_full_recompute(tiny_model):
    model, tok = tiny_model
    lm = model.language_model
    ids = tok("川菜，图中的菜是麻婆豆腐。There are three red circles.", return_tensors="pt").input_ids
    with torch.no_grad():
        full = lm(ids, use_cache=False).logits
        out = lm(ids[:, :5], use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values
        for i in range(5, ids.shape[1] - 3):  # one token at a time
            out = lm(ids[:, i:i + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
        out = lm(ids[:, -3:], past_key_values=cache, use_cache=True)  # then several at once
        steps.append(out.logits)
    assert out.past_key_values.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_left_padding_does_not_change_logits(tiny_model):
    model, tok = tiny_model
    lm = model.language_model
    ids = tok("图中有三个红色的圆形，位于左上角。", return_tensors="pt").input_ids
    padded = torch.cat([torch.full((1, 4), tok.pad_token_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones_like(ids)], dim=1)
    with torch.no_grad():
        plain = lm(ids).logits
        left = lm(padded, attention_mask=mask).logits[:, 4:]
    torch.testing.assert_close(left, plain, atol=1e-4, rtol=1e-4)


def test_streaming_through_chat(tiny_model):
    import threading

    model, tok = tiny_model
    streamer = transformers.TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    result = {}
    worker = threading.Thread(target=lambda: result.update(a=model.chat(
        tok, _pv(1), QUESTION, dict(max_new_tokens=8, streamer=streamer))))
    worker.start()
    streamed = "".join(streamer)
    worker.join()
    assert streamed.strip() == result["a"]


# --------------------------------------------------------------------------- training path


def _train_batch(model, tok, tiles=2):
    prompt, _ = build_query(model, QUESTION, [tiles])
    prompt_ids = tok(prompt).input_ids
    answer_ids = tok("川菜，图中的菜是麻婆豆腐<|im_end|>", add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    return ids, labels


def test_forward_with_labels_gives_loss_and_gradients(tiny_model_dir):
    model, tok = models.load_model(tiny_model_dir)
    model.train()
    ids, labels = _train_batch(model, tok)
    pv = _pv(2)
    out = model(pixel_values=pv, input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool),
                position_ids=torch.arange(ids.shape[1])[None], image_flags=torch.ones(2, 1, dtype=torch.long),
                labels=labels)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    assert out.logits.shape == (1, ids.shape[1], model.config.llm_config.vocab_size)
    out.loss.backward()
    for name in ("mlp1.1.weight", "language_model.output.weight", "language_model.model.layers.0.attention.wqkv.weight",
                 "vision_model.encoder.layers.0.attn.qkv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # the loss is the mean next-token cross-entropy over the answer tokens only
    logits = out.logits.detach()[0, :-1]
    targets = labels[0, 1:]
    keep = targets != -100
    ref = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss.detach(), ref)


def test_gradient_checkpointing_and_flash_attention_fallback(tiny_model_dir, caplog):
    """What XTuner does: flash_attention_2 in the config, checkpointing, input grads for LoRA."""
    config = transformers.AutoConfig.from_pretrained(str(tiny_model_dir), trust_remote_code=True)
    config.llm_config.attn_implementation = "flash_attention_2"
    kw = {"dtype" if transformers.__version__.startswith("5") else "torch_dtype": torch.float32}
    model = transformers.AutoModel.from_pretrained(str(tiny_model_dir), config=config, trust_remote_code=True, **kw)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_model_dir), trust_remote_code=True)
    model.img_context_token_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    ids, labels = _train_batch(model, tok, tiles=1)
    pv = _pv(1)
    resolve = _remote(model.language_model, "modeling_internlm2").resolve_attn_implementation
    resolve.cache_clear()
    with caplog.at_level("WARNING"):
        plain = model(pixel_values=pv, input_ids=ids, labels=labels).loss
    if not _has_flash_attn():
        assert sum("flash_attn is not installed" in r.getMessage() for r in caplog.records) == 1
    model.train()
    model.requires_grad_(False)
    model.language_model.gradient_checkpointing_enable()
    model.language_model.enable_input_require_grads()
    assert model.language_model.model.gradient_checkpointing
    wqkv = model.language_model.model.layers[0].attention.wqkv.weight
    wqkv.requires_grad_(True)
    loss = model(pixel_values=pv, input_ids=ids, labels=labels).loss
    loss.backward()
    torch.testing.assert_close(loss.detach(), plain.detach())
    assert wqkv.grad is not None and wqkv.grad.abs().sum() > 0


def _has_flash_attn():
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- layouts shared with LMDeploy


def test_wqkv_rows_are_grouped_per_kv_head():
    """LMDeploy splits wqkv as (kv_heads, q_per_kv + 2, head_dim) rows ("hgd"); attention must agree."""
    from helpers.internvl.configuration_internlm2 import InternLM2Config
    from helpers.internvl.modeling_internlm2 import InternLM2Attention, rotary_cos_sin

    cfg = InternLM2Config(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    attn = InternLM2Attention(cfg, 0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # moderate scale: sharp softmaxes would only test float rounding
        attn.wqkv.weight.copy_(torch.randn(attn.wqkv.weight.shape, generator=g) * 0.1)
    x = torch.randn(1, 6, 128, generator=g)
    pos = torch.arange(6)[None]
    cos, sin = rotary_cos_sin(cfg, pos, 6, torch.float32)
    got, _ = attn(x, None, cos, sin)
    # reference: split the weight the way LMDeploy does, then textbook GQA
    w = attn.wqkv.weight.unflatten(0, (2, -1, 32))
    wq, wk, wv = w[:, :-2].flatten(0, 2), w[:, -2].flatten(0, 1), w[:, -1].flatten(0, 1)
    q, k, v = (x @ m.T for m in (wq, wk, wv))
    q = q.view(1, 6, 4, 32).transpose(1, 2)
    k = k.view(1, 6, 2, 32).transpose(1, 2)
    v = v.view(1, 6, 2, 32).transpose(1, 2)
    rot = _remote_rotate(cos, sin)
    q, k = rot(q), rot(k)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = attn.wo(ref.transpose(1, 2).reshape(1, 6, 128))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def _remote_rotate(cos, sin):
    def rot(t):
        half = t.shape[-1] // 2
        rotated = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
        return t * cos[:, None] + rotated * sin[:, None]
    return rot


def test_pixel_shuffle_matches_lmdeploy(tiny_model):
    pytest.importorskip("lmdeploy")
    from lmdeploy.pytorch.models.internvl import InternVLChatModel as LMDeployInternVL

    model, _ = tiny_model
    x = torch.randn(3, 32, 32, 24)
    ours = model.pixel_shuffle(x, 0.5)
    # LMDeploy's pixel_shuffle does not touch `self`
    theirs = LMDeployInternVL.pixel_shuffle(None, x, scale_factor=0.5)
    assert ours.shape == (3, 16, 16, 96)
    assert torch.equal(ours, theirs)


def test_pixel_shuffle_groups_2x2_neighbours(tiny_model):
    model, _ = tiny_model
    x = torch.arange(4 * 4).float().view(1, 4, 4, 1)  # value = 4 * w + h
    out = model.pixel_shuffle(x, 0.5)
    assert out.shape == (1, 2, 2, 4)
    assert out[0, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # the top-left 2x2 block


# --------------------------------------------------------------------------- vision variants


def test_vision_variants_rms_norm_qk_norm_hidden_states_and_other_sizes():
    from helpers.internvl.configuration_intern_vit import InternVisionConfig
    from helpers.internvl.modeling_intern_vit import InternVisionModel

    cfg = InternVisionConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=3,
                             norm_type="rms_norm", qk_normalization=True, drop_path_rate=0.1)
    vit = InternVisionModel(cfg).eval()
    names = {n for n, _ in vit.named_parameters()}
    assert {"encoder.layers.0.attn.q_norm.weight", "encoder.layers.0.attn.k_norm.weight"} <= names
    assert "encoder.layers.0.norm1.bias" not in names  # RMSNorm has no bias
    out = vit(torch.randn(2, 3, 448, 448), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 1025, 32) and len(out.hidden_states) == 4
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    assert vit(torch.randn(1, 3, 224, 224)).last_hidden_state.shape == (1, 1 + 16 * 16, 32)  # bicubic pos-embeds
    vit.train()
    vit.gradient_checkpointing_enable()
    assert vit.encoder.gradient_checkpointing
    vit(torch.randn(1, 3, 224, 224)).last_hidden_state.sum().backward()
    assert vit.encoder.layers[0].attn.q_norm.weight.grad is not None
    with pytest.raises(ValueError, match="norm_type"):
        InternVisionConfig(norm_type="batch_norm")


# --------------------------------------------------------------------------- save / system prompt


def test_save_pretrained_round_trip(tiny_model, tmp_path):
    model, tok = tiny_model
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    models.copy_remote_code(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["llm_config"]["rope_scaling"] == {"type": "dynamic", "factor": 2.0}
    assert cfg["llm_config"]["attn_implementation"] == "sdpa"
    assert cfg["vision_config"]["norm_type"] == "layer_norm" and cfg["ps_version"] == "v2"
    again, tok2 = models.load_model(tmp_path)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert tok2(QUESTION).input_ids == tok(QUESTION).input_ids
    ids = tok(QUESTION, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again.language_model(ids).logits, model.language_model(ids).logits)


def test_set_system_prompt(tiny_model_dir, tmp_path):
    import shutil

    dst = tmp_path / "m"
    shutil.copytree(tiny_model_dir, dst)
    models.set_system_prompt(dst, XTUNER_SYSTEM_PROMPT)
    model, tok = models.load_model(dst)
    assert model.system_message == XTUNER_SYSTEM_PROMPT
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered == build_query(model, "hi")[0]
    assert XTUNER_SYSTEM_PROMPT in rendered
    with pytest.raises(FileNotFoundError):
        models.set_system_prompt(tmp_path / "nowhere", "x")
    # a tokenizer saved by transformers 5 keeps its template in chat_template.jinja, which wins
    (dst / "chat_template.jinja").write_text(tokenizer.make_chat_template("old"), encoding="utf-8")
    models.set_system_prompt(dst, "新的系统提示")
    tok = transformers.AutoTokenizer.from_pretrained(str(dst), trust_remote_code=True)
    assert "新的系统提示" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_load_model_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        models.load_model(tmp_path)


# --------------------------------------------------------------------------- XTuner compatibility


def test_xtuner_dataset_tokenises_against_tiny_model(tiny_model_dir, tmp_path):
    pytest.importorskip("xtuner")
    from PIL import Image
    from xtuner.dataset import InternVL_V1_5_Dataset
    from xtuner.utils import PROMPT_TEMPLATE

    Image.new("RGB", (900, 500), (200, 100, 50)).save(tmp_path / "a.jpg")
    record = {"image": "a.jpg", "conversations": [{"from": "human", "value": QUESTION + "\n<image>"},
                                                   {"from": "gpt", "value": "川菜，图中的菜是麻婆豆腐"}]}
    (tmp_path / "train.json").write_text(json.dumps([record], ensure_ascii=False))
    template = copy.deepcopy(PROMPT_TEMPLATE.internlm2_chat)  # the dataset edits it; XTuner's own stays as it is
    ds = InternVL_V1_5_Dataset(str(tiny_model_dir), template, str(tmp_path / "train.json"),
                               image_folders=str(tmp_path), max_length=8192)
    item = ds[0]
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_model_dir), trust_remote_code=True)
    tiles = item["pixel_values"].shape[0]
    assert item["pixel_values"].shape[1:] == (3, 448, 448) and tiles > 1
    assert item["input_ids"][0] == tok.bos_token_id
    assert item["input_ids"].count(tok.convert_tokens_to_ids("<IMG_CONTEXT>")) == 256 * tiles
    answer = [t for t in item["labels"] if t != -100]
    assert tok.decode(answer) == "川菜，图中的菜是麻婆豆腐<|im_end|>"
    text = tok.decode([t for t in item["input_ids"] if t != tok.convert_tokens_to_ids("<IMG_CONTEXT>")])
    assert text.startswith("<s><|im_start|>system\n" + XTUNER_SYSTEM_PROMPT + "<|im_end|><|im_start|>user\n<img></img>\n")
