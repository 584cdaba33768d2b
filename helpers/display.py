"""Small matplotlib helpers shared by the notebooks.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so a notebook
cell shows it exactly once (as the cell's value) and no global figure state leaks between
cells. Figures default to 80 dpi and modest sizes: committed notebooks stay small.

Plot text is Chinese (learner-facing; terms as in docs/glossary.md). :func:`figure`, which every
plotting helper of the course uses, first calls :func:`use_cjk_font`: it puts an installed CJK
font behind matplotlib's default font (``scripts/install_system_deps.sh`` installs
fonts-wqy-microhei). Without one it warns once and the figures still render, Chinese as boxes.

Example:
    >>> fig = bar_panels(["a", "b"], {"token 数": [1, 2], "参数量": [3, 4]})
    >>> len(fig.axes)
    2
"""
from __future__ import annotations

DPI = 80  # committed notebooks carry their images; 80 dpi keeps them small and readable


CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP")  # preferred, in this order
CJK_PROBE = "图块中文"  # glyphs a font must have to count as CJK-capable
NO_CJK_WARNING = ("没有找到中文字体，图中的中文会显示成方框；运行 scripts/install_system_deps.sh 安装 fonts-wqy-microhei。"
                  " / No CJK font found: Chinese plot text shows as boxes; "
                  "run scripts/install_system_deps.sh (installs fonts-wqy-microhei).")
_FONT = {"checked": False, "name": None}

# FoodieQA question_type -> its short Chinese name in plots and tables (learner-facing; the data keeps the key).
QUESTION_TYPES = {"cuisine_type": "菜系题", "food_name": "菜名题"}


def _has_glyphs(path: str, text: str) -> bool:
    """Whether the font file at ``path`` maps every character of ``text``."""
    from matplotlib.ft2font import FT2Font

    try:
        charmap = FT2Font(path).get_charmap()
    except (OSError, RuntimeError, ValueError):
        return False
    return all(ord(ch) in charmap for ch in text)


def find_cjk_font() -> str | None:
    """The family name of an installed font that can draw Chinese, or None.

    Tries :data:`CJK_FONTS` first, then any font matplotlib knows whose glyphs cover
    :data:`CJK_PROBE` (a machine may have another CJK font, e.g. Source Han or AR PL).

    Returns:
        A family name for ``rcParams["font.family"]``, or None.

    Example:
        >>> find_cjk_font() in (None, *CJK_FONTS) or isinstance(find_cjk_font(), str)
        True
    """
    from matplotlib import font_manager

    fonts = font_manager.fontManager.ttflist
    by_name = {f.name: f.fname for f in fonts}
    for name in CJK_FONTS:
        if name in by_name and _has_glyphs(by_name[name], CJK_PROBE):
            return name
    for f in sorted(fonts, key=lambda f: f.name):
        if _has_glyphs(f.fname, CJK_PROBE):
            return f.name
    return None


def use_cjk_font(refresh: bool = False) -> str | None:
    """Let matplotlib draw Chinese: add an installed CJK font behind the default one.

    Sets ``font.family`` to ``["sans-serif", <CJK font>]``: matplotlib (>= 3.6) looks up each
    glyph in the families in order, so Latin text keeps the default sans-serif font (DejaVu
    Sans) and Chinese characters come from the CJK font. The font is looked up once per process
    (``refresh=True`` looks again); calling this often is cheap. Without a CJK font it warns
    once (Chinese + English); figures still render, matplotlib (>= 3.10) drawing each missing
    glyph as a box from its bundled "Last Resort" font.

    Args:
        refresh: search the installed fonts again (after installing one, or in tests).

    Returns:
        The CJK font's family name, or None when none is installed (Chinese then shows as boxes).

    Example:
        >>> use_cjk_font() is None or isinstance(use_cjk_font(), str)
        True
    """
    import warnings

    import matplotlib

    if refresh or not _FONT["checked"]:
        _FONT.update(checked=True, name=find_cjk_font())
        if _FONT["name"] is None:
            warnings.warn(NO_CJK_WARNING, UserWarning, stacklevel=2)
    cjk = _FONT["name"]
    if cjk is not None:
        # Fallback runs over the *family* list (each entry resolved to one font), not over the
        # generic family's font list: "sans-serif" alone never reaches the CJK font.
        matplotlib.rcParams["font.family"] = ["sans-serif", cjk]
        matplotlib.rcParams["axes.unicode_minus"] = False  # the CJK font has no U+2212 minus sign
    return cjk


def figure(figsize=(8, 3.5), dpi: int = DPI):
    """A new constrained-layout Figure, not registered with pyplot, able to draw Chinese.

    Every plotting helper of the course starts here, so the CJK font fallback
    (:func:`use_cjk_font`) is applied in this one place.

    Args:
        figsize: inches.
        dpi: dots per inch.

    Returns:
        A ``matplotlib.figure.Figure``.

    Example:
        >>> float(figure((4, 3)).get_dpi())
        80.0
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib; install requirements-xtuner.txt") from exc
    _inline_once()
    use_cjk_font()
    return Figure(figsize=figsize, dpi=dpi, layout="constrained")


_INLINE = {"done": False}


def _inline_once() -> None:
    """In a Jupyter kernel, switch on the inline backend once.

    A pyplot-free Figure is shown as a cell's value only when the inline backend has
    registered its PNG formatter, which otherwise happens only when pyplot is first used.
    """
    if _INLINE["done"]:
        return
    _INLINE["done"] = True
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


def figure_text(fig) -> list:
    """Every non-empty string a figure shows: titles, axis labels, tick labels, legends, annotations.

    Lets tests (and a curious learner) check what language a plot speaks without looking at it.

    Args:
        fig: a ``matplotlib.figure.Figure`` (subfigures included).

    Returns:
        The strings, in no particular order.

    Example:
        >>> fig = figure((3, 2)); ax = fig.subplots(); _ = ax.set_title("准确率")
        >>> "准确率" in figure_text(fig)
        True
    """
    from matplotlib.text import Text

    found = fig.findobj(lambda artist: isinstance(artist, Text))
    return [t.get_text() for t in found if t.get_text().strip()]


def _fmt(value) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    value = int(value)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e4)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}" if unit != "k" else f"{value / 1e3:.3g}k"
    return str(value)


def bar_panels(labels, panels: dict, log=False, figsize=None, annotate: bool = True, title=None):
    """Side-by-side horizontal bar charts sharing the same category labels.

    Args:
        labels: category names (one bar each, top to bottom).
        panels: ``{panel title: values}``.
        log: log-scale x axis (a bool for all panels, or a set of panel titles).
        figsize: default scales with the number of panels and labels.
        annotate: write each value (k/M/B units) at the end of its bar.
        title: figure title.

    Returns:
        A Figure with one axis per panel.
    """
    labels = list(labels)
    for name, values in panels.items():
        if len(values) != len(labels):
            raise ValueError(f"panel {name!r} has {len(values)} values for {len(labels)} labels")
    fig = figure(figsize or (4.2 * len(panels) + 1.5, 0.45 * len(labels) + 1.2))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    y = list(range(len(labels)))[::-1]
    for ax, (name, values) in zip(axes, panels.items()):
        ax.barh(y, values, color="tab:blue")
        if log is True or (isinstance(log, (set, list, tuple)) and name in log):
            ax.set_xscale("log")
        ax.set_title(name)
        if annotate:
            for yi, v in zip(y, values):
                ax.annotate(_fmt(v), (v, yi), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=8)
        ax.margins(x=0.25)
    axes[0].set_yticks(y, labels)
    if title:
        fig.suptitle(title)
    return fig


def stacked_bars(labels, stacks: dict, limit: float | None = None, limit_label: str = "上限",
                 title: str = "", ylabel: str = "", figsize=(8, 3.5)):
    """Vertical stacked bars, with an optional horizontal limit line.

    Args:
        labels: x categories.
        stacks: ``{segment name: values}``, bottom to top.
        limit: draw a dashed line at this height (e.g. ``max_length``).
        limit_label: legend text of the line.
        title: axis title.
        ylabel: y axis label.

    Returns:
        A Figure.

    Example:
        >>> fig = stacked_bars([1, 2], {"图像": [258, 514], "文本": [7934, 7678]}, limit=8192)
    """
    fig = figure(figsize)
    ax = fig.subplots()
    x = [str(label) for label in labels]
    bottom = [0.0] * len(x)
    for name, values in stacks.items():
        if len(values) != len(x):
            raise ValueError(f"segment {name!r} has {len(values)} values for {len(x)} labels")
        ax.bar(x, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    if limit is not None:
        ax.axhline(limit, color="black", ls="--", lw=1, label=limit_label)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def curve_panels(curves: dict, xlabel: str = "训练步", ylabel: str = "loss", title=None, figsize=None):
    """One small line plot per named curve (e.g. the loss of each training stage).

    Args:
        curves: ``{panel title: (xs, ys)}``.
        xlabel: x axis label.
        ylabel: y axis label.
        title: figure title.

    Returns:
        A Figure.

    Example:
        >>> fig = curve_panels({"阶段 1": ([1, 2, 3], [2.0, 1.5, 1.2])})
    """
    if not curves:
        raise ValueError("curve_panels needs at least one curve")
    fig = figure(figsize or (3.6 * len(curves), 3))
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (name, (xs, ys)) in zip(axes, curves.items()):
        ax.plot(list(xs), list(ys), marker=".", ms=3)
        ax.set(title=name, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def image_grid(images, titles=None, cols: int = 4, size: float = 2.0, title=None):
    """Images in a grid with small titles (PIL images or HxW[x3] arrays).

    Args:
        images: the images.
        titles: one title per image.
        cols: images per row.
        size: inches per image.
        title: figure title.

    Returns:
        A Figure.
    """
    images = list(images)
    if not images:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    fig = figure((size * cols, size * rows + (0.3 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def heatmap(matrix, xlabels=None, ylabels=None, title: str = "", annotate: bool = True,
            figsize=(4, 3.5), cmap: str = "viridis"):
    """A small annotated heat map (e.g. which input patch ended up in which token).

    Args:
        matrix: 2-D array-like.
        xlabels: column tick labels.
        ylabels: row tick labels.
        title: axis title.
        annotate: write each cell's value.

    Returns:
        A Figure.
    """
    import numpy as np

    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix, got shape {m.shape}")
    fig = figure(figsize)
    ax = fig.subplots()
    ax.imshow(m, cmap=cmap)
    if xlabels is not None:
        ax.set_xticks(range(m.shape[1]), xlabels)
    if ylabels is not None:
        ax.set_yticks(range(m.shape[0]), ylabels)
    if annotate:
        mid = (m.max() + m.min()) / 2
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, _fmt(v) if not isinstance(v, str) else v, ha="center", va="center",
                    fontsize=8, color="white" if v < mid else "black")
    ax.set_title(title)
    return fig


def slider(draw, name: str, low: int, high: int, value: int):
    """An integer slider that redraws ``draw(value)`` below it; a plain figure without ipywidgets.

    In a live Jupyter kernel the learner drags the slider and the figure is redrawn. Where
    ipywidgets is not installed (or outside Jupyter, e.g. a static render), the caller gets
    ``draw(value)``, an ordinary figure, so the cell still shows something meaningful.

    Args:
        draw: ``value -> Figure`` (any object a notebook can display).
        name: the slider's label.
        low: smallest value.
        high: largest value.
        value: start value.

    Returns:
        An ``ipywidgets.VBox`` (slider + output area), or ``draw(value)`` without ipywidgets.

    Example:
        >>> box = slider(lambda n: f"{n} tiles", "max_num", 1, 12, 6)   # doctest: +SKIP
    """
    if not low <= value <= high:
        raise ValueError(f"need {low} <= value <= {high}, got {value}")
    try:
        import ipywidgets
    except ImportError:
        return draw(value)
    from IPython.display import clear_output, display

    control = ipywidgets.IntSlider(value=value, min=low, max=high, step=1, description=name,
                                   continuous_update=False)  # redraw on release: figures are slow
    out = ipywidgets.Output()

    def redraw(change=None):
        with out:
            clear_output(wait=True)
            display(draw(control.value))

    control.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([control, out])
