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

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers.settings import REPO_ROOT, XTUNER_SYSTEM_PROMPT
from helpers.train.config import (Recipe, _count_records, config_values, iterations_per_epoch, render_config,
                                  safe_warmup_ratio, split_batch, write_config)  # noqa: F401  (re-exported: the config half of the API)
from helpers.train.checkpoints import CKPT_RE, _iteration, checkpoint_problem, last_checkpoint  # noqa: F401  (re-exported)
from helpers.train.train_run import ITER_RE, LOG_NAME, PAIR_RE, TrainingFailed, TrainResult, TrainRun, launch  # noqa: F401

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
    print(f"{world_size} GPUs: batch {batch} x accumulation {accum} per GPU keeps the global "
          f"batch of {values.get('batch_size', 1) * values.get('accumulative_counts', 1)}")
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
            print(f"warm-up ratio {ratio} -> {new}: {total} iterations per GPU")
    return options


def launch_command(config, work_dir=None, *, gpus: int = 1, deepspeed: str | None = None, nnodes: int = 1,
                   node_rank: int = 0, addr: str | None = None, port: int = 29500) -> str:
    """The shell command that starts this training on one node (what :func:`launch` runs, by hand).

    ``xtuner train`` reads five environment variables and, when there is more than one
    process, starts ``torchrun`` with them: ``NPROC_PER_NODE`` (GPUs on this node), ``NNODES``
    (nodes), ``NODE_RANK`` (this node, 0 ... NNODES-1), ``ADDR`` (node 0's address, where the
    processes meet) and ``PORT`` (a free TCP port there). Every node runs the same command with
    its own ``NODE_RANK``; batch and accumulation are re-split for all ``gpus x nnodes`` GPUs
    (:func:`distributed_options`) so the global batch stays the config's.

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
    cmd = ["xtuner", "train", str(config)]
    if work_dir is not None:
        cmd += ["--work-dir", str(work_dir)]
    if deepspeed:
        cmd += ["--deepspeed", deepspeed]
    if gpus * nnodes > 1:
        cmd += ["--cfg-options", *distributed_options(config, gpus * nnodes)]
    return " ".join(env + [shlex.quote(c) for c in cmd])


# --------------------------------------------------------------------------- logs
LOG_FIELDS = ("iteration", "loss", "lr", "time", "data_time", "memory", "grad_norm")


def _row(values: dict, iteration: int) -> dict:
    row = {"iteration": iteration}
    for key in LOG_FIELDS[1:]:
        value = values.get(key)
        row[key] = float(value) if value is not None else None
    return row


MMENGINE_WINDOW = 10  # mmengine's LogProcessor logs `time` as the mean of the last 10 iterations


def iteration_times(rows, window: int = MMENGINE_WINDOW) -> list:
    """Seconds of each iteration, undoing mmengine's moving average of the logged ``time``.

    mmengine logs ``time`` averaged over the last ``window`` iterations (all of them for the
    first ``window``), so the first logged values carry the slow warm-up steps for a while. With
    one row per iteration, ``t_n = n*a_n - (n-1)*a_(n-1)`` for ``n <= window`` and
    ``t_n = t_(n-window) + window*(a_n - a_(n-1))`` after that give the exact per-iteration times.

    Args:
        rows: :func:`read_log` rows (or dicts with ``iteration`` and ``time``) of consecutive
            iterations starting at 1 (``log_interval = 1``).
        window: the averaging window the log was written with.

    Returns:
        One float per row.

    Raises:
        ValueError: rows that are not iterations 1, 2, 3, ... or lack a time.

    Example:
        >>> iteration_times([{"iteration": 1, "time": 3.0}, {"iteration": 2, "time": 2.0}])
        [3.0, 1.0]
    """
    avg = []
    for k, row in enumerate(rows, 1):
        if row.get("iteration") != k or row.get("time") is None:
            raise ValueError(f"iteration_times needs every iteration from 1 logged with its time; row {k} is {row}")
        avg.append(float(row["time"]))
    times: list = []
    for n in range(1, len(avg) + 1):
        if n <= window:
            t = n * avg[n - 1] - (n - 1) * (avg[n - 2] if n > 1 else 0.0)
        else:
            t = times[n - 1 - window] + window * (avg[n - 1] - avg[n - 2])
        times.append(round(t, 6))
    return times


def read_log(work_dir) -> list:
    """Loss, lr, timing and memory per logged iteration of a work dir.

    Reads mmengine's ``<work_dir>/<timestamp>/vis_data/scalars.json`` of every launch (a
    resumed run re-logs iterations after its checkpoint; the later launch wins), else the
    text logs.

    Returns:
        Dicts with iteration, loss, lr, time, data_time, memory, grad_norm (None if absent),
        sorted by iteration.

    Example:
        >>> rows = read_log("runs/lora")   # doctest: +SKIP
        >>> rows[-1]["iteration"]          # doctest: +SKIP
        48
    """
    work_dir = Path(work_dir)
    rows: dict = {}
    for path in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError:
                print(f"{path}:{number}: skipped an unreadable line (run killed while writing?)")
                continue
            if "loss" in values:
                step = int(values.get("iter", values.get("step", 0)))
                rows[step] = _row(values, step)
    if not rows:
        texts = sorted(work_dir.glob("*/*.log")) or [work_dir / LOG_NAME]
        for path in texts:
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                m = ITER_RE.search(line)
                if m:
                    rows[int(m.group(1))] = _row(dict(PAIR_RE.findall(m.group(3))),
                                                 int(m.group(1)))
    return [rows[k] for k in sorted(rows)]


def plot_log(rows):
    """Loss and learning rate per iteration, side by side.

    Args:
        rows: :func:`read_log` output.

    Returns:
        A matplotlib Figure.

    Example:
        >>> plot_log(read_log("runs/lora"))  # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("no logged iterations to plot (did training log any step?)")
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    loss_ax, lr_ax = fig.subplots(1, 2)
    its = [r["iteration"] for r in rows]
    loss_ax.plot(its, [r["loss"] for r in rows], marker=".")
    loss_ax.set(xlabel="iteration", ylabel="loss", title="training loss")
    lr_ax.plot(its, [r["lr"] for r in rows], marker=".", color="tab:orange")
    lr_ax.set(xlabel="iteration", ylabel="learning rate", title="learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    return fig


# --------------------------------------------------------------------------- conversion
def chat_template_config(model_name: str = "internvl2-xtuner-lora") -> dict:
    """LMDeploy ``ChatTemplateConfig`` fields for the format XTuner trained with.

    Load it with ``lmdeploy.ChatTemplateConfig.from_json(path)`` or pass the file to
    ``lmdeploy serve api_server --chat-template``.
    """
    return dict(model_name=model_name, system="<|im_start|>system\n",
                meta_instruction=XTUNER_SYSTEM_PROMPT, eosys="<|im_end|>",
                user="<|im_start|>user\n", eoh="<|im_end|>", assistant="<|im_start|>assistant\n",
                eoa="<|im_end|>", separator="", stop_words=["<|im_end|>"])


def convert(config, checkpoint, out_dir, overwrite: bool = False) -> Path:
    """Merge a LoRA checkpoint into a standalone InternVL2 model directory.

    Runs XTuner's ``convert_to_official`` in the XTuner environment, then completes the
    directory: the course's remote-code ``.py`` files, generation config, XTuner's system
    prompt as the default of ``chat()`` and of the tokenizer's chat template,
    ``chat_template_config.json`` (the exact format the model was trained with, for LMDeploy's
    ``--chat-template``) and ``conversion.json`` (provenance; see :func:`sizes`).

    Args:
        config: the training config.
        checkpoint: an ``iter_N.pth`` of that training (e.g. ``TrainResult.checkpoint``).
        out_dir: new model directory.
        overwrite: replace ``out_dir`` when it already exists. The new model is built beside
            it and swapped in only once complete, so a failed or interrupted conversion leaves
            the earlier model as it was.

    Returns:
        ``out_dir``.

    Example:
        >>> convert("runs/lora.py", "runs/lora/iter_48.pth", "runs/merged")  # doctest: +SKIP
        PosixPath('runs/merged')
    """
    config, checkpoint, out_dir = (Path(config).resolve(), Path(checkpoint).resolve(),
                                   Path(out_dir).resolve())
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise ValueError(f"checkpoint {checkpoint} {problem}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace it")
    base = Path(config_values(config).get("path", ""))
    xtuner = _xtuner_executable()
    # Built beside out_dir and renamed into place when complete: a conversion that fails or is
    # killed never leaves a half-written model under the name notebooks and run records use.
    building = out_dir.parent / f".{out_dir.name}.converting"
    shutil.rmtree(building, ignore_errors=True)  # what a killed conversion left
    building.parent.mkdir(parents=True, exist_ok=True)
    cmd = [_xtuner_python(xtuner), "-m", "xtuner.configs.internvl.v1_5.convert_to_official",
           str(config), str(checkpoint), str(building)]
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=_child_env(xtuner.parent, None),
                              capture_output=True, text=True)
        if proc.returncode != 0 or not (building / "config.json").exists():
            out = (proc.stdout + proc.stderr).splitlines()[-40:]
            raise RuntimeError(f"convert_to_official failed (exit {proc.returncode}):\n"
                               + "\n".join(out))
        copied = _complete_model_dir(building, base)
        for path in building.iterdir():  # safetensors come out 0600; the model is meant to be shared
            path.chmod(0o644)
        record = dict(config=str(config), checkpoint=str(checkpoint),
                      checkpoint_bytes=_bytes(checkpoint), base_model=str(base),
                      system_prompt=XTUNER_SYSTEM_PROMPT, added=copied,
                      convert_s=round(time.time() - started, 1))
        (building / "conversion.json").write_text(json.dumps(record, ensure_ascii=False, indent=2),
                                                  encoding="utf-8")
        if out_dir.exists():  # overwrite=True (or an empty folder): the old model goes only now
            replaced = out_dir.parent / f".{out_dir.name}.replaced"
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(out_dir, replaced)
            os.replace(building, out_dir)
            shutil.rmtree(replaced)
        else:
            os.replace(building, out_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out_dir


def _complete_model_dir(out_dir: Path, base: Path) -> list:
    """Add what convert_to_official leaves out; returns what was copied or written."""
    from helpers.models import copy_remote_code, set_system_prompt

    # convert_to_official writes only the configuration_*.py files. The course's InternVL2
    # code (same structure and parameter names as InternVL2-2B's) also honours a
    # `system_message` in config.json, which set_system_prompt writes below.
    added = [p.name for p in copy_remote_code(out_dir)]
    for name in ("generation_config.json", "preprocessor_config.json"):
        if (base / name).is_file() and not (out_dir / name).exists():
            shutil.copy2(base / name, out_dir / name)
            added.append(name)
    if not (out_dir / "tokenizer_config.json").is_file():
        raise RuntimeError(f"convert_to_official wrote no tokenizer into {out_dir}")
    # The merged model was trained with XTuner's system prompt: make it the default of
    # InternVLChatModel.chat (config.json) and of the tokenizer's chat template (LMDeploy).
    set_system_prompt(out_dir, XTUNER_SYSTEM_PROMPT)
    added += ["config.json:system_message", "tokenizer_config.json:chat_template"]
    (out_dir / "chat_template_config.json").write_text(
        json.dumps(chat_template_config(), ensure_ascii=False, indent=2), encoding="utf-8")
    added.append("chat_template_config.json")
    return added


def _bytes(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def sizes(model_dir) -> dict:
    """Disk sizes of a converted model and the checkpoint it came from.

    Returns:
        ``checkpoint_bytes`` (the iter_N.pth: LoRA + projector, plus AdamW state when saved),
        ``trainable_bytes`` (only the LoRA + projector tensors; None without torch),
        ``model_bytes`` (merged weights in ``model_dir``), and ``ratio`` = model / trainable.

    Example:
        >>> sizes("runs/merged")["model_bytes"] > 0   # doctest: +SKIP
        True
    """
    model_dir = Path(model_dir)
    record = json.loads((model_dir / "conversion.json").read_text(encoding="utf-8"))
    weights = [p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin")]
    model_bytes = sum(p.stat().st_size for p in weights)
    trainable = None
    checkpoint = Path(record["checkpoint"])
    # mmengine writes one file; DeepSpeed a folder whose *model_states.pt holds the module's tensors
    weights_file = checkpoint if checkpoint.is_file() else next(iter(sorted(checkpoint.glob("*model_states.pt"))), None)
    if weights_file is not None:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            state = torch.load(weights_file, map_location="cpu", weights_only=False, mmap=True)
            state = state.get("state_dict", state.get("module", state))
            trainable = sum(t.numel() * t.element_size() for t in state.values()
                            if torch.is_tensor(t))
    return dict(checkpoint_bytes=record["checkpoint_bytes"], trainable_bytes=trainable,
                model_bytes=model_bytes,
                ratio=round(model_bytes / trainable, 1) if trainable else None)
