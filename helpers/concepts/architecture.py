"""InternVL's architecture as data and arithmetic (notebook 02).

* :data:`REFERENCE_CONFIGS`: the size-defining fields of four public checkpoints' config.json.
* :func:`count_parameters`: parameters of an InternVL checkpoint from its config alone, per part
  (``vision_model``, ``mlp1``, ``language_model``). The same function counts the tiny model, and
  the tests check it against ``sum(p.numel())`` of the instantiated model.
* :data:`INTERNVL_1_5`: the facts of the InternVL 1.5 report the notebook tabulates.
* :func:`token_budget`: how much of a training sample's ``max_length`` the image takes.

Example:
    >>> counts = count_parameters(REFERENCE_CONFIGS["InternVL2-2B"])
    >>> round(counts["total"] / 1e9, 2)
    2.21
    >>> tokens_per_tile(REFERENCE_CONFIGS["InternVL2-2B"])
    256
"""
from __future__ import annotations

import json
from pathlib import Path

from helpers.reference_configs import PUBLISHED_SIZES_B, REFERENCE_CONFIGS

# The InternVL 1.5 report (arXiv 2404.16821), its blog post and the InternViT-6B-448px-V1-2 /
# V1-5 model cards, as data: the notebook renders its tables from here.
INTERNVL_1_5 = dict(
    model="InternVL-Chat-V1-5",
    vision_encoder="InternViT-6B-448px-V1-5",
    llm="InternLM2-20B-Chat",
    projector="MLP (randomly initialised), after a 0.5 pixel shuffle",
    vit_layers_original=48,
    vit_layers_kept=45,  # the output after the 4th-to-last block worked best, so the last 3 were cut
    vit_params_m=5540,
    train_tiles=(1, 12),  # dynamic 448 px tiles during training
    test_tiles_max=40,  # zero-shot at test time: up to 40 tiles (4K)
    tokens_per_tile=256,
    vit_history=[
        dict(version="InternViT-6B-224px", resolution="224 px", llm="-",
             training="InternVL 1.0 对比学习 + 生成式学习"),
        dict(version="InternViT-6B-448px-V1-2", resolution="224 -> 448 px", llm="Nous-Hermes-2-Yi-34B",
             training="ViT + MLP 一起训练，图像描述 + OCR 数据"),
        dict(version="InternViT-6B-448px-V1-5", resolution="动态 448 px，1-12 块", llm="InternLM2-20B-Chat",
             training="在 V1-2 基础上继续预训练，数据更多、更多样"),
    ],
    stages=[
        dict(stage="阶段 1：预训练", trainable="InternViT-6B + MLP", frozen="InternLM2-20B",
             data="图文数据：描述、检测、OCR"),
        dict(stage="阶段 2：微调", trainable="全部 (25.5B)", frozen="-",
             data="多任务指令数据（见下表）"),
    ],
    stage1_mix_percent={"captioning": 53.9, "OCR": 40.9, "detection": 5.2},
    stage1_ocr_split_percent={"OCR (large)": 32.0, "OCR (small)": 8.9},
    stage2_task_families=[
        "captioning", "general QA", "science", "chart", "mathematics", "knowledge",
        "OCR", "document", "grounding", "conversation", "text-only",
    ],
    portability=("InternViT-6B-448px-V1-2 was trained together with Nous-Hermes-2-Yi-34B; InternVL 1.5 "
                 "connected it (continued as V1-5) to a different LLM, InternLM2-20B-Chat, and it kept "
                 "working: a vision encoder trained this way transfers across LLMs."),
)


def _as_dict(config) -> dict:
    """A config dict, a transformers config object, or a checkpoint directory -> plain dict."""
    if isinstance(config, (str, Path)):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no config.json at {path}")
        return json.loads(path.read_text(encoding="utf-8"))
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if not isinstance(config, dict):
        raise TypeError(f"expected a dict, a transformers config or a path, got {type(config).__name__}")
    return config


def _need(cfg: dict, key: str, where: str):
    if key not in cfg:
        raise KeyError(f"{where} has no field {key!r}")
    return cfg[key]


def vision_parameters(vc: dict) -> int:
    """Parameters of InternViT from its ``vision_config`` (embeddings + layers; no final norm).

    Example:
        >>> round(vision_parameters(_INTERNVIT_6B_V1_5) / 1e9, 2)  # model card: 5540 M
        5.54
    """
    c = _need(vc, "hidden_size", "vision_config")
    ffn = _need(vc, "intermediate_size", "vision_config")
    patch = _need(vc, "patch_size", "vision_config")
    positions = (_need(vc, "image_size", "vision_config") // patch) ** 2 + 1  # patches + class token
    norm = 2 * c if vc.get("norm_type", "rms_norm") == "layer_norm" else c  # LayerNorm has a bias
    layer = (
        2 * norm  # norm1, norm2
        + c * 3 * c + (3 * c if vc.get("qkv_bias", False) else 0)  # fused qkv
        + (2 * c if vc.get("qk_normalization", False) else 0)  # q_norm, k_norm (RMSNorm over all heads)
        + c * c + c  # proj
        + c * ffn + ffn + ffn * c + c  # fc1, fc2
        + 2 * c  # layer scale ls1, ls2
    )
    embeddings = c + (3 * patch * patch * c + c) + positions * c  # class token, patch conv, positions
    return embeddings + _need(vc, "num_hidden_layers", "vision_config") * layer


def llm_parameters(lc: dict) -> int:
    """Parameters of the language model from its ``llm_config``.

    Supports InternLM2 (fused ``wqkv``), Qwen2 (q/k/v with bias) and LLaMA layouts.

    Example:
        >>> round(llm_parameters(REFERENCE_CONFIGS["InternVL-Chat-V1-5"]["llm_config"]) / 1e9, 2)
        19.86
    """
    arch = (lc.get("architectures") or ["?"])[0]
    d = _need(lc, "hidden_size", "llm_config")
    ffn = _need(lc, "intermediate_size", "llm_config")
    heads = _need(lc, "num_attention_heads", "llm_config")
    kv = lc.get("num_key_value_heads") or heads
    head_dim = lc.get("head_dim") or d // heads
    vocab = _need(lc, "vocab_size", "llm_config")
    q_out, kv_out = heads * head_dim, kv * head_dim
    if arch == "InternLM2ForCausalLM":
        bias = bool(lc.get("bias", False))
        attn = d * (q_out + 2 * kv_out) + q_out * d + ((q_out + 2 * kv_out) + d if bias else 0)
    elif arch == "Qwen2ForCausalLM":
        attn = d * (q_out + 2 * kv_out) + (q_out + 2 * kv_out) + q_out * d  # q/k/v biased, o not
    elif arch == "LlamaForCausalLM":
        bias = bool(lc.get("attention_bias", False))
        attn = d * (q_out + 2 * kv_out) + q_out * d + ((q_out + 2 * kv_out) + d if bias else 0)
    else:
        raise NotImplementedError(f"llm_config.architectures[0]={arch!r}: only InternLM2, Qwen2 and Llama are counted")
    layer = attn + 3 * d * ffn + 2 * d  # gated MLP (3 matrices, no bias) + 2 RMSNorms
    embed = vocab * d
    head = 0 if lc.get("tie_word_embeddings", False) else vocab * d
    return embed + _need(lc, "num_hidden_layers", "llm_config") * layer + d + head


def projector_parameters(config) -> int:
    """Parameters of ``mlp1``: LayerNorm(4C) -> Linear(4C, D) -> GELU -> Linear(D, D)."""
    cfg = _as_dict(config)
    ratio = cfg.get("downsample_ratio", 0.5)
    c_in = _need(cfg["vision_config"], "hidden_size", "vision_config") * round(1 / ratio) ** 2
    d = _need(cfg["llm_config"], "hidden_size", "llm_config")
    return 2 * c_in + (c_in * d + d) + (d * d + d)


def count_parameters(config) -> dict:
    """Parameters of an InternVL checkpoint, per part, from its config alone.

    Args:
        config: a config.json dict, a transformers ``InternVLChatConfig``, or a checkpoint dir.

    Returns:
        ``{"vision_model": n, "mlp1": n, "language_model": n, "total": n}``.

    Example:
        >>> count_parameters(REFERENCE_CONFIGS["InternVL-Chat-V1-5"])["mlp1"]
        116429824
    """
    cfg = _as_dict(config)
    parts = {
        "vision_model": vision_parameters(_need(cfg, "vision_config", "config")),
        "mlp1": projector_parameters(cfg),
        "language_model": llm_parameters(_need(cfg, "llm_config", "config")),
    }
    parts["total"] = sum(parts.values())
    return parts


def module_parameters(model) -> dict:
    """The same split as :func:`count_parameters`, by ``sum(p.numel())`` of a loaded model.

    Example:
        >>> module_parameters(model) == count_parameters(model.config)  # doctest: +SKIP
        True
    """
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("vision_model", "mlp1", "language_model")}
    parts["total"] = sum(p.numel() for p in model.parameters())
    return parts


def parameter_table(configs: dict | None = None) -> list:
    """Rows (millions of parameters) for several configs; published sizes where known.

    Args:
        configs: ``{name: config}``; default :data:`REFERENCE_CONFIGS`.

    Returns:
        Rows ``{"model", "ViT (M)", "MLP (M)", "LLM (M)", "total (M)", "published (B)"}``.
    """
    rows = []
    for name, cfg in (configs or REFERENCE_CONFIGS).items():
        n = count_parameters(cfg)
        rows.append({
            "model": name, "ViT (M)": round(n["vision_model"] / 1e6, 2), "MLP (M)": round(n["mlp1"] / 1e6, 2),
            "LLM (M)": round(n["language_model"] / 1e6, 2), "total (M)": round(n["total"] / 1e6, 2),
            "published (B)": PUBLISHED_SIZES_B.get(name, "-"),
        })
    return rows


def tokens_per_tile(config) -> int:
    """``<IMG_CONTEXT>`` tokens per 448 px tile: (image_size/patch)^2 * downsample_ratio^2."""
    cfg = _as_dict(config)
    size = cfg.get("force_image_size") or cfg["vision_config"]["image_size"]
    patches = (size // cfg["vision_config"]["patch_size"]) ** 2
    return int(patches * cfg.get("downsample_ratio", 0.5) ** 2)


def token_budget(max_length: int = 8192, tiles=range(1, 14), per_tile: int = 256) -> list:
    """How much of one training sample's ``max_length`` an image of N tiles takes.

    Each image is ``<img>`` + N*per_tile ``<IMG_CONTEXT>`` + ``</img>``.

    Returns:
        Rows ``{"tiles", "image_tokens", "share_percent", "left_for_text"}``.

    Example:
        >>> token_budget(8192, [13])[0]
        {'tiles': 13, 'image_tokens': 3330, 'share_percent': 40.6, 'left_for_text': 4862}
    """
    rows = []
    for n in tiles:
        used = n * per_tile + 2
        rows.append(dict(tiles=n, image_tokens=used, share_percent=round(100 * used / max_length, 1),
                         left_for_text=max_length - used))
    return rows


def markdown_table(rows: list, columns: list | None = None) -> str:
    """A Markdown table from a list of dicts (render with ``IPython.display.Markdown``).

    Example:
        >>> print(markdown_table([{"a": 1, "b": "x"}]))
        | a | b |
        |---|---|
        | 1 | x |
    """
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def show(rows: list, columns: list | None = None) -> None:
    """Display rows as a Markdown table in a notebook (:func:`markdown_table`).

    Args:
        rows: a list of dicts, one per row.
        columns: the columns in order (default: the first row's keys).

    Example:
        >>> show([{"部分": "mlp1", "参数": "0.02M"}])   # doctest: +SKIP
    """
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(rows, columns)))


def v15_component_table(config: dict | None = None) -> list:
    """Notebook 02's table of InternVL 1.5: each part's model, structure and parameters (Chinese headers).

    Args:
        config: an InternVL-Chat-V1-5 config dict (default: the published one in :data:`REFERENCE_CONFIGS`).

    Returns:
        Rows with 部分, 模型, 结构, 参数: vision encoder, projector, language model and the total.

    Example:
        >>> v15_component_table()[-1]["参数"]
        '25.51B'
    """
    config = config or REFERENCE_CONFIGS["InternVL-Chat-V1-5"]
    counts, vc, lc = count_parameters(config), config["vision_config"], config["llm_config"]
    return [
        {"部分": "视觉编码器", "模型": INTERNVL_1_5["vision_encoder"],
         "结构": f"{vc['num_hidden_layers']} 层，宽 {vc['hidden_size']}，patch {vc['patch_size']}，输入 {vc['image_size']} px",
         "参数": f"{counts['vision_model'] / 1e9:.2f}B"},
        {"部分": "投影器 mlp1", "模型": "MLP",
         "结构": f"LayerNorm({4 * vc['hidden_size']}) → Linear → GELU → Linear({lc['hidden_size']})",
         "参数": f"{counts['mlp1'] / 1e6:.2f}M"},
        {"部分": "语言模型", "模型": INTERNVL_1_5["llm"],
         "结构": f"{lc['num_hidden_layers']} 层，宽 {lc['hidden_size']}，词表 {lc['vocab_size']}",
         "参数": f"{counts['language_model'] / 1e9:.2f}B"},
        {"部分": "合计", "模型": INTERNVL_1_5["model"], "结构": "", "参数": f"{counts['total'] / 1e9:.2f}B"},
    ]


def tiling_table(sizes, max_nums=(6, 12)) -> list:
    """Notebook 02's table of dynamic tiling: for each photo size and tile limit, the grid, tiles and image tokens.

    Args:
        sizes: ``(width, height)`` pairs.
        max_nums: tile limits to compare (one row per size and limit).

    Returns:
        Rows with 照片, 宽/高, max_num, 网格 列x行, 图块(含缩略图), 视觉 token.

    Example:
        >>> tiling_table([(800, 600)], max_nums=(6,))[0]["网格 列x行"]
        '3x2'
    """
    from helpers.tiling import choose_grid, image_tokens, tile_count

    rows = []
    for w, h in sizes:
        for max_num in max_nums:
            cols, rws = choose_grid(w, h, max_num=max_num)
            rows.append({"照片": f"{w}x{h}", "宽/高": round(w / h, 2), "max_num": max_num, "网格 列x行": f"{cols}x{rws}",
                         "图块(含缩略图)": tile_count(w, h, max_num=max_num),
                         "视觉 token": image_tokens(w, h, max_num=max_num)})
    return rows


def demo_max_num(settings) -> int:
    """The tile limit notebook 02's tiling demos use: the checkpoint's own.

    InternVL2-2B's ``max_dynamic_patch`` (12) in the full profile; in the tiny profile the tiny
    checkpoint's (6), not the base model's 1 tile per image, which is a CPU choice, not InternVL's.

    Args:
        settings: course settings.

    Returns:
        The tile limit.

    Example:
        >>> from helpers.settings import get_settings
        >>> demo_max_num(get_settings("tiny")) in (6, 12)   # doctest: +SKIP
        True
    """
    if settings.profile == "full":
        return settings.max_dynamic_patch
    return json.loads((Path(settings.tiny_model_path) / "config.json").read_text(encoding="utf-8"))["max_dynamic_patch"]
