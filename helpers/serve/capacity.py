"""Students per GPU: the web UI's measured capacity table, read from the file a GPU load test published.

``benchmarks/webui_load.py --publish PATH`` writes a small JSON file: the card, the versions,
and per serving profile and number of simultaneous students N the p50/p95 time to the first
streamed word (TTFT), the p95 time of a whole answer, failures and cross-session leaks.
The course commits the GPU run's file as ``docs/measured/webui-capacity.json``; notebook 03
shows it with :func:`capacity_rows` and :func:`capacity_sentence`. Nothing here types a number:
a file from a CPU run, or no file, is reported as "no GPU measurement committed yet".

Example:
    >>> capacity_sentence(None)
    '还没有提交 GPU 上的测量（docs/measured/webui-capacity.json），所以这里不给出每张 GPU 能服务多少学生。'
"""
from __future__ import annotations

import json
from pathlib import Path

CAPACITY_FILE = Path(__file__).resolve().parents[2] / "docs" / "measured" / "webui-capacity.json"
NOTHING_MEASURED = ("还没有提交 GPU 上的测量（docs/measured/webui-capacity.json），"
                    "所以这里不给出每张 GPU 能服务多少学生。")


def load_capacity(path=None) -> dict | None:
    """The published capacity measurement, or None when there is none from a GPU.

    Args:
        path: the file (default: :data:`CAPACITY_FILE`).

    Returns:
        The file's dict (``card``, ``levels``, ...), or None when the file is missing, unreadable,
        has no levels, or was measured without a GPU (``card == "cpu"``).

    Example:
        >>> load_capacity("/nonexistent.json") is None
        True
    """
    path = Path(path) if path else CAPACITY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("levels") or str(data.get("card", "cpu")).lower() == "cpu":
        return None
    return data


def _served(level: dict) -> bool:
    """Every turn answered, with a measured p95, no failure and no leak."""
    return (level.get("ttft_p95_s") is not None and not level.get("failures") and not level.get("leaks")
            and level.get("turns_done") == level.get("turns_planned"))


def _meets(level: dict, goal: float) -> bool:
    return _served(level) and level["ttft_p95_s"] <= goal


def capacity_rows(data: dict | None) -> list:
    """One row per (profile, N), with Chinese column names, for a Markdown table.

    Args:
        data: what :func:`load_capacity` returned (None gives no rows).

    Returns:
        ``[{"服务配置", "同时在线学生", "首字 p50 (s)", "首字 p95 (s)", "整轮 p95 (s)", "失败", "串话",
        "完成轮数", "达标"}]``, ordered by profile then N.

    Example:
        >>> capacity_rows(None)
        []
    """
    if not data:
        return []
    goal = float(data.get("goal_ttft_p95_s", 2.0))
    levels = sorted(data["levels"], key=lambda lv: (str(lv.get("profile")), lv.get("sessions", 0)))
    return [{"服务配置": lv.get("profile"), "同时在线学生": lv.get("sessions"), "首字 p50 (s)": lv.get("ttft_p50_s"),
             "首字 p95 (s)": lv.get("ttft_p95_s"), "整轮 p95 (s)": lv.get("turn_p95_s"), "失败": lv.get("failures"),
             "串话": lv.get("leaks"), "完成轮数": f"{lv.get('turns_done')}/{lv.get('turns_planned')}",
             "达标": "是" if _meets(lv, goal) else "否"} for lv in levels]


def students_per_gpu(data: dict | None) -> dict:
    """Per profile, the largest N whose p95 TTFT met the goal with no failure, no leak and every turn answered.

    Returns:
        ``{profile: N or None}`` (None: no measured N met the goal); empty without data.

    Example:
        >>> students_per_gpu({"goal_ttft_p95_s": 2, "levels": [dict(profile="p", sessions=8, ttft_p95_s=1.0,
        ...     failures=0, leaks=0, turns_done=24, turns_planned=24)]})
        {'p': 8}
    """
    if not data:
        return {}
    goal, out = float(data.get("goal_ttft_p95_s", 2.0)), {}
    for lv in data["levels"]:
        profile = lv.get("profile")
        out.setdefault(profile, None)
        if _meets(lv, goal) and (out[profile] is None or lv["sessions"] > out[profile]):
            out[profile] = lv["sessions"]
    return out


def _largest_served(data: dict, profile) -> dict | None:
    """The level with the most students of ``profile`` where every turn was answered without failure or leak."""
    ok = [lv for lv in data["levels"] if lv.get("profile") == profile and _served(lv)]
    return max(ok, key=lambda lv: lv["sessions"]) if ok else None


def capacity_sentence(data: dict | None) -> str:
    """One sentence a teacher can act on, computed from the measurement (or say that there is none).

    Example:
        >>> capacity_sentence({"card": "H100", "goal_ttft_p95_s": 2, "turns": 3, "think_time_s": 5,
        ...     "levels": [dict(profile="p", sessions=8, ttft_p50_s=1.5, ttft_p95_s=3.0, failures=0, leaks=0,
        ...     turns_done=24, turns_planned=24)]})
        '在 H100 上（每人 3 轮、两轮之间读 5 秒）：配置 p 在测过的人数里没有一档做到 p95 首字 ≤ 2 s（最少测了 8 人）；8 人同时使用时全部回答、无失败无串话，p50 首字 1.5 s、p95 首字 3 s。'
    """
    if not data:
        return NOTHING_MEASURED
    goal = float(data.get("goal_ttft_p95_s", 2.0))
    parts = []
    for profile, n in students_per_gpu(data).items():
        tried = sorted(lv["sessions"] for lv in data["levels"] if lv.get("profile") == profile)
        if n is None:
            part = f"配置 {profile} 在测过的人数里没有一档做到 p95 首字 ≤ {goal:g} s（最少测了 {tried[0]} 人）"
            served = _largest_served(data, profile)
            if served:  # what the card did manage: every answer, no failure, no leak
                part += (f"；{served['sessions']} 人同时使用时全部回答、无失败无串话，"
                         f"p50 首字 {served['ttft_p50_s']:g} s、p95 首字 {served['ttft_p95_s']:g} s")
            parts.append(part)
        else:
            above = [m for m in tried if m > n]
            limit = f"，{above[0]} 人时不再达标" if above else "（这是测过的最多人数）"
            parts.append(f"配置 {profile} 最多 {n} 名学生同时使用仍做到 p95 首字 ≤ {goal:g} s、无失败无串话{limit}")
    return (f"在 {data.get('card')} 上（每人 {data.get('turns')} 轮、两轮之间读 {data.get('think_time_s'):g} 秒）："
            + "；".join(parts) + "。")
