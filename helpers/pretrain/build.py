"""InternVL 1.5's training stages in miniature, for real, on the tiny model (notebook 02).

The released InternVL2 went through large-scale pre-training; the course's tiny checkpoint
(``make tiny``) has random weights. This package gives it a small version of that history, so
later notebooks start from a model that sees and speaks, but knows no dish:

0. **warm-ups** (plain PyTorch): the real InternLM2 and InternViT arrive pre-trained, the tiny
   ones are random. 0a: the LLM alone learns the language of the captions and answers below,
   as text. 0b: the ViT alone learns, at 224 px (its first steps at 112 px), to see the drawn
   attributes (InternViT-6B was pre-trained at 224 px too; InternVL 1.2 raised it to 448 px).
1. **stage 1** (XTuner, InternVL 1.5's pre-training): InternViT + the MLP projector are trained
   at 448 px, the LLM is frozen, on image captions of drawn scenes.
2. **stage 2** (XTuner, InternVL 1.5's fine-tuning): the whole model is trained on
   instructions (descriptions and questions) about such scenes.

The scenes are drawn in :mod:`helpers.pretrain.scenes`: 1-3 shapes of one colour and kind, grouped on one side of a
textured background (:func:`draw_scene`); every caption and answer is derived from the scene
(:func:`caption`, :func:`questions`). No food photo is ever used for training here.

:func:`build_base` runs all stages into ``Settings.tiny_base_model_path`` and skips them when
that model was built from the same inputs (a fingerprint of the tiny model, this package's
source and the recipe).

Example:
    >>> from helpers.pretrain.build import build_base   # doctest: +SKIP
    >>> info = build_base(get_settings())               # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.settings import REPO_ROOT, XTUNER_SYSTEM_PROMPT, Settings, repo_relative
from helpers.pretrain.stage_config import write_stage_config
from helpers.pretrain.stage_data import make_shapes_dataset, warmup_texts
from helpers.pretrain.warmup import language_warmup, vision_warmup


# ----------------------------------------------------------------------------- the whole pipeline
@dataclass(frozen=True)
class PretrainRecipe:
    """Sizes and hyper-parameters of the stages (from :class:`Settings`, ``pretrain_*`` fields)."""

    images: int
    heldout: int
    food_per_dish: int
    food_captioned_per_dish: int
    max_tiles: int
    stage0_steps: int
    stage0_lr: float
    text_food_share: float
    vision_steps: int
    vision_lr: float
    vision_food_batch: int
    vision_small_size: int
    vision_small_share: float
    stage1_epochs: int
    stage1_lr: float
    question_share: float
    stage2_epochs: int
    stage2_lr: float
    vit_lr_mult: float
    batch_size: int
    seed: int
    activation_checkpointing: bool = True  # stages 1-2: the LLM's activations recomputed in backward (same maths)
    cache_vision_features: bool = False  # stages 1-2: a frozen InternViT encodes each image once (same maths)
    prepare_samples_once: bool = False  # stages 1-2: each sample decoded, tiled and tokenized once (same samples)

    @classmethod
    def from_settings(cls, settings: Settings) -> "PretrainRecipe":
        """The recipe of ``settings`` (``pretrain_*`` fields and ``seed``)."""
        return cls(images=settings.pretrain_images, heldout=settings.pretrain_heldout,
                   food_per_dish=settings.pretrain_food_per_dish,
                   food_captioned_per_dish=settings.pretrain_food_captioned_per_dish,
                   max_tiles=settings.pretrain_max_tiles,
                   stage0_steps=settings.pretrain_stage0_steps, stage0_lr=settings.pretrain_stage0_lr,
                   text_food_share=settings.pretrain_text_food_share,
                   vision_steps=settings.pretrain_vision_steps, vision_lr=settings.pretrain_vision_lr,
                   vision_food_batch=settings.pretrain_vision_food_batch,
                   vision_small_size=settings.pretrain_vision_small_size,
                   vision_small_share=settings.pretrain_vision_small_share,
                   stage1_epochs=settings.pretrain_stage1_epochs, stage1_lr=settings.pretrain_stage1_lr,
                   question_share=settings.pretrain_question_share,
                   stage2_epochs=settings.pretrain_stage2_epochs, stage2_lr=settings.pretrain_stage2_lr,
                   vit_lr_mult=settings.pretrain_vit_lr_mult, batch_size=settings.pretrain_batch_size,
                   seed=settings.seed, activation_checkpointing=settings.llm_activation_checkpointing,
                   cache_vision_features=settings.cache_vision_features,
                   prepare_samples_once=settings.prepare_samples_once)


MANIFEST = "pretrain.json"  # written into the base model dir: fingerprint, losses, timings


def fingerprint(tiny_dir, recipe: PretrainRecipe) -> str:
    """SHA-256 of everything the base model is built from.

    The tiny checkpoint's files, the model code (``helpers/internvl``), this package's stages (not its
    checks), the XTuner compatibility class and the recipe: a change to any of them rebuilds the base.
    """
    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    tiny_dir = Path(tiny_dir)
    files = [tiny_dir / n for n in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")]
    helpers = REPO_ROOT / "helpers"
    # the checks and the command line only read a built base: changing them rebuilds nothing
    stages = [f for f in sorted((helpers / "pretrain").glob("*.py")) if f.name not in ("checks.py", "__main__.py")]
    files += sorted((helpers / "internvl").glob("*.py")) + stages
    files += [helpers / "train" / "xtuner_compat.py", helpers / "foods.py"]
    files += sorted((helpers / "data").glob("synth_*.py"))
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"fingerprint: {f} is missing (is the tiny model built? `make tiny`)")
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def set_max_tiles(model_dir, max_tiles: int) -> None:
    """Set ``max_dynamic_patch`` in a checkpoint's config.json (XTuner, LMDeploy and the course read it).

    Example:
        >>> set_max_tiles("artifacts/models/internvl2-tiny-base", 1)   # doctest: +SKIP
    """
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    cfg["max_dynamic_patch"] = int(max_tiles)
    path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def read_manifest(model_dir) -> dict | None:
    """The manifest :func:`build_base` wrote into a base model dir, or None."""
    path = Path(model_dir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _run_xtuner_stage(name, config, work_dir, out_dir, progress):
    from helpers.train import convert, logs, train_run

    started = time.time()
    run = train_run.launch(config, work_dir, overwrite=True)
    run.wait(progress=progress)
    result = run.result()  # raises TrainingFailed with the log's traceback
    trained = time.time()
    convert.convert(config, result.checkpoint, out_dir, overwrite=True)
    rows = logs.read_log(work_dir)
    print(f"{name}: {result.max_iters} iterations, final loss {result.final_loss}, "
          f"train {trained - started:.0f} s + convert {time.time() - trained:.0f} s", flush=True)
    return dict(iterations=result.max_iters, final_loss=result.final_loss,
                loss=[(r["iteration"], r["loss"]) for r in rows if r["loss"] is not None],
                train_s=round(trained - started, 1), convert_s=round(time.time() - trained, 1))


def _xtuner_stages(recipe, data, work, stage0_dir, out, progress, losses: dict, seconds: dict) -> dict:
    """Stages 1 and 2 with ``xtuner train``; fills ``losses`` and ``seconds``, returns each stage's record."""
    stages = {}
    # A ViT learning rate of 0 means frozen: XTuner then skips its gradients altogether.
    freeze_vit = recipe.vit_lr_mult == 0
    what = "MLP learns (InternViT kept from stage 0b)" if freeze_vit else "InternViT + MLP learn"
    plan = [("stage1", f"stage 1 - {what}, LLM frozen, on captions", stage0_dir,
             data["stage1"], True, recipe.stage1_epochs, recipe.stage1_lr, work / "stage1-model"),
            ("stage2", "stage 2 - MLP + LLM learn, on instructions" if freeze_vit
             else "stage 2 - the whole model learns, on instructions", work / "stage1-model",
             data["stage2"], False, recipe.stage2_epochs, recipe.stage2_lr, out)]
    for name, title, start, data_json, freeze_llm, epochs, lr, model_out in plan:
        t = time.time()
        n_samples = len(json.loads(Path(data_json).read_text(encoding="utf-8")))
        config = write_stage_config(work / f"{name}.py", title, start, data_json, data["root"], work / name,
                                    freeze_llm=freeze_llm, freeze_vit=freeze_vit, n_samples=n_samples,
                                    batch_size=recipe.batch_size, max_epochs=epochs, lr=lr,
                                    vit_lr_mult=recipe.vit_lr_mult, seed=recipe.seed,
                                    activation_checkpointing=recipe.activation_checkpointing,
                                    cache_vision_features=recipe.cache_vision_features,
                                    prepare_samples_once=recipe.prepare_samples_once)
        stages[name] = _run_xtuner_stage(name, config, work / name, model_out, progress)
        losses[name] = stages[name].pop("loss")
        seconds[name] = round(time.time() - t, 1)
    return stages


def build_base(settings: Settings, force: bool = False, progress: bool = True) -> dict:
    """Run stages 0-2 on the tiny model into ``settings.tiny_base_model_path`` (cached).

    Skipped when the base model exists and its manifest's fingerprint (:func:`fingerprint`)
    matches the current inputs; ``force=True`` rebuilds anyway. Work files go under
    ``settings.runs_dir / "pretrain"``, the drawn scenes under ``artifacts/data/shapes``.

    Args:
        settings: course settings (tiny profile: ``tiny_model_path`` must exist).
        force: rebuild even when cached.
        progress: show XTuner progress bars.

    Returns:
        The manifest: ``fingerprint``, ``skipped``, ``seconds`` per stage, ``loss`` per stage
        as ``[(step, loss), ...]``, ``data`` (dataset paths and sizes).

    Example:
        >>> info = build_base(get_settings())        # doctest: +SKIP
        >>> sorted(info["loss"])                     # doctest: +SKIP
        ['stage0a', 'stage0b', 'stage1', 'stage2']
    """
    from helpers.models import set_system_prompt

    recipe = PretrainRecipe.from_settings(settings)
    tiny = settings.tiny_model_path
    if not (tiny / "config.json").is_file():
        raise FileNotFoundError(f"no tiny model at {tiny}; build it first: python -m helpers.models build-tiny")
    key = fingerprint(tiny, recipe)
    out = settings.tiny_base_model_path
    manifest = read_manifest(out)
    if not force and manifest and manifest.get("fingerprint") == key and (out / "model.safetensors").is_file():
        print(f"Base model up to date: {repo_relative(out)} (built in {manifest['seconds']['total']:.0f} s); "
              f"pass force=True to rebuild.")
        return dict(manifest, skipped=True)

    from helpers.env import full_fp32_matmuls

    # The warm-ups below run here, on the CPU; stages 1-2 set the same flags in XTuner's process.
    precision = full_fp32_matmuls()
    t0 = time.time()
    seconds = {}
    work = settings.runs_dir / "pretrain"
    data = make_shapes_dataset(settings.artifacts / "data" / "shapes", recipe.images, recipe.heldout, recipe.seed,
                               food_per_dish=recipe.food_per_dish,
                               food_captioned_per_dish=recipe.food_captioned_per_dish,
                               question_share=recipe.question_share)
    seconds["data"] = round(time.time() - t0, 1)
    print(f"drew {recipe.images} + {recipe.heldout} scenes and {data['n_food']} + {data['n_food_captioned']} "
          f"food photos in {seconds['data']:.0f} s", flush=True)

    t = time.time()
    texts = warmup_texts(seed=recipe.seed, food_share=recipe.text_food_share)
    losses = {"stage0a": language_warmup(tiny, work / "stage0a-model", texts, recipe.stage0_steps,
                                         lr=recipe.stage0_lr, seed=recipe.seed)}
    # From here on every stage sees one 448 px tile per image (the base keeps this setting).
    set_max_tiles(work / "stage0a-model", recipe.max_tiles)
    seconds["stage0a"] = round(time.time() - t, 1)
    t = time.time()
    scenes = json.loads(Path(data["root"], "scenes.json").read_text(encoding="utf-8"))[:recipe.images]
    foods = json.loads(Path(data["foods"]).read_text(encoding="utf-8"))
    stage0_dir = work / "stage0b-model"
    losses["stage0b"] = vision_warmup(work / "stage0a-model", stage0_dir, data["root"], scenes, recipe.vision_steps,
                                      lr=recipe.vision_lr, seed=recipe.seed, foods=foods,
                                      food_batch=recipe.vision_food_batch, log_every=100,
                                      small_size=recipe.vision_small_size, small_share=recipe.vision_small_share)
    seconds["stage0b"] = round(time.time() - t, 1)

    stages = _xtuner_stages(recipe, data, work, stage0_dir, out, progress, losses, seconds)
    # The base answers in the format and with the system prompt it was trained with.
    set_system_prompt(out, XTUNER_SYSTEM_PROMPT)
    seconds["total"] = round(time.time() - t0, 1)
    manifest = dict(fingerprint=key, recipe=asdict(recipe), seconds=seconds, loss=losses, stages=stages,
                    data=data, precision=precision, built=time.strftime("%Y-%m-%d %H:%M:%S"))
    (out / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return dict(manifest, skipped=False)


def stage_table(info: dict) -> list:
    """Notebook 02's table of the stages: what trains, what is frozen, on which data, how long (from the manifest)."""
    r, sec = info["recipe"], info["seconds"]
    vit_frozen = r["vit_lr_mult"] == 0  # an InternViT learning-rate multiplier of 0 in stages 1-2: frozen

    def lr(v):
        return v if vit_frozen else f"{v}（ViT ×{r['vit_lr_mult']}）"

    small, share = r.get("vision_small_size"), r.get("vision_small_share", 0)
    vision_px = f"{small} px（前 {share:.0%} 的步）→ 224 px" if small and share else "224 px"

    def row(stage, train, frozen, data, steps, rate, key):
        return {"阶段": stage, "训练": train, "冻结": frozen, "数据": data, "步数 / 轮数": steps, "学习率": rate,
                "秒": sec[key]}

    return [
        row("画数据", "-", "-", "图形场景、菜品照片", "-", "-", "data"),
        row("0a 语言热身", "LLM", "InternViT + MLP", "纯文本对话", f"{r['stage0_steps']} 步", r["stage0_lr"], "stage0a"),
        row("0b 视觉热身", "InternViT", "LLM + MLP", f"{vision_px} 场景 + 菜品照片（外观标签）", f"{r['vision_steps']} 步",
            r["vision_lr"], "stage0b"),
        row("1 (XTuner)", "MLP" if vit_frozen else "InternViT + MLP", "InternViT + LLM" if vit_frozen else "LLM", "描述",
            f"{r['stage1_epochs']} 轮", lr(r["stage1_lr"]), "stage1"),
        row("2 (XTuner)", "MLP + LLM" if vit_frozen else "全部", "InternViT" if vit_frozen else "-", "指令",
            f"{r['stage2_epochs']} 轮", lr(r["stage2_lr"]), "stage2"),
        row("合计", "", "", "", "", "", "total"),
    ]


def stage_freeze_flags(settings: Settings, info: dict) -> dict:
    """``{config path (repository-relative): (found, expected)}``: the freeze switches in the stage configs written.

    Only the configs present (they are written when the stages run, not when just the model was copied).
    """
    import re

    from helpers.settings import repo_relative

    vit_frozen = str(info["recipe"]["vit_lr_mult"] == 0)
    expected = {"stage1": {"freeze_llm": "True", "freeze_visual_encoder": vit_frozen},
                "stage2": {"freeze_llm": "False", "freeze_visual_encoder": vit_frozen}}
    out = {}
    for name, flags in expected.items():
        config = settings.runs_dir / "pretrain" / f"{name}.py"
        if config.exists():
            text = config.read_text(encoding="utf-8")
            found = dict(re.findall(r"^(freeze_llm|freeze_visual_encoder) = (True|False)", text, re.M))
            out[repo_relative(config)] = (found, flags)
    return out
