"""Child process groups: start one with its output in a log, stop the whole group, wait until it is gone.

Every long-running child of the course (``xtuner train``, ``lmdeploy serve api_server``, a benchmark
part) runs in its own session, so stopping it also stops the workers it started.

Example:
    >>> import sys
    >>> from helpers.procs import start_logged, stop_group
    >>> proc, log = start_logged([sys.executable, "-c", "import time; time.sleep(30)"], "/tmp/p.log")  # doctest: +SKIP
    >>> stop_group(proc)  # doctest: +SKIP
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def start_logged(argv, log_path, *, append: bool = True, env=None, cwd=None, header: bool = True):
    """Start ``argv`` in its own process group with stdout and stderr going to ``log_path``.

    Returns:
        ``(proc, log)``: the ``Popen`` and the open log file (close it after :func:`stop_group`).
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab" if append else "wb")
    if header:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(map(str, argv))}\n".encode())
        log.flush()
    proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=None if cwd is None else str(cwd), start_new_session=True)
    return proc, log


def live_group_members(pgid: int) -> list:
    """PIDs in process group ``pgid`` that have not exited (zombies count as gone); Linux /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def stop_group(proc, signals=(signal.SIGTERM, signal.SIGKILL), timeout: float = 20.0, reap: bool = True):
    """Signal ``proc``'s process group, one signal after another, until the leader exits.

    Args:
        proc: a ``Popen`` started with ``start_new_session=True``.
        signals: tried in order; each gets ``timeout`` seconds.
        reap: afterwards SIGKILL what is left in the group and wait until it is really gone.

    Returns:
        The leader's exit code.
    """
    if proc.poll() is None:
        for sig in signals:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
    if reap:
        try:  # helpers left in the group after the leader exited
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + timeout
        while live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILL is delivered asynchronously
    proc.wait()
    return proc.returncode
