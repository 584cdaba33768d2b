"""Running ``xtuner train``: :func:`launch` -> :class:`TrainRun` (watch, stop, judge) -> :class:`TrainResult`.

``xtuner train`` exits with status 0 even when training crashed, and it finishes normally when
it silently trained on other samples in place of those whose image would not open. So success
is judged from the work dir and the log: the final checkpoint must have been written by this
run, and every replaced sample is counted and its record named (:mod:`helpers.train.replaced_samples`).
Resuming a run that already finished starts nothing and says so.

Example:
    >>> run = launch("runs/lora.py", "runs/lora")  # doctest: +SKIP
    >>> run.wait(); run.result().checkpoint.name   # doctest: +SKIP
    'iter_640.pth'
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.settings import repo_relative
from helpers.train.checkpoints import _iteration, checkpoint_problem, last_checkpoint
from helpers.train.replaced_samples import replaced_sample_errors, unopenable_records
from helpers.procs import stop_group
from helpers.settings import REPO_ROOT

LOG_NAME = "train.log"
ITER_RE = re.compile(r"Iter\(train\)\s*\[\s*(\d+)/(\d+)\]\s*(.*)")
PAIR_RE = re.compile(r"(\w+): (\S+)")
_RESTORE_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


class TrainingFailed(RuntimeError):
    """``xtuner train`` did not produce a final checkpoint, or trained on replaced samples; the message quotes the log."""


def launch(config, work_dir, *, gpus: int = 1, deepspeed: str | None = None,
           resume: bool = False, env: dict | None = None, overwrite: bool = False) -> "TrainRun":
    """Start ``xtuner train CONFIG`` as a child process (own process group).

    Args:
        config: config file from :func:`write_config` (or any XTuner config).
        work_dir: work dir for checkpoints and logs; the child's output goes to
            ``work_dir/train.log``.
        gpus: GPUs on this node (``NPROC_PER_NODE``); batch and accumulation are re-split so
            the global batch stays that of the config (NNODES, NODE_RANK, ADDR, PORT in
            ``env`` or the environment are passed through and counted).
        deepspeed: e.g. ``"deepspeed_zero2"`` (the upstream command) or a JSON path.
        resume: continue from the newest complete checkpoint in ``work_dir``.
        env: extra environment variables for the child.
        overwrite: start afresh in a work dir that holds checkpoints of an earlier run
            (they are deleted); without it such a start is refused.

    Returns:
        A running :class:`TrainRun`.

    Example:
        >>> run = launch("runs/lora.py", "runs/lora")  # doctest: +SKIP
        >>> run.wait()                                  # doctest: +SKIP
        0
    """
    from helpers.train import finetune as ft

    config, work_dir = Path(config).resolve(), Path(work_dir).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist (write_config writes one)")
    work_dir.mkdir(parents=True, exist_ok=True)
    xtuner = ft._xtuner_executable()
    cmd = [str(xtuner), "train", str(config), "--work-dir", str(work_dir)]
    if deepspeed:
        cmd += ["--deepspeed", deepspeed]
    child_env = ft._child_env(xtuner.parent, env)
    resumed_from = _prepare_work_dir(work_dir, resume, overwrite)
    log_path = work_dir / LOG_NAME
    final = _final_iteration(log_path) if resumed_from is not None else None
    if final is not None and _iteration(resumed_from) == final:
        print(f"无需续训：{resumed_from.name} 是一次已完成运行的最后一个检查点（{final}/{final} 步），训练已经完成。")
        return TrainRun.already_complete(config, work_dir, log_path, cmd, resumed_from, final)
    if resumed_from is not None:
        cmd += ["--resume", str(resumed_from)]
    _warn_unopenable(config)
    world = gpus * int(child_env.get("NNODES", "1"))
    if gpus > 1 or world > 1:
        child_env["NPROC_PER_NODE"] = str(gpus)
        cmd += ["--cfg-options", *ft.distributed_options(config, world)]

    log = open(log_path, "ab" if resume else "wb")
    offset = log.tell()
    log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
    log.flush()
    # A process started in the background inherits SIGINT as "ignored", and Python then
    # never turns it into KeyboardInterrupt: the shim restores the default before exec, so
    # stop() can interrupt training cleanly. Own session = own process group for stop().
    proc = subprocess.Popen([ft._xtuner_python(xtuner), "-c", _RESTORE_SIGINT, *cmd],
                            cwd=str(REPO_ROOT), env=child_env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    return TrainRun(proc, work_dir, log_path, offset, log, cmd, resumed_from)


def _prepare_work_dir(work_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh start); clears or refuses an earlier run's checkpoints."""
    old = sorted(work_dir.glob("iter_*.pth"), key=_iteration)
    if resume:
        resumed_from = last_checkpoint(work_dir)
        if resumed_from is None:
            print(f"{work_dir} 里没有完整的检查点：从头开始训练。")
        else:
            print(f"从 {resumed_from} 续训")
        return resumed_from
    if old or (work_dir / "last_checkpoint").exists():
        if not overwrite:
            raise FileExistsError(
                f"{work_dir} holds checkpoints of an earlier run ({', '.join(p.name for p in old)}); "
                f"pass resume=True to continue it or overwrite=True to start afresh")
        for path in old:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        (work_dir / "last_checkpoint").unlink(missing_ok=True)
        print(f"删除了 {repo_relative(work_dir)} 里上一次运行的 {len(old)} 个检查点")
    return None


def _final_iteration(log_path: Path) -> int | None:
    """N of the last ``Iter(train) [n/N]`` line in an earlier run's log, or None."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = ITER_RE.findall(text)
    return int(found[-1][1]) if found else None


def _warn_unopenable(config: Path) -> list:
    """Print the records whose image XTuner cannot open (it would train on other samples instead)."""
    bad = unopenable_records(config, decode=False)
    if bad:
        shown = "\n".join(f"  record {i}: {reason}" for i, _, reason in bad[:10])
        more = f"\n  ... {len(bad) - 10} more" if len(bad) > 10 else ""
        print(f"警告：{len(bad)} 条训练记录的图片 XTuner 打不开；它会悄悄换成随机的另一条样本来训练"
              f"（用 `python -m helpers.data check` 检查数据）：\n{shown}{more}")
    return bad


@dataclass
class TrainResult:
    """A finished training run that reached its final checkpoint."""

    work_dir: Path
    checkpoint: Path  # the final iter_N.pth
    max_iters: int
    final_loss: float | None  # the last logged (window-averaged) loss
    wall_s: float  # seconds from launch to exit
    replaced_samples: int = 0  # samples XTuner swapped for random others (image would not open)
    replaced_records: list = field(default_factory=list)  # [(index, image, reason)] behind them
    already_complete: bool = False  # resume=True found the final checkpoint: nothing was run

    @property
    def ok(self) -> bool:
        """True when every sample was trained as written."""
        return self.replaced_samples == 0


class _NothingToRun:
    """Stands in for the child process when a resumed run is already complete."""

    pid, returncode = None, 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout=None) -> int:
        return 0


class TrainRun:
    """A running ``xtuner train`` child; made by :func:`launch`.

    Example:
        >>> run = launch(cfg, work_dir)            # doctest: +SKIP
        >>> run.wait(progress=True)                # doctest: +SKIP
        >>> run.result().checkpoint                # doctest: +SKIP
    """

    def __init__(self, proc, work_dir, log_path, offset, log_file, cmd, resumed_from):
        self.proc, self.work_dir, self.log_path = proc, Path(work_dir), Path(log_path)
        self.cmd, self.resumed_from = cmd, resumed_from
        self._offset, self._log_file = offset, log_file
        self._position, self._pending = offset, ""
        self.started = time.time()
        self.ended: float | None = None
        self.stopped = False
        self.iteration, self.max_iters = 0, None
        self.last: dict = {}
        self.complete_at: int | None = None  # set when resume found the run already finished

    @classmethod
    def already_complete(cls, config, work_dir, log_path, cmd, checkpoint, final: int) -> "TrainRun":
        """A run that needs no process: ``checkpoint`` is the final one (``final`` iterations)."""
        log = open(log_path, "ab")
        offset = log.tell()
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} resume: {checkpoint.name} is the final "
                  f"checkpoint ({final} iterations); nothing to train\n".encode())
        log.flush()
        run = cls(_NothingToRun(), work_dir, log_path, offset, log, cmd, checkpoint)
        run.complete_at = run.iteration = run.max_iters = final
        return run

    @property
    def returncode(self) -> int | None:
        """The child's exit status (None while it runs). 0 does not mean success."""
        code = self.proc.poll()
        if code is not None and self.ended is None:
            self.ended = time.time()
            self._log_file.close()
        return code

    def log_text(self) -> str:
        """This run's part of ``train.log``."""
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", errors="replace")

    def _parse(self, line: str) -> bool:
        m = ITER_RE.search(line)
        if not m:
            return False
        self.iteration, self.max_iters = int(m.group(1)), int(m.group(2))
        self.last = dict(PAIR_RE.findall(m.group(3)))
        return True

    def poll(self) -> int | None:
        """Read the log written since the last call; update ``iteration``, ``max_iters``, ``last``.

        Returns:
            The exit status, or None while the child runs.
        """
        code = self.returncode  # first: lines written before the exit are read below
        with open(self.log_path, "rb") as f:
            f.seek(self._position)
            chunk = f.read()
            self._position = f.tell()
        self._pending += chunk.decode("utf-8", errors="replace")
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._parse(line)
        return code

    def wait(self, progress: bool = True, poll_s: float = 1.0) -> int:
        """Block until the child exits, showing iteration, loss, lr and ETA from the log.

        Args:
            progress: show a tqdm bar (fed by mmengine's ``Iter(train) [n/N]`` log lines).
            poll_s: how often to read the log.

        Returns:
            The exit status (check :meth:`result`, not this, for success).

        A KeyboardInterrupt (notebook "stop") stops the child too, then re-raises.
        """
        bar = None
        if progress:
            import sys

            from tqdm.std import tqdm  # a text bar: a saved notebook shows its final state, not a widget's "0it"
            bar = tqdm(total=None, desc="xtuner train", unit="it", file=sys.stdout)
        try:
            while True:
                code = self.poll()
                if bar is not None and self.max_iters:
                    if bar.total != self.max_iters:
                        bar.reset(total=self.max_iters)
                    if bar.n != self.iteration:
                        bar.n = self.iteration
                        bar.set_postfix({k: self.last[k] for k in ("loss", "lr", "eta")
                                         if k in self.last}, refresh=False)
                        bar.refresh()
                if code is not None:
                    return code
                time.sleep(poll_s)
        except KeyboardInterrupt:
            self.stop()
            raise
        finally:
            if bar is not None:
                bar.close()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Interrupt the whole process group (SIGINT, then SIGTERM, then SIGKILL).

        Args:
            timeout_s: how long each signal gets before the next, harder one.

        Returns:
            The exit status.
        """
        self.stopped = True
        if self.returncode is None:
            stop_group(self.proc, (signal.SIGINT, signal.SIGTERM, signal.SIGKILL), timeout=timeout_s, reap=False)
        self.proc.wait()
        return self.returncode

    def _failure(self, reason: str) -> TrainingFailed:
        text = self.log_text()
        start = text.rfind("Traceback (most recent call last)")
        tail = text[start:] if start >= 0 else "\n".join(text.splitlines()[-30:])
        tail = "\n".join(tail.splitlines()[-60:])
        return TrainingFailed(f"{reason}\nlog: {self.log_path}\n--- log tail ---\n{tail}")

    def result(self, allow_replaced: bool = False) -> TrainResult:
        """Judge the finished run from the work dir and the log.

        Success: ``last_checkpoint`` was written by this run, names a complete checkpoint,
        that checkpoint is the final iteration, and XTuner replaced no sample (or
        ``allow_replaced``). A resumed run that was already complete is a success too.

        Args:
            allow_replaced: return the result although XTuner trained on random other samples
                in place of some whose image would not open (the count and records are in it).

        Raises:
            TrainingFailed: with the log's traceback (or its last lines), or naming the
                replaced samples' records.

        Example:
            >>> run.result().checkpoint.name   # doctest: +SKIP
            'iter_48.pth'
        """
        if self.returncode is None:
            self.wait(progress=False)
        if self.complete_at is not None:
            return TrainResult(self.work_dir, self.resumed_from, self.complete_at, _last_loss(self.log_path), 0.0,
                               already_complete=True)
        text = self.log_text()
        for line in text.splitlines():
            self._parse(line)
        if self.stopped:
            raise self._failure(f"stopped at iteration {self.iteration}; "
                                f"launch(..., resume=True) continues the run")
        pointer = self.work_dir / "last_checkpoint"
        if self.max_iters is None and self.resumed_from is not None and "Traceback" not in text:
            raise self._failure(f"nothing was trained after resuming from {self.resumed_from.name} (exit status "
                                f"{self.proc.returncode}): when that is the final checkpoint the run was already "
                                f"complete, and {LOG_NAME} no longer shows its iterations")
        if self.max_iters is None:
            raise self._failure(f"training crashed before its first logged iteration "
                                f"(exit status {self.proc.returncode})")
        if not pointer.exists() or pointer.stat().st_mtime < self.started - 1:
            raise self._failure(f"no checkpoint was written by this run (exit status "
                                f"{self.proc.returncode}; last logged iteration "
                                f"{self.iteration}/{self.max_iters})")
        checkpoint = Path(pointer.read_text().strip())
        problem = checkpoint_problem(checkpoint)
        if problem:
            raise self._failure(f"the last checkpoint {checkpoint} {problem}")
        if _iteration(checkpoint) != self.max_iters:
            raise self._failure(f"training stopped early: last checkpoint {checkpoint.name}, "
                                f"final iteration {self.max_iters}")
        replaced = replaced_sample_errors(text)
        records = unopenable_records(self.cmd[2], decode=True, limit=50) if replaced else []
        if replaced:
            named = "\n".join(f"  record {i}: {reason}" for i, _, reason in records[:10]) or \
                "  (no record of the training set fails the image check now; the errors are in the log)"
            message = (f"XTuner replaced {len(replaced)} samples with random others because their image would "
                       f"not open (first error: {replaced[0]}). Records whose image cannot be opened:\n{named}")
            if not allow_replaced:
                raise self._failure(message + "\nFix the data and train again, or call "
                                    "result(allow_replaced=True) to keep this run")
            print(f"警告（WARNING）：{message}")
        loss = self.last.get("loss")
        return TrainResult(self.work_dir, checkpoint, self.max_iters,
                           float(loss) if loss is not None else None,
                           (self.ended or time.time()) - self.started, len(replaced), records)


def _last_loss(log_path: Path) -> float | None:
    """The last logged loss in the whole log (all launches)."""
    try:
        found = ITER_RE.findall(log_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    for _, _, rest in reversed(found):
        loss = dict(PAIR_RE.findall(rest)).get("loss")
        if loss is not None:
            return float(loss)
    return None
