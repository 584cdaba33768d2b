"""benchmarks/upload_decode.py: both ways decode the same photo, and the ratio line is printed (no timing asserted)."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import upload_decode  # noqa: E402


def test_baseline_and_course_decode_the_same_pixels(tmp_path):
    from helpers.serve.uploads import load_upload

    path = upload_decode.phone_jpeg(tmp_path)
    base = upload_decode.baseline_decode(path, threading.Lock())
    course, _ = load_upload(path)
    assert base.size == course.size == (4032, 3024)
    assert np.array_equal(np.asarray(base), np.asarray(course))


def test_a_short_run_prints_both_ways_and_the_ratio(capsys):
    assert upload_decode.main(["--uploads", "2", "--busy", "1", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "baseline  mean" in out and "course    mean" in out and "course vs baseline: mean" in out


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        upload_decode.main(["--uploads", "0"])
