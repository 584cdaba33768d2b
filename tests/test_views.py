"""helpers.data.views: notebook 04's figures, the CJK font fallback and the sample browser."""
from __future__ import annotations

import re
import warnings

import pytest

pytest.importorskip("matplotlib")

from helpers.data.views import _spread, record_image_path  # noqa: E402
from helpers.display import use_cjk_font


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(splits, image_root, stats per split) of a small synthetic set (16 photos)."""
    from helpers.data.llava import dataset_stats, foodieqa_to_llava, load_llava
    from helpers.data.synth import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("synth"), per_dish=2, long_side=448)
    out = tmp_path_factory.mktemp("llava")
    foodieqa_to_llava(root / "sivqa_tidy.json", root, out, val_fraction=0.5, workers=1)
    splits = {s: load_llava(out / f"{s}.json") for s in ("train", "val")}
    stats = {s: dataset_stats(r, root, tokenizer=None) for s, r in splits.items()}
    for st in stats.values():  # without a tokenizer there are no text tokens: give each sample 40
        for row in st["samples"]:
            row["seq_tokens"] = row["image_tokens"] + 40
    return splits, root, stats


def test_cjk_font_renders_chinese_without_missing_glyphs():
    from matplotlib.figure import Figure

    font = use_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (scripts/ installs fonts-wqy-microhei)")
    import matplotlib

    assert matplotlib.rcParams["font.family"] == ["sans-serif", font]
    assert use_cjk_font() == font and matplotlib.rcParams["font.family"] == ["sans-serif", font]  # idempotent
    fig = Figure()
    fig.subplots().set_title("菜系 cuisine 烤羊肉串")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would raise here
        fig.canvas.draw()


def test_record_image_path_relative_and_absolute(tmp_path):
    assert record_image_path({"image": "images/a.jpeg"}, tmp_path) == tmp_path / "images" / "a.jpeg"
    assert record_image_path({"image": ["/abs/b.jpeg"]}, tmp_path).as_posix() == "/abs/b.jpeg"
    with pytest.raises(ValueError, match="'r1' has no image path"):
        record_image_path({"id": "r1"}, tmp_path)


def test_spread_one_dish_each_first_and_question_types_alternate():
    recs = [{"id": f"{d}{q}", "meta": {"food_name": d, "question_type": q}}
            for d in "abc" for q in ("cuisine_type", "food_name")]
    got = [r["id"] for r in _spread(recs, 6)]
    assert got[:3] == ["acuisine_type", "bfood_name", "ccuisine_type"]
    assert sorted(got) == sorted(r["id"] for r in recs)
    assert len(_spread(recs, 2)) == 2


def test_figures_have_their_panels(data):
    from helpers.data.views import plot_answer_lengths, plot_composition, plot_image_sizes, plot_sequence_lengths

    splits, root, stats = data
    assert len(plot_composition(stats).axes) == 3
    fig = plot_composition(stats, top=5)
    assert len(fig.axes[1].get_yticklabels()) == 5 and "（前 5 个，共 16 个）" in fig.axes[1].get_title()
    assert len(plot_answer_lengths(stats).axes) == 2
    fig = plot_image_sizes(stats, max_tiles=7)
    assert len(fig.axes) == 4
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == [str(i) for i in range(1, 8)]
    fig = plot_sequence_lengths(stats, 8192)
    assert fig.axes[1].get_ylim()[1] > 8192
    for f in (plot_composition(stats), plot_sequence_lengths(stats, 8192)):
        f.canvas.draw()


def test_figures_speak_chinese(data):
    from helpers.data.views import plot_answer_lengths, plot_composition, plot_image_sizes, plot_sequence_lengths
    from helpers.display import figure_text

    _, _, stats = data
    figs = [plot_composition(stats), plot_answer_lengths(stats), plot_image_sizes(stats, 7),
            plot_sequence_lengths(stats, 8192)]
    for fig in figs:
        fig.canvas.draw()
        text = " ".join(figure_text(fig))
        assert "训练集" in text and "验证集" in text  # legends name the splits in Chinese
        # what stays English: code names and the glossary's token / max_length / <IMG_CONTEXT>
        assert set(re.findall(r"[A-Za-z_]{2,}", text)) <= {"token", "max_length", "IMG_CONTEXT"}, text


def test_sample_grid_and_render_sample(data):
    from helpers.data.views import as_jpeg, render_sample, sample_grid
    from helpers.settings import get_settings

    splits, root, _ = data
    fig = sample_grid(splits["train"], root, n=5, cols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 6
    assert shown[0].get_xlabel().startswith("问: ")
    with pytest.raises(ValueError):
        sample_grid([], root)
    fig = render_sample(splits["val"][0], root, get_settings(max_dynamic_patch=6), split="val")
    text = fig.axes[1].texts[0].get_text()
    assert "数据集：验证集" in text and "图块：" in text
    pytest.importorskip("IPython")
    img = as_jpeg(fig)
    assert img.data[:2] == b"\xff\xd8"


def test_sample_browser_filters_and_redraws(data):
    pytest.importorskip("ipywidgets")
    from helpers.data.views import sample_browser

    splits, root, _ = data
    box = sample_browser(splits, root)
    (split_w, dish_w, count_w), index_w, image_w = box.children[0].children, box.children[1], box.children[2]
    assert index_w.max == len(splits["train"]) - 1
    assert count_w.value == f"{len(splits['train'])} 个样本"
    first = bytes(image_w.value)
    assert first[:2] == b"\xff\xd8"
    dish = dish_w.options[1]
    dish_w.value = dish
    n = sum(1 for r in splits["train"] if r["meta"]["food_name"] == dish)
    assert count_w.value == f"{n} 个样本" and index_w.max == n - 1
    split_w.value = "val"
    assert count_w.value == f"{sum(1 for r in splits['val'] if r['meta']['food_name'] == dish)} 个样本"
    with pytest.raises(ValueError):
        sample_browser({"train": []}, root)
