"""Beyond one GPU: XTuner + DeepSpeed ZeRO-2 on 1 vs N GPUs and LMDeploy tp=1 vs tp=N, in one run.

Parts (default N = 2, run in this order):

* ``prepare``: builds what is missing - the tiny checkpoint (``python -m helpers.models
  build-tiny``), the course's synthetic data and its LLaVA conversion, the InternVL2-2B-shaped
  random checkpoint (``make_2b_checkpoint.py``), the training photos and the serving photos.
* ``2b``: the upstream LoRA recipe (batch 4 x accumulation 2 on one GPU, re-split to 4 x 1 on two:
  the same global batch) on the 2B-shaped checkpoint with ``xtuner train CONFIG --deepspeed
  deepspeed_zero2``, once on one GPU and once with ``NPROC_PER_NODE=N`` (helpers.train.train_run.launch).
  Every sample is a 4032x3024 phone photo (13 tiles), so every step carries the same work.
  Measured: samples/s from the median step time after ``--warmup`` steps, the scaling ratio
  (goal >= 1.7x on 2 GPUs), PyTorch's peak memory (mmengine's log, rank 0) and nvidia-smi's peak
  per card, against :func:`helpers.concepts.memory.training_memory`'s prediction.
* ``serve``: LMDeploy's PyTorch engine (helpers.serve.pipeline.make_pipeline) on the 2B-shaped checkpoint
  with tp=1, then tp=N: a 2-turn image chat with each, and output tokens/s of ``--requests``
  requests (one 448 px photo each) with exactly ``--new-tokens`` new tokens, the median of
  ``--rounds`` timed rounds after a warm-up round.
* ``tiny``: the course's LoRA fine-tune of ``internvl2-tiny`` (tiny profile, a slice of the
  course's LLaVA set, one epoch) with ``--deepspeed deepspeed_zero2`` on one GPU and on N; the
  N-GPU checkpoint is converted (helpers.train.convert.convert) and the result loaded on CUDA with
  transformers for a one-image chat.

XTuner (transformers 4.48) and LMDeploy (transformers 5.17) cannot share a process, so each part
runs as a child process in its environment: an overlay env file of ``scripts/overlay_envs.sh``
(sourced; default ``/tmp/internvl-overlays/<env>.env``), else the repo's virtualenv
(``.venv-xtuner`` / ``.venv-lmdeploy``), else this Python. A part that runs past its share of
``--budget-s`` is stopped (with the training processes it started) and the next part runs.

Results: ``benchmarks/results/multi-gpu-<date>-<card>.json`` (rewritten after every part, with
each part's package versions) and a ``.log`` beside it holding every part's output; ``--copy-to
DIR`` copies both there after every part. Random weights: speed and memory only.

Usage (a machine with 2 GPUs):
    bash scripts/overlay_envs.sh WHEELS                   # the two environments, once
    python3 benchmarks/multi_gpu.py                       # all parts, ~7 min on 2 H100 / H200
    python3 benchmarks/multi_gpu.py --parts prepare,serve
    python3 benchmarks/multi_gpu.py --plan                # what would run, and how (any machine)
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS_DIR, print_table, ratio, write_results  # noqa: E402
from helpers.procs import stop_group  # noqa: E402

PARTS = ("prepare", "2b", "serve", "tiny")
PART_ENV = {"prepare": "lmdeploy", "2b": "xtuner", "serve": "lmdeploy", "tiny": "xtuner"}
# Longest each part may take (s); the run's --budget-s caps them further. Measured on one H200:
# an `xtuner train` of the 2B-shaped checkpoint spends ~60 s starting before its first step.
PART_CAP_S = {"prepare": 150, "2b": 300, "serve": 420, "tiny": 200}
MIN_PART_S = 45  # a part with less time left than this is skipped, not started
GOAL_SCALING = 1.7
PHOTO_13_TILES = [(4032, 3024), (3024, 4032)]  # 12 MP phone frames: 12 tiles + thumbnail each
CHAT = ("图中是什么菜？", "它属于哪个菜系？")
TINY_QUESTION = "图片中的食物叫什么名字？"
OVERLAY_DIR = Path("/tmp/internvl-overlays")
VENVS = {"xtuner": ROOT / ".venv-xtuner", "lmdeploy": ROOT / ".venv-lmdeploy"}


# ============================================================================ planning (parent)
def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--gpus", type=int, default=2, help="N: GPUs of the multi-GPU runs (compared with 1)")
    ap.add_argument("--iters", type=int, default=10, help="2b: training steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="2b: steps left out of the median")
    ap.add_argument("--images", type=int, default=8, help="2b: distinct training photos")
    ap.add_argument("--deepspeed", default="deepspeed_zero2", help="XTuner DeepSpeed config of every training run")
    ap.add_argument("--tiny-records", type=int, default=48, help="tiny: training samples (one epoch)")
    ap.add_argument("--per-dish", type=int, default=2, help="prepare: synthetic photos per dish if data is missing")
    ap.add_argument("--requests", type=int, default=64, help="serve: requests per timed round")
    ap.add_argument("--new-tokens", type=int, default=128, help="serve: forced new tokens per request")
    ap.add_argument("--rounds", type=int, default=3, help="serve: timed rounds (median)")
    ap.add_argument("--cache-max-entry-count", type=float, default=0.5,
                    help="serve: LMDeploy KV-cache share of free memory, the same for every tp")
    ap.add_argument("--model-2b", default=None,
                    help="2B-shaped checkpoint (default artifacts/models/internvl2-2b-random)")
    ap.add_argument("--xtuner-env", default=None, help="env file to source for XTuner parts "
                    f"(default {OVERLAY_DIR}/xtuner.env when it exists)")
    ap.add_argument("--lmdeploy-env", default=None, help="env file to source for LMDeploy parts "
                    f"(default {OVERLAY_DIR}/lmdeploy.env when it exists)")
    ap.add_argument("--budget-s", type=float, default=480, help="wall-clock budget of the whole run (s)")
    ap.add_argument("--out-dir", default=None, help=f"results folder (default {RESULTS_DIR})")
    ap.add_argument("--copy-to", default=None, help="also copy the JSON and log here after every part")
    ap.add_argument("--plan", action="store_true", help="print the parts and their commands; run nothing")
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # child: run this part
    ap.add_argument("--state", default=None, help=argparse.SUPPRESS)  # child: the parent's resolved settings
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts: unknown {unknown} (known: {', '.join(PARTS)})")
    args.parts = [p for p in PARTS if p in args.parts]  # prepare always first
    if args.gpus < 2:
        ap.error("--gpus must be >= 2 (the runs compare 1 GPU with N)")
    if not 0 <= args.warmup < args.iters:
        ap.error("--warmup must be >= 0 and below --iters")
    if args.rounds < 1 or args.requests < 1 or args.new_tokens < 1:
        ap.error("--rounds, --requests and --new-tokens must be >= 1")
    return args


def environment_launcher(env: str, env_file=None) -> tuple:
    """How a part of environment ``env`` ("xtuner" / "lmdeploy") is started.

    Returns:
        ``(argv prefix, description)``: ``bash -c 'source FILE && exec python3 "$@"'`` for an
        overlay env file, else the repo virtualenv's Python, else this Python.

    Example:
        >>> environment_launcher("xtuner", "/tmp/x.env")[0][:2]
        ['bash', '-c']
    """
    if env_file is None and (OVERLAY_DIR / f"{env}.env").is_file():
        env_file = OVERLAY_DIR / f"{env}.env"
    if env_file is not None:
        return (["bash", "-c", f'source {shlex.quote(str(env_file))} && exec python3 "$@"', "python3"],
                f"python3 with `source {env_file}`")
    venv_python = VENVS[env] / "bin" / "python"
    if venv_python.exists():
        return [str(venv_python)], str(venv_python)
    return [sys.executable], f"{sys.executable} (no {env} overlay or virtualenv found)"


def build_plan(args) -> list:
    """One step per part: ``{"part", "env", "how", "argv", "cap_s"}`` (argv without --state)."""
    steps = []
    for part in args.parts:
        env = PART_ENV[part]
        prefix, how = environment_launcher(env, getattr(args, f"{env}_env"))
        steps.append(dict(part=part, env=env, how=how, cap_s=PART_CAP_S[part],
                          argv=prefix + [str(Path(__file__).resolve()), "--part", part]))
    return steps


def part_timeout(cap_s: float, deadline: float, now: float) -> float | None:
    """Seconds a part may run: its cap, cut to the budget left; None when too little is left.

    Example:
        >>> part_timeout(300, deadline=1000.0, now=900.0)
        100.0
        >>> part_timeout(300, deadline=1000.0, now=980.0) is None
        True
    """
    left = deadline - now
    return None if left < MIN_PART_S else float(min(cap_s, left))


def _stream(proc, log, echo=True):
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        log.write(line)
        log.flush()
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()


def run_step(step: dict, state_file: Path, timeout: float, log) -> dict:
    """Run one part as a child process group, its output into ``log`` (and the console).

    On timeout the group gets SIGTERM (the part then stops the training it started) and,
    30 s later, SIGKILL.
    """
    argv = step["argv"] + ["--state", str(state_file)]
    log.write(f"\n===== part {step['part']} ({step['how']}), at most {timeout:.0f} s\n$ {shlex.join(argv)}\n")
    log.flush()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    reader = threading.Thread(target=_stream, args=(proc, log), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_group(proc, timeout=30)
    reader.join(timeout=10)
    return dict(rc=proc.returncode, seconds=round(time.perf_counter() - started, 1), timed_out=timed_out)


# ============================================================================ summary
def _fmt(v, unit="", digits=2):
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def summarise(parts: dict, gpus: int) -> tuple:
    """Headline numbers and printable lines from the parts' records.

    Args:
        parts: ``{part: record}`` as the parts wrote them.
        gpus: N.

    Returns:
        ``(summary dict, lines)``.

    Example:
        >>> s, lines = summarise({"2b": {"runs": [{"gpus": 1, "samples_per_s": 2.0},
        ...                                       {"gpus": 2, "samples_per_s": 3.6}]}}, 2)
        >>> s["scaling"], s["scaling_goal_met"]
        (1.8, True)
    """
    s, lines = {"gpus": gpus, "scaling_goal": GOAL_SCALING}, []
    runs = {r["gpus"]: r for r in parts.get("2b", {}).get("runs", [])}
    if runs:
        one, many = runs.get(1, {}), runs.get(gpus, {})
        s["samples_per_s_1"], s[f"samples_per_s_{gpus}"] = one.get("samples_per_s"), many.get("samples_per_s")
        s["scaling"] = ratio(many.get("samples_per_s"), one.get("samples_per_s"))
        s["scaling_goal_met"] = None if s["scaling"] is None else s["scaling"] >= GOAL_SCALING
        verdict = "not measured" if s["scaling"] is None else ("met" if s["scaling_goal_met"] else "not met")
        lines.append(f"2B ZeRO-2: 1 GPU {_fmt(one.get('samples_per_s'))} samples/s, {gpus} GPUs "
                     f"{_fmt(many.get('samples_per_s'))} samples/s -> {_fmt(s['scaling'], 'x')} "
                     f"(goal >= {GOAL_SCALING}x: {verdict})")
        for n, r in sorted(runs.items()):
            smi = ", ".join(f"GPU{i} {v / 1024:.1f}" for i, v in sorted((r.get("smi_peak_mib") or {}).items()))
            lines.append(f"  {n} GPU(s): {_fmt(r.get('s_per_iter'), ' s/step', 3)}, PyTorch peak "
                         f"{_fmt(r.get('peak_alloc_gib'), ' GiB', 1)} vs predicted "
                         f"{_fmt(r.get('predicted_gib'), ' GiB', 1)} ({_fmt(r.get('measured_vs_predicted'), 'x')}); "
                         f"nvidia-smi GiB: {smi or '-'}")
    serve = {r["tp"]: r for r in parts.get("serve", {}).get("runs", [])}
    if serve:
        t1, tn = serve.get(1, {}), serve.get(gpus, {})
        s["tok_s_tp1"], s[f"tok_s_tp{gpus}"] = t1.get("tok_s"), tn.get("tok_s")
        s["tp_speedup"] = ratio(tn.get("tok_s"), t1.get("tok_s"))
        chat = tn.get("chat") or {}
        s[f"chat_tp{gpus}_ok"] = chat.get("ok")
        lines.append(f"LMDeploy: tp=1 {_fmt(t1.get('tok_s'), ' tok/s', 0)}, "
                     f"tp={gpus} {_fmt(tn.get('tok_s'), ' tok/s', 0)} -> {_fmt(s['tp_speedup'], 'x')}; "
                     f"tp={gpus} 2-turn chat "
                     f"{'answered' if chat.get('ok') else 'FAILED' if chat else 'not run'} "
                     f"({chat.get('turns', '-')} turns, executor {tn.get('executor', '-')})")
    api = parts.get("serve", {}).get("api_server")
    if api:
        s[f"api_server_tp{api['tp']}_ok"] = api.get("ok")
        lines.append(f"LMDeploy api_server --tp {api['tp']}: {'answered' if api.get('ok') else 'FAILED'} "
                     f"({api.get('completion_tokens', '-')} tokens; ready in {_fmt(api.get('ready_s'), ' s', 0)})"
                     + (f" {api['error']}" if api.get("error") else ""))
    tiny = parts.get("tiny", {})
    if tiny.get("runs") or tiny.get("converted"):
        runs_t = {r["gpus"]: r for r in tiny.get("runs", [])}
        conv = tiny.get("converted") or {}
        s["tiny_converted_loads"] = conv.get("loaded")
        lines.append("tiny ZeRO-2: " + "; ".join(
            f"{n} GPU(s) {r.get('iterations')} steps, loss {_fmt(r.get('final_loss'), '', 3)}, "
            f"{_fmt(r.get('wall_s'), ' s', 0)}"
            for n, r in sorted(runs_t.items())) + f"; {gpus}-GPU result converted and "
            + ("loaded on CUDA" if conv.get("loaded") else "NOT loaded") + f": {conv.get('answer')!r}")
    return s, lines


# ============================================================================ parts (children)
class _Record:
    """A part's record, rewritten to its JSON file after every step (a part cut short keeps it)."""

    def __init__(self, path: Path):
        self.path, self.data = path, {}
        path.parent.mkdir(parents=True, exist_ok=True)

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        tmp.replace(self.path)


def _interrupt(signum, frame):  # SIGTERM from the parent: unwind, stopping what the part started
    raise KeyboardInterrupt(f"signal {signum}")


def zero_stage(deepspeed: str) -> int:
    """ZeRO stage of an XTuner DeepSpeed config name or path (``deepspeed_zero3_offload`` -> 3).

    Example:
        >>> zero_stage("deepspeed_zero2"), zero_stage("configs/deepspeed_zero3_offload.json")
        (2, 3)
    """
    import re

    m = re.search(r"zero(\d)", Path(deepspeed).name)
    if not m:
        raise ValueError(f"cannot tell the ZeRO stage of {deepspeed!r} (expected ...zero1/2/3...)")
    return int(m.group(1))


def _train(config, work_dir, gpus: int, deepspeed: str, need_checkpoint: bool, rec: "_Record") -> tuple:
    """``xtuner train`` on ``gpus`` GPUs (helpers.train.train_run.launch) under an nvidia-smi monitor."""
    from helpers.train.train_run import launch
    from helpers.train.logs import read_log
    from helpers.gpu import GpuMonitor

    if Path(work_dir).exists():
        shutil.rmtree(work_dir)
    # One GPU: NPROC_PER_NODE=1 as the single-GPU DeepSpeed runs before (benchmarks/bench_finetune.py);
    # N GPUs: launch sets NPROC_PER_NODE=N and re-splits batch / accumulation.
    env = {"NPROC_PER_NODE": "1"} if gpus == 1 else None
    started = time.perf_counter()
    with GpuMonitor(interval=0.5) as mon:
        run = launch(config, work_dir, gpus=gpus, deepspeed=deepspeed, overwrite=True, env=env)
        # launch starts its own process group: the parent kills it by this id if this part is killed
        rec.data.setdefault("train_pgids", []).append(run.proc.pid)
        rec.save()
        try:
            while run.poll() is None:
                time.sleep(1)
        finally:
            if run.returncode is None:  # interrupted: stop training within the parent's 30 s grace
                run.stop(timeout_s=8)
    wall = time.perf_counter() - started
    rows = read_log(work_dir)
    result = run.result() if need_checkpoint else None
    if not rows:
        raise RuntimeError(f"no logged training step in {work_dir}; log tail:\n{run.log_text()[-3000:]}")
    return rows, result, mon, round(wall, 1), run


def part_prepare(st: dict, rec: _Record):
    """Tiny checkpoint, course data, 2B-shaped checkpoint, training and serving photos."""
    from benchmarks.bench_finetune import make_dataset
    from benchmarks.bench_serving import make_requests
    from helpers.models import build_tiny
    from helpers.settings import get_settings

    S = get_settings("tiny")
    parts = set(st.get("parts", PARTS))
    t = time.perf_counter()
    build_tiny(S.tiny_model_path)  # the tiny run's model and the 2B checkpoint's tokenizer
    rec.data["tiny_model"] = dict(path=str(S.tiny_model_path), seconds=round(time.perf_counter() - t, 1))
    rec.save()
    t = time.perf_counter()
    train = S.llava_dir / "train.json"
    if "tiny" in parts and not train.is_file():
        if not S.sivqa_file.is_file():
            subprocess.run([sys.executable, "-m", "helpers.data.synth", "--out", str(S.data_root), "--per-dish",
                            str(st["per_dish"])], check=True, cwd=str(ROOT))
        subprocess.run([sys.executable, "-m", "helpers.data", "convert", "--sivqa", str(S.sivqa_file), "--images",
                        str(S.data_root), "--out", str(S.llava_dir)], check=True, cwd=str(ROOT))
    if train.is_file():
        rec.data["course_data"] = dict(train=str(train), seconds=round(time.perf_counter() - t, 1),
                                       records=len(json.loads(train.read_text(encoding="utf-8"))))
        rec.save()
    if not parts & {"2b", "serve"}:
        return
    model_2b = Path(st["model_2b"])
    t = time.perf_counter()
    if not (model_2b / "config.json").is_file():
        from benchmarks.make_2b_checkpoint import build

        info = build(model_2b)
        rec.data["model_2b"] = dict(info, built=True)
    else:
        rec.data["model_2b"] = dict(path=str(model_2b), built=False)
    rec.data["model_2b"]["seconds"] = round(time.perf_counter() - t, 1)
    rec.save()
    t = time.perf_counter()
    make_dataset(Path(st["work"]) / "data-2b", st["records_2b"], st["images"], sizes=PHOTO_13_TILES)
    make_requests(st["requests"], Path(st["work"]) / "serving-photos")
    rec.data["photos_s"] = round(time.perf_counter() - t, 1)


def part_2b(st: dict, rec: _Record):
    """1 GPU vs N GPUs, DeepSpeed ZeRO-2, upstream recipe, 2B-shaped checkpoint."""
    from benchmarks.bench_finetune import RECIPES, check_config, sample_shape, write_recipe_config
    from benchmarks.common import environment
    from helpers.train.xtuner_config import split_batch
    from helpers.concepts.memory import training_memory
    from helpers.settings import get_settings

    model_2b, work, n = Path(st["model_2b"]), Path(st["work"]), st["gpus"]
    train_json = work / "data-2b" / "train.json"
    if not train_json.is_file() or not (model_2b / "config.json").is_file():
        raise FileNotFoundError(f"{train_json} or {model_2b} missing: run the prepare part first")
    os.environ["INTERNVL_MODEL_PATH"] = str(model_2b)  # the full profile: the upstream recipe's values
    S = get_settings("full", optim_wrapper="amp")
    config = json.loads((model_2b / "config.json").read_text(encoding="utf-8"))
    shape = sample_shape(model_2b, train_json, config.get("max_dynamic_patch", 12))
    recipe = RECIPES["upstream"]
    rec.data.update(environment=environment(), sample=shape, recipe=dict(recipe), deepspeed=st["deepspeed"],
                    iters=st["iters"], warmup=st["warmup"], runs=[])
    rec.save()
    for gpus in (1, n):
        cfg, work_dir = write_recipe_config("upstream", recipe, S, model_2b, train_json,
                                            work / "runs-2b" / f"{gpus}gpu", st["iters"], smoke=False)
        parsed = check_config(cfg)
        if parsed["max_iters"] != st["iters"]:
            raise RuntimeError(f"{cfg}: max_iters {parsed['max_iters']}, expected {st['iters']}")
        batch, accum = split_batch(recipe["batch"], recipe["accum"], gpus)
        row = dict(gpus=gpus, batch_per_gpu=batch, accum=accum, global_batch=batch * accum * gpus, config=str(cfg))
        print(f"[2b] {gpus} GPU(s): batch {batch} x accumulation {accum} per GPU, {st['iters']} steps")
        rows, _, mon, wall, run = _train(cfg, work_dir, gpus, st["deepspeed"], need_checkpoint=False, rec=rec)
        from helpers.train.logs import iteration_times

        times = iteration_times(rows)[st["warmup"]:]  # mmengine logs a 10-iteration moving average
        mem = [r["memory"] for r in rows if r.get("memory") is not None]
        step = statistics.median(times) if times else None
        pred = training_memory(config, "lora", zero_stage=zero_stage(st["deepspeed"]), gpus=gpus, micro_batch=batch,
                               tokens=shape["tokens"], tiles=shape["tiles"], checkpointing=True)
        peak = max(mem) / 1024 if mem else None  # mmengine logs MiB
        row.update(steps_logged=len(rows), steps_timed=len(times), wall_s=wall, command=" ".join(run.cmd[1:]),
                   s_per_iter=round(step, 4) if step else None,
                   samples_per_s=round(batch * gpus / step, 3) if step else None,
                   step_times=[r.get("time") for r in rows], final_loss=rows[-1].get("loss"),
                   peak_alloc_gib=round(peak, 2) if peak else None,
                   predicted_gib=round(pred["total"] / 2**30, 2),
                   predicted_parts_gib={k: round(pred[k] / 2**30, 2) for k in
                                        ("weights", "gradients", "optimizer", "activations")},
                   measured_vs_predicted=ratio(peak, pred["total"] / 2**30),
                   smi_peak_mib={i: v for i, v in mon.peak_mib.items()},
                   smi_baseline_mib={i: v for i, v in mon.baseline_mib.items()})
        rec.data["runs"].append(row)
        rec.save()
        print(f"[2b] {gpus} GPU(s): {row['s_per_iter']} s/step, {row['samples_per_s']} samples/s, "
              f"peak {row['peak_alloc_gib']} GiB (predicted {row['predicted_gib']})")
    one, many = rec.data["runs"][0], rec.data["runs"][-1]
    rec.data["scaling"] = ratio(many["samples_per_s"], one["samples_per_s"])


def part_serve(st: dict, rec: _Record):
    """LMDeploy tp=1 then tp=N: 2-turn image chat and batch throughput, same requests."""
    import gc

    import torch
    from PIL import Image

    from benchmarks.bench_serving import make_requests
    from benchmarks.common import environment
    from helpers.env import need
    from helpers.serve.pipeline import make_pipeline, tp_executor_backend
    from helpers.gpu import gpu_snapshot
    from helpers.settings import INTERNVL2_SYSTEM_PROMPT, get_settings

    lmdeploy = need("lmdeploy")
    model_2b, n = Path(st["model_2b"]), st["gpus"]
    S = get_settings()
    requests = make_requests(st["requests"], Path(st["work"]) / "serving-photos")
    images = {p: Image.open(p).convert("RGB") for _, p in requests}
    prompts = [(q, images[p]) for q, p in requests]
    new = st["new_tokens"]
    gen = lmdeploy.GenerationConfig(max_new_tokens=new, min_new_tokens=new, ignore_eos=True, do_sample=False)
    # Random weights may pick the stop token first: min_new_tokens makes every turn say something.
    chat_gen = lmdeploy.GenerationConfig(max_new_tokens=24, min_new_tokens=8, do_sample=False)
    rec.data.update(environment=environment(), model=str(model_2b), requests=len(prompts), new_tokens=new,
                    rounds=st["rounds"], cache_max_entry_count=st["cache_max_entry_count"], runs=[])
    rec.save()
    if n > 1:  # first, in its own process: whatever happens to the pipelines below, this is measured
        rec.data["api_server"] = api_server_check(model_2b, n, requests[0][1], Path(st["work"]), S)
        rec.save()
    for tp in (1, n):
        row = dict(tp=tp, executor=tp_executor_backend(tp) or os.environ.get("LMDEPLOY_EXECUTOR_BACKEND")
                   or ("uni" if tp == 1 else "LMDeploy default (ray)"))
        rec.data["runs"].append(row)
        t = time.perf_counter()
        pipe = make_pipeline(model_2b, engine="lmdeploy", tp=tp, session_len=8192,
                             cache_max_entry_count=st["cache_max_entry_count"], system_prompt=INTERNVL2_SYSTEM_PROMPT,
                             settings=S)
        row["build_s"] = round(time.perf_counter() - t, 1)
        row["gpu_used_mib_after_build"] = {r["index"]: r["used_mib"] for r in gpu_snapshot()}
        rec.save()
        try:
            sess = pipe.chat((CHAT[0], prompts[0][1]), gen_config=chat_gen)
            first = sess.response.text
            first_tokens, first_input = sess.response.generate_token_len, sess.response.input_token_len
            sess = pipe.chat(CHAT[1], session=sess, gen_config=chat_gen)
            second = sess.response
            # Random weights: the text can be empty (most of the 92,553 ids are outside the tiny
            # tokenizer the checkpoint borrows), so "answered" is judged by tokens, and the second
            # turn's input must hold the first turn's (its 256 image tokens: the session kept the history).
            row["chat"] = dict(turns=len(sess.history), questions=list(CHAT), answers=[first, second.text],
                               generated_tokens=[first_tokens, second.generate_token_len],
                               input_tokens=[first_input, second.input_token_len],
                               ok=len(sess.history) == 2 and min(first_tokens, second.generate_token_len) >= 8
                               and second.input_token_len > first_input)
            sess.close()
            print(f"[serve] tp={tp} chat: {row['chat']['answers']!r}")
            rec.save()
            # Growing warm-up batches, each timed and printed at once: if a tp>1 run stops answering,
            # the log says at which batch size.
            for size in (2, 8, len(prompts)):
                t = time.perf_counter()
                pipe(prompts[:size], gen_config=lmdeploy.GenerationConfig(max_new_tokens=8, min_new_tokens=8,
                                                                          ignore_eos=True))
                row.setdefault("warmup_s", {})[size] = round(time.perf_counter() - t, 2)
                print(f"[serve] tp={tp} warm-up batch {size}: {row['warmup_s'][size]} s", flush=True)
                rec.save()
            rates, seconds = [], []
            for _ in range(st["rounds"]):
                start = time.perf_counter()
                out = pipe(prompts, gen_config=gen)
                sec = time.perf_counter() - start
                lens = sorted({r.generate_token_len for r in out})
                if lens != [new]:
                    raise RuntimeError(f"tp={tp}: answers of {lens} tokens, expected {new} each")
                rates.append(len(out) * new / sec)
                seconds.append(round(sec, 3))
                print(f"[serve] tp={tp} round {len(rates)}: {sec:.2f} s", flush=True)
            row.update(round_s=seconds, tok_s_rounds=[round(r, 1) for r in rates],
                       tok_s=round(statistics.median(rates), 1),
                       req_s=round(len(prompts) / statistics.median(seconds), 2),
                       gpu_used_mib_after_runs={r["index"]: r["used_mib"] for r in gpu_snapshot()})
            print(f"[serve] tp={tp}: {row['tok_s']} output tok/s (rounds {row['tok_s_rounds']})")
        finally:
            pipe.close()
            del pipe
            gc.collect()
            torch.cuda.empty_cache()
        rec.save()
    rec.data["tp_speedup"] = ratio(rec.data["runs"][-1].get("tok_s"), rec.data["runs"][0].get("tok_s"))


def api_server_check(model_dir: Path, tp: int, image: str, work: Path, settings) -> dict:
    """``lmdeploy serve api_server --tp N``: start it, ask one image question with the openai client, stop."""
    import openai

    from helpers.serve.api_server import ApiServer
    from helpers.serve.client import image_data_url

    server = ApiServer(model_dir, port=0, tp=tp, log_path=work / f"api_server-tp{tp}.log", settings=settings)
    out = dict(tp=tp, command=" ".join(server.command[1:]), log=str(server.log_path))
    t = time.perf_counter()
    try:
        server.start()
        out["models"] = server.wait_ready(timeout=200)
        out["ready_s"] = round(time.perf_counter() - t, 1)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=120, max_retries=0)
        reply = client.chat.completions.create(
            model=out["models"][0], max_tokens=16, temperature=0.0,
            messages=[{"role": "user", "content": [{"type": "text", "text": CHAT[0]},
                                                   {"type": "image_url", "image_url": {"url": image_data_url(image)}}]}])
        out.update(completion_tokens=reply.usage.completion_tokens, prompt_tokens=reply.usage.prompt_tokens,
                   answer=reply.choices[0].message.content, ok=reply.usage.completion_tokens > 0)
    except Exception as exc:  # recorded, with the server log's end, instead of ending the part
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}", log_tail=server.logs(40))
    finally:
        server.stop()
    print(f"[serve] api_server --tp {tp}: {'answered' if out.get('ok') else 'FAILED'} "
          f"({out.get('completion_tokens', '-')} tokens, ready in {out.get('ready_s', '-')} s)")
    return out


def part_tiny(st: dict, rec: _Record):
    """internvl2-tiny: ZeRO-2 on 1 GPU and on N, convert the N-GPU result, load it, chat."""
    import torch

    from benchmarks.common import environment
    from helpers.train.convert import convert, sizes
    from helpers.train.xtuner_config import split_batch, write_config
    from helpers.models import load_model
    from helpers.settings import get_settings
    from helpers.tiling import load_image, to_pixel_values
    from helpers.train.xtuner_config import Recipe

    n, work = st["gpus"], Path(st["work"]) / "tiny"
    S = get_settings("tiny", max_epochs=1, dataloader_num_workers=2)
    records = json.loads((S.llava_dir / "train.json").read_text(encoding="utf-8"))[:st["tiny_records"]]
    work.mkdir(parents=True, exist_ok=True)
    train = work / "train.json"
    train.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    recipe = Recipe.from_settings(S, n_train=len(records))
    rec.data.update(environment=environment(), model=str(S.base_model_path), records=len(records),
                    batch=S.batch_size, accum=S.accumulative_counts, deepspeed=st["deepspeed"], runs=[])
    rec.save()
    results = {}
    for gpus in (1, n):
        cfg = write_config(S, S.base_model_path, train, S.data_root, work / f"{gpus}gpu", recipe=recipe)
        rows, result, mon, wall, run = _train(cfg, work / f"{gpus}gpu", gpus, st["deepspeed"], need_checkpoint=True,
                                              rec=rec)
        batch, accum = split_batch(S.batch_size, S.accumulative_counts, gpus)
        results[gpus] = (cfg, result)
        rec.data["runs"].append(dict(gpus=gpus, batch_per_gpu=batch, accum=accum, iterations=result.max_iters,
                                     final_loss=result.final_loss, wall_s=wall, checkpoint=str(result.checkpoint),
                                     losses=[r.get("loss") for r in rows], command=" ".join(run.cmd[1:]),
                                     smi_peak_mib=dict(mon.peak_mib)))
        rec.save()
        print(f"[tiny] {gpus} GPU(s): {result.max_iters} steps, final loss {result.final_loss}, {wall} s")
    cfg, result = results[n]
    t = time.perf_counter()
    merged = convert(cfg, result.checkpoint, work / f"merged-{n}gpu", overwrite=True)
    conv = dict(path=str(merged), convert_s=round(time.perf_counter() - t, 1), sizes=sizes(merged), loaded=False)
    rec.data["converted"] = conv
    rec.save()
    model, tok = load_model(merged, device="cuda")
    image = S.data_root / records[0]["image"]
    pixels = to_pixel_values(load_image(image), max_num=6).to("cuda", torch.bfloat16)
    answer = model.chat(tok, pixels, "<image>\n" + TINY_QUESTION, dict(max_new_tokens=16, do_sample=False))
    conv.update(loaded=True, device=str(next(model.parameters()).device), image=str(image), question=TINY_QUESTION,
                answer=answer)
    print(f"[tiny] converted {n}-GPU model on CUDA answered: {answer!r}")


PART_FUNCS = {"prepare": part_prepare, "2b": part_2b, "serve": part_serve, "tiny": part_tiny}


def run_child(args) -> int:
    """Run one part (a child process of the parent run)."""
    st = json.loads(Path(args.state).read_text(encoding="utf-8"))
    previous = signal.signal(signal.SIGTERM, _interrupt)
    rec = _Record(Path(st["work"]) / "parts" / f"{args.part}.json")
    rec.data = {"part": args.part, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    rec.save()
    t0 = time.perf_counter()
    code = 0
    try:
        PART_FUNCS[args.part](st, rec)
    except BaseException as exc:  # noqa: BLE001 - recorded for the parent, then reported by exit status
        import traceback

        traceback.print_exc()
        rec.data["error"] = f"{type(exc).__name__}: {exc}"[:4000]
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    rec.data["seconds"] = round(time.perf_counter() - t0, 1)
    rec.save()
    return code


# ============================================================================ parent
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part:
        return run_child(args)
    from helpers.gpu import gpu_snapshot
    from helpers.settings import get_settings

    S = get_settings("tiny")
    work = S.artifacts / "bench" / "multi-gpu"
    model_2b = Path(args.model_2b).resolve() if args.model_2b else S.artifacts / "models" / "internvl2-2b-random"
    steps = build_plan(args)
    state = dict(vars(args), work=str(work), model_2b=str(model_2b),
                 records_2b=args.iters * 4 * args.gpus)  # the N-GPU run reads 4 samples per GPU per step
    print(f"multi-GPU run: 1 vs {args.gpus} GPUs; parts {', '.join(args.parts)}; budget {args.budget_s:.0f} s")
    print_table([{k: (v if k != "argv" else shlex.join(v)) for k, v in s.items() if k != "how"} for s in steps],
                ["part", "env", "cap_s", "argv"])
    if args.plan:
        for s in steps:
            print(f"  {s['part']}: {s['how']}")
        return 0
    cards = gpu_snapshot()
    if len(cards) < args.gpus:
        print(f"[error] {len(cards)} GPU(s) visible, {args.gpus} needed (nvidia-smi)")
        return 2
    env = dict(card=cards[0]["name"], gpus=len(cards), card_memory_gib=round(cards[0]["total_mib"] / 1024, 1),
               python=sys.version.split()[0], host=os.uname().nodename,
               date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "parts", ignore_errors=True)
    state_file = work / "state.json"
    state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
    results = dict(environment=env, gpus=args.gpus, command=shlex.join([sys.argv[0], *(argv or sys.argv[1:])]),
                   state=state, plan=[{k: v for k, v in s.items() if k != "argv"} for s in steps], parts={},
                   steps={}, random_weights=True, complete=False)
    path = write_results("multi-gpu", results, args.out_dir, quiet=True)
    log_path = path.with_suffix(".log")
    deadline = time.perf_counter() + args.budget_s

    def publish(final=False):
        write_results("multi-gpu", results, args.out_dir, path, quiet=not final)
        if args.copy_to:
            dest = Path(args.copy_to)
            dest.mkdir(parents=True, exist_ok=True)
            for f in (path, log_path):
                if f.is_file():
                    shutil.copy2(f, dest / f.name)

    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"multi-GPU run {env['date']} on {len(cards)}x {env['card']}\n")
        for step in steps:
            timeout = part_timeout(step["cap_s"], deadline, time.perf_counter())
            if timeout is None:
                results["steps"][step["part"]] = dict(skipped="budget spent")
                print(f"[skip] part {step['part']}: less than {MIN_PART_S} s of the budget left")
                continue
            print(f"\n===== part {step['part']} ({step['env']} environment), at most {timeout:.0f} s")
            outcome = run_step(step, state_file, timeout, log)
            part_file = work / "parts" / f"{step['part']}.json"
            results["parts"][step["part"]] = (json.loads(part_file.read_text(encoding="utf-8"))
                                              if part_file.is_file() else {})
            results["steps"][step["part"]] = outcome
            if outcome["timed_out"]:  # training groups the part started and could not stop in time
                for pgid in results["parts"][step["part"]].get("train_pgids", []):
                    try:
                        os.killpg(pgid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            print(f"===== part {step['part']}: exit {outcome['rc']} after {outcome['seconds']} s"
                  + (" (stopped: over its time)" if outcome["timed_out"] else ""))
            results["summary"], _ = summarise(results["parts"], args.gpus)
            publish()
        summary, lines = summarise(results["parts"], args.gpus)
        results["summary"] = summary
        failed = [p for p, o in results["steps"].items() if o.get("rc") != 0]
        results["complete"] = not failed
        text = "\n".join([f"\n== multi-GPU summary: {len(cards)}x {env['card']} ==", *lines,
                          f"parts failed or skipped: {', '.join(failed) or 'none'}"])
        print(text)
        log.write(text + "\n")
    publish(final=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
