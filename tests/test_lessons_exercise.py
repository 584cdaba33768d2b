"""Tests for helpers.lessons.exercise: the check says right, wrong (with a hint) or not yet."""
from __future__ import annotations

from helpers.lessons.exercise import check


def test_none_means_not_predicted_yet(capsys):
    assert check(None, 3, hint="h") is None
    assert "还没有预测" in capsys.readouterr().out


def test_right_and_wrong_with_hint_never_the_answer(capsys):
    assert check(3, 3, hint="数一数") is True
    assert "✓" in capsys.readouterr().out
    assert check(4, 31337, hint="数一数") is False
    out = capsys.readouterr().out
    assert "数一数" in out and "31337" not in out


def test_tolerance_types_and_lists():
    assert check(29.6, 30.0, hint="h", tol=1.0, quiet=True)
    assert not check("30", 30, hint="h", quiet=True)          # a string is not a number
    assert not check(True, 1, hint="h", quiet=True)           # nor is a bool
    assert check(True, True, hint="h", quiet=True)
    assert check((2, 3, 6, 7), [2, 3, 6, 7], hint="h", quiet=True)
    assert check(" 是 ", "是", hint="h", quiet=True)
    assert not check(float("nan"), 1.0, hint="h", tol=1, quiet=True)
