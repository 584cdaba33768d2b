"""benchmarks/report.py: rows are matched to the course's recipes by their knobs, goals get a verdict."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report  # noqa: E402


def _row(name, batch, accum, ckpt, s_per_sample, smi, **knobs):
    return dict(recipe=name, batch=batch, accum=accum, checkpointing=ckpt, s_per_sample=s_per_sample,
                smi_peak_gib=smi, mfu=0.2, fused_adamw=knobs.get("fused", False),
                aligned_lm_head=knobs.get("aligned", False), answer_only_lm_head=knobs.get("answer_only", False),
                fused_kernels=knobs.get("liger", False))


def _run(path, rows):
    path.write_text(json.dumps(dict(
        rows=rows, iters=10, warmup=4, deepspeed="deepspeed_zero2", matmul={"bf16_tflops": 800.0},
        sample=dict(tiles=10.0, tiles_min=7, tiles_max=13, tokens=2800),
        environment=dict(card="NVIDIA H100 80GB HBM3", gpus=1, python="3.12", versions={"torch": "2.11"}))))
    return path


def test_rows_are_matched_by_knobs_and_goals_get_verdicts(tmp_path):
    rows = [_row("upstream", 4, 2, True, 0.2, 36.0),
            # called something else in its run, but it is today's recommended recipe
            _row("some_name", 4, 2, False, 0.1, 30.0, fused=True, aligned=True, answer_only=True, liger=True),
            _row("lean_answer_only", 1, 8, True, 0.25, 12.0, answer_only=True),
            _row("old_recommended", 2, 4, False, 0.15, 41.0, fused=True, aligned=True)]
    path = _run(tmp_path / "finetune-20990101-000000-card.json", rows)
    text = "\n".join(report.finetune_section(path))
    assert "recommended (row `some_name`) / upstream samples/s: 2.00 (goal ≥ 1.8: met) — one round: no spread" in text
    assert "lean (row `lean_answer_only`) / upstream samples/s: 0.80 (goal ≥ 1.2: not met)" in text
    assert "nvidia-smi peak (GiB, highest round): 12.00 (goal ≤ 20: met)" in text
    assert "old_recommended" in text and "recommended (row `old_recommended`)" not in text
    assert "| 0.162 |" in text  # mfu 0.2 x 800 / 989.4, the published dense bf16 peak of an H100


def test_each_round_is_measured_against_its_own_upstream_and_the_spread_is_reported(tmp_path):
    rec = dict(fused=True, aligned=True, answer_only=True, liger=True)
    rows = []
    # round 2's card is slower for every recipe: its ratio stays 2.0, which a shared upstream would hide
    for rnd, (up, fast) in enumerate([(0.2, 0.1), (0.4, 0.2), (0.2, 0.125)], start=1):
        rows += [dict(_row("upstream", 4, 2, True, up, 36.0), round=rnd),
                 dict(_row("recommended", 4, 2, False, fast, 28.0 + rnd, **rec), round=rnd, job_640_min=5.0)]
    path = _run(tmp_path / "finetune-20990101-000000-card.json", rows)
    text = "\n".join(report.finetune_section(path))
    assert "/ upstream samples/s: 2.00 (goal ≥ 1.8: met) — median of 3 rounds" in text
    assert "(range 1.60–2.00)" in text
    out = report.publish_finetune(path, tmp_path / "table.json")
    course, pub = json.loads(out.read_text())["rows"]
    assert course["recipe"] == "course" and course["speedup"] == 1.0 and course["speedup_range"] == [1.0, 1.0]
    assert pub["recipe"] == "recommended" and pub["rounds"] == 3 and pub["speedup"] == 2.0
    assert pub["speedup_range"] == [1.6, 2.0] and pub["smi_peak_gib"] == 31.0  # the highest round's peak


def test_the_cover_takes_each_recipe_from_the_newest_run_that_measured_it(tmp_path, monkeypatch):
    rec = dict(fused=True, aligned=True, answer_only=True, liger=True)
    up = _row("upstream", 4, 2, True, 0.2, 36.0)
    _run(tmp_path / "finetune-20990101-000000-card.json", [up, _row("lean", 1, 8, True, 0.25, 12.0, answer_only=True),
                                                            _row("recommended", 4, 2, False, 0.2, 45.0, **rec)])
    _run(tmp_path / "finetune-20990102-000000-card.json", [up, _row("balanced", 2, 4, False, 0.125, 28.0, **rec)])
    _run(tmp_path / "finetune-20990103-000000-card.json", [up, _row("fast_b4", 4, 2, False, 0.1, 45.0, **rec)])
    # a smoke run and a profile are never part of the table
    _run(tmp_path / "finetune-profile-20990104-000000-card.json", [up])
    cover = report.finetune_cover(tmp_path)
    assert [(p.name[9:17], taken) for p, taken in cover] == [
        ("20990103", ["course", "recommended"]), ("20990102", ["balanced"]), ("20990101", ["lean"])]
    out = report.publish_finetune(cover, tmp_path / "table.json")
    table = json.loads(out.read_text())
    got = {r["recipe"]: (r["speedup"], r["source"][9:17]) for r in table["rows"]}
    # recommended from the newest run (2.0), not the older 1.0; lean only the oldest run measured
    assert got == {"course": (1.0, "20990103"), "recommended": (2.0, "20990103"), "balanced": (1.6, "20990102"),
                   "lean": (0.8, "20990101")}
    assert [r["recipe"] for r in table["rows"]] == ["course", "recommended", "balanced", "lean"]
    assert table["source"].count("benchmarks/results/") == 3
    find = report.latest
    monkeypatch.setattr(report, "finetune_cover", lambda: cover)
    monkeypatch.setattr(report, "latest", lambda kind: find(kind, tmp_path))
    text = report.render()
    # each verdict once, in the section of the run that measured it
    assert text.count("- recommended (row") == 1 and "- recommended (row `fast_b4`)" in text
    assert text.count("- lean (row") == 1


def test_published_peak_only_for_listed_cards():
    assert report.published_peak("NVIDIA H200") == 989.4
    assert report.published_peak("NVIDIA A10G") is None


def _level(n, p95, failures=0, done=None):
    mean = {"mean": 0.1}
    return dict(sessions=n, ttft_p50_s=p95 / 2, ttft_p95_s=p95, first_text_p95_s=p95, turn_p50_s=p95, turn_p95_s=p95 * 2,
                failures=["x"] * failures, leaks=[], turns_done=3 * n if done is None else done, turns_planned=3 * n,
                parts={"engine": {"ttft_s": {"mean": 0.5}, "decode_s": mean}, "queue": {"gradio_wait_s": mean},
                       "cpu": {"jpeg_decode_s": {"mean": 0.25}, "tiling_s": mean, "tiling_wait_s": mean}})


def test_webui_section_verdict_uses_the_smallest_level_of_a_class(tmp_path):
    data = dict(environment=dict(card="NVIDIA H100 80GB HBM3", gpus=1, python="3.12", versions={"lmdeploy": "0.18.0"}),
                turns=3, think_time_s=5.0, max_new_tokens=96, goal_ttft_p95_s=2.0, model_probe=None,
                variants=[dict(profile="class", error=None, levels=[_level(32, 1.0), _level(64, 1.8), _level(128, 1.5, 9, 300)]),
                          dict(profile="baseline", error=None, levels=[_level(64, 3.0), {"sessions": 128, "skipped": "timeout"}])])
    path = tmp_path / "webui-load-20990101-000000-card.json"
    path.write_text(json.dumps(data))
    text = "\n".join(report.webui_section(path))
    # N=128 had failures, so the verdict is the best profile at N=64: class, 1.8 s
    assert "1.80 (goal ≤ 2.0: met)" in text
    assert "| baseline | 128 |" in text and "timeout" in text
    assert "JPEG decode" in text and "| 0.25 |" in text  # the UI's decode time, the run's main finding
    data["variants"][0]["levels"][1] = _level(64, 2.5)
    path.write_text(json.dumps(data))
    assert "2.50 (goal ≤ 2.0: not met)" in "\n".join(report.webui_section(path))


def test_a_profile_comparison_is_shown_beside_the_full_sweep(tmp_path, monkeypatch):
    data = dict(environment=dict(card="NVIDIA H100 80GB HBM3", gpus=1, python="3.12", versions={"lmdeploy": "0.18.0"}),
                turns=3, think_time_s=5.0, max_new_tokens=96, goal_ttft_p95_s=2.0, model_probe=None,
                variants=[dict(profile="class", error=None, levels=[_level(64, 1.8)])])
    (tmp_path / "webui-load-20990101-000000-card.json").write_text(json.dumps(data))
    data["variants"] = [dict(profile="class_mp", error=None, levels=[_level(64, 12.3, 6, 189)])]
    (tmp_path / "webui-compare-20990102-000000-card.json").write_text(json.dumps(data))
    find = report.latest
    monkeypatch.setattr(report, "latest", lambda kind: find(kind, tmp_path))
    text = report.render()
    # the sweep keeps its own section and verdict; the later comparison gets one of its own
    assert "A class on one GPU — `webui-load-20990101" in text and "1.80 (goal ≤ 2.0: met)" in text
    assert "Serving profiles side by side — `webui-compare-20990102" in text and "| class_mp | 64 |" in text
