"""Exercises on serving (notebook 03): greedy decoding, the KV-cache share, the session budget.

Example:
    >>> round(answer_kv_cache_gib(80, 5, 0.4), 1)
    30.0
    >>> answer_images_in_session(8192, 13)
    2
"""
from __future__ import annotations

from helpers.lessons.exercise import check

GIB = 2**30


def answer_same_without_do_sample(pipe, prompt, max_new_tokens: int = 8) -> bool:
    """Whether ``temperature=0.7`` without ``do_sample=True`` answers exactly like greedy decoding.

    Args:
        pipe: a pipeline from ``helpers.serve.pipeline.make_pipeline`` (LMDeploy or the transformers engine).
        prompt: one ``(question, image)`` prompt.
        max_new_tokens: answer length (short: this runs on a CPU).

    Returns:
        True when both answers are the same text.
    """
    from helpers.serve.generation import generation_config

    greedy = pipe([prompt], gen_config=generation_config(max_new_tokens=max_new_tokens))[0]
    warm = pipe([prompt], gen_config=generation_config(max_new_tokens=max_new_tokens, temperature=0.7))[0]
    return greedy.text == warm.text


def check_same_without_do_sample(prediction, answer: bool, quiet: bool = False):
    """Check a True/False prediction of :func:`answer_same_without_do_sample`."""
    return check(prediction, answer, quiet=quiet,
                 hint="LMDeploy 0.18 的 GenerationConfig 默认 do_sample=False：这时 temperature 起作用吗？")


def answer_kv_cache_gib(card_gib: float, weights_gib: float, ratio: float) -> float:
    """KV cache LMDeploy reserves: ``ratio`` x the memory left after the weights (runtime buffer ignored).

    Example:
        >>> answer_kv_cache_gib(139.8, 4.4, 0.8) > 100
        True
    """
    from helpers.troubleshoot.serving import kv_cache_plan

    return kv_cache_plan(card_gib, weights_gib * GIB, ratio)["kv_cache_gib"]


def check_kv_cache_gib(prediction, card_gib: float = 80, weights_gib: float = 5, ratio: float = 0.4,
                       quiet: bool = False):
    """Check a prediction (GiB, ±1) of :func:`answer_kv_cache_gib`."""
    return check(prediction, answer_kv_cache_gib(card_gib, weights_gib, ratio), tol=1.0, quiet=quiet,
                 hint="cache_max_entry_count 是“加载权重之后剩下的显存”的比例，不是整张卡的比例。")


def answer_images_in_session(session_len: int, tiles: int, per_tile: int = 256) -> int:
    """Whole photos of ``tiles`` tiles (with ``<img>``/``</img>``) that fit in ``session_len`` tokens."""
    return session_len // (tiles * per_tile + 2)


def check_images_in_session(prediction, session_len: int = 8192, tiles: int = 13, quiet: bool = False):
    """Check a prediction of :func:`answer_images_in_session`."""
    return check(prediction, answer_images_in_session(session_len, tiles), quiet=quiet,
                 hint="一张 13 块的图 = 13 × 256 个 <IMG_CONTEXT> 加 <img>、</img> 两个；历史轮次里的图也一直占着。")
