"""LoRA counts and training length (notebook 05): what XTuner wraps, what it trains, how long.

XTuner 0.2.0 chooses LoRA targets with ``xtuner.model.utils.find_all_linear_names``: every
``nn.Linear`` by its last name, minus ``lm_head`` and ``output_layer``. InternLM2 calls its head
``output``, so the head is wrapped too; :func:`internvl2_2b_trainable` counts it.

Example:
    >>> lora_params(2048, 2048, 128)
    524288
    >>> round(internvl2_2b_trainable()["total"] / 1e6, 1)
    150.5
"""
from __future__ import annotations

from helpers.lessons.exercise import check


def lora_params(d_in: int, d_out: int, r: int) -> int:
    """Parameters LoRA adds beside one ``d_in -> d_out`` linear layer: A (r x d_in) and B (d_out x r)."""
    return r * (d_in + d_out)


def check_lora_params(prediction, d_in: int = 2048, d_out: int = 2048, r: int = 128, quiet: bool = False):
    """Check a prediction of :func:`lora_params`."""
    return check(prediction, lora_params(d_in, d_out, r), quiet=quiet,
                 hint="LoRA 不改 W，只在旁边加 A（r × d_in）和 B（d_out × r）两个矩阵。")


def xtuner_lora_targets(module) -> list:
    """The layer names XTuner 0.2.0 puts LoRA on inside ``module`` (its own function, sorted).

    Args:
        module: e.g. ``model.language_model`` or ``model.vision_model`` of a loaded InternVL2.

    Returns:
        Sorted last names of the linear layers XTuner wraps.
    """
    from xtuner.model.utils import find_all_linear_names

    return sorted(find_all_linear_names(module))


def internvl2_2b_trainable(r: int = 128) -> dict:
    """Trainable parameters of the course recipe on InternVL2-2B, from its config.json shapes.

    LoRA on the five linear layers of every InternLM2 layer and on the ``output`` head (XTuner does
    not skip it), plus the whole ``mlp1``.

    Args:
        r: LoRA rank.

    Returns:
        ``layers`` (LoRA in the 24 layers), ``head`` (LoRA on ``output``), ``mlp1``, ``total`` and
        ``mib_16bit`` (the total saved in bf16/fp16).
    """
    from helpers.concepts.architecture import count_parameters
    from helpers.reference_configs import REFERENCE_CONFIGS

    cfg = REFERENCE_CONFIGS["InternVL2-2B"]
    lc = cfg["llm_config"]
    h, inter = lc["hidden_size"], lc["intermediate_size"]
    kv = h // lc["num_attention_heads"] * lc["num_key_value_heads"]
    shapes = [(h, h + 2 * kv), (h, h), (h, inter), (h, inter), (inter, h)]  # wqkv, wo, w1, w3, w2
    layers = lc["num_hidden_layers"] * sum(lora_params(i, o, r) for i, o in shapes)
    head = lora_params(h, lc["vocab_size"], r)
    mlp1 = count_parameters(cfg)["mlp1"]
    total = layers + head + mlp1
    return dict(layers=layers, head=head, mlp1=mlp1, total=total, mib_16bit=total * 2 / 2**20)


def vit_lora_params(r: int = 128, targets=("qkv", "proj", "fc1", "fc2")) -> int:
    """LoRA parameters if InternViT-300M's linear layers were wrapped too (InternVL2-2B shapes)."""
    from helpers.reference_configs import REFERENCE_CONFIGS

    vc = REFERENCE_CONFIGS["InternVL2-2B"]["vision_config"]
    d, inter = vc["hidden_size"], vc["intermediate_size"]
    shape = {"qkv": (d, 3 * d), "proj": (d, d), "fc1": (d, inter), "fc2": (inter, d)}
    return vc["num_hidden_layers"] * sum(lora_params(*shape[t], r) for t in targets)


def check_vit_lora_millions(prediction, quiet: bool = False):
    """Check a prediction (millions, ±1) of :func:`vit_lora_params`."""
    return check(prediction, vit_lora_params() / 1e6, tol=1.0, quiet=quiet,
                 hint="InternViT-300M：24 层，宽 1024，MLP 中间维 4096；每层 qkv、proj、fc1、fc2 四个线性层，各加 r·(d_in+d_out)。")


def answer_iterations(settings, n_train: int, max_epochs: int) -> int:
    """Optimizer steps of a run with ``max_epochs`` (XTuner's count, via the course recipe).

    Args:
        settings: course settings (batch size, accumulation, GPUs).
        n_train: training samples.
        max_epochs: epochs to train.

    Returns:
        ``max_iters`` of the rendered recipe.
    """
    from helpers.train.xtuner_config import Recipe

    return Recipe.from_settings(settings.replace(max_epochs=max_epochs), n_train=n_train).max_iters


def check_iterations(prediction, answer: int, quiet: bool = False):
    """Check a prediction of :func:`answer_iterations` (``answer`` computed for the run)."""
    return check(prediction, answer, quiet=quiet,
                 hint="每个 epoch 的迭代数 = ⌈样本数 ÷ 每卡 batch⌉，再乘 epoch 数；先看上面打印的“per epoch”。")
