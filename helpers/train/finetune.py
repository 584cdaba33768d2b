"""XTuner LoRA fine-tuning of InternVL2: write the config, launch, watch, resume, convert.

The course trains exactly as upstream does, with ``xtuner train CONFIG`` in a child
process, so every step can also be run by hand from a terminal. This module adds what a
notebook needs around it:

* :func:`render_config` / :func:`write_config`: a readable XTuner config (mmengine
  lazy-import style, all values in PART 1 with comments) from :class:`Recipe`;
* :func:`launch` -> :class:`TrainRun`: ``xtuner train`` in its own process group, a tqdm
  bar fed by the log, ``stop()``, and ``result()``, which judges success from the work dir,
  because ``xtuner train`` exits with status 0 even when training crashed;
* resume from the last *readable* checkpoint (:func:`last_checkpoint` skips one that was
  half-written when the run was killed);
* :func:`read_log` / :func:`plot_log`: loss and learning rate per iteration;
* :func:`convert`: XTuner's ``convert_to_official`` (LoRA merged), then whatever the output
  lacks to load anywhere (remote code, chat template, generation config, system prompt).

Example:
    >>> from helpers.settings import get_settings
    >>> from helpers.train import finetune
    >>> S = get_settings()
    >>> cfg = finetune.write_config(S, S.base_model_path, S.llava_dir / "train.json",
    ...                             S.data_root, S.runs_dir / "lora")   # doctest: +SKIP
    >>> run = finetune.launch(cfg, S.runs_dir / "lora")                # doctest: +SKIP
    >>> run.wait(); result = run.result()                               # doctest: +SKIP
    >>> finetune.convert(cfg, result.checkpoint, S.runs_dir / "merged")  # doctest: +SKIP
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from helpers.settings import REPO_ROOT, repo_relative
from helpers.train.xtuner_config import (_count_records, config_values, iterations_per_epoch, safe_warmup_ratio,
                                  split_batch)


REQUIREMENTS_HINT = "install requirements-xtuner.txt (the XTuner environment, .venv-xtuner)"


# --------------------------------------------------------------------------- launching
def _xtuner_executable() -> Path:
    """``xtuner`` of the XTuner environment: next to this Python, in the repo venv, or on PATH."""
    for candidate in (Path(sys.executable).parent / "xtuner",
                      REPO_ROOT / ".venv-xtuner" / "bin" / "xtuner"):
        if candidate.exists():
            return candidate
    found = shutil.which("xtuner")
    if found:
        return Path(found)
    raise FileNotFoundError(f"no `xtuner` executable found; {REQUIREMENTS_HINT}")


def _xtuner_python(xtuner: Path) -> str:
    """The Python interpreter of the environment ``xtuner`` belongs to (its script's shebang)."""
    try:
        first = xtuner.read_bytes()[:512].split(b"\n", 1)[0].decode()
    except OSError:
        first = ""
    if first.startswith("#!") and Path(first[2:].strip().split()[0]).exists():
        return first[2:].strip().split()[0]
    sibling = xtuner.parent / "python"
    return str(sibling) if sibling.exists() else sys.executable


def _child_env(bin_dir: Path, extra: dict | None) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (extra or {}).items()})
    # `xtuner train` starts `python` / `torchrun` from PATH: they must be the venv's.
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # The config imports helpers.train.xtuner_compat; the repo may not be installed in the venv.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    # torch >= 2.6 loads with weights_only=True; mmengine checkpoints hold Python objects
    # (HistoryBuffer), so --resume and load_from fail without this.
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    env["PYTHONUNBUFFERED"] = "1"  # the progress bar reads the log as it is written
    env.setdefault("HF_HUB_OFFLINE", "1")  # no model hub is reachable; fail fast instead of hanging
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def distributed_options(config, world_size: int) -> list:
    """``--cfg-options`` that keep a config's global batch and warm-up on ``world_size`` GPUs.

    Args:
        config: a config from :func:`write_config` (PART-1 literals are read, not executed).
        world_size: GPUs in all (NPROC_PER_NODE x NNODES).

    Returns:
        ``key=value`` strings for ``xtuner train --cfg-options``.

    Example:
        >>> distributed_options("runs/lora.py", 2)  # doctest: +SKIP
        ['train_dataloader.batch_size=4', 'optim_wrapper.accumulative_counts=1', ...]
    """
    values = config_values(config)
    batch, accum = split_batch(values.get("batch_size", 1), values.get("accumulative_counts", 1),
                               world_size)
    options = [f"train_dataloader.batch_size={batch}", f"optim_wrapper.accumulative_counts={accum}",
               f"train_dataloader.sampler.per_device_batch_size={batch * accum}"]
    print(f"{world_size} 张 GPU：每卡 batch {batch} × 梯度累积 {accum}，全局 batch 保持 "
          f"{values.get('batch_size', 1) * values.get('accumulative_counts', 1)}")
    # Each GPU sees 1/world_size of the data: a warm-up sized for one GPU can shrink below
    # the iterations it needs.
    if {"data_path", "max_epochs", "warmup_ratio"} <= set(values) \
            and Path(values["data_path"]).is_file():
        epochs, ratio = values["max_epochs"], values["warmup_ratio"]
        total = epochs * iterations_per_epoch(_count_records(values["data_path"]), batch, accum,
                                              world_size)
        new = safe_warmup_ratio(ratio, total)
        if new != ratio:
            options += [f"param_scheduler.0.end={round(new * epochs, 6)}",
                        f"param_scheduler.1.begin={round(new * epochs, 6)}"]
            print(f"预热比例 {ratio} -> {new}：每卡 {total} 步")
    return options


def launch_command(config, work_dir=None, *, gpus: int = 1, deepspeed: str | None = None, nnodes: int = 1,
                   node_rank: int = 0, addr: str | None = None, port: int = 29500) -> str:
    """The shell command that starts this training on one node (what :func:`launch` runs, by hand).

    ``xtuner train`` reads five environment variables and, when there is more than one
    process, starts ``torchrun`` with them: ``NPROC_PER_NODE`` (GPUs on this node), ``NNODES``
    (nodes), ``NODE_RANK`` (this node, 0 ... NNODES-1), ``ADDR`` (node 0's address, where the
    processes meet) and ``PORT`` (a free TCP port there). Every node runs the same command with
    its own ``NODE_RANK``; batch and accumulation are re-split for all ``gpus x nnodes`` GPUs
    (:func:`distributed_options`) so the global batch stays the config's. Paths inside the
    repository are written relative to it, for a learner to copy: run the command from the
    repository root, as the course does.

    Args:
        config: a config from :func:`write_config`.
        work_dir: ``--work-dir`` (on shared storage for several nodes); omitted when None.
        gpus: GPUs on each node.
        deepspeed: e.g. ``"deepspeed_zero2"``, or ``"deepspeed_zero3"`` when the weights must be
            split too (:func:`helpers.concepts.memory.deepspeed_for` chooses).
        nnodes: nodes.
        node_rank: this node's rank.
        addr: node 0's address (needed when ``nnodes > 1``).
        port: rendezvous port on node 0.

    Returns:
        One line for a shell.

    Example:
        >>> launch_command("lora.py", gpus=8, deepspeed="deepspeed_zero3", nnodes=2, node_rank=1,
        ...                addr="10.0.0.1")  # doctest: +SKIP
        'NPROC_PER_NODE=8 NNODES=2 NODE_RANK=1 ADDR=10.0.0.1 PORT=29500 xtuner train lora.py --deepspeed ...'
    """
    import shlex

    if gpus < 1 or nnodes < 1:
        raise ValueError(f"gpus and nnodes must be >= 1, got gpus={gpus}, nnodes={nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in 0..{nnodes - 1}, got {node_rank}")
    if nnodes > 1 and not addr:
        raise ValueError("several nodes need addr: the address of node 0, which every node can reach")
    env = []
    if gpus * nnodes > 1:
        env = [f"NPROC_PER_NODE={gpus}"]
        if nnodes > 1:
            env += [f"NNODES={nnodes}", f"NODE_RANK={node_rank}", f"ADDR={addr}", f"PORT={port}"]
    cmd = ["xtuner", "train", repo_relative(config)]
    if work_dir is not None:
        cmd += ["--work-dir", repo_relative(work_dir)]
    if deepspeed:
        cmd += ["--deepspeed", deepspeed]
    if gpus * nnodes > 1:
        cmd += ["--cfg-options", *distributed_options(config, gpus * nnodes)]
    return " ".join(env + [shlex.quote(c) for c in cmd])
