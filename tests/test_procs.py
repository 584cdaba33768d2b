"""Tests for helpers.procs: a child process group is started with a log and stopped whole."""
import sys
import time

from helpers.procs import live_group_members, start_logged, stop_group


def test_stop_group_ends_the_child_and_what_it_started(tmp_path):
    code = ("import subprocess, sys, time; print('up', flush=True); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)")
    proc, log = start_logged([sys.executable, "-c", code], tmp_path / "child.log")
    try:
        deadline = time.monotonic() + 30
        while len(live_group_members(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(live_group_members(proc.pid)) == 2
        assert stop_group(proc, timeout=10) is not None
        assert live_group_members(proc.pid) == []
    finally:
        log.close()
    text = (tmp_path / "child.log").read_text()
    assert "=====" in text and "up" in text


def test_stop_group_of_a_finished_child_returns_its_code(tmp_path):
    proc, log = start_logged([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "done.log", append=False)
    proc.wait()
    log.close()
    assert stop_group(proc) == 3
