"""helpers.display: the slider wrapper and its plain-figure fallback."""
import sys

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
