"""Reading a training run's log: loss, learning rate and time per iteration, and a plot of them."""
from __future__ import annotations

import json
from pathlib import Path

from helpers.train.train_run import ITER_RE, LOG_NAME, PAIR_RE


# --------------------------------------------------------------------------- logs
LOG_FIELDS = ("iteration", "loss", "lr", "time", "data_time", "memory", "grad_norm")


def _row(values: dict, iteration: int) -> dict:
    row = {"iteration": iteration}
    for key in LOG_FIELDS[1:]:
        value = values.get(key)
        row[key] = float(value) if value is not None else None
    return row


MMENGINE_WINDOW = 10  # mmengine's LogProcessor logs `time` as the mean of the last 10 iterations


def iteration_times(rows, window: int = MMENGINE_WINDOW) -> list:
    """Seconds of each iteration, undoing mmengine's moving average of the logged ``time``.

    mmengine logs ``time`` averaged over the last ``window`` iterations (all of them for the
    first ``window``), so the first logged values carry the slow warm-up steps for a while. With
    one row per iteration, ``t_n = n*a_n - (n-1)*a_(n-1)`` for ``n <= window`` and
    ``t_n = t_(n-window) + window*(a_n - a_(n-1))`` after that give the exact per-iteration times.

    Args:
        rows: :func:`read_log` rows (or dicts with ``iteration`` and ``time``) of consecutive
            iterations starting at 1 (``log_interval = 1``).
        window: the averaging window the log was written with.

    Returns:
        One float per row.

    Raises:
        ValueError: rows that are not iterations 1, 2, 3, ... or lack a time.

    Example:
        >>> iteration_times([{"iteration": 1, "time": 3.0}, {"iteration": 2, "time": 2.0}])
        [3.0, 1.0]
    """
    avg = []
    for k, row in enumerate(rows, 1):
        if row.get("iteration") != k or row.get("time") is None:
            raise ValueError(f"iteration_times needs every iteration from 1 logged with its time; row {k} is {row}")
        avg.append(float(row["time"]))
    times: list = []
    for n in range(1, len(avg) + 1):
        if n <= window:
            t = n * avg[n - 1] - (n - 1) * (avg[n - 2] if n > 1 else 0.0)
        else:
            t = times[n - 1 - window] + window * (avg[n - 1] - avg[n - 2])
        times.append(round(t, 6))
    return times


def read_log(work_dir) -> list:
    """Loss, lr, timing and memory per logged iteration of a work dir.

    Reads mmengine's ``<work_dir>/<timestamp>/vis_data/scalars.json`` of every launch (a
    resumed run re-logs iterations after its checkpoint; the later launch wins), else the
    text logs.

    Returns:
        Dicts with iteration, loss, lr, time, data_time, memory, grad_norm (None if absent),
        sorted by iteration.

    Example:
        >>> rows = read_log("runs/lora")   # doctest: +SKIP
        >>> rows[-1]["iteration"]          # doctest: +SKIP
        48
    """
    work_dir = Path(work_dir)
    rows: dict = {}
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError:
                print(f"{path}:{number}: skipped an unreadable line (run killed while writing?)")
                continue
            if "loss" in values:
                step = int(values.get("iter", values.get("step", 0)))
                rows[step] = _row(values, step)
    if not rows:
        texts = sorted(work_dir.glob("*/*.log")) or [work_dir / LOG_NAME]
        for path in texts:
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                m = ITER_RE.search(line)
                if m:
                    rows[int(m.group(1))] = _row(dict(PAIR_RE.findall(m.group(3))),
                                                 int(m.group(1)))
    return [rows[k] for k in sorted(rows)]


def plot_log(rows):
    """Loss and learning rate per iteration, side by side.

    Args:
        rows: :func:`read_log` output.

    Returns:
        A matplotlib Figure.

    Example:
        >>> plot_log(read_log("runs/lora"))  # doctest: +SKIP
    """
    from helpers.display import figure

    if not rows:
        raise ValueError("no logged iterations to plot (did training log any step?)")
    fig = figure((10, 3.5))
    loss_ax, lr_ax = fig.subplots(1, 2)
    its = [r["iteration"] for r in rows]
    loss_ax.plot(its, [r["loss"] for r in rows], marker=".")
    loss_ax.set(xlabel="训练步", ylabel="loss", title="训练 loss")
    lr_ax.plot(its, [r["lr"] for r in rows], marker=".", color="tab:orange")
    lr_ax.set(xlabel="训练步", ylabel="学习率", title="学习率")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    return fig
