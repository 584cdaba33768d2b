"""Judge a model's answer: the course's answer format and FoodieQA's multiple choice.

* :func:`score_course`: an answer in the course's format ``"{choice}，图中的菜是{dish}"`` is right
  when the part before the join names the right option (the cuisine, for a cuisine question) and
  no other, and the part after it names the right dish and no other. Free wording with another
  join ("这道菜是") is read too; names are matched longest first (:func:`names_in`).
* :func:`choice_prompt` / :func:`parse_choice`: FoodieQA's form, options listed as A-D; the pick is
  read from a letter in any usual form or from the one option the answer names.

Example:
    >>> score_course("新疆菜，图中的菜是大盘鸡", "新疆菜", "大盘鸡", ["新疆菜", "粤菜"], ["大盘鸡", "肠粉"])["correct"]
    True
    >>> parse_choice("答案是 C。", ["京菜", "徽菜", "新疆菜", "桂菜"])
    2
"""
from __future__ import annotations

import re

from helpers.data.llava import ANSWER_JOIN

LETTERS = "ABCDEFGH"
CHOICE_INSTRUCTION = "请直接回答正确选项的字母。"  # "answer with the option's letter only"
# Joins a free-form answer may use instead of the course's exact one (checked after it).
LOOSE_JOINS = (ANSWER_JOIN, ",图中的菜是", "图中的菜是", "这道菜是", "菜是")


def names_in(text: str, vocabulary) -> list:
    """The names of ``vocabulary`` that ``text`` mentions, longest match first, in text order.

    A name inside a longer mentioned name does not count ("京菜" in "北京菜" when both are
    known), so one mention is one name.

    Example:
        >>> names_in("这是北京菜，不是京菜", ["京菜", "北京菜"])
        ['北京菜', '京菜']
    """
    taken = [False] * len(text)
    found = []
    for name in sorted({v for v in vocabulary if v}, key=len, reverse=True):
        for m in re.finditer(re.escape(name), text):
            if not any(taken[m.start():m.end()]):
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
                found.append((m.start(), name))
    return [name for _, name in sorted(found)]


def split_course_answer(text: str) -> tuple:
    """``(head, dish_part)`` of a course-format answer; the dish part is "" without a join.

    Example:
        >>> split_course_answer("粤菜，图中的菜是肠粉。")
        ('粤菜', '肠粉。')
    """
    for join in LOOSE_JOINS:
        head, sep, tail = text.partition(join)
        if sep:
            return head.strip(" \t\n，,。.：:"), tail.strip()
    return text.strip(), ""


def _names_only(part: str, right: str, vocabulary) -> bool:
    """``part`` names ``right`` and no other name of ``vocabulary``."""
    named = set(names_in(part, set(vocabulary) | {right}))
    return named == {right}


def score_course(text: str, expected_choice: str, food_name: str, choices, dishes) -> dict:
    """Judge an answer in the course's format ``"{choice}，图中的菜是{dish}"``.

    Args:
        text: the model's answer.
        expected_choice: the right option (the cuisine for a cuisine question).
        food_name: the dish in the photo.
        choices: the question's options (a wrong option named in the head is wrong).
        dishes: every dish name the split knows (a wrong dish named is wrong).

    Returns:
        ``{"choice_ok", "dish_ok", "correct"}``; the head must name the right option and no
        other, the part after the join the right dish and no other. Without the join the whole
        answer is both parts (a bare "肠粉" answers a dish question but names no cuisine).

    Example:
        >>> score_course("粤菜，图中的菜是虾饺", "粤菜", "肠粉", ["粤菜", "川菜"], ["肠粉", "虾饺"])
        {'choice_ok': True, 'dish_ok': False, 'correct': False}
    """
    head, tail = split_course_answer(text)
    choice_ok = _names_only(head, expected_choice, choices)
    dish_ok = _names_only(tail if tail else head, food_name, dishes)
    return dict(choice_ok=choice_ok, dish_ok=dish_ok, correct=choice_ok and dish_ok)


def choice_prompt(question: str, choices) -> str:
    """FoodieQA's multiple-choice form: the question, options A-D, "answer with the letter".

    Example:
        >>> print(choice_prompt("哪个菜系?", ["京菜", "粤菜"]))
        哪个菜系?
        A. 京菜
        B. 粤菜
        请直接回答正确选项的字母。
    """
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}\n{options}\n{CHOICE_INSTRUCTION}"


_EXPLICIT = r"(?:答案|选项|选择|应选|answer|option)\s*(?:is|是|为|应该是|应为|:|：)?\s*[^\w\s]?\s*([{L}])(?![A-Za-z])"
_STANDALONE = r"(?<![A-Za-z])([{L}])(?![A-Za-z])"


def parse_choice(text: str, choices) -> int | None:
    """The option an answer picks: a letter in any usual form, else the one option it names.

    In order: the whole answer is a letter ("B", "(b)", "B."); an explicit "答案是 B" /
    "answer: b" / "选项B"; exactly one capital option letter standing alone ("C. 新疆菜",
    "I think D"); exactly one option named by its text ("新疆菜，图中的菜是..."). Several
    different letters (or options) and no explicit one: no pick.

    Args:
        text: the model's answer.
        choices: the options, in letter order.

    Returns:
        The option index, or None when the answer picks none or several.

    Example:
        >>> parse_choice("(b)", ["京菜", "粤菜"]), parse_choice("我觉得是粤菜", ["京菜", "粤菜"])
        (1, 1)
        >>> parse_choice("A 或 B", ["京菜", "粤菜"]) is None, parse_choice("京菜或粤菜", ["京菜", "粤菜"]) is None
        (True, True)
    """
    letters = LETTERS[:len(choices)]
    clean = text.strip().replace("*", "")
    whole = re.fullmatch(r"[^\w]*([A-Za-z])[^\w]*", clean)
    if whole:
        letter = whole.group(1).upper()
        return letters.index(letter) if letter in letters else None
    for pattern, flags in ((_EXPLICIT, re.IGNORECASE), (_STANDALONE, 0)):
        found = {m.upper() for m in re.findall(pattern.format(L=letters + letters.lower()
                                                              if flags else letters), clean, flags)}
        if len(found) == 1:
            return letters.index(found.pop())
        if len(found) > 1:
            return None
    named = set(names_in(clean, choices))
    if len(named) == 1:
        return list(choices).index(named.pop())
    return None
