"""Test for scripts/run_notebooks.py: progress lines per cell, the executed copy, a failing notebook."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _notebook(path: Path, sources):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_progress_lines_and_executed_copy(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    good = _notebook(tmp_path / "a.ipynb", ["x = 1", "# a comment\nprint(x + 1)"])
    bad = _notebook(tmp_path / "b.ipynb", ["raise ValueError('boom')"])
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(REPO / "scripts/run_notebooks.py"), "--out", str(out), str(good), str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert "[1/2] a.ipynb  cell 1/2" in run.stdout and "cell 2/2" in run.stdout and "print(x + 1)" in run.stdout
    assert "[1/2] a.ipynb  done: 2 code cells" in run.stdout
    assert run.returncode == 1 and "b.ipynb  FAILED" in run.stderr
    assert (out / "a.ipynb").is_file() and (out / "b.ipynb").is_file()
