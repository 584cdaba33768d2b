"""Results side by side: accuracy per model and question type as rows and a fixed-width table.

Headers and group names are Chinese (learner-facing); the result labels are the caller's.
"""
from __future__ import annotations

from helpers.display import QUESTION_TYPES

GROUP_NAMES = {"question_type": "问题类型", "cuisine": "菜系", "food_name": "菜名"}  # first column's header
ALL, COUNT = "全部", "题数"

# --------------------------------------------------------------------------- comparing
def comparison_rows(results, by: str | None = "question_type") -> list:
    """Accuracy of several results side by side, overall and per group.

    Args:
        results: ``{label: EvalResult}`` (same items, e.g. base and fine-tuned).
        by: row key to group on ("question_type", "cuisine") or None for overall only.

    Returns:
        ``[{<group header>: ..., "题数": ..., label: accuracy, ...}, ...]``; the first row is "全部".
        The group header is "问题类型" / "菜系" / "菜名" (``by``), "分组" when ``by`` is None.

    Example:
        >>> rows = comparison_rows({"base": base, "fine-tuned": tuned})  # doctest: +SKIP
    """
    results = dict(results)
    ids = [sorted(r["id"] for r in res.rows) for res in results.values()]
    if any(i != ids[0] for i in ids):
        raise ValueError("the results cover different questions; evaluate them on the same split")
    first = next(iter(results.values()))
    header = GROUP_NAMES.get(by, by) if by else "分组"
    table = [{header: ALL, COUNT: len(first.rows), **{k: v.accuracy for k, v in results.items()}}]
    if by:
        groups = {k: v.by(by) for k, v in results.items()}
        for g, stats in groups[next(iter(groups))].items():
            name = QUESTION_TYPES.get(g, g) if by == "question_type" else g
            table.append({header: name, COUNT: stats["n"], **{k: groups[k][g]["accuracy"] for k in results}})
    return table


def format_table(rows, percent: bool = True) -> str:
    """Plain-text table of :func:`comparison_rows` (fixed width; stable for notebook checks).

    Example:
        >>> print(format_table([{"菜系": "全部", "题数": 4, "base": 0.0, "tuned": 0.75}]))
        菜系  题数  base  tuned
        全部     4    0%    75%
    """
    if not rows:
        return "（空表）"
    keys = list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.0%}" if percent else f"{v:.3f}"
        return str(v)

    cells = [keys] + [[cell(r[k]) for k in keys] for r in rows]
    widths = [max(_width(c[i]) for c in cells) for i in range(len(keys))]
    lines = []
    for line in cells:
        parts = []
        for i, c in enumerate(line):
            pad = " " * (widths[i] - _width(c))
            parts.append(c + pad if i == 0 else pad + c)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
