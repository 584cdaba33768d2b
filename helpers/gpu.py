"""GPU memory while a child process trains: ``nvidia-smi`` sampled in a background thread.

``xtuner train`` runs in its own process, so ``torch.cuda.max_memory_allocated()`` in the
notebook says nothing about it. :class:`GpuMonitor` polls ``nvidia-smi`` (what the card really
holds: weights, activations, optimizer state, the CUDA context and the allocator's cache)
while training runs and keeps the peak; mmengine's own ``memory`` column in the training log
(:func:`helpers.train.logs.read_log`) is PyTorch's peak allocation, which is lower.

Example:
    >>> with GpuMonitor() as mon:          # doctest: +SKIP
    ...     run.wait()
    >>> print(mon.report())                # doctest: +SKIP
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time

QUERY = ["--query-gpu=index,name,memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits"]


def gpu_available() -> tuple:
    """``(True, "")`` when a CUDA GPU and ``nvidia-smi`` are here, else ``(False, reason)``.

    Example:
        >>> ok, reason = gpu_available()
        >>> isinstance(ok, bool) and isinstance(reason, str)
        True
    """
    if shutil.which("nvidia-smi") is None:
        return False, "no nvidia-smi on PATH (no NVIDIA driver: this machine has no GPU)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nvidia-smi failed: {exc}"
    if out.returncode != 0 or not out.stdout.strip():
        return False, f"nvidia-smi lists no GPU ({(out.stderr or out.stdout).strip()[:200]})"
    return True, ""


def gpu_snapshot() -> list:
    """One reading per GPU: ``{"index", "name", "used_mib", "total_mib", "util_pct"}``.

    Returns:
        A list (empty when there is no GPU).
    """
    ok, _ = gpu_available()
    if not ok:
        return []
    out = subprocess.run(["nvidia-smi", *QUERY], capture_output=True, text=True, timeout=20)
    readings = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        index, name, used, total, util = parts
        readings.append(dict(index=int(index), name=name, used_mib=float(used), total_mib=float(total),
                             util_pct=float(util) if util.replace(".", "").isdigit() else None))
    return readings


class GpuMonitor:
    """Sample ``nvidia-smi`` every ``interval`` seconds in a thread; keep the peak per GPU.

    Args:
        interval: seconds between samples.

    Attributes:
        peak_mib: ``{gpu index: most MiB used}``.
        baseline_mib: ``{gpu index: MiB used when monitoring started}`` (other processes).
        samples: number of readings taken.

    Example:
        >>> with GpuMonitor(interval=0.5) as mon:
        ...     pass
        >>> isinstance(mon.report(), str)
        True
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.available, self.reason = gpu_available()
        self.peak_mib: dict = {}
        self.baseline_mib: dict = {}
        self.names: dict = {}
        self.total_mib: dict = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self):
        for r in gpu_snapshot():
            i = r["index"]
            self.names[i], self.total_mib[i] = r["name"], r["total_mib"]
            self.baseline_mib.setdefault(i, r["used_mib"])
            self.peak_mib[i] = max(self.peak_mib.get(i, 0.0), r["used_mib"])
        self.samples += 1

    def _loop(self):
        while not self._stop.is_set():
            try:
                self._sample()
            except (OSError, subprocess.SubprocessError):
                pass  # one missed reading is not worth killing the training cell for
            self._stop.wait(self.interval)

    def start(self) -> "GpuMonitor":
        """Start sampling (does nothing without a GPU)."""
        if self.available and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="GpuMonitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> "GpuMonitor":
        """Stop sampling (one last reading first)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            try:
                self._sample()
            except (OSError, subprocess.SubprocessError):
                pass
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def report(self) -> str:
        """Peak memory per GPU (and what was in use before), or why there is nothing to report."""
        if not self.available:
            return f"GPU memory: not measured - {self.reason}"
        if not self.peak_mib:
            return "GPU memory: no sample was taken (did the monitored code run?)"
        lines = []
        for i in sorted(self.peak_mib):
            lines.append(f"GPU {i} ({self.names[i]}): peak {self.peak_mib[i] / 1024:.1f} GiB of "
                         f"{self.total_mib[i] / 1024:.0f} GiB (in use before: {self.baseline_mib[i] / 1024:.1f} GiB; "
                         f"{self.samples} samples)")
        return "\n".join(lines)


def wait_with_monitor(run, interval: float = 1.0, progress: bool = True) -> tuple:
    """``run.wait()`` of a :class:`helpers.train.train_run.TrainRun` while a :class:`GpuMonitor` samples.

    Returns:
        ``(exit status, monitor)``.

    Example:
        >>> code, mon = wait_with_monitor(run)   # doctest: +SKIP
    """
    with GpuMonitor(interval) as mon:
        started = time.time()
        code = run.wait(progress=progress)
    mon.seconds = round(time.time() - started, 1)
    return code, mon
