"""Figures and a sample browser for notebook 04: what is in the training data.

The figures read the tables of :func:`helpers.data.llava.dataset_stats` (one call per split) and
are built without pyplot (:mod:`helpers.display`), so each cell shows its figure once, also
under nbval. Titles, axes and legends are Chinese and carry Chinese dish and cuisine names:
:func:`helpers.display.figure` puts a CJK font behind matplotlib's default font.

* :func:`plot_composition` -- samples per cuisine and dish, question types, per split;
* :func:`plot_answer_lengths`, :func:`plot_image_sizes`, :func:`plot_sequence_lengths`;
* :func:`sample_grid` -- photos with their question and answer;
* :func:`render_sample` / :func:`sample_browser` -- one sample with its tile grid, and an
  ipywidgets browser over all of them; :func:`as_jpeg` shows photo figures compactly.

Example:
    >>> split_name("val")
    '验证集'
"""
from __future__ import annotations

import io
import os
import textwrap
from collections import Counter
from pathlib import Path

from helpers.display import QUESTION_TYPES, figure

SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange"}
SPLIT_NAMES = {"train": "训练集", "val": "验证集"}
ALL_DISHES = "（全部）"
COMPOSITION_KEYS = {"cuisine": "菜系", "dish": "菜名", "question_type": "问题类型"}


def split_name(split: str) -> str:
    """The Chinese name of a split for legends ("train" -> "训练集"); other names as they are.

    Example:
        >>> split_name("train"), split_name("test")
        ('训练集', 'test')
    """
    return SPLIT_NAMES.get(split, split)


def record_image_path(record: dict, image_root) -> Path:
    """Where a LLaVA record's image is (absolute paths -- baked upright copies -- as they are).

    Example:
        >>> record_image_path({"image": "images/a.jpeg"}, "/data").as_posix()
        '/data/images/a.jpeg'
    """
    image = record.get("image")
    image = image[0] if isinstance(image, list) else image
    if not isinstance(image, str):
        raise ValueError(f"record {record.get('id')!r} has no image path (image={image!r})")
    return Path(image) if os.path.isabs(image) else Path(image_root) / image


def _qa(record: dict) -> tuple:
    turns = record.get("conversations", [])
    q = next((t.get("value", "") for t in turns if t.get("from") == "human"), "")
    a = next((t.get("value", "") for t in turns if t.get("from") == "gpt"), "")
    return q.replace("<image>", "").strip(), a.strip()


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def plot_composition(stats_by_split: dict, top: int = 24):
    """Samples per cuisine, per dish and per question type, one bar per split.

    Args:
        stats_by_split: ``{"train": dataset_stats(...), "val": dataset_stats(...)}``.
        top: most categories drawn per panel (the largest first; real FoodieQA has ~350
            dishes); the panel title says how many there are in all.

    Returns:
        A Figure with three panels.

    Example:
        >>> fig = plot_composition({"train": train_stats, "val": val_stats})  # doctest: +SKIP
    """
    fig = figure((12, 5.2))
    axes = fig.subplots(1, 3, width_ratios=[1, 1.1, 0.7])
    for ax, (table, key) in zip(axes, (("per_cuisine", "cuisine"), ("per_dish", "dish"),
                                       ("question_types", "question_type"))):
        names = []
        for stats in stats_by_split.values():  # first split's order (by size), then any others
            names += [r[key] for r in stats[table] if r[key] not in names]
        total, names = len(names), names[:top]
        y = list(range(len(names)))[::-1]
        height = 0.8 / max(1, len(stats_by_split))
        for k, (split, stats) in enumerate(stats_by_split.items()):
            counts = {r[key]: r["samples"] for r in stats[table]}
            ys = [yi + 0.4 - height * (k + 0.5) for yi in y]
            ax.barh(ys, [counts.get(n, 0) for n in names], height=height, label=split_name(split),
                    color=SPLIT_COLOURS.get(split))
        shown_names = [QUESTION_TYPES.get(n, n) for n in names] if key == "question_type" else names
        ax.set_yticks(y, shown_names, fontsize=8 if len(names) > 12 else 9)
        shown = f"（前 {top} 个，共 {total} 个）" if total > top else ""
        ax.set_title(f"每个{COMPOSITION_KEYS.get(key, key)}的样本数{shown}")
        ax.set_xlabel("样本数")
    axes[0].legend(fontsize=8)
    return fig


def plot_answer_lengths(stats_by_split: dict):
    """Histograms of answer length in characters and in tokens, per split.

    Example:
        >>> fig = plot_answer_lengths({"train": train_stats})  # doctest: +SKIP
    """
    fig = figure((9, 3))
    axes = fig.subplots(1, 2)
    for ax, key, unit in ((axes[0], "answer_chars", "字符数"), (axes[1], "answer_tokens", "token 数")):
        values = {s: [r[key] for r in st["samples"] if r[key] is not None] for s, st in stats_by_split.items()}
        lo = min((min(v) for v in values.values() if v), default=0)
        hi = max((max(v) for v in values.values() if v), default=1)
        bins = [b - 0.5 for b in range(lo, hi + 2)]
        for split, v in values.items():
            if v:
                ax.hist(v, bins=bins, alpha=0.7, label=split_name(split), color=SPLIT_COLOURS.get(split))
        ax.set(title=f"回答长度（{unit}）", xlabel=unit, ylabel="样本数")
        if any(values.values()):
            ax.legend(fontsize=8)
        else:  # dataset_stats was called without a tokenizer
            ax.text(0.5, 0.5, f"没有统计{unit}", ha="center", va="center", transform=ax.transAxes)
    return fig


def plot_image_sizes(stats_by_split: dict, max_tiles: int | None = None):
    """Image width x height, aspect ratio, tiles per image and image tokens per sample.

    Args:
        stats_by_split: ``{split: dataset_stats(...)}``.
        max_tiles: draw the tile-count axis up to this (``max_dynamic_patch + 1``).

    Returns:
        A Figure with four panels.

    Example:
        >>> fig = plot_image_sizes({"train": train_stats}, max_tiles=7)  # doctest: +SKIP
    """
    fig = figure((13, 3.2))
    ax_wh, ax_aspect, ax_tiles, ax_tok = fig.subplots(1, 4)
    width = 0.8 / max(1, len(stats_by_split))
    top = max_tiles or max((t for st in stats_by_split.values() for t in st["tiles_histogram"]), default=1)
    xs = list(range(1, top + 1))
    for k, (split, st) in enumerate(stats_by_split.items()):
        colour, name = SPLIT_COLOURS.get(split), split_name(split)
        sizes = Counter((r["width"], r["height"]) for r in st["images"])  # few distinct sizes: area = count
        ax_wh.scatter([w for w, _ in sizes], [h for _, h in sizes], s=[8 * c for c in sizes.values()],
                      alpha=0.5, label=name, color=colour)
        ax_aspect.hist([r["aspect"] for r in st["images"]], bins=20, alpha=0.7, label=name, color=colour)
        hist = st["tiles_histogram"]
        ax_tiles.bar([x - 0.4 + width * (k + 0.5) for x in xs], [hist.get(x, 0) for x in xs], width=width,
                     label=name, color=colour)
        ax_tok.hist([r["image_tokens"] for r in st["samples"] if r["image_tokens"]],
                    bins=[256 * t + 128 for t in range(0, top + 1)], alpha=0.7, label=name, color=colour)
    ax_wh.set(title="图片尺寸（摆正后；点的面积 = 图片数）", xlabel="宽（像素）", ylabel="高（像素）")
    ax_wh.set_aspect("equal", adjustable="datalim")
    ax_aspect.set(title="宽高比 w/h", xlabel="宽 / 高", ylabel="图片数")
    ax_tiles.set(title="每张图的图块数（含缩略图）", xlabel="图块数", ylabel="图片数")
    ax_tiles.set_xticks(xs)
    ax_tok.set(title="每个样本的视觉 token 数", xlabel="<IMG_CONTEXT> token 数（256 x 图块数）", ylabel="样本数")
    for ax in (ax_wh, ax_aspect, ax_tiles, ax_tok):
        ax.legend(fontsize=8)
    return fig


def plot_sequence_lengths(stats_by_split: dict, max_length: int):
    """Full training sequence length in tokens against ``max_length``.

    Left: histogram of the lengths. Right: every sample sorted by length, split into image
    tokens and text tokens, on a scale that includes ``max_length``.

    Example:
        >>> fig = plot_sequence_lengths({"train": train_stats}, 8192)  # doctest: +SKIP
    """
    fig = figure((12, 3.3))
    ax_hist, ax_sorted = fig.subplots(1, 2)
    offset = 0
    for split, st in stats_by_split.items():
        rows = sorted((r for r in st["samples"] if r["seq_tokens"] is not None), key=lambda r: r["seq_tokens"])
        colour, name = SPLIT_COLOURS.get(split), split_name(split)
        ax_hist.hist([r["seq_tokens"] for r in rows], bins=30, alpha=0.7, label=name, color=colour)
        xs = list(range(offset, offset + len(rows)))
        ax_sorted.fill_between(xs, 0, [r["image_tokens"] for r in rows], color=colour, alpha=0.35, step="mid",
                               label=f"{name}：视觉 token")
        ax_sorted.fill_between(xs, [r["image_tokens"] for r in rows], [r["seq_tokens"] for r in rows],
                               color=colour, alpha=0.9, step="mid", label=f"{name}：文本 token")
        offset += len(rows) + 10
    ax_hist.set(title="序列长度（token 数）", xlabel="token 数", ylabel="样本数")
    ax_hist.legend(fontsize=8)
    ax_sorted.axhline(max_length, color="black", ls="--", lw=1, label=f"max_length = {max_length}")
    ax_sorted.set(title="每个样本（按长度排序）与 max_length 对比", xlabel="样本（每个数据集内排序）",
                  ylabel="token 数", ylim=(0, max_length * 1.08))
    ax_sorted.legend(fontsize=7, loc="upper left")
    return fig


def _spread(records: list, n: int) -> list:
    """Up to n records: one per dish first (dishes in file order, question types taking
    turns), then the rest in file order."""
    by_dish: dict = {}
    for rec in records:
        by_dish.setdefault((rec.get("meta") or {}).get("food_name"), []).append(rec)
    types = list(dict.fromkeys((r.get("meta") or {}).get("question_type") for r in records))
    firsts = []
    for k, recs in enumerate(by_dish.values()):
        want = types[k % len(types)]
        firsts.append(next((r for r in recs if (r.get("meta") or {}).get("question_type") == want), recs[0]))
    taken = {id(r) for r in firsts}
    return (firsts + [r for r in records if id(r) not in taken])[:n]


def sample_grid(records: list, image_root, n: int = 8, cols: int = 4, thumb: int = 320):
    """Photos (upright) with their question and answer underneath, one dish per photo first.

    Args:
        records: LLaVA records.
        image_root: folder the image paths are relative to.
        n: how many samples.
        cols: photos per row.
        thumb: longest side of the shown photo in pixels (keeps the notebook small).

    Returns:
        A Figure.

    Example:
        >>> fig = sample_grid(train, S.data_root, n=8)  # doctest: +SKIP
    """
    from helpers.tiling import load_image

    chosen = _spread(records, n)
    if not chosen:
        raise ValueError("sample_grid needs at least one record")
    cols = min(cols, len(chosen))
    rows = -(-len(chosen) // cols)
    fig = figure((2.9 * cols, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, rec in zip(axes.flat, chosen):
        img = load_image(record_image_path(rec, image_root))
        w, h = img.size
        img.thumbnail((thumb, thumb))
        ax.imshow(img)
        q, a = _qa(rec)
        ax.set_title(f"{rec.get('id')}  {w}x{h}", fontsize=8)
        ax.set_xlabel(f"问: {_wrap(q, 16)}\n答: {_wrap(a, 16)}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_axis_off()
    return fig


def render_sample(record: dict, image_root, settings=None, split: str | None = None):
    """One sample: the photo with the tile grid InternVL cuts it into, and its text.

    Args:
        record: a LLaVA record.
        image_root: folder the image path is relative to.
        settings: :class:`helpers.settings.Settings` (tiling parameters); None = get_settings().
        split: shown in the text panel.

    Returns:
        A Figure.

    Example:
        >>> fig = render_sample(train[0], S.data_root, S, "train")  # doctest: +SKIP
    """
    from helpers.settings import get_settings
    from helpers.tiling import choose_grid, image_tokens, load_image, tile_count

    S = settings or get_settings()
    path = record_image_path(record, image_root)
    img = load_image(path)
    w, h = img.size
    kw = dict(min_num=S.min_dynamic_patch, max_num=S.max_dynamic_patch, image_size=S.image_size)
    cols, rows = choose_grid(w, h, **kw)
    tiles = tile_count(w, h, use_thumbnail=S.use_thumbnail, **kw)
    tokens = image_tokens(w, h, use_thumbnail=S.use_thumbnail, **kw)
    img.thumbnail((480, 480))
    fig = figure((9, 3.8))
    ax_img, ax_txt = fig.subplots(1, 2, width_ratios=[1, 1.1])
    ax_img.imshow(img)
    for c in range(1, cols):
        ax_img.axvline(c * img.width / cols, color="yellow", lw=1.5)
    for r in range(1, rows):
        ax_img.axhline(r * img.height / rows, color="yellow", lw=1.5)
    ax_img.set_title(f"{w}x{h} -> 网格 {cols}x{rows}" + (" + 缩略图" if tiles > cols * rows else ""), fontsize=9)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    q, a = _qa(record)
    meta = record.get("meta") or {}
    lines = [f"id：{record.get('id')}" + (f"   数据集：{split_name(split)}" if split else ""),
             f"图片：.../{path.name}",
             f"菜名：{meta.get('food_name', '?')}   菜系：{meta.get('cuisine', '?')}",
             f"问题类型：{QUESTION_TYPES.get(meta.get('question_type'), meta.get('question_type', '?'))}",
             f"选项：{' / '.join(meta.get('choices', []))}",
             "", f"问: {_wrap(q, 24)}", f"答: {_wrap(a, 24)}", "",
             f"图块：{tiles}  ->  视觉 token：{tokens}"]
    ax_txt.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=9, transform=ax_txt.transAxes)
    ax_txt.set_axis_off()
    return fig


def _jpeg_bytes(fig, quality: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", pil_kwargs={"quality": quality})
    return buf.getvalue()


def as_jpeg(fig, quality: int = 85):
    """Show a figure of photos as JPEG: a fraction of the PNG size in a committed notebook.

    Photos (with their sensor noise) compress badly as PNG; plots with flat colours should
    stay PNG (the default display of a Figure).

    Args:
        fig: a matplotlib Figure.
        quality: JPEG quality (1-95).

    Returns:
        An ``IPython.display.Image`` (display it as the cell's value).

    Example:
        >>> as_jpeg(sample_grid(train, S.data_root))  # doctest: +SKIP
    """
    from IPython.display import Image

    return Image(data=_jpeg_bytes(fig, quality), format="jpeg")


def sample_browser(splits: dict, image_root, settings=None):
    """An ipywidgets browser: pick a split, filter by dish, slide through the samples.

    Each view is :func:`render_sample` as a JPEG in an ``Image`` widget (no pyplot state).

    Args:
        splits: ``{"train": records, "val": records}``.
        image_root: folder the image paths are relative to.
        settings: :class:`helpers.settings.Settings`.

    Returns:
        An ``ipywidgets.VBox`` (display it as the cell's value).

    Raises:
        ImportError: ipywidgets is missing (requirements-xtuner.txt installs it).

    Example:
        >>> sample_browser({"train": train, "val": val}, S.data_root, S)  # doctest: +SKIP
    """
    try:
        import ipywidgets as W
    except ImportError as exc:
        raise ImportError("sample_browser needs ipywidgets; install requirements-xtuner.txt") from exc
    if not splits or not any(splits.values()):
        raise ValueError("sample_browser needs at least one non-empty split")
    dishes = sorted({(r.get("meta") or {}).get("food_name") or "?" for rs in splits.values() for r in rs})
    split_w = W.Dropdown(options=list(splits), description="数据集")
    dish_w = W.Dropdown(options=[ALL_DISHES] + dishes, description="菜名")
    index_w = W.IntSlider(min=0, max=0, description="样本", continuous_update=False)
    count_w = W.Label()
    image_w = W.Image(format="jpeg")

    def chosen() -> list:
        records = splits[split_w.value]
        if dish_w.value != ALL_DISHES:
            records = [r for r in records if ((r.get("meta") or {}).get("food_name") or "?") == dish_w.value]
        return records

    def redraw(_=None):
        records = chosen()
        index_w.max = max(0, len(records) - 1)
        count_w.value = f"{len(records)} 个样本"
        if records:
            image_w.value = _jpeg_bytes(render_sample(records[min(index_w.value, index_w.max)], image_root,
                                                      settings, split_w.value), 85)

    for w in (split_w, dish_w, index_w):
        w.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([split_w, dish_w, count_w]), index_w, image_w])
