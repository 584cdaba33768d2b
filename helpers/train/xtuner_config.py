"""The course's XTuner config: the recipe, the file's text, and rendering it.

:func:`render_config` fills :data:`TEMPLATE` from a :class:`Recipe` (values from
:class:`helpers.settings.Settings`). The layout follows XTuner's own
``internvl_v2_internlm2_2b_lora_finetune.py`` (five PARTs, imports by name at the top),
because mmengine parses XTuner configs in lazy-import mode: ``custom_imports`` is ignored
there, so every class, the course's ``CourseInternVL`` included, is imported by name.
Every value lives in PART 1 with a comment; PARTs 2-5 only refer to those names.
:mod:`helpers.train.finetune` re-exports the public names.

Example:
    >>> from helpers.settings import get_settings
    >>> r = Recipe.from_settings(get_settings("tiny"), n_train=64)
    >>> r.lora_r, r.max_iters > 0
    (128, True)
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from string import Template

from helpers.settings import Settings
from helpers.train.config_template import AMP_BLOCK, AMP_SETTINGS, PLAIN_BLOCK, PLAIN_SETTINGS, TEMPLATE


# mmengine's LinearLR reaches the full LR at iteration end-1: end=1 never warms up (the LR stays
# at lr x 1e-5), end=2 jumps from lr x 1e-5 straight to lr, end=3 ramps 1e-5 -> 0.5 -> 1.
MIN_WARMUP_ITERS = 3


# Why a profile's value differs from the course recipe; rendered next to the value.
OVERRIDE_REASONS = {
    "optim_wrapper": "AmpOptimWrapper asserts a CUDA device; OptimWrapper trains in fp32 on CPU",
    "dataloader_num_workers": "worker processes only add start-up time on a 2-core CPU",
    "max_epochs": "a CPU must finish the notebook in minutes",
    "batch_size": "smaller steps for the CPU",
    "accumulative_counts": "smaller steps for the CPU",
    "save_steps": "checkpoints within a short run",
    "lr": "a tiny-width model, fine-tuned from weights trained on a CPU, barely moves at 3e-5 (measured)",
    "llm_activation_checkpointing": "a tiny model's activations are small: recomputing them in backward only costs "
                                    "time (same loss and gradients)",
    "cache_vision_features": "the frozen ViT gives a tile the same tokens in every epoch: encode it once (same loss "
                             "and gradients)",
    "prepare_samples_once": "every epoch decodes, tiles and tokenizes the same samples: do it once (same samples)",
}


@dataclass(frozen=True)
class Recipe:
    """The LoRA recipe one config is rendered from (values from :class:`Settings`).

    Build it with :meth:`from_settings`; ``notes`` says why a value differs from the course
    recipe (CPU profile, short-run warm-up) and is written into the config as comments.
    """

    name: str  # "course": the upstream InternVL2-2B LoRA recipe (later: "recommended")
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    batch_size: int
    accumulative_counts: int
    max_epochs: int
    lr: float
    betas: tuple
    weight_decay: float
    max_norm: float
    warmup_ratio: float
    optim_wrapper: str  # "amp" or "plain"
    amp_dtype: str
    max_length: int
    dataloader_num_workers: int
    llm_activation_checkpointing: bool
    fused_adamw: bool
    aligned_lm_head: bool
    answer_only_lm_head: bool
    fused_kernels: bool
    cache_vision_features: bool
    prepare_samples_once: bool
    save_steps: int
    save_total_limit: int
    save_optimizer: bool
    log_interval: int
    seed: int
    iters_per_epoch: int | None = None  # on one GPU, when the training-set size is known
    notes: tuple = ()

    @property
    def max_iters(self) -> int | None:
        """Total training iterations on one GPU (None when the set size was not given)."""
        return None if self.iters_per_epoch is None else self.iters_per_epoch * self.max_epochs

    @classmethod
    def from_settings(cls, settings: Settings, n_train: int | None = None, name: str = "course",
                      reasons: dict | None = None) -> "Recipe":
        """The course recipe with ``settings``' values.

        Args:
            settings: course settings (profile overrides included).
            n_train: training samples; with it the warm-up is checked to span at least
                two iterations and the log interval gives at least ~20 points.
            name: the recipe's name in the config's header (``helpers.train.speed_recipes``).
            reasons: why a value differs from the course recipe, by field, written into the
                config as comments (default :data:`OVERRIDE_REASONS`).

        Returns:
            A :class:`Recipe`.

        Example:
            >>> from helpers.settings import get_settings
            >>> Recipe.from_settings(get_settings("tiny"), n_train=64).max_iters > 0
            True
        """
        names = [f.name for f in dataclasses.fields(cls)
                 if f.name not in ("name", "iters_per_epoch", "notes")]
        values = {n: getattr(settings, n) for n in names}
        defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
        reasons = OVERRIDE_REASONS if reasons is None else reasons
        notes = [f"{n} = {values[n]!r} (course recipe: {defaults[n]!r}) - {why}"
                 for n, why in reasons.items() if values[n] != defaults[n]]
        if values["amp_dtype"] == "auto":
            values["amp_dtype"] = _best_amp_dtype()
        iters_per_epoch = None
        if n_train is not None:
            if n_train < 1:
                raise ValueError("the training set is empty (n_train=0)")
            iters_per_epoch = iterations_per_epoch(n_train, values["batch_size"],
                                                   values["accumulative_counts"])
            total = iters_per_epoch * values["max_epochs"]
            ratio = safe_warmup_ratio(values["warmup_ratio"], total)
            if ratio != values["warmup_ratio"]:
                notes.append(f"warmup_ratio = {ratio} (course recipe: {values['warmup_ratio']}) - "
                             f"{values['warmup_ratio']} of {total} iterations is less than "
                             f"{MIN_WARMUP_ITERS}: warm-up needs >= 2 steps below the full LR")
                values["warmup_ratio"] = ratio
            interval = max(1, min(values["log_interval"], total // 20))
            if interval != values["log_interval"]:
                notes.append(f"log_interval = {interval} (course recipe: "
                             f"{values['log_interval']}) - >= 20 logged points in {total} iterations")
                values["log_interval"] = interval
        return cls(name=name, iters_per_epoch=iters_per_epoch, notes=tuple(notes), **values)


def iterations_per_epoch(n_train: int, batch_size: int, accumulative_counts: int,
                         world_size: int = 1) -> int:
    """Training iterations of one epoch on each device.

    XTuner's LengthGroupedSampler pads every device's share to whole groups of
    ``batch_size x accumulative_counts`` samples.

    Example:
        >>> iterations_per_epoch(288, 4, 2), iterations_per_epoch(288, 4, 1, world_size=2)
        (72, 36)
    """
    group = batch_size * accumulative_counts
    return accumulative_counts * math.ceil(n_train / (world_size * group))


def safe_warmup_ratio(ratio: float, total_iters: int) -> float:
    """``ratio``, or the smallest ratio whose warm-up spans ``MIN_WARMUP_ITERS`` iterations.

    mmengine converts the epoch fraction with int(): a short run's 3 % can be 0 or 1
    iteration, which fails ("end should be larger than begin") or never warms up.

    Raises:
        ValueError: too few iterations for a warm-up and a decay.

    Example:
        >>> safe_warmup_ratio(0.03, 640), safe_warmup_ratio(0.03, 12)
        (0.03, 0.291667)
    """
    if int(ratio * total_iters) >= MIN_WARMUP_ITERS:
        return ratio
    if total_iters < 2 * MIN_WARMUP_ITERS:
        raise ValueError(f"{total_iters} training iterations are too few for warm-up + cosine "
                         f"decay; use more data or epochs")
    return round((MIN_WARMUP_ITERS + 0.5) / total_iters, 6)


def _best_amp_dtype() -> str:
    """bfloat16 where the CUDA card supports it, else float16 (the upstream value)."""
    try:
        import torch
    except ImportError:
        return "float16"
    ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return "bfloat16" if ok else "float16"


def _count_records(train_json: Path) -> int:
    try:
        data = json.loads(Path(train_json).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"training file {train_json} does not exist "
                                f"(run `python -m helpers.data convert`)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{train_json}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"{train_json}: expected a JSON list of LLaVA records, got "
                         f"{type(data).__name__}")
    return len(data)


def render_config(settings: Settings, model_path, train_json, image_folder, work_dir,
                  recipe: Recipe | None = None, config_name: str | None = None) -> str:
    """The text of an XTuner config for LoRA fine-tuning InternVL2 with the course recipe.

    Args:
        settings: course settings; ``settings.profile`` decides which overrides apply.
        model_path: InternVL2 checkpoint directory to fine-tune.
        train_json: LLaVA-format training file (its record count sizes the warm-up).
        image_folder: folder the records' ``image`` paths are relative to.
        work_dir: where ``xtuner train`` writes checkpoints and logs.
        recipe: a ready :class:`Recipe` (default: ``Recipe.from_settings``).
        config_name: the file name used in the usage comments (default ``<work_dir>.py``).

    Returns:
        The config file text (runnable with ``xtuner train``).

    Example:
        >>> text = render_config(S, S.model_path, "train.json", S.data_root, "w")  # doctest: +SKIP
        >>> "lora_r = 128" in text                                                  # doctest: +SKIP
        True
    """
    train_json = Path(train_json).resolve()
    if recipe is None:
        recipe = Recipe.from_settings(settings, n_train=_count_records(train_json))
    if recipe.optim_wrapper not in ("amp", "plain"):
        raise ValueError(f"optim_wrapper must be 'amp' or 'plain', got {recipe.optim_wrapper!r}")
    amp = recipe.optim_wrapper == "amp"
    optim_settings = (Template(AMP_SETTINGS).substitute(amp_dtype=repr(recipe.amp_dtype))
                      if amp else PLAIN_SETTINGS)
    notes = "".join(f"#   {n}\n" for n in recipe.notes)
    if notes:
        notes = (f"\n# Values that differ from the course recipe, and why (profile "
                 f"'{settings.profile}'; already applied above):\n{notes}")
    iters = (f"; {recipe.max_iters} iterations on one GPU ({recipe.iters_per_epoch} a epoch)"
             if recipe.max_iters else "")
    config_name = config_name or f"{Path(work_dir).name}.py"
    model_class = "CourseInternVL" if amp else "FullPrecisionInternVL"
    dataset_class = "PreparedOnceDataset" if recipe.prepare_samples_once else "InternVL_V1_5_Dataset"
    return TEMPLATE.substitute(
        generated_for=f"profile '{settings.profile}', recipe '{recipe.name}'{iters}.",
        config_name=config_name,
        model_path=repr(str(Path(model_path).resolve())),
        data_path=repr(str(train_json)),
        image_folder=repr(str(Path(image_folder).resolve())),
        work_dir=repr(str(Path(work_dir).resolve())),
        max_length=recipe.max_length, lora_r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout, batch_size=recipe.batch_size,
        accumulative_counts=recipe.accumulative_counts,
        dataloader_num_workers=recipe.dataloader_num_workers, max_epochs=recipe.max_epochs,
        activation_checkpointing=recipe.llm_activation_checkpointing, fused_adamw=recipe.fused_adamw,
        aligned_lm_head=recipe.aligned_lm_head, answer_only_lm_head=recipe.answer_only_lm_head,
        fused_kernels=recipe.fused_kernels, cache_vision_features=recipe.cache_vision_features,
        prepare_samples_once=recipe.prepare_samples_once,
        lr=recipe.lr, betas=repr(tuple(recipe.betas)), weight_decay=recipe.weight_decay,
        max_norm=recipe.max_norm, warmup_ratio=recipe.warmup_ratio,
        optim_wrapper_settings=optim_settings,
        optim_wrapper_block=AMP_BLOCK if amp else PLAIN_BLOCK,
        model_class=model_class, dataset_class=dataset_class,
        compat_imports=", ".join([model_class] + ([dataset_class] if recipe.prepare_samples_once else [])),
        save_steps=recipe.save_steps, save_total_limit=recipe.save_total_limit,
        save_optimizer=recipe.save_optimizer, log_interval=recipe.log_interval,
        seed=recipe.seed, profile_notes=notes,
    )


def write_config(settings: Settings, model_path, train_json, image_folder, work_dir,
                 path=None, recipe: Recipe | None = None) -> Path:
    """Render the config (:func:`render_config`) and write it next to the work dir.

    Args:
        settings, model_path, train_json, image_folder, work_dir, recipe: as in
            :func:`render_config`.
        path: where to write (default ``<work_dir>.py`` beside the work dir: mmengine dumps
            its own copy into the work dir under the config's name, which must not be the
            commented original).

    Returns:
        The config file path.

    Example:
        >>> write_config(S, S.model_path, "train.json", S.data_root, "runs/lora")  # doctest: +SKIP
        PosixPath('runs/lora.py')
    """
    work_dir = Path(work_dir).resolve()
    path = Path(path) if path is not None else work_dir.parent / f"{work_dir.name}.py"
    if path.resolve().parent == work_dir:
        raise ValueError(f"{path}: keep the config outside the work dir (mmengine overwrites "
                         f"<work_dir>/{path.name} with its own dump)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config(settings, model_path, train_json, image_folder, work_dir,
                                  recipe, config_name=str(path)), encoding="utf-8")
    return path


def config_values(config) -> dict:
    """The literal top-level assignments of a config file (PART 1), without importing it.

    Example:
        >>> config_values("runs/lora.py")["lora_r"]  # doctest: +SKIP
        128
    """
    tree = ast.parse(Path(config).read_text(encoding="utf-8"), filename=str(config))
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # dicts of classes etc.: not a PART-1 literal
    return values


def split_batch(batch_size: int, accumulative_counts: int, world_size: int) -> tuple:
    """Per-device batch and accumulation that keep the global batch on ``world_size`` GPUs.

    Returns:
        ``(batch_size, accumulative_counts)`` with product x world_size unchanged.

    Example:
        >>> split_batch(4, 2, 1), split_batch(4, 2, 2), split_batch(4, 2, 4), split_batch(4, 2, 8)
        ((4, 2), (4, 1), (2, 1), (1, 1))
    """
    total = batch_size * accumulative_counts
    for b in range(batch_size, 0, -1):
        if total % (b * world_size) == 0:
            return b, total // (b * world_size)
    raise ValueError(f"the global batch {total} (batch {batch_size} x accumulation "
                     f"{accumulative_counts}) cannot be split evenly over {world_size} GPUs")


def describe_run(settings: Settings, recipe: Recipe, run_dir, config_path) -> str:
    """Notebook 05's summary of a fine-tuning run before it starts: speed recipe, folders, iterations, notes.

    Args:
        settings: the run's settings (speed recipe applied).
        recipe: the :class:`Recipe` the config was rendered from (with ``n_train``).
        run_dir: the run's folder.
        config_path: the config written.

    Returns:
        Lines of text; paths are shown relative to the repository.

    Example:
        >>> print(describe_run(S_run, recipe, run_dir, config_path))   # doctest: +SKIP
        speed recipe 'course': micro-batch 4 x accumulation 1, LLM activation checkpointing False, fused AdamW False
    """
    from helpers.settings import repo_relative

    lines = [f"speed recipe {recipe.name!r}: micro-batch {settings.batch_size} x accumulation "
             f"{settings.accumulative_counts}, LLM activation checkpointing {settings.llm_activation_checkpointing}, "
             f"fused AdamW {settings.fused_adamw}",
             f"run folder: {repo_relative(run_dir)}",
             f"config:     {repo_relative(config_path)}",
             f"{recipe.max_iters} iterations on one device ({recipe.iters_per_epoch} per epoch x {recipe.max_epochs} epochs)"]
    return "\n".join(lines + [f"  note: {note}" for note in recipe.notes])
