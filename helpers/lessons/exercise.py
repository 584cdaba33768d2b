"""The check behind every "predict, then run" exercise of the course.

Example:
    >>> check(None, 3, hint="数一数", quiet=True) is None
    True
    >>> check(2.9, 3, hint="数一数", tol=0.2, quiet=True)
    True
"""
from __future__ import annotations

import math


def _close(prediction, answer, tol: float) -> bool:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        if isinstance(answer, (list, tuple)) and isinstance(prediction, (list, tuple)):
            return [*prediction] == [*answer]
        if isinstance(answer, str) and isinstance(prediction, str):
            return prediction.strip() == answer.strip()
        return prediction == answer
    if isinstance(prediction, bool) or not isinstance(prediction, (int, float)) or math.isnan(prediction):
        return False
    return abs(prediction - answer) <= tol


def check(prediction, answer, *, hint: str, tol: float = 0.0, quiet: bool = False):
    """Say whether a learner's prediction is right; give a hint (never the answer) when not.

    Args:
        prediction: what the learner wrote (``None``: not predicted yet).
        answer: the value computed by the course's code.
        hint: one line that points to the mechanism, printed when the prediction is wrong.
        tol: absolute tolerance for numbers (0: exact).
        quiet: print nothing (for tests).

    Returns:
        ``None`` when nothing was predicted, else ``True`` (right) or ``False`` (wrong).

    Example:
        >>> check(4, 8, hint="全局 batch = 每卡 batch × 累积步数", quiet=True)
        False
    """
    if prediction is None:
        if not quiet:
            print("还没有预测：先在上一个单元格里写下 PREDICTION，再运行这个单元格。")
        return None
    right = _close(prediction, answer, tol)
    if not quiet:
        print("✓ 预测正确。" if right else f"✗ 预测不对。提示：{hint}")
    return right
