"""The classroom load script, at its CI size: several concurrent web UI sessions with images on loopback.

Runs `benchmarks/webui_load.py --start --quick` as a maintainer would, and checks its verdict and summary:
every planned turn answered, no failure, no session seeing another's secret word. The numbers it prints
(p50/p95 latency) are reported, not asserted: speed goals belong to benchmarks, not unit tests.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_load_run_has_no_failures_or_leaks(tiny_model_dir, tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "webui_load.py"), "--start", "--quick",
         "--model", str(tiny_model_dir), "--engine", "transformers", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert summary["turns_done"] == summary["turns_planned"] == summary["sessions"] * summary["turns_per_session"]
    assert summary["sessions"] >= 4 and summary["failures"] == [] and summary["leaks"] == []
    assert summary["engine"] == "transformers" and summary["concurrency"] >= 1  # read from the UI's own log
    assert summary["p50_s"] <= summary["p95_s"] <= summary["max_s"]
