"""What the fusion strategies cost, and one request walked through the real (tiny) InternVL2 step by step (notebook 01)."""
from __future__ import annotations

import math

try:
    import torch
    from torch import nn
except ImportError as exc:  # the whole module is PyTorch modules
    raise ImportError("helpers.concepts.patterns needs torch; install requirements-xtuner.txt") from exc

from helpers.concepts.blocks import GatedCrossAttention, LinearProjector, MLPProjector, QueryResampler
from helpers.concepts.patterns import count_params, splice_visual_tokens
from helpers.concepts.blocks import pixel_shuffle


def strategy_costs(vis_tokens=1024, vis_dim=1024, llm_dim=2048, llm_layers=24, num_queries=32,
                   resampler_dim=768, resampler_depth=12, xattn_every=4) -> list:
    """Visual tokens and new parameters of each alignment strategy at given model sizes.

    The modules are built on the ``meta`` device: shapes and parameter counts, no memory.
    Defaults: InternVL2-2B's sizes (InternViT-300M: 1024 tokens of width 1024 per 448 px tile;
    InternLM2-1.8B: width 2048, 24 layers) and a BLIP-2-sized resampler (32 queries, width 768,
    12 layers).

    Returns:
        Rows ``{"strategy", "models", "tokens_in_sequence", "params"}``.

    Example:
        >>> rows = strategy_costs(vis_tokens=16, vis_dim=8, llm_dim=16, llm_layers=2,
        ...                       resampler_dim=8, resampler_depth=1, num_queries=4)
        >>> [r["tokens_in_sequence"] for r in rows]
        [16, 16, 4, 4, 0]
    """
    heads = max(1, resampler_dim // 64)
    llm_heads = max(1, llm_dim // 128)
    with torch.device("meta"):
        linear = LinearProjector(vis_dim, llm_dim)
        mlp = MLPProjector(vis_dim, llm_dim)
        internvl = MLPProjector(vis_dim, llm_dim, downsample_ratio=0.5)
        resampler = QueryResampler(vis_dim, llm_dim, num_queries, resampler_dim, resampler_depth, heads)
        xattn = GatedCrossAttention(llm_dim, llm_dim, llm_heads)
    n_xattn = math.ceil(llm_layers / xattn_every)
    return [
        dict(strategy="线性投影器", models="LLaVA", tokens_in_sequence=vis_tokens,
             params=count_params(linear)),
        dict(strategy="MLP 投影器", models="LLaVA-1.5", tokens_in_sequence=vis_tokens,
             params=count_params(mlp)),
        dict(strategy="pixel shuffle + MLP", models="InternVL 1.5 / 2", tokens_in_sequence=vis_tokens // 4,
             params=count_params(internvl)),
        dict(strategy="查询重采样器", models="BLIP-2 (Q-Former)", tokens_in_sequence=num_queries,
             params=count_params(resampler)),
        dict(strategy=f"LLM 内交叉注意力（每 {xattn_every} 层 1 个）+ 重采样器",
             models="Flamingo", tokens_in_sequence=0,
             params=count_params(resampler) + n_xattn * count_params(xattn)),
    ]


def model_sizes(config: dict) -> dict:
    """The sizes :func:`strategy_costs` needs, read from an InternVL2 ``config.json`` (as a dict).

    Args:
        config: e.g. ``helpers.reference_configs.REFERENCE_CONFIGS["InternVL2-2B"]``.

    Returns:
        ``{"vis_tokens": patches per tile, "vis_dim": ViT width, "llm_dim": LLM width, "llm_layers": ...}``.

    Example:
        >>> from helpers.reference_configs import REFERENCE_CONFIGS
        >>> model_sizes(REFERENCE_CONFIGS["InternVL2-2B"])
        {'vis_tokens': 1024, 'vis_dim': 1024, 'llm_dim': 2048, 'llm_layers': 24}
    """
    vc, lc = config["vision_config"], config["llm_config"]
    return {"vis_tokens": (vc["image_size"] // vc["patch_size"]) ** 2, "vis_dim": vc["hidden_size"],
            "llm_dim": lc["hidden_size"], "llm_layers": lc["num_hidden_layers"]}


def cost_table(costs: list) -> list:
    """:func:`strategy_costs` rows as notebook 01 shows them: Chinese headers, parameters in millions.

    Example:
        >>> cost_table([dict(strategy="线性投影器", models="LLaVA", tokens_in_sequence=1024, params=2_099_200)])
        [{'策略': '线性投影器', '代表模型': 'LLaVA', '每图块进入 LLM 序列的 token': 1024, '新增参数 (M)': 2.1}]
    """
    return [{"策略": r["strategy"], "代表模型": r["models"], "每图块进入 LLM 序列的 token": r["tokens_in_sequence"],
             "新增参数 (M)": round(r["params"] / 1e6, 1)} for r in costs]


def internvl_walkthrough(model, tokenizer, image, question: str, max_num: int | None = None) -> dict:
    """Follow one image and one question through an InternVL2 model, stage by stage.

    Recomputes by hand what ``model.chat`` does for the first generated token, checking each
    hand-made step against the model's own method where it has one.

    Args:
        model: a loaded InternVL2 model (``helpers.models.load_model``).
        tokenizer: its tokenizer.
        image: a PIL image.
        question: the user's question.
        max_num: most tiles (default: the checkpoint's ``max_dynamic_patch``).

    Returns:
        ``{"stages": [(name, shape), ...], "num_tiles", "num_image_tokens", "prompt_tokens",
        "next_token_id", "next_token"}``.
    """
    from helpers.prompts import build_query
    from helpers.tiling import to_pixel_values

    max_num = max_num or model.config.max_dynamic_patch
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    stages = []
    with torch.no_grad():
        pv = to_pixel_values(image, max_num=max_num, image_size=model.config.force_image_size).to(device, dtype)
        stages.append(("pixel_values (tiles, 3, H, W)", tuple(pv.shape)))
        vit = model.vision_model(pixel_values=pv).last_hidden_state
        stages.append(("InternViT output (tiles, 1 + patches, C_vit)", tuple(vit.shape)))
        patches = vit[:, 1:, :]
        side = math.isqrt(patches.shape[1])
        grid = patches.reshape(patches.shape[0], side, side, -1)
        stages.append(("class token dropped, as a grid (tiles, h, w, C_vit)", tuple(grid.shape)))
        shuffled = pixel_shuffle(grid, model.config.downsample_ratio)
        stages.append(("pixel shuffle (tiles, h/2, w/2, 4*C_vit)", tuple(shuffled.shape)))
        tokens = model.mlp1(shuffled.flatten(1, 2))
        stages.append(("mlp1 -> image tokens (tiles, 256, C_llm)", tuple(tokens.shape)))
        torch.testing.assert_close(tokens, model.extract_feature(pv))  # the model's own path agrees
        prompt, _ = build_query(model, question, [pv.shape[0]])  # public attributes only: any InternVL2 model
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        stages.append(("prompt token ids (1, L)", tuple(ids.shape)))
        context_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        text = model.language_model.get_input_embeddings()(ids)
        stages.append(("token embeddings (1, L, C_llm)", tuple(text.shape)))
        embeds = splice_visual_tokens(ids, text, tokens, context_id)
        stages.append(("<IMG_CONTEXT> rows replaced by image tokens (1, L, C_llm)", tuple(embeds.shape)))
        logits = model.language_model(inputs_embeds=embeds).logits
        stages.append(("LLM logits (1, L, vocab)", tuple(logits.shape)))
        next_id = int(logits[0, -1].argmax())
        model.img_context_token_id = context_id
        generated = model.generate(pixel_values=pv, input_ids=ids, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=1, do_sample=False)
        if int(generated[0, -1]) != next_id:
            raise AssertionError(f"hand-made next token {next_id} != model.generate's {int(generated[0, -1])}")
    return dict(stages=stages, num_tiles=int(pv.shape[0]), num_image_tokens=int((ids == context_id).sum()),
                prompt_tokens=int(ids.shape[1]), next_token_id=next_id,
                next_token=tokenizer.decode([next_id]))
