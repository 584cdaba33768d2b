"""Exercises on how an image becomes visual tokens (notebooks 01, 02 and 04).

Each ``answer_*`` function computes the true value with the course's own code (the modules the
lessons teach), and each ``check_*`` compares a learner's prediction with it.

Example:
    >>> answer_tokens_per_tile(448)
    256
    >>> check_tokens_per_tile(1024, image_size=896, quiet=True)
    True
"""
from __future__ import annotations

from helpers import tiling
from helpers.lessons.exercise import check


def answer_tokens_per_tile(image_size: int, patch_size: int = 14, ratio: float = 0.5) -> int:
    """Visual tokens one tile gives after pixel shuffle, by running the shuffle on a blank grid.

    Args:
        image_size: tile side in pixels (InternVL2: 448).
        patch_size: ViT patch side (InternViT: 14).
        ratio: pixel-shuffle ratio (InternVL: 0.5, i.e. 2 x 2 patches -> 1 token).

    Returns:
        Tokens per tile, e.g. 256 for 448 px.

    Example:
        >>> answer_tokens_per_tile(224)
        64
    """
    import torch

    from helpers.concepts.blocks import pixel_shuffle

    side = image_size // patch_size
    merged = pixel_shuffle(torch.zeros(1, side, side, 1), ratio)
    return merged.shape[1] * merged.shape[2]


def check_tokens_per_tile(prediction, image_size: int = 896, quiet: bool = False):
    """Check a prediction of :func:`answer_tokens_per_tile` for ``image_size``."""
    return check(prediction, answer_tokens_per_tile(image_size), quiet=quiet,
                 hint="先算 patch 网格：边长 ÷ 14；pixel shuffle 把每 2×2 个 patch 拼成 1 个 token。")


def answer_resampler_tokens(resampler, n_visual_tokens: int, width: int) -> int:
    """Tokens a query resampler outputs for ``n_visual_tokens`` inputs, by running it.

    Args:
        resampler: a :class:`helpers.concepts.blocks.QueryResampler`.
        n_visual_tokens: how many ViT tokens go in (e.g. 13 tiles x 1024).
        width: the resampler's input width (``vis_dim``).

    Returns:
        Tokens it gives to the LLM.
    """
    import torch

    with torch.no_grad():
        return resampler(torch.zeros(1, n_visual_tokens, width)).shape[1]


def check_resampler_tokens(prediction, answer: int, quiet: bool = False):
    """Check a prediction of the resampler's output length (``answer`` from :func:`answer_resampler_tokens`)."""
    return check(prediction, answer, quiet=quiet,
                 hint="重采样器输出的 token 数由什么决定？回看 2.2 节：查询向量有几个。")


def answer_image_tokens(width: int, height: int, max_num: int) -> int:
    """``<IMG_CONTEXT>`` tokens for a ``width x height`` photo with tile limit ``max_num``.

    Example:
        >>> answer_image_tokens(800, 600, 6)
        1792
    """
    return tiling.image_tokens(width, height, max_num=max_num)


def check_image_tokens(prediction, width: int, height: int, max_num: int, quiet: bool = False):
    """Check a prediction of :func:`answer_image_tokens`."""
    return check(prediction, answer_image_tokens(width, height, max_num), quiet=quiet,
                 hint="先在列×行 ≤ max_num 的网格里找宽高比最接近的；多于 1 块时加 1 张缩略图；每块 256 个 token。")


def answer_shuffle_patches(row: int, col: int, side: int = 4) -> list:
    """Patch numbers (0 .. side²-1, row by row) merged into token (row, col) by pixel shuffle.

    Example:
        >>> answer_shuffle_patches(1, 1)
        [10, 11, 14, 15]
    """
    import torch

    from helpers.concepts.blocks import pixel_shuffle

    ids = torch.arange(float(side * side)).reshape(1, side, side, 1)
    return [int(v) for v in pixel_shuffle(ids, 0.5)[0, row, col].tolist()]


def check_shuffle_patches(prediction, row: int = 0, col: int = 1, quiet: bool = False):
    """Check a prediction (a list of 4 patch numbers) of :func:`answer_shuffle_patches`."""
    return check(prediction, answer_shuffle_patches(row, col), quiet=quiet,
                 hint="token (行 r, 列 c) 收的是 patch 网格里第 2r、2r+1 行与第 2c、2c+1 列交叉的 4 个，按行的顺序排。")


def answer_loss_targets(tokenizer, answer: str, end: str = "<|im_end|>") -> int:
    """Positions that carry loss in one XTuner sample: the answer's tokens plus the end token.

    Args:
        tokenizer: the checkpoint's tokenizer.
        answer: the answer text of the sample.
        end: the turn's end token (InternLM2 chat: ``<|im_end|>``).

    Returns:
        Number of labels that are not -100.
    """
    return len(tokenizer(answer + end, add_special_tokens=False)["input_ids"])


def check_loss_targets(prediction, answer: int, quiet: bool = False):
    """Check a prediction of :func:`answer_loss_targets` (``answer`` computed from the sample)."""
    return check(prediction, answer, quiet=quiet,
                 hint="系统提示、问题和 <IMG_CONTEXT> 的标签都是 -100；回答结束后还有一个 token 要学。")


def multi_tile_batch(train_json, image_root, model_path, settings, n: int = 3):
    """A real XTuner batch whose samples have different tile counts (padding visible).

    Builds XTuner's own dataset on a checkpoint that tiles (the tiny checkpoint: up to 6 tiles),
    picks ``n`` photos whose aspect ratios give different tile counts, and collates them with
    XTuner's ``default_collate_fn``.

    Args:
        train_json: LLaVA-format training file.
        image_root: folder the image paths are relative to.
        model_path: checkpoint whose ``max_dynamic_patch`` > 1.
        settings: course settings.
        n: samples in the batch.

    Returns:
        ``(samples, batch)``: the :class:`helpers.data.xtuner_sample.BuiltSample` list (fewest tiles
        first) and the collated batch.
    """
    import json
    from pathlib import Path

    from PIL import Image
    from xtuner.dataset.collate_fns import default_collate_fn

    from helpers.data.xtuner_sample import build_sample, load_xtuner_dataset

    max_num = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))["max_dynamic_patch"]
    records = json.loads(Path(train_json).read_text(encoding="utf-8"))
    by_tiles = {}
    for i, rec in enumerate(records):
        with Image.open(Path(image_root) / rec["image"]) as im:
            w, h = im.size  # EXIF-rotated photos were baked upright by the converter
        by_tiles.setdefault(tiling.tile_count(w, h, max_num=max_num), i)
        if len(by_tiles) >= n:
            break
    ds = load_xtuner_dataset(train_json, image_root, model_path=model_path, settings=settings)
    samples = [build_sample(ds, i) for _, i in sorted(by_tiles.items())]
    return samples, default_collate_fn([s.raw for s in samples])
