"""Fine-tuning speed: the course's XTuner recipe as launched upstream vs a recommended and a lean one.

Every recipe trains the same InternVL2-2B-shaped random checkpoint (``make_2b_checkpoint.py``)
on the same synthetic LLaVA set: FoodieQA-like phone photos (4032x3024, 3024x4032, 16:9, 1:1,
3:2 ... -> 7-13 tiles of 448 px) with one question and a fixed-length answer each. Each recipe
is ``xtuner train CONFIG --deepspeed deepspeed_zero2`` (helpers.train.train_run.launch) on a config
from helpers.train.finetune / helpers.train.xtuner_config (full profile: the upstream LoRA recipe,
r 128, batch 4 x accumulation 2, max_length 8192), limited to ``--iters`` iterations with no
checkpoints; the recipes differ only by the overrides appended to the config:

* ``upstream``: as the course runs it (LLM activation checkpointing on, 4 dataloader workers).
* ``recommended``: the same training maths, faster: the upstream micro-batch (4 x accumulation 2),
  no activation checkpointing on the LLM (the ViT is frozen and never had any), fused AdamW, the
  LM head through weights padded to 64 rows (``aligned_lm_head``) and only at labelled positions
  (``answer_only_lm_head``), liger-kernel's RMSNorm and SwiGLU. sdpa attention and bf16 are already
  the course's (its modeling_internlm2 maps XTuner's flash_attention_2 request to sdpa; DeepSpeed
  runs bf16).
* ``balanced``: the same levers at micro-batch 2 x accumulation 4, for a 40-48 GB card.
* ``lean``: the same maths in less memory: micro-batch 1 x accumulation 8, checkpointing on,
  ZeRO-2 (goal < 20 GB in nvidia-smi and no slower than upstream).
* ``recommended_cached``: ``recommended`` with the frozen ViT's tokens reused for a tile seen before
  (``cache_vision_features``, helpers.train.vit_cache). The set has ``--images`` photos (32) for
  ``8 x --iters`` records, so after the first 4 iterations every tile has been seen: its median is
  the steady state of epochs 2-10 of a course job, not of its first epoch.
* ``no_checkpointing`` / ``_b8`` / ``_b1``: ablations (checkpointing off at micro-batch 4, 8, 1);
  ``upstream_aligned`` / ``recommended_unaligned``: the aligned head alone, on and off.

Measured per recipe: median seconds per iteration after ``--warmup`` iterations (mmengine's
per-iteration ``time``), seconds per sample, peak allocated memory (mmengine's ``memory``),
nvidia-smi peak (a sampling thread), the projected time of the 640-iteration course job
(640 x 4 samples), model FLOPs per sample and utilisation against the bf16 matmul rate
measured on the same card. Random weights: speed only.

Usage (GPU, XTuner environment):
    python benchmarks/bench_finetune.py                       # upstream, recommended, lean
    python benchmarks/bench_finetune.py --recipes upstream,recommended --iters 20
    python benchmarks/bench_finetune.py --recipes upstream,recommended,lean --repeats 3   # the spread
    python benchmarks/bench_finetune.py --smoke               # CPU: tiny shapes, 2 iterations
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (PHOTO_SIZES, environment, matmul_tflops, need_cuda, print_table,  # noqa: E402
                               synthetic_photos, write_results)
from helpers.concepts.architecture import count_parameters  # noqa: E402
from helpers.concepts.memory import VIT_TOKENS_PER_TILE, lora_parameters  # noqa: E402
from helpers.settings import XTUNER_SYSTEM_PROMPT, get_settings  # noqa: E402
from helpers.tiling import tile_count  # noqa: E402

COURSE_JOB_ITERS = 640  # the upstream course's job: 640 iterations of 4 samples on one GPU
ANSWER = "这道菜是四川的麻婆豆腐，用豆腐、牛肉末、豆瓣酱和花椒做成，麻辣鲜香，是川菜的代表菜之一。"
QUESTION = "图片中的食物叫什么名字？属于哪个菜系？\n<image>"

# upstream, recommended, balanced and lean ARE helpers.train.speed_recipes' "course", "recommended", "balanced"
# and "lean" (built from them below, never copied); the rest are ablations, written as the same settings fields.
def _speed_recipe(name: str) -> dict:
    """A speed recipe of the course (helpers.train.speed_recipes) as this benchmark's row."""
    from helpers.train.speed_recipes import speed_settings

    # the recipe's knobs do not depend on the checkpoint: any path stands in for INTERNVL_MODEL_PATH
    S = speed_settings(get_settings("full", model_path=Path("internvl2-2b")), name)
    return dict(batch=S.batch_size, accum=S.accumulative_counts, workers=4, fused=S.fused_adamw,
                checkpointing=S.llm_activation_checkpointing, aligned=S.aligned_lm_head,
                answer_only=S.answer_only_lm_head, liger=S.fused_kernels)


RECIPES = {
    "upstream": _speed_recipe("course"),
    "recommended": _speed_recipe("recommended"),
    "balanced": _speed_recipe("balanced"),
    "lean": _speed_recipe("lean"),
    # recommended, and the frozen ViT encodes each tile once (the tiny profile's cache_vision_features)
    "recommended_cached": dict(_speed_recipe("recommended"), cache=True),
    # upstream with only the LLM's activation checkpointing off: what the recompute alone costs
    "no_checkpointing": dict(batch=4, accum=2, workers=4, fused=False, checkpointing=False),
    # without checkpointing at micro-batch 8 (out of memory on an 80 GB H100) and 1
    "no_checkpointing_b8": dict(batch=8, accum=1, workers=8, fused=True, checkpointing=False),
    "no_checkpointing_b1": dict(batch=1, accum=8, workers=4, fused=True, checkpointing=False),
    # the LM head (92,553 rows, odd) through weights padded to 64 rows: same logits, aligned matmuls
    "upstream_aligned": dict(batch=4, accum=2, workers=4, fused=False, checkpointing=True, aligned=True),
    # the recommended recipe as measured before the aligned head joined it
    "recommended_unaligned": dict(batch=2, accum=4, workers=4, fused=True, checkpointing=False),
    # the recommended recipe before the labelled-only head and liger joined it (2026-11-26 .. 2026-12-07)
    "recommended_full_head": dict(batch=2, accum=4, workers=4, fused=True, checkpointing=False, aligned=True),
    # the LM head and loss on labelled positions only, without liger; and at micro-batch 4 (the memory it frees)
    "recommended_answer_only": dict(batch=2, accum=4, workers=4, fused=True, checkpointing=False, aligned=True,
                                    answer_only=True),
    "answer_only_b4": dict(batch=4, accum=2, workers=4, fused=True, checkpointing=False, aligned=True,
                           answer_only=True),
    # the name under which today's recommended recipe was first measured (2026-12-07)
    "fast_b4": dict(batch=4, accum=2, workers=4, fused=True, checkpointing=False, aligned=True, answer_only=True,
                    liger=True),
    # the lean recipe before the labelled-only head; and a lean candidate without recompute
    "lean_full_head": dict(batch=1, accum=8, workers=4, fused=False, checkpointing=True),
    "lean_fast": dict(batch=1, accum=8, workers=4, fused=True, checkpointing=False, aligned=True, answer_only=True,
                      liger=True),
    # the lean recipe (recompute on, micro-batch 1) with every kernel-level lever of the recommended one
    "lean_liger": dict(batch=1, accum=8, workers=4, fused=True, checkpointing=True, aligned=True, answer_only=True,
                       liger=True),
}


def recipe_settings(S, r: dict, smoke: bool):
    """The course settings with a recipe's knobs: the course's renderer writes them into the config."""
    return S.replace(batch_size=r["batch"], accumulative_counts=r["accum"], llm_activation_checkpointing=r["checkpointing"],
                     fused_adamw=r["fused"] and not smoke, aligned_lm_head=bool(r.get("aligned")),
                     answer_only_lm_head=bool(r.get("answer_only")), fused_kernels=bool(r.get("liger")),
                     cache_vision_features=bool(r.get("cache")), dataloader_num_workers=0 if smoke else r["workers"])


def make_dataset(root, n_records: int, n_images: int, seed: int = 0, sizes=PHOTO_SIZES) -> Path:
    """LLaVA-format ``train.json`` + images under ``root`` (same question and answer length each).

    Returns:
        The train.json path (image paths relative to ``root``).
    """
    root = Path(root)
    photos = synthetic_photos(root / "images", n_images, seed=seed, sizes=sizes)
    records = []
    for i in range(n_records):
        p = photos[i % len(photos)]
        records.append({"id": f"bench-{i}", "image": str(p.relative_to(root)),
                        "conversations": [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": ANSWER}]})
    path = root / "train.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def sample_shape(model_path: Path, train_json: Path, max_num: int) -> dict:
    """Mean tiles and tokens of one training sample (image tokens + templated text, estimated)."""
    from PIL import Image
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=True)
    records = json.loads(train_json.read_text(encoding="utf-8"))
    text = len(tok(XTUNER_SYSTEM_PROMPT + QUESTION + ANSWER).input_ids) + 12  # + role markers
    tiles = []
    for rec in records:
        with Image.open(train_json.parent / rec["image"]) as im:
            tiles.append(tile_count(*im.size, max_num=max_num))
    mean_tiles = statistics.mean(tiles)
    return {"tiles": round(mean_tiles, 2), "tiles_min": min(tiles), "tiles_max": max(tiles),
            "text_tokens": text, "tokens": round(mean_tiles * 256 + text)}


def flops_per_sample(config: dict, tokens: float, tiles: float, lora_r: int, checkpointing: bool) -> dict:
    """Matmul FLOPs of one LoRA training sample (frozen ViT and LLM, trained LoRA + projector).

    The LLM runs forward and backward for activations (2 x forward; its frozen weights get no
    weight gradient), LoRA and the projector forward + both backward passes (3 x), the frozen
    ViT forward only. Attention scores count ``4 x layers x n^2 x width`` (halved when causal).
    ``hardware`` adds the recompute of activation checkpointing; ``model`` does not (the
    convention for utilisation).
    """
    lc, vc = config["llm_config"], config["vision_config"]
    counts = count_parameters(config)
    d, layers = lc["hidden_size"], lc["num_hidden_layers"]
    llm_matmul = counts["language_model"] - lc["vocab_size"] * d  # the embedding is a lookup
    llm_fwd = 2 * llm_matmul * tokens + 4 * layers * tokens**2 * d / 2
    lora_fwd = 2 * lora_parameters(config, lora_r) * tokens
    vit_tokens = tiles * VIT_TOKENS_PER_TILE
    vit_fwd = 2 * counts["vision_model"] * vit_tokens + 4 * vc["num_hidden_layers"] * tiles * VIT_TOKENS_PER_TILE**2 * \
        vc["hidden_size"]
    mlp_fwd = 2 * counts["mlp1"] * tiles * 256
    model = 2 * llm_fwd + 3 * lora_fwd + vit_fwd + 3 * mlp_fwd
    hardware = model + (llm_fwd + lora_fwd if checkpointing else 0)
    return {"model_tflop": round(model / 1e12, 2), "hardware_tflop": round(hardware / 1e12, 2)}


def overrides(name: str, r: dict, iters: int, smoke: bool, profile: int = 0) -> str:
    """The benchmark's own config lines, appended to the course config rendered for the recipe.

    Only what a benchmark run needs (a fixed number of iterations, a log line per iteration, no
    checkpoints, pinned dataloader memory); the recipe's knobs come from :func:`recipe_settings`.
    ``profile`` > 0 adds :class:`helpers.train.profiling.StepProfilerHook` over the last ``profile``
    iterations (they are left out of the timing median).
    """
    lines = [f"\n# ---- bench_finetune.py: recipe '{name}' ({iters} iterations, no checkpoints) ----",
             f"train_cfg = dict(type=TrainLoop, max_iters={iters})",
             "default_hooks['logger']['interval'] = 1  # every iteration's time and memory",
             f"default_hooks['checkpoint']['interval'] = {iters * 100}",
             "default_hooks['checkpoint']['save_last'] = False",
             "custom_hooks = []  # DatasetInfoHook only prints a decoded sample",
             *([f"from helpers.train.profiling import StepProfilerHook",
                f"custom_hooks.append(dict(type=StepProfilerHook, start={iters - profile}, iters={profile}))"]
               if profile else [])]
    if r["workers"] and not smoke:
        lines += ["train_dataloader['pin_memory'] = True", "train_dataloader['persistent_workers'] = True"]
    return "\n".join(lines) + "\n"


def write_recipe_config(name: str, r: dict, S, model_path: Path, train_json: Path, runs: Path, iters: int,
                        smoke: bool, profile: int = 0) -> tuple:
    """Render the course config for ``S`` with recipe ``name``'s knobs, and append the benchmark's lines.

    Returns:
        (config path, work dir).
    """
    from helpers.train.xtuner_config import Recipe, write_config

    S = recipe_settings(S, r, smoke)
    recipe = Recipe.from_settings(S, n_train=len(json.loads(train_json.read_text(encoding="utf-8"))))
    recipe = dataclasses.replace(recipe, log_interval=1, save_steps=iters * 100)
    work_dir = runs / name
    path = write_config(S, model_path, train_json, train_json.parent, work_dir, recipe=recipe)
    path.write_text(path.read_text(encoding="utf-8") + overrides(name, r, iters, smoke, profile), encoding="utf-8")
    return path, work_dir


def check_config(path: Path) -> dict:
    """Parse a config with mmengine (as ``xtuner train`` will) and return the values that matter."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(path))
    return {"batch": cfg.train_dataloader.batch_size, "accum": cfg.optim_wrapper.accumulative_counts,
            "workers": cfg.train_dataloader.num_workers, "max_iters": cfg.train_cfg.max_iters,
            "fused": bool(cfg.optim_wrapper.optimizer.get("fused", False))}


def run_recipe(name: str, config: Path, work_dir: Path, deepspeed: str | None, warmup: int, cuda: bool,
               profile: int = 0) -> dict:
    """Launch one recipe, wait, and read its per-iteration log."""
    import shutil

    from helpers.train.logs import iteration_times, read_log
    from helpers.train.train_run import launch
    from helpers.gpu import GpuMonitor

    if work_dir.exists():
        shutil.rmtree(work_dir)
    t0 = time.perf_counter()
    with GpuMonitor(interval=0.5) as mon:
        # NPROC_PER_NODE=1 makes `xtuner train` start torchrun, the form measured with DeepSpeed
        # on one GPU before (shared/notes/xtuner-on-gpu.md).
        env = {"NPROC_PER_NODE": "1"} if deepspeed else None
        run = launch(config, work_dir, deepspeed=deepspeed, overwrite=True, env=env)
        code = run.wait(progress=False)
    wall = time.perf_counter() - t0
    rows = read_log(work_dir)
    if not rows:
        tail = run.log_text()[-3000:] if hasattr(run, "log_text") else ""
        raise RuntimeError(f"recipe {name}: no logged iterations (exit {code}); log tail:\n{tail}")
    # mmengine logs `time` as a 10-iteration moving average: undo it, then drop the warm-up steps.
    times = iteration_times(rows)
    times = times[warmup:len(times) - profile] or times  # the profiled iterations run slower
    mem = [r["memory"] for r in rows if r.get("memory") is not None]
    peak_smi = max(mon.peak_mib.values()) / 1024 if mon.peak_mib else None
    return {"iterations": len(rows), "wall_s": round(wall, 1), "s_per_iter": round(statistics.median(times), 3),
            "data_time": round(statistics.median([r["data_time"] or 0 for r in rows[warmup:] or rows]), 3),
            "peak_alloc_gb": round(max(mem) / 1024, 1) if mem else None,
            "smi_peak_gib": round(peak_smi, 1) if peak_smi else None, "final_loss": rows[-1].get("loss"),
            **_read_profile(work_dir, profile)}


def _read_profile(work_dir: Path, profile: int) -> dict:
    if not profile:
        return {}
    from helpers.train.profiling import format_summary

    path = work_dir / "profile.json"
    if not path.is_file():
        return {"profile_error": f"{path} not written (see the run's log)"}
    summary = json.loads(path.read_text(encoding="utf-8"))
    print(format_summary(summary))
    return {"profile": summary, "gpu_busy": summary.get("gpu_busy")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default artifacts/models/internvl2-2b-random)")
    ap.add_argument("--recipes", default="upstream,recommended,lean", help=f"comma list of {', '.join(RECIPES)}")
    ap.add_argument("--iters", type=int, default=20, help="iterations per recipe")
    ap.add_argument("--warmup", type=int, default=5, help="iterations left out of the median")
    ap.add_argument("--deepspeed", default="deepspeed_zero2", help="as the upstream command ('' for none)")
    ap.add_argument("--images", type=int, default=32, help="distinct photos in the training set")
    ap.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--profile", type=int, default=0,
                    help="torch.profiler over the last N iterations of each recipe (profile.json/.txt in its work dir)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of the recipe list, one after another; each round's ratios are against its own upstream")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny checkpoint, 2 iterations, upstream only launched")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.profile and args.profile >= args.iters - args.warmup and not args.smoke:
        ap.error("--profile must leave iterations after --warmup for the timing median")
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    if set(names) - set(RECIPES):
        ap.error(f"--recipes: unknown {sorted(set(names) - set(RECIPES))}")
    if args.repeats > 1 and "upstream" not in names:
        ap.error("--repeats needs 'upstream' in --recipes: each round is measured against its own upstream")

    base = get_settings()
    if args.smoke:
        from benchmarks.make_2b_checkpoint import build

        model_path = base.artifacts / "models" / "internvl2-2b-random-smoke"
        if not (model_path / "config.json").is_file():
            build(model_path, smoke=True)
        args.iters, args.warmup, args.images = 2, 0, 2
    else:
        model_path = Path(args.model) if args.model else base.artifacts / "models" / "internvl2-2b-random"
    model_path = model_path.resolve()
    if not (model_path / "config.json").is_file():
        raise SystemExit(f"{model_path}/config.json missing: run python benchmarks/make_2b_checkpoint.py first")
    os.environ["INTERNVL_MODEL_PATH"] = str(model_path)  # the full profile: the upstream recipe's values
    cuda = (not args.smoke) and need_cuda("training runs")
    S = get_settings("full", optim_wrapper="amp" if cuda else "plain")
    config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    bench = base.artifacts / "bench" / ("finetune-smoke" if args.smoke else "finetune")
    max_records = max(RECIPES[n]["batch"] * RECIPES[n]["accum"] for n in names) * args.iters
    sizes = [(448, 448)] if args.smoke else PHOTO_SIZES  # smoke: 1 tile (any 4:3 frame gives 13), quick on CPU
    train_json = make_dataset(bench / "data", max_records, args.images, sizes=sizes)
    shape = sample_shape(model_path, train_json, config.get("max_dynamic_patch", 12))
    print(f"data: {max_records} records, {args.images} photos, tiles {shape['tiles_min']}-{shape['tiles_max']} "
          f"(mean {shape['tiles']}), ~{shape['tokens']} tokens a sample")
    env = environment()
    peak = matmul_tflops() if cuda else None
    rows, errors, saved = [], {}, {}

    def save(final: bool = False):
        # Rewritten after every recipe: a run cut short keeps what it measured.
        saved["path"] = write_results(
            # a profiled run is slower in its last iterations: kept apart from the results table's runs
            "finetune-smoke" if args.smoke else ("finetune-profile" if args.profile else "finetune"),
            dict(environment=env, model=str(model_path), sample=shape, matmul=peak, iters=args.iters,
                 warmup=args.warmup, deepspeed=args.deepspeed, repeats=args.repeats, rows=rows, errors=errors,
                 complete=final, random_weights=True),
            args.out_dir or (base.artifacts / "bench" / "results" if args.smoke else None), saved.get("path"),
            quiet=not final)

    # Rounds run the whole list one after another (not recipe by recipe), so a drift of the card or the host
    # over the run shows up as spread between rounds instead of as a difference between recipes.
    for rnd, name in [(k + 1, n) for k in range(args.repeats) for n in names]:
        r = RECIPES[name]
        cfg_path, work_dir = write_recipe_config(name, r, S, model_path, train_json, bench / "runs", args.iters,
                                                 args.smoke, args.profile)
        row = dict(recipe=name, round=rnd, batch=r["batch"], accum=r["accum"], checkpointing=r["checkpointing"],
                   aligned_lm_head=bool(r.get("aligned")), answer_only_lm_head=bool(r.get("answer_only")),
                   fused_kernels=bool(r.get("liger")), fused_adamw=r["fused"], workers=r["workers"], config=str(cfg_path))
        try:
            parsed = check_config(cfg_path)
            expected = {"batch": r["batch"], "accum": r["accum"], "max_iters": args.iters}
            if any(parsed[k] != v for k, v in expected.items()):
                raise RuntimeError(f"{cfg_path}: parsed {parsed}, expected {expected}")
            flops = flops_per_sample(config, shape["tokens"], shape["tiles"], S.lora_r, r["checkpointing"])
            row.update(flops)
            if cuda or (args.smoke and name == names[0]):
                ds = args.deepspeed if cuda else None
                if not cuda:
                    print(f"[smoke] launching '{name}' on CPU without DeepSpeed (plain OptimWrapper, "
                          f"{args.iters} iterations); DeepSpeed and the other recipes' launches need CUDA")
                row.update(run_recipe(name, cfg_path, work_dir, ds or None, args.warmup, cuda, args.profile))
                row["s_per_sample"] = round(row["s_per_iter"] / r["batch"], 4)
                job_samples = COURSE_JOB_ITERS * RECIPES["upstream"]["batch"]
                row["job_640_min"] = round(row["s_per_sample"] * job_samples / 60, 1)
                if peak:
                    row["mfu"] = round(flops["model_tflop"] / row["s_per_sample"] / peak["bf16_tflops"], 3)
            else:
                print(f"[skip] launching '{name}': needs CUDA (config rendered and parsed: {parsed})")
        except Exception as exc:  # noqa: BLE001 - one failing recipe must not lose the others' numbers
            key = name if args.repeats == 1 else f"{name}#{rnd}"
            errors[key] = f"{type(exc).__name__}: {exc}"
            print(f"[error] recipe {key}: {errors[key]}")
        rows.append(row)
        save()
    cols = ["recipe", "round", "batch", "accum", "checkpointing", "s_per_iter", "s_per_sample", "data_time", "peak_alloc_gb",
            "smi_peak_gib", "job_640_min", "model_tflop", "mfu", "gpu_busy"]
    print()
    print_table(rows, cols)
    ups = {r["round"]: r for r in rows if r["recipe"] == "upstream" and r.get("s_per_sample")}
    for r in rows:
        up = ups.get(r["round"])
        if up and r.get("s_per_sample") and r is not up:
            r["speedup_vs_upstream"] = round(up["s_per_sample"] / r["s_per_sample"], 2)
            print(f"{r['recipe']} (round {r['round']}): {r['speedup_vs_upstream']}x that round's upstream "
                  f"samples/s, nvidia-smi peak {r.get('smi_peak_gib')} GiB")
    save(final=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
