"""helpers.train.speed_recipes: the recipes keep the global batch; the measured table notebook 05 shows."""
from __future__ import annotations

import json

import pytest

from helpers.settings import get_settings
from helpers.train.speed_recipes import SPEED_RECIPES, measured_speed_table, pick_speed_recipe, speed_settings


def test_every_recipe_keeps_the_global_batch_and_the_maths():
    full = get_settings("full", model_path="internvl2-2b")
    for name in SPEED_RECIPES:
        S = speed_settings(full, name)
        assert S.batch_size * S.accumulative_counts == full.batch_size * full.accumulative_counts, name
        assert (S.lr, S.lora_r, S.lora_alpha, S.max_epochs) == (full.lr, full.lora_r, full.lora_alpha, full.max_epochs)
    assert speed_settings(full, "recommended").answer_only_lm_head and speed_settings(full, "recommended").fused_kernels
    assert not speed_settings(full, "course").answer_only_lm_head  # the upstream recipe stays as it is


def _published(tmp_path, rows):
    """A table as `benchmarks/report.py --publish` writes it."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps(dict(source="benchmarks/results/x.json", card="NVIDIA H100 80GB HBM3", iters=10,
                                    tiles=10.9, tokens=2866, rows=rows)))
    return path


def test_measured_table_reads_the_published_file(tmp_path):
    pytest.importorskip("pandas")
    path = _published(tmp_path, [
        dict(recipe="course", batch=4, accum=2, speedup=1.0, s_per_sample=0.2, smi_peak_gib=36.3, job_640_min=10.0),
        dict(recipe="lean", batch=1, accum=8, speedup=0.95, s_per_sample=0.25, smi_peak_gib=12.7, job_640_min=10.6)])
    table, caption = measured_speed_table(path)
    assert list(table["SPEED"]) == ["course", "lean"] and list(table["micro-batch × 累积"]) == ["4 × 2", "1 × 8"]
    assert table["nvidia-smi 峰值 (GiB)"].tolist() == [36.3, 12.7]
    assert "NVIDIA H100 80GB HBM3" in caption and "x.json" in caption
    assert measured_speed_table(tmp_path / "missing.json") == (None, measured_speed_table(tmp_path / "m.json")[1])
    assert "还没有发布" in measured_speed_table(tmp_path / "missing.json")[1]
    assert not any("轮" in c for c in table.columns)  # one round: no range column


def test_measured_table_shows_the_range_of_several_rounds(tmp_path):
    pytest.importorskip("pandas")
    path = _published(tmp_path, [dict(recipe="recommended", batch=2, accum=4, speedup=1.6, rounds=3,
                                      speedup_range=[1.55, 1.62], s_per_sample=0.15, smi_peak_gib=28.5, job_640_min=6.4)])
    table, caption = measured_speed_table(path)
    assert table["3 轮的范围"].tolist() == ["1.55–1.62"] and "共 3 轮" in caption


def test_the_committed_table_names_the_current_recipes():
    pytest.importorskip("pandas")
    table, caption = measured_speed_table()
    if table is None:
        pytest.skip(caption)
    assert set(table["SPEED"]) <= set(SPEED_RECIPES)


def test_notebook_05_picks_the_fastest_recipe_that_fits_the_card(tmp_path):
    path = _published(tmp_path, [
        dict(recipe="course", speedup=1.0, smi_peak_gib=36.3), dict(recipe="recommended", speedup=1.68, smi_peak_gib=45.3),
        dict(recipe="balanced", speedup=1.47, smi_peak_gib=28.5), dict(recipe="lean", speedup=0.95, smi_peak_gib=12.7),
        dict(recipe="not_a_recipe", speedup=9.0, smi_peak_gib=1.0)])
    assert pick_speed_recipe("cuda", 79.1, path)[0] == "recommended"  # an 80 GB H100
    assert pick_speed_recipe("cuda", 39.4, path)[0] == "balanced"     # a 40 GB card: 45.3 does not fit, 28.5 does
    name, why = pick_speed_recipe("cuda", 23.6, path)                  # a 24 GB card: only lean fits
    assert name == "lean" and "lean" in why and "23.6" not in why and "21.2" in why
    # 31 GiB: 28.5 leaves less than the 10 % headroom, so lean
    assert pick_speed_recipe("cuda", 31.0, path)[0] == "lean"
    assert pick_speed_recipe("cuda", 12.0, path)[0] == "lean" and "不足" in pick_speed_recipe("cuda", 12.0, path)[1]
    assert pick_speed_recipe("cuda", 80.0, tmp_path / "missing.json")[0] == "lean"
    assert pick_speed_recipe("cpu", None, path)[0] == "course"
