"""GPU memory per card for fine-tuning (ZeRO-2/3) and serving (LMDeploy tp), from model configs.

Arithmetic only (no torch): every number comes from a config's shapes via
:func:`helpers.concepts.architecture.count_parameters`, so the same formulas hold for the tiny model
(the tests check them against counted parameters) and for InternVL2-2B/8B/26B.

Training (mixed precision as DeepSpeed runs it: bf16 weights and gradients, fp32 master copy
+ Adam m and v for trainable parameters):

* weights: 2 bytes x all parameters (ZeRO-3 splits them over the GPUs);
* gradients: 2 bytes x trainable parameters (ZeRO-2 and 3 split them);
* optimizer: 12 bytes x trainable parameters (fp32 master, m, v; ZeRO-1/2/3 split them);
* activations: an *estimate* per micro-batch (LLM layer outputs kept for backward, or only
  layer inputs with activation checkpointing, plus the logits and the loss' fp32 copy).

Serving: bf16 weights split over ``tp`` GPUs tensor by tensor as LMDeploy 0.18's PyTorch engine
does (:data:`helpers.concepts.tensor_parallel.TP_RULES`: attention and MLP matrices of the LLM *and* of
InternViT are split; embeddings, ``lm_head``, the projector ``mlp1`` and the norms sit whole on
every GPU) and the KV cache, ``2 x layers x kv_heads x head_dim x 2 bytes`` per token, split over
``tp``. :func:`deepspeed_for` picks the ZeRO stage a fine-tune needs on given cards.

Example:
    >>> from helpers.concepts.memory import MODELS, kv_cache_bytes_per_token, training_memory
    >>> kv_cache_bytes_per_token(MODELS["InternVL2-2B"])   # 2 x 24 x 8 x 128 x 2 bytes
    98304
    >>> m = training_memory(MODELS["InternVL2-2B"], method="lora", zero_stage=2, gpus=1)
    >>> round(m["weights"] / 1e9, 1)  # 2.21 B bf16 + 126 M LoRA
    4.7
"""
from __future__ import annotations

from helpers.reference_configs import REFERENCE_CONFIGS
from helpers.concepts.architecture import _as_dict, count_parameters

# InternVL2-26B (OpenGVLab/InternVL2-26B config.json) has InternVL-Chat-V1-5's shapes:
# InternViT-6B-448px-V1-5 + internlm2-chat-20b (vocabulary 92553).
MODELS = {
    "InternVL2-2B": REFERENCE_CONFIGS["InternVL2-2B"],
    "InternVL2-8B": REFERENCE_CONFIGS["InternVL2-8B"],
    "InternVL2-26B": REFERENCE_CONFIGS["InternVL-Chat-V1-5"],
}
GB = 1e9
BF16 = 2  # bytes
ADAM_BYTES = 12  # fp32 master copy + Adam exp_avg + exp_avg_sq per trainable parameter
VIT_TOKENS_PER_TILE = 1025  # (448 / 14)^2 patches + class token
# Bytes per (token, vocabulary entry) of the loss at its peak, in the course's InternLM2 code
# (helpers/internvl/modeling_internlm2.py, as XTuner trains it): the bf16 output of the head (2),
# its fp32 copy kept in the model output (4), the shifted ``logits[:, :-1]`` copy the loss reads
# (4) and the log-softmax saved for backward (4). With 2 + 4 only the estimate fell well under the
# measured peak (MEASURED_PEAKS below; benchmarks/README.md).
LOGIT_BYTES = 14


def _llm_shapes(cfg: dict) -> tuple:
    lc = cfg["llm_config"]
    d = lc["hidden_size"]
    heads = lc["num_attention_heads"]
    kv = lc.get("num_key_value_heads") or heads
    head_dim = lc.get("head_dim") or d // heads
    return d, lc["intermediate_size"], heads, kv, head_dim, lc["num_hidden_layers"], lc["vocab_size"]


def lora_parameters(config, r: int = 128) -> int:
    """LoRA parameters when every linear layer of the LLM gets rank ``r`` (XTuner's default).

    Each ``Linear(in, out)`` adds ``A (r x in)`` and ``B (out x r)``; the output head is left
    out (XTuner excludes ``output``/``lm_head``).

    Example:
        >>> lora_parameters(MODELS["InternVL2-2B"], r=128)
        125829120
    """
    d, ffn, heads, kv, hd, layers, _ = _llm_shapes(_as_dict(config))
    q, k = heads * hd, kv * hd
    per_layer = r * ((d + q + 2 * k) + (q + d) + 2 * (d + ffn) + (ffn + d))  # wqkv, wo, w1, w3, w2
    return layers * per_layer


def trainable_parameters(config, method: str = "lora", lora_r: int = 128, freeze_vit: bool = True) -> int:
    """Parameters the optimizer updates.

    Args:
        config: InternVL config (dict, transformers config or checkpoint dir).
        method: "lora" (LLM frozen + LoRA adapters, projector trained: the course recipe) or
            "full" (LLM and projector trained).
        lora_r: LoRA rank.
        freeze_vit: keep InternViT frozen (the course does in both methods).

    Returns:
        The number of trainable parameters.
    """
    counts = count_parameters(config)
    if method == "lora":
        n = lora_parameters(config, lora_r) + counts["mlp1"]
    elif method == "full":
        n = counts["language_model"] + counts["mlp1"]
    else:
        raise ValueError(f"method must be 'lora' or 'full', got {method!r}")
    return n + (0 if freeze_vit else counts["vision_model"])


def activation_bytes(config, tokens: int, micro_batch: int = 1, checkpointing: bool = True,
                     tiles: int = 13, freeze_vit: bool = True) -> int:
    """Estimated activation memory of one micro-batch (bf16, memory-efficient attention).

    Without checkpointing each LLM layer keeps, per token, its norm/attention/MLP inputs and
    the q/k/v, attention and gated-MLP outputs; with checkpointing only each layer's input
    is kept, plus one layer's full set during its recompute. Logits cost :data:`LOGIT_BYTES`
    a vocabulary entry (bf16 output, fp32 copies for the loss, log-softmax). A frozen ViT keeps
    nothing (no graph); a trained one keeps its layers' tensors like the LLM.

    Returns:
        Bytes (an estimate: allocator fragmentation and temporary buffers come on top).
    """
    cfg = _as_dict(config)
    d, ffn, heads, kv, hd, layers, vocab = _llm_shapes(cfg)
    per_token_layer = BF16 * (4 * d + (heads + 2 * kv) * hd + heads * hd + 4 * ffn)
    n = tokens * micro_batch
    llm = (layers * n * d * BF16 + n * per_token_layer) if checkpointing else layers * n * per_token_layer
    logits = n * vocab * LOGIT_BYTES
    vc = cfg["vision_config"]
    vit_tokens = tiles * micro_batch * VIT_TOKENS_PER_TILE
    vit_layer = vit_tokens * BF16 * (6 * vc["hidden_size"] + 2 * vc["intermediate_size"])
    vit = vit_layer if freeze_vit else vit_layer * vc["num_hidden_layers"]
    return int(llm + logits + vit)


def training_memory(config, method: str = "lora", zero_stage: int = 2, gpus: int = 1, lora_r: int = 128,
                    micro_batch: int = 4, tokens: int = 3751, tiles: int = 13, checkpointing: bool = True,
                    freeze_vit: bool = True) -> dict:
    """Memory per GPU of a DeepSpeed bf16 fine-tune.

    Args:
        config: InternVL config.
        method: "lora" or "full" (see :func:`trainable_parameters`).
        zero_stage: 0 (plain data parallel), 1, 2 or 3.
        gpus: data-parallel GPUs the ZeRO partitions are split over.
        lora_r: LoRA rank.
        micro_batch: samples per GPU per step.
        tokens: tokens per sample (3,751 = 13 tiles x 256 image tokens + text).
        tiles: image tiles per sample (ViT work).
        checkpointing: activation checkpointing on the LLM (XTuner turns it on).
        freeze_vit: InternViT frozen.

    Returns:
        ``{"weights", "gradients", "optimizer", "activations", "total"}`` in bytes, plus
        ``"trainable"`` (parameters).

    Example:
        >>> a = training_memory(MODELS["InternVL2-8B"], "full", zero_stage=2, gpus=8)
        >>> b = training_memory(MODELS["InternVL2-8B"], "full", zero_stage=3, gpus=8)
        >>> b["total"] < a["total"]
        True
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus!r}")
    total_params = count_parameters(config)["total"]
    trainable = trainable_parameters(config, method, lora_r, freeze_vit)
    if method == "lora":
        total_params += lora_parameters(config, lora_r)  # adapters live next to the frozen weights
    out = {
        "weights": BF16 * total_params / (gpus if zero_stage >= 3 else 1),
        "gradients": BF16 * trainable / (gpus if zero_stage >= 2 else 1),
        "optimizer": ADAM_BYTES * trainable / (gpus if zero_stage >= 1 else 1),
        "activations": activation_bytes(config, tokens, micro_batch, checkpointing, tiles, freeze_vit),
    }
    out["total"] = sum(out.values())
    out["trainable"] = trainable
    return out


def deepspeed_for(config, gpus: int, gpu_gib: float = 80.0, method: str = "lora", reserve_gib: float = 4.0,
                  **kwargs) -> str | None:
    """The XTuner DeepSpeed config a fine-tune needs: ZeRO-2 when it fits, else ZeRO-3, else None.

    ZeRO-2 splits gradients and optimizer states over the GPUs but keeps every GPU's full
    copy of the weights; ZeRO-3 splits the weights too, at the price of gathering each layer
    before use (more communication). The smaller stage that fits is the faster one.

    Args:
        config: InternVL config.
        gpus: data-parallel GPUs in all (NPROC_PER_NODE x NNODES).
        gpu_gib: memory of one card.
        method: "lora" or "full".
        reserve_gib: left for the CUDA context, allocator cache and DeepSpeed's buffers.
        **kwargs: :func:`training_memory` arguments (micro_batch, tokens, tiles, checkpointing...).

    Returns:
        ``"deepspeed_zero2"``, ``"deepspeed_zero3"`` or None (neither fits: more GPUs, a smaller
        micro-batch or CPU offload, e.g. XTuner's ``deepspeed_zero3_offload``).

    Example:
        >>> deepspeed_for(MODELS["InternVL2-2B"], gpus=2)
        'deepspeed_zero2'
        >>> deepspeed_for(MODELS["InternVL2-26B"], gpus=8, method="full")
        'deepspeed_zero3'
    """
    budget = (gpu_gib - reserve_gib) * 2**30
    for stage in (2, 3):
        if training_memory(config, method, stage, gpus, **kwargs)["total"] <= budget:
            return f"deepspeed_zero{stage}"
    return None


def kv_cache_bytes_per_token(config, dtype_bytes: int = BF16, tp: int = 1) -> int:
    """KV-cache bytes of one token on one GPU (keys + values of every layer).

    With tensor parallelism the KV heads are split over the GPUs (a head is replicated when
    there are fewer KV heads than GPUs).

    Example:
        >>> kv_cache_bytes_per_token(MODELS["InternVL2-8B"], tp=2)
        65536
    """
    _, _, _, kv, hd, layers, _ = _llm_shapes(_as_dict(config))
    heads_per_gpu = max(1, -(-kv // tp))
    return 2 * layers * heads_per_gpu * hd * dtype_bytes


def serving_weight_bytes(config, tp: int = 1, weight_bytes: float = BF16) -> float:
    """Weight bytes on one GPU of LMDeploy serving with ``tp`` GPUs.

    Each tensor of the checkpoint is classified by :data:`helpers.concepts.tensor_parallel.TP_RULES`
    (what LMDeploy 0.18's PyTorch engine splits): split parts count ``1 / tp``, the rest whole.

    Args:
        config: InternVL config with an InternLM2 LLM (InternVL2-2B/8B/26B).
        tp: tensor-parallel GPUs.
        weight_bytes: bytes per LLM attention / MLP weight (quantized LLM); other tensors bf16.

    Returns:
        Bytes.

    Example:
        >>> round(serving_weight_bytes(MODELS["InternVL2-2B"], tp=1) / 1e9, 2)
        4.41
    """
    from helpers.concepts.tensor_parallel import classify_tensor, reference_tensors

    total = 0.0
    for name, (shape, _) in reference_tensors(_as_dict(config)).items():
        part, split = classify_tensor(name)
        n = 1
        for dim in shape:
            n *= int(dim)
        size = weight_bytes if part.startswith("LLM") and ("注意力" in part or "MLP" in part) else BF16
        total += n * size / (tp if split else 1)
    return total


def serving_memory(config, tp: int = 1, cache_tokens: int = 0, weight_bytes: float = BF16) -> dict:
    """Memory per GPU of LMDeploy serving: weights and the KV cache for ``cache_tokens`` tokens.

    Args:
        config: InternVL config.
        tp: tensor-parallel GPUs (split as :func:`serving_weight_bytes` says).
        cache_tokens: tokens held in the KV cache at once (all running sequences together).
        weight_bytes: bytes per LLM attention / MLP weight (2 for bf16, ~0.5625 for w4a16 with
            group-128 scales); everything else stays bf16.

    Returns:
        ``{"weights", "kv_cache", "total"}`` in bytes and ``"kv_per_token"``.

    Example:
        >>> serving_memory(MODELS["InternVL2-26B"], tp=2)["weights"] < serving_memory(MODELS["InternVL2-26B"], tp=1)["weights"]
        True
    """
    if tp < 1:
        raise ValueError(f"tp must be >= 1, got {tp!r}")
    weights = serving_weight_bytes(config, tp, weight_bytes)
    per_token = kv_cache_bytes_per_token(config, tp=tp)
    out = {"weights": weights, "kv_cache": per_token * cache_tokens, "kv_per_token": per_token}
    out["total"] = out["weights"] + out["kv_cache"]
    return out


def memory_table(models=None, gpus=(1, 2, 4, 8), methods=("lora", "full"), stages=(2, 3),
                 micro_batch: int = 4, tokens: int = 3751) -> list:
    """Rows of per-GPU training memory (GB) for each model x method x ZeRO stage x GPU count.

    Example:
        >>> rows = memory_table(gpus=(1,), methods=("lora",), stages=(2,))
        >>> [r["model"] for r in rows]
        ['InternVL2-2B', 'InternVL2-8B', 'InternVL2-26B']
    """
    rows = []
    for name, cfg in (models or MODELS).items():
        for method in methods:
            for stage in stages:
                for n in gpus:
                    m = training_memory(cfg, method, stage, n, micro_batch=micro_batch, tokens=tokens)
                    rows.append(dict(model=name, method=method, zero=stage, gpus=n,
                                     **{k: round(m[k] / GB, 1) for k in
                                        ("weights", "gradients", "optimizer", "activations", "total")}))
    return rows


def serving_table(models=None, tps=(1, 2, 4), cache_tokens: int = 64 * 2048) -> list:
    """Rows of per-GPU serving memory (GB) for each model x tp, KV cache for ``cache_tokens``.

    Example:
        >>> serving_table(tps=(1,))[0]["kv_kib_per_token"]
        96.0
    """
    rows = []
    for name, cfg in (models or MODELS).items():
        for tp in tps:
            m = serving_memory(cfg, tp, cache_tokens)
            rows.append(dict(model=name, tp=tp, weights=round(m["weights"] / GB, 1),
                             kv_kib_per_token=m["kv_per_token"] / 1024, kv_cache=round(m["kv_cache"] / GB, 1),
                             total=round(m["total"] / GB, 1)))
    return rows


# Peaks measured by benchmarks/bench_finetune.py (InternVL2-2B shape, LoRA, ZeRO-2, activation checkpointing on,
# the peak PyTorch allocated as mmengine logs it), kept here so notebook 05 needs no benchmark output.
MEASURED_PEAKS = (
    dict(source="finetune-20261126-133245-nvidia-h200.json", card="NVIDIA H200", gpus=1, micro_batch=4,
         measured_gib=24.4, tokens=2889, tiles=10.88),
)


def estimate_vs_measured(peaks=MEASURED_PEAKS) -> list:
    """Rows of :func:`training_memory`'s estimate next to each measured peak (notebook 05's check)."""
    rows = []
    for p in peaks:
        est = training_memory(MODELS["InternVL2-2B"], "lora", 2, p["gpus"], micro_batch=p["micro_batch"],
                              tokens=p["tokens"], tiles=p["tiles"])["total"] / 2**30
        rows.append({"结果文件": p["source"], "卡": p["card"], "GPU 数": p["gpus"], "每卡 micro-batch": p["micro_batch"],
                     "实测 GiB": p["measured_gib"], "估算 GiB": round(est, 1),
                     "实测/估算": round(p["measured_gib"] / est, 2)})
    return rows
