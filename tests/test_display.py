"""helpers.display: the CJK font fallback, Chinese default labels, the slider and its plain-figure fallback."""
import re
import sys
import warnings

import pytest

from helpers import display as plots


def test_slider_falls_back_to_plain_figure(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    calls = []
    out = plots.slider(lambda n: calls.append(n) or f"figure {n}", "max_num", 1, 12, 6)
    assert out == "figure 6" and calls == [6]


def test_slider_redraws_on_change():
    ipywidgets = pytest.importorskip("ipywidgets")
    calls = []
    box = plots.slider(lambda n: calls.append(n) or f"figure {n}", "max_num", 1, 12, 6)
    assert isinstance(box, ipywidgets.VBox)
    control = box.children[0]
    assert (control.min, control.max, control.value, control.description) == (1, 12, 6, "max_num")
    control.value = 9
    assert calls == [6, 9]


def test_slider_rejects_value_outside_range():
    with pytest.raises(ValueError):
        plots.slider(lambda n: n, "max_num", 1, 12, 13)


def _glyph_warnings(caught) -> list:
    return [w for w in caught if "missing from font" in str(w.message)]


def test_figure_picks_an_installed_cjk_font():
    import matplotlib

    font = plots.use_cjk_font(refresh=True)
    if font is None:
        pytest.skip("no CJK font installed (scripts/install_system_deps.sh installs fonts-wqy-microhei)")
    from matplotlib import font_manager

    path = next(f.fname for f in font_manager.fontManager.ttflist if f.name == font)
    assert plots._has_glyphs(path, "菜系图块准确率")  # a font that really draws Chinese, not just a name
    matplotlib.rcParams["font.family"] = ["sans-serif"]  # as a fresh kernel has it
    fig = plots.figure((3, 2))  # every plotting helper starts here: the fallback is applied
    assert matplotlib.rcParams["font.family"] == ["sans-serif", font]
    fig.subplots().set_title("菜系 cuisine 图块 tile")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    assert not _glyph_warnings(caught)


def test_without_cjk_font_warns_once_and_still_renders(monkeypatch):
    import matplotlib
    from matplotlib import font_manager

    latin = [f for f in font_manager.fontManager.ttflist if not plots._has_glyphs(f.fname, plots.CJK_PROBE)]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", latin)  # a machine without CJK fonts
    monkeypatch.setattr(plots, "_FONT", {"checked": False, "name": None})
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["sans-serif"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plots.use_cjk_font() is None
        fig = plots.figure((3, 2))  # second lookup: no second warning
        fig.subplots().set_title("菜系 cuisine")
        fig.canvas.draw()  # renders, Chinese as boxes
        assert plots.use_cjk_font() is None
    ours = [w for w in caught if w.message.args[0] == plots.NO_CJK_WARNING]
    assert len(ours) == 1 and "中文字体" in plots.NO_CJK_WARNING and "No CJK font" in plots.NO_CJK_WARNING
    assert not _glyph_warnings(caught)  # one explanation; the boxes come from matplotlib's Last Resort font
    assert matplotlib.rcParams["font.family"] == ["sans-serif"]


def test_default_labels_are_chinese():
    curve = plots.curve_panels({"阶段 1": ([1, 2, 3], [2.0, 1.5, 1.2])})
    bars = plots.stacked_bars([1, 2], {"图像": [258, 514], "文本": [7934, 7678]}, limit=8192)
    text = plots.figure_text(curve) + plots.figure_text(bars)
    assert "训练步" in text and "上限" in text
    assert set(re.findall(r"[A-Za-z]{2,}", " ".join(text))) <= {"loss"}  # the glossary keeps loss in English
