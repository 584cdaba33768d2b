"""How tensor parallelism cuts InternVL2's weights: tensor classes, a checkpoint's tensors, the reference model's tensors, the split per GPU."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path


# What tp=N does to each tensor of an InternVL2 checkpoint (InternViT + MLP projector + InternLM2)
# in LMDeploy 0.18's PyTorch engine. Read from lmdeploy/pytorch/models/internvl.py (InternAttention
# builds qkv/proj with build_qkv_proj/build_o_proj, InternMLP fc1/fc2 colwise/rowwise with
# is_tp=True; mlp1 is plain nn.Linear), lmdeploy/pytorch/models/internlm2.py (wqkv/wo, gate_up/down
# split; tok_embeddings via build_embedding with is_tp=False) and models/utils/model.py (lm_head via
# build_rowwise_linear without is_tp). (pattern, part, split across GPUs?)
TP_RULES = (
    (r"^vision_model\.embeddings\.", "ViT 嵌入（patch 卷积、位置、class token）", False),
    (r"^vision_model\.encoder\.layers\.\d+\.attn\.(qkv|proj|q_norm|k_norm)\.", "ViT 注意力（按头切分）", True),
    (r"^vision_model\.encoder\.layers\.\d+\.mlp\.fc[12]\.", "ViT MLP（按中间维切分）", True),
    (r"^vision_model\.encoder\.layers\.\d+\.(norm1|norm2)\.|^vision_model\.encoder\.layers\.\d+\.ls[12]$",
     "ViT 层归一化与 layer scale", False),
    (r"^mlp1\.", "MLP 投影器 mlp1", False),
    (r"^language_model\.model\.tok_embeddings\.", "LLM 词嵌入", False),
    (r"^language_model\.model\.layers\.\d+\.attention\.(wqkv|wo)\.", "LLM 注意力（按头切分）", True),
    (r"^language_model\.model\.layers\.\d+\.feed_forward\.w[123]\.", "LLM MLP（按中间维切分）", True),
    (r"^language_model\.model\.layers\.\d+\.(attention_norm|ffn_norm)\.|^language_model\.model\.norm\.",
     "LLM RMSNorm", False),
    (r"^language_model\.output\.", "LLM 输出层 lm_head", False),
)


_DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I32": 4, "I64": 8, "F8_E4M3": 1,
                "F8_E5M2": 1, "BOOL": 1}


def classify_tensor(name: str) -> tuple:
    """``(part, split)`` of one checkpoint tensor under tensor parallelism (see :data:`TP_RULES`).

    Raises:
        ValueError: no rule matches (the message names the tensor).

    Example:
        >>> classify_tensor("mlp1.1.weight")
        ('MLP 投影器 mlp1', False)
    """
    for pattern, part, split in TP_RULES:
        if re.search(pattern, name):
            return part, split
    raise ValueError(f"tensor {name!r}: no TP_RULES pattern matches (not an InternVL2 InternViT/InternLM2 tensor?)")


def checkpoint_tensors(model_dir) -> dict:
    """Name -> (shape, dtype) of every tensor in a checkpoint, read from the safetensors headers only.

    Args:
        model_dir: a directory with ``model.safetensors`` or ``model.safetensors.index.json`` + shards.

    Returns:
        ``{name: (shape tuple, dtype string)}``.

    Raises:
        FileNotFoundError: no safetensors file in the directory.
        ValueError: a header that is not valid safetensors (names the file).

    Example:
        >>> len(checkpoint_tensors("artifacts/models/internvl2-tiny")) > 0   # doctest: +SKIP
        True
    """
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors (or index) in {model_dir}")
    tensors = {}
    for name in files:
        path = model_dir / name
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError(f"{path}: too short to be a safetensors file")
            size = struct.unpack("<Q", raw)[0]
            try:
                header = json.loads(fh.read(size))
            except ValueError as exc:
                raise ValueError(f"{path}: unreadable safetensors header ({exc})") from exc
        for key, info in header.items():
            if key != "__metadata__":
                tensors[key] = (tuple(info["shape"]), info["dtype"])
    return tensors


def _config_dict(config) -> dict:
    if isinstance(config, (str, Path)):
        path = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"no config.json at {path}")
        return json.loads(path.read_text(encoding="utf-8"))
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def reference_tensors(config, dtype: str = "BF16") -> dict:
    """The tensors an InternVL2 config implies (InternViT + mlp1 + InternLM2), as checkpoint_tensors returns.

    Lets :func:`tp_split` tabulate a model that is not on disk, e.g. InternVL2-2B from
    ``REFERENCE_CONFIGS``.

    Args:
        config: a config.json dict, a transformers config or a checkpoint directory.
        dtype: dtype string to record (safetensors spelling).

    Returns:
        ``{name: (shape, dtype)}``.

    Raises:
        NotImplementedError: the LLM is not InternLM2.

    Example:
        >>> t = reference_tensors(REFERENCE_CONFIGS["InternVL2-2B"])
        >>> t["mlp1.1.weight"][0]
        (2048, 4096)
    """
    cfg = _config_dict(config)
    vc, lc = cfg["vision_config"], cfg["llm_config"]
    arch = (lc.get("architectures") or ["?"])[0]
    if arch != "InternLM2ForCausalLM":
        raise NotImplementedError(f"llm_config.architectures[0]={arch!r}: only InternLM2 is listed")
    t = {}

    def add(name, *shape):
        t[name] = (tuple(shape), dtype)

    c, ffn, p = vc["hidden_size"], vc["intermediate_size"], vc["patch_size"]
    add("vision_model.embeddings.class_embedding", 1, 1, c)
    add("vision_model.embeddings.patch_embedding.weight", c, 3, p, p)
    add("vision_model.embeddings.patch_embedding.bias", c)
    add("vision_model.embeddings.position_embedding", 1, (vc["image_size"] // p) ** 2 + 1, c)
    layer_norm = vc.get("norm_type", "rms_norm") == "layer_norm"
    for i in range(vc["num_hidden_layers"]):
        pre = f"vision_model.encoder.layers.{i}."
        add(pre + "attn.qkv.weight", 3 * c, c)
        if vc.get("qkv_bias", False):
            add(pre + "attn.qkv.bias", 3 * c)
        if vc.get("qk_normalization", False):
            add(pre + "attn.q_norm.weight", c)
            add(pre + "attn.k_norm.weight", c)
        add(pre + "attn.proj.weight", c, c)
        add(pre + "attn.proj.bias", c)
        add(pre + "mlp.fc1.weight", ffn, c)
        add(pre + "mlp.fc1.bias", ffn)
        add(pre + "mlp.fc2.weight", c, ffn)
        add(pre + "mlp.fc2.bias", c)
        for norm in ("norm1", "norm2"):
            add(pre + norm + ".weight", c)
            if layer_norm:
                add(pre + norm + ".bias", c)
        add(pre + "ls1", c)
        add(pre + "ls2", c)
    c_in, d = c * round(1 / cfg.get("downsample_ratio", 0.5)) ** 2, lc["hidden_size"]
    add("mlp1.0.weight", c_in)
    add("mlp1.0.bias", c_in)
    add("mlp1.1.weight", d, c_in)
    add("mlp1.1.bias", d)
    add("mlp1.3.weight", d, d)
    add("mlp1.3.bias", d)
    heads, kv = lc["num_attention_heads"], lc.get("num_key_value_heads") or lc["num_attention_heads"]
    head_dim, f, vocab = lc.get("head_dim") or d // heads, lc["intermediate_size"], lc["vocab_size"]
    add("language_model.model.tok_embeddings.weight", vocab, d)
    for i in range(lc["num_hidden_layers"]):
        pre = f"language_model.model.layers.{i}."
        add(pre + "attention.wqkv.weight", (heads + 2 * kv) * head_dim, d)
        add(pre + "attention.wo.weight", d, heads * head_dim)
        add(pre + "feed_forward.w1.weight", f, d)
        add(pre + "feed_forward.w3.weight", f, d)
        add(pre + "feed_forward.w2.weight", d, f)
        add(pre + "attention_norm.weight", d)
        add(pre + "ffn_norm.weight", d)
    add("language_model.model.norm.weight", d)
    if not lc.get("tie_word_embeddings", False):
        add("language_model.output.weight", vocab, d)
    return t


def tp_split(tensors, tp: int = 2, dtype_bytes: int | None = None) -> list:
    """Per part of the model: parameters, whether tp splits it, and what one GPU holds.

    Args:
        tensors: a checkpoint directory, or ``{name: (shape, dtype)}`` from :func:`checkpoint_tensors`
            / :func:`reference_tensors`.
        tp: number of GPUs.
        dtype_bytes: bytes per parameter (default: each tensor's own dtype).

    Returns:
        Rows ``{"部分", "参数量", "tp 切分", "每卡参数量", "每卡 MiB"}`` in :data:`TP_RULES` order,
        then a ``合计`` row. Split parts are divided by ``tp`` (rounded up), the rest counted whole.

    Raises:
        ValueError: tp < 1, or a tensor no rule matches.

    Example:
        >>> rows = tp_split(reference_tensors(REFERENCE_CONFIGS["InternVL2-2B"]), tp=2)
        >>> rows[-1]["部分"]
        '合计'
    """
    if int(tp) < 1:
        raise ValueError(f"tp must be >= 1, got {tp}")
    if not isinstance(tensors, dict):
        tensors = checkpoint_tensors(tensors)
    parts = {part: [0, 0.0, split] for _, part, split in TP_RULES}  # params, bytes, split
    for name, (shape, dtype) in tensors.items():
        part, _ = classify_tensor(name)
        n = 1
        for dim in shape:
            n *= int(dim)
        parts[part][0] += n
        size = dtype_bytes if dtype_bytes is not None else _DTYPE_BYTES.get(dtype)
        if size is None:
            raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
        parts[part][1] += n * size
    rows, total, total_gpu, total_bytes = [], 0, 0, 0.0
    for part, (n, nbytes, split) in parts.items():
        if n == 0:
            continue
        per_gpu = -(-n // tp) if split else n
        per_gpu_bytes = nbytes / tp if split else nbytes
        rows.append({"部分": part, "参数量": n, "tp 切分": "切分" if split else "每卡一份",
                     "每卡参数量": per_gpu, "每卡 MiB": round(per_gpu_bytes / 2**20, 2)})
        total, total_gpu, total_bytes = total + n, total_gpu + per_gpu, total_bytes + per_gpu_bytes
    rows.append({"部分": "合计", "参数量": total, "tp 切分": f"tp={tp}", "每卡参数量": total_gpu,
                 "每卡 MiB": round(total_bytes / 2**20, 2)})
    return rows
