"""Figures for notebook 06: accuracy before/after, and photos with both models' answers.

Both functions take ``{label: EvalResult}`` (from :mod:`helpers.evaluate.evaluation`) and return a
pyplot-free matplotlib Figure (see :mod:`helpers.display`). Answers and labels are Chinese:
a CJK font is put behind the default one when the machine has one
(:func:`helpers.display.use_cjk_font`); without one, dish and cuisine names of the
course catalogue are shown in English so the figure stays readable.

Example:
    >>> fig = plot_comparison({"base": base, "fine-tuned": tuned})   # doctest: +SKIP
    >>> fig = gallery({"base": base, "fine-tuned": tuned}, n=8)       # doctest: +SKIP
"""
from __future__ import annotations

import unicodedata

from helpers.display import QUESTION_TYPES, figure

PICKS = ("mixed", "first", "wrong", "right")
GROUP_KEYS = {"question_type": "问题类型", "cuisine": "菜系", "food_name": "菜名"}  # panel titles
ALL = "全部"


def cjk_available() -> bool:
    """Whether matplotlib can draw Chinese here (installs the fallback font when it can)."""
    try:
        from helpers.display import use_cjk_font
    except ImportError:
        return False
    return use_cjk_font() is not None


def to_english(text: str) -> str:
    """Course dish and cuisine names in ``text`` replaced by their English names.

    Example:
        >>> to_english("新疆菜，图中的菜是大盘鸡")
        'Xinjiang cuisine，图中的菜是Big plate chicken'
    """
    from helpers.foods import CUISINES, DISHES

    names = {d.name: d.name_en for d in DISHES} | dict(CUISINES)
    for zh in sorted(names, key=len, reverse=True):
        text = text.replace(zh, names[zh])
    return text


def _label(text: str, cjk: bool) -> str:
    # An untrained model can emit private-use or unassigned code points: no font draws them.
    text = "".join("\ufffd" if unicodedata.category(ch) in ("Co", "Cn", "Cs") else ch for ch in text)
    return text if cjk else to_english(text)


def plot_comparison(results, keys=("question_type", "cuisine"), title: str | None = None):
    """Accuracy bars, one colour per result, for each group of each key.

    Args:
        results: ``{label: EvalResult}`` evaluated on the same split.
        keys: row fields to group by, one panel each.
        title: figure title.

    Returns:
        A Figure (first panel also has a "全部" group).
    """
    results = dict(results)
    if not results:
        raise ValueError("plot_comparison needs at least one result")
    cjk = cjk_available()
    first = next(iter(results.values()))
    groups = {k: sorted({r[k] for r in first.rows}) for k in keys}
    heights = [len(g) + (1 if i == 0 else 0) for i, g in enumerate(groups.values())]
    fig = figure((10, max(3.0, 0.16 * max(heights) * len(results) + 1.2)))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    bar = 0.8 / len(results)
    for ax, (key, names) in zip(axes, groups.items()):
        labels = ([ALL] if key == keys[0] else []) + [QUESTION_TYPES.get(g, g) if key == "question_type" else g
                                                    for g in names]
        for j, (label, res) in enumerate(results.items()):
            by = res.by(key)
            values = ([res.accuracy] if key == keys[0] else []) + [by.get(g, {}).get("accuracy", 0.0) for g in names]
            ys = [len(labels) - 1 - i - 0.4 + bar * (j + 0.5) for i in range(len(labels))]
            ax.barh(ys, [100 * v for v in values], height=bar, label=label)
        ax.set_yticks(range(len(labels))[::-1], [_label(x, cjk) for x in labels], fontsize=8)
        ax.set(xlim=(0, 100), xlabel="准确率（%）", title=f"按{GROUP_KEYS.get(key, key)}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def _pick_rows(results: dict, n: int, pick: str) -> list:
    """Row indices to show: the "first" n, or "right"/"wrong"/"mixed" answers of the last result.

    Each queue puts one photo per dish first (the split asks two questions per photo); "mixed"
    alternates right and wrong and fills up from whichever queue is left.
    """
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
    rows = list(results.values())[-1].rows
    if pick == "first":
        return list(range(min(n, len(rows))))
    queues = {}
    for want in (True, False):
        seen, first, rest = set(), [], []
        for i, r in enumerate(rows):
            if bool(r["correct"]) == want:
                (rest if r["food_name"] in seen else first).append(i)
                seen.add(r["food_name"])
        queues[want] = first + rest
    order = {"right": [True], "wrong": [False], "mixed": [True, False]}[pick]
    chosen = []
    while len(chosen) < n and any(queues[w] for w in order):
        for want in order:
            if queues[want] and len(chosen) < n:
                chosen.append(queues[want].pop(0))
    return chosen


def _clip(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` display columns (a CJK character takes two), ending in "…"."""
    out, used = [], 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if used + w > width - 1:
            return "".join(out) + "…"
        out.append(ch)
        used += w
    return text


def gallery(results, n: int = 8, cols: int = 4, pick: str = "mixed", thumb: int = 224):
    """Photos with the reference and each result's answer (✓/✗) under them.

    Args:
        results: ``{label: EvalResult}`` on the same split (e.g. base, fine-tuned).
        n: photos to show.
        cols: photos per row.
        pick: "mixed" (right and wrong answers of the last result, one photo per dish),
            "first", "wrong" or "right".
        thumb: thumbnail side in pixels (keeps the figure small).

    Returns:
        A Figure.
    """
    from PIL import Image

    results = dict(results)
    if not results:
        raise ValueError("gallery needs at least one result")
    by_id = {label: {r["id"]: r for r in res.rows} for label, res in results.items()}
    last = list(results.values())[-1].rows
    indices = _pick_rows(results, n, pick)
    if not indices:
        raise ValueError(f"no rows to show for pick={pick!r}")
    cjk = cjk_available()
    cols = min(cols, len(indices))
    rows_n = -(-len(indices) // cols)
    width = 44  # display columns per text line: what fits 3.1 inches at 7 pt
    fig = figure((3.1 * cols, rows_n * (2.6 + 0.14 * (1 + len(results)))))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices):
        row = last[i]
        with Image.open(row["image"]) as img:
            img = img.convert("RGB")
            img.thumbnail((thumb, thumb))
        ax.imshow(img)
        qtype = QUESTION_TYPES.get(row["question_type"], row["question_type"])
        text = [f"{qtype} | 参考：{row['reference']}"]
        for label, rows in by_id.items():
            r = rows.get(row["id"])
            answer = (r["answer"] or "(空)").replace("\n", " ") if r else "(未评测)"
            text.append(f"{'✓' if r and r['correct'] else '✗'} {label}：{answer}")
        ax.set_title("\n".join(_clip(_label(t, cjk), width) for t in text), fontsize=7, loc="left")
    return fig
