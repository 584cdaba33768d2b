"""Tests for benchmarks/multi_gpu.py on CPU: options, plan, time budget, summary, and the parent's
part-running machinery (child processes stand in for the GPU parts; the parts themselves run on GPUs)."""
from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("multi_gpu", ROOT / "benchmarks" / "multi_gpu.py")
mg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mg)


def test_options_and_plan(tmp_path):
    args = mg.parse_args(["--parts", "tiny,prepare", "--xtuner-env", str(tmp_path / "x.env")])
    assert args.parts == ["prepare", "tiny"]  # prepare runs first whatever the order given
    plan = mg.build_plan(args)
    assert [s["part"] for s in plan] == ["prepare", "tiny"]
    tiny = plan[1]
    assert tiny["env"] == "xtuner" and tiny["argv"][:2] == ["bash", "-c"]
    assert f"source {tmp_path / 'x.env'}" in tiny["argv"][2] and tiny["argv"][-2:] == ["--part", "tiny"]
    for bad in (["--parts", "train"], ["--gpus", "1"], ["--warmup", "10", "--iters", "10"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            mg.parse_args(bad)


def test_environment_launcher_falls_back_to_a_python(monkeypatch, tmp_path):
    monkeypatch.setattr(mg, "OVERLAY_DIR", tmp_path)  # no overlay env files here
    monkeypatch.setattr(mg, "VENVS", {"xtuner": tmp_path / "none", "lmdeploy": tmp_path / "none"})
    argv, how = mg.environment_launcher("xtuner")
    assert argv == [sys.executable] and "no xtuner overlay" in how
    (tmp_path / "lmdeploy.env").write_text("export X=1\n")
    assert mg.environment_launcher("lmdeploy")[0][0] == "bash"  # the overlay's env file is found by default


def test_part_timeouts_share_the_budget():
    assert mg.part_timeout(150, deadline=1000.0, now=0.0) == 150.0
    assert mg.part_timeout(300, deadline=1000.0, now=900.0) == 100.0
    assert mg.part_timeout(300, deadline=1000.0, now=1000.0 - mg.MIN_PART_S + 1) is None


def test_zero_stage_names():
    assert mg.zero_stage("deepspeed_zero2") == 2
    assert mg.zero_stage("/x/deepspeed_zero3_offload.json") == 3
    with pytest.raises(ValueError, match="ZeRO stage"):
        mg.zero_stage("fsdp")


def test_summary_numbers_and_verdicts():
    parts = {
        "2b": {"runs": [dict(gpus=1, samples_per_s=2.4, s_per_iter=1.667, peak_alloc_gib=24.0, predicted_gib=23.0,
                             measured_vs_predicted=1.043, smi_peak_mib={"0": 30720.0}),
                        dict(gpus=2, samples_per_s=3.9, s_per_iter=2.05, smi_peak_mib={"0": 30000.0, "1": 29000.0})]},
        "serve": {"runs": [dict(tp=1, tok_s=7000.0), dict(tp=2, tok_s=8400.0, executor="mp",
                                                          chat=dict(ok=True, turns=2))],
                  "api_server": dict(tp=2, ok=False, error="RuntimeError: exited", completion_tokens=None)},
        "tiny": {"runs": [dict(gpus=1, iterations=12, final_loss=5.5, wall_s=33.0)],
                 "converted": dict(loaded=True, answer="中的菜")},
    }
    s, lines = mg.summarise(parts, 2)
    assert s["scaling"] == pytest.approx(1.625) and s["scaling_goal_met"] is False
    assert s["tp_speedup"] == pytest.approx(1.2) and s["chat_tp2_ok"] is True and s["tiny_converted_loads"] is True
    text = "\n".join(lines)
    assert s["api_server_tp2_ok"] is False and "api_server --tp 2: FAILED" in text and "RuntimeError" in text
    assert "goal >= 1.7x: not met" in text and "GPU0 30.0" in text and "answered" in text and "loaded on CUDA" in text
    # nothing measured: no crash, nothing claimed
    s, lines = mg.summarise({"2b": {"runs": [dict(gpus=1)]}}, 2)
    assert s["scaling"] is None and s["scaling_goal_met"] is None and "not measured" in lines[0]


def _fake_part(code: str) -> list:
    # A stand-in child: reads the state file the parent passes, writes its part record.
    script = textwrap.dedent("""
        import json, sys, time
        from pathlib import Path
        part = sys.argv[1]
        st = json.loads(Path(sys.argv[sys.argv.index("--state") + 1]).read_text())
        out = Path(st["work"]) / "parts" / (part + ".json")
        out.parent.mkdir(parents=True, exist_ok=True)
    """) + textwrap.dedent(code)
    return [sys.executable, "-c", script]


def test_parent_runs_parts_writes_results_and_stops_an_overrunning_part(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERNVL_ARTIFACTS", str(tmp_path / "artifacts"))
    import helpers.gpu

    monkeypatch.setattr(helpers.gpu, "gpu_snapshot", lambda: [
        dict(index=i, name="Fake GPU", used_mib=0.0, total_mib=81920.0, util_pct=0.0) for i in range(2)])
    steps = [
        dict(part="2b", env="xtuner", how="stand-in", cap_s=60, argv=_fake_part("""
            print("training stand-in", flush=True)
            out.write_text(json.dumps({"runs": [{"gpus": 1, "samples_per_s": 2.0}, {"gpus": 2, "samples_per_s": 3.8}]}))
        """) + ["2b"]),
        dict(part="serve", env="lmdeploy", how="stand-in", cap_s=60, argv=_fake_part("""
            out.write_text(json.dumps({"runs": [{"tp": 1, "tok_s": 100.0}]}))
            time.sleep(600)  # over its time: the parent must stop it
        """) + ["serve"]),
    ]
    monkeypatch.setattr(mg, "build_plan", lambda args: steps)
    monkeypatch.setattr(mg, "MIN_PART_S", 1)
    out, copy = tmp_path / "results", tmp_path / "copy"
    code = mg.main(["--parts", "2b,serve", "--budget-s", "8", "--out-dir", str(out), "--copy-to", str(copy)])
    assert code == 1  # the stopped part counts as failed
    [result] = out.glob("multi-gpu-*-fake-gpu.json")
    data = json.loads(result.read_text())
    assert data["summary"]["scaling"] == pytest.approx(1.9) and data["summary"]["scaling_goal_met"] is True
    assert data["steps"]["2b"]["rc"] == 0 and data["steps"]["serve"]["timed_out"] is True
    assert data["parts"]["serve"]["runs"][0]["tok_s"] == 100.0  # what the stopped part measured is kept
    assert data["environment"]["card"] == "Fake GPU" and data["complete"] is False
    log = result.with_suffix(".log").read_text()
    assert "training stand-in" in log and "multi-GPU summary" in log
    assert sorted(p.name for p in copy.iterdir()) == sorted([result.name, result.with_suffix(".log").name])


def test_parent_refuses_without_enough_gpus(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("INTERNVL_ARTIFACTS", str(tmp_path))
    import helpers.gpu

    monkeypatch.setattr(helpers.gpu, "gpu_snapshot", lambda: [])
    assert mg.main(["--parts", "serve"]) == 2
    assert "0 GPU(s) visible, 2 needed" in capsys.readouterr().out


def test_child_records_a_failing_part(monkeypatch, tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"work": str(tmp_path)}))

    def broken(st, rec):
        rec.data["measured"] = 1
        raise RuntimeError("no CUDA here")

    monkeypatch.setitem(mg.PART_FUNCS, "serve", broken)
    assert mg.main(["--part", "serve", "--state", str(state)]) == 1
    rec = json.loads((tmp_path / "parts" / "serve.json").read_text())
    assert rec["measured"] == 1 and rec["error"] == "RuntimeError: no CUDA here" and "seconds" in rec
