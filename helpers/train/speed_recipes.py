"""Ways to run the course's LoRA fine-tune faster or in less GPU memory, with the same maths.

Every recipe here keeps what the model learns from: the global batch (8 samples per optimizer
step), the optimizer, learning-rate schedule, LoRA and data. Only how a step is computed changes:
the micro-batch (with the gradient accumulation that keeps the batch), whether the LLM's
activations are recomputed in backward, the AdamW kernel, whether the LM head's matmuls run
through weights padded to an aligned row count (the same logits), whether the LM head and loss
run only where a token has a label (the same loss), and whether RMSNorm and SwiGLU run as fused
Triton kernels (liger-kernel).

=============  ==================  =============  ======================  ======  ===========================
recipe         micro-batch x acc.  checkpointing  LM head                 fused   for
=============  ==================  =============  ======================  ======  ===========================
course         4 x 2               on             as is                   no      the upstream recipe as it is
recommended    4 x 2               off            aligned, labelled only  liger   an 80 GB card: the fastest
balanced       2 x 4               off            aligned, labelled only  liger   a 40-48 GB card
lean           1 x 8               on             labelled only           no      a 24 GB card: the least memory
=============  ==================  =============  ======================  ======  ===========================

``benchmarks/bench_finetune.py`` measures them side by side at InternVL2-2B size; the measured speed and
memory are in ``benchmarks/README.md``.

Example:
    >>> from pathlib import Path
    >>> from helpers.settings import get_settings
    >>> S = speed_settings(get_settings("full", model_path=Path("internvl2-2b")), "lean")
    >>> (S.batch_size, S.accumulative_counts, S.llm_activation_checkpointing)
    (1, 8, True)
"""
from __future__ import annotations

from helpers.settings import Settings

# The levers of the fastest recipes (each one keeps the maths; SPEED_REASONS says why).
_EVERY_LEVER = dict(llm_activation_checkpointing=False, fused_adamw=True, aligned_lm_head=True, answer_only_lm_head=True,
                    fused_kernels=True)
# micro_batch: "half" or "one" of the profile's micro-batch; accumulation makes up the rest of
# the global batch (course recipe: 4 x 2 -> 2 x 4 or 1 x 8).
SPEED_RECIPES = {
    "course": {},  # the upstream recipe as it is
    "recommended": dict(_EVERY_LEVER),
    "balanced": dict(_EVERY_LEVER, micro_batch="half"),  # less activation memory, for a smaller card
    "lean": dict(micro_batch="one", answer_only_lm_head=True),
}

# Why each value differs from the course recipe; written into the rendered config.
SPEED_REASONS = {
    "batch_size": "smaller micro-batch, same global batch (x accumulation): fewer activations held at once",
    "accumulative_counts": "keeps the global batch of the course recipe with the smaller micro-batch",
    "llm_activation_checkpointing": "no second forward of the LLM in backward: faster, at the cost of holding the "
                                    "activations (the labelled-only LM head frees part of that memory)",
    "fused_adamw": "one CUDA kernel for the whole AdamW update",
    "answer_only_lm_head": "the LM head and the loss only at the positions that carry a label: the same loss and "
                           "gradients, without the (batch x length x 92,553) fp32 logits",
    "fused_kernels": "liger-kernel's fused RMSNorm and SwiGLU on the LLM: the same maths in fewer kernels (CUDA)",
    "aligned_lm_head": "the 92,553-row LM head (and its LoRA B) through weights padded to 64 rows: the same logits, "
                       "aligned tensor-core matmuls instead of a slow fallback kernel",
}


def speed_settings(settings: Settings, name: str) -> Settings:
    """``settings`` with speed recipe ``name`` applied (global batch and maths unchanged).

    Args:
        settings: course settings.
        name: a key of :data:`SPEED_RECIPES` ("course", "recommended", "balanced", "lean").

    Returns:
        New settings (the input is not changed).

    Raises:
        ValueError: unknown recipe.
    """
    if name not in SPEED_RECIPES:
        raise ValueError(f"speed recipe {name!r}: choose one of {', '.join(SPEED_RECIPES)}")
    knobs = dict(SPEED_RECIPES[name])
    total = settings.batch_size * settings.accumulative_counts
    micro = {"half": max(1, settings.batch_size // 2), "one": 1, None: settings.batch_size}[knobs.pop("micro_batch", None)]
    if total % micro:
        raise ValueError(f"speed recipe {name!r}: micro-batch {micro} does not divide the global batch {total}")
    return settings.replace(batch_size=micro, accumulative_counts=total // micro, **knobs)


def speed_reasons(name: str | None = None) -> dict:
    """Reasons for the config comments: the profile's own (CPU) ones, then those of speed recipe ``name``.

    With ``name`` = "course" (the recipe as it is) only the profile's reasons apply: a CPU profile's
    smaller accumulation is its own choice, not a speed recipe keeping the global batch.
    ``None`` keeps every speed reason (as before).
    """
    from helpers.train.xtuner_config import OVERRIDE_REASONS

    if name is not None and not SPEED_RECIPES.get(name):
        return dict(OVERRIDE_REASONS)
    return {**OVERRIDE_REASONS, **SPEED_REASONS}


MEASURED_TABLE = "docs/measured/finetune-recipes.json"  # written by `python benchmarks/report.py --publish`


def _read_measured(path=None) -> dict | None:
    """The published table (default :data:`MEASURED_TABLE` in the repository), or None when it is not there."""
    import json

    from helpers.settings import REPO_ROOT

    path = REPO_ROOT / MEASURED_TABLE if path is None else path
    try:
        return json.loads(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        return None


def measured_speed_table(path=None):
    """The speed recipes as measured at InternVL2-2B size on a GPU, as a table for notebook 05.

    Args:
        path: the published table (default :data:`MEASURED_TABLE` in the repository).

    Returns:
        ``(table, caption)``: a pandas DataFrame with Chinese headers (one row per recipe) and a
        sentence naming the card, the sample shape and the results file; ``(None, reason)`` when
        no GPU measurement has been published.

    Example:
        >>> table, caption = measured_speed_table()
        >>> list(table["SPEED"]) if table is not None else caption   # doctest: +SKIP
        ['course', 'recommended', 'balanced', 'lean']
    """
    import pandas as pd

    data = _read_measured(path)
    if data is None:
        return None, f"还没有发布 GPU 实测（{MEASURED_TABLE} 不存在）"
    rounds = max(r.get("rounds", 1) for r in data["rows"])
    table = pd.DataFrame([{
        "SPEED": r["recipe"], "micro-batch × 累积": f"{r['batch']} × {r['accum']}",
        "相对上游的样本/秒": r["speedup"],
        # several rounds: the median above, each round's ratio against its own upstream within this range
        **({f"{rounds} 轮的范围": "{:.2f}–{:.2f}".format(*r["speedup_range"])} if rounds > 1 else {}),
        "nvidia-smi 峰值 (GiB)": r["smi_peak_gib"], "640 步预计用时 (分钟)": r["job_640_min"]} for r in data["rows"]])
    caption = (f"{data['card']}，InternVL2-2B 形状、随机权重，每条样本平均 {data['tiles']:.1f} 个图块、约 "
               f"{data['tokens']:,} 个 token，每个配方 {data['iters']} 步"
               + (f"，共 {rounds} 轮（取中位数）" if rounds > 1 else "") + f"；数据：{data['source']}")
    return table, caption


CARD_HEADROOM = 0.1  # share of the card kept free beyond a recipe's measured peak (another process, fragmentation)


def pick_speed_recipe(device: str, card_gib: float | None = None, path=None) -> tuple:
    """Notebook 05's default: the fastest speed recipe whose measured peak fits this card.

    The measured table (:data:`MEASURED_TABLE`, InternVL2-2B shapes) gives each recipe's speed
    against the upstream launch and its nvidia-smi peak; a recipe fits when its peak leaves
    :data:`CARD_HEADROOM` of the card free. On a CPU the course recipe runs as it is (the speed
    recipes are CUDA levers).

    Args:
        device: "cuda" or "cpu" (``Settings.device``).
        card_gib: the card's memory in GiB; None reads GPU 0 through torch.
        path: the measured table (default: the committed one).

    Returns:
        ``(name, reason)``: a key of :data:`SPEED_RECIPES` and one Chinese sentence saying why.

    Example:
        >>> pick_speed_recipe("cpu")[0]
        'course'
    """
    if device != "cuda":
        return "course", "CPU：按上游配方原样运行（其余配方的加速手段都要 CUDA）"
    if card_gib is None:
        import torch

        card_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    data = _read_measured(path)
    if data is None:
        return "lean", f"没有 GPU 实测表（{MEASURED_TABLE}）：选显存最省的 lean"
    rows = data["rows"]
    budget = card_gib * (1 - CARD_HEADROOM)
    fits = [r for r in rows if r["recipe"] in SPEED_RECIPES and r["smi_peak_gib"] <= budget]
    if not fits:
        return "lean", (f"这张卡 {card_gib:.0f} GiB，实测表里没有峰值低于 {budget:.1f} GiB 的配方：选显存最省的 lean，"
                        "仍可能显存不足")
    best = max(fits, key=lambda r: r["speedup"])
    return best["recipe"], (f"这张卡 {card_gib:.0f} GiB：实测峰值不超过 {budget:.1f} GiB 的配方里最快的是 "
                            f"{best['recipe']}（上游的 {best['speedup']:.2f} 倍，峰值 {best['smi_peak_gib']} GiB）")
