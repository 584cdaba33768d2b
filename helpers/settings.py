"""One place for every path, size and hyper-parameter of the course.

Two profiles:

* ``tiny`` (default): the offline tiny InternVL2 checkpoint the project builds itself
  (``make tiny``) and the synthetic FoodieQA-format food set it draws (``make data``).
  Runs on a 2-core CPU; this is what CI and the committed notebook outputs use.
* ``full``: InternVL2-2B and FoodieQA. Chosen when ``INTERNVL_MODEL_PATH`` points at an
  InternVL2-2B directory. ``FOODIEQA_ROOT`` (a folder holding ``sivqa_tidy.json`` and
  ``images/``) switches the data to the real FoodieQA; without it the synthetic set is used.

Every notebook starts with ``S = get_settings()`` and reads everything from ``S``.

Example:
    >>> from helpers.settings import get_settings
    >>> S = get_settings()
    >>> S.profile in ("tiny", "full")
    True
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# The system prompt XTuner 0.2.0 trains InternVL with (xtuner/dataset/internvl_dataset.py).
XTUNER_SYSTEM_PROMPT = "You are an AI assistant whose name is InternLM (书生·浦语)."
# The system prompt of LMDeploy's / InternVL's own `internvl2-internlm2` chat template.
INTERNVL2_SYSTEM_PROMPT = "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"


@dataclass(frozen=True)
class Settings:
    """Course configuration; build it with :func:`get_settings`, not by hand."""

    profile: str  # "tiny" (offline, CPU is enough) or "full" (InternVL2-2B, GPU)
    artifacts: Path  # everything the course builds or downloads lives under here (git-ignored)
    model_path: Path  # the checkpoint notebooks 03-06 deploy and fine-tune (see base_model_path)
    tiny_model_path: Path  # `make tiny` output: InternVL2-2B's structure, tiny widths, random weights
    tiny_base_model_path: Path  # notebook 02 output: tiny model after the two pre-training stages
    data_root: Path  # FoodieQA-format root: sivqa_tidy.json + images/
    data_is_synthetic: bool  # True when data_root is the set drawn by `make data`
    llava_dir: Path  # LLaVA-format train/val JSON written by the converter (notebook 04/05 input)
    runs_dir: Path  # XTuner work dirs, converted models, evaluation results
    seed: int = 0  # one seed for drawing data, building the tiny model and training

    # --- images and tiling (InternVL2 values; read from the checkpoint's config.json when present)
    image_size: int = 448  # side of one tile in pixels (force_image_size)
    min_dynamic_patch: int = 1  # fewest tiles per image
    max_dynamic_patch: int = 12  # most tiles per image (InternVL2-2B: 12); +1 thumbnail when use_thumbnail
    use_thumbnail: bool = True  # add a whole-image 448 px tile when the image is split into >1 tiles
    max_length: int = 8192  # XTuner max token length of one training sample

    # --- synthetic data (`make data`)
    synth_images_per_dish: int = 24  # photos drawn per dish (each gets a cuisine and a dish question); 18 train, 6 val
    synth_val_fraction: float = 0.25  # share of images held out for validation (split by image)
    synth_long_side: int = 896  # long side of drawn photos in px (phone photos are 4032; CPU needs small)

    # --- XTuner LoRA recipe (upstream course values; `tiny` overrides are listed in get_settings)
    lora_r: int = 128  # LoRA rank on the LLM
    lora_alpha: int = 256  # LoRA scaling numerator (scale = alpha / r = 2)
    lora_dropout: float = 0.05  # dropout on the LoRA branch
    batch_size: int = 4  # samples per device per step
    accumulative_counts: int = 2  # gradient accumulation steps (global batch = 4 x 2 x GPUs)
    max_epochs: int = 10  # passes over the training split
    lr: float = 3e-5  # AdamW peak learning rate
    betas: tuple = (0.9, 0.999)  # AdamW betas
    weight_decay: float = 0.05  # AdamW weight decay
    max_norm: float = 1.0  # gradient clipping
    warmup_ratio: float = 0.03  # share of iterations spent in linear warm-up
    save_steps: int = 64  # checkpoint every N iterations
    save_total_limit: int = 2  # keep this many checkpoints (-1 keeps all)
    save_optimizer: bool = True  # AdamW state in checkpoints, so a resumed run continues exactly (upstream False: smaller files)
    log_interval: int = 10  # mmengine logs loss/lr every N iterations (short runs log more often, >= 20 points)
    dataloader_num_workers: int = 4  # XTuner dataloader worker processes
    llm_activation_checkpointing: bool = True  # recompute the LLM's activations in backward (XTuner's default): less memory, slower
    fused_adamw: bool = False  # the AdamW update as one fused CUDA kernel (torch AdamW(fused=True))
    aligned_lm_head: bool = False  # LM head matmuls through weights padded to 64 rows (same logits; InternLM2's 92,553 is odd)
    fused_kernels: bool = False  # liger-kernel's fused RMSNorm and SwiGLU on the LLM (CUDA; same maths, fewer kernels)
    answer_only_lm_head: bool = False  # LM head + loss only where a token has a label (same loss and gradients, no full fp32 logits)
    cache_vision_features: bool = False  # each tile through the frozen InternViT once; later epochs reuse its tokens (same maths, host memory)
    prepare_samples_once: bool = False  # each sample decoded, tiled and tokenized once (same samples; host memory, per dataloader worker)
    optim_wrapper: str = "amp"  # "amp" (AmpOptimWrapper, GPU) or "plain" (OptimWrapper, CPU)
    amp_dtype: str = "float16"  # AmpOptimWrapper dtype (upstream float16; bfloat16 where the card has it)
    num_gpus: int = 1  # GPUs for `xtuner train` (NPROC_PER_NODE); accumulation keeps the global batch

    # --- deployment (LMDeploy)
    session_len: int = 8192  # max tokens of one conversation in LMDeploy
    cache_max_entry_count: float = 0.4  # share of free GPU memory for LMDeploy's KV cache
    tp: int = 1  # tensor-parallel GPUs for LMDeploy
    max_new_tokens: int = 256  # default answer length
    server_host: str = "127.0.0.1"  # api_server / web UI bind address; never 0.0.0.0 by default
    api_port: int = 23333  # lmdeploy api_server port
    webui_port: int = 7860  # Gradio web UI port
    max_upload_mb: float = 20.0  # web UI refuses larger uploads
    max_image_pixels: int = 40_000_000  # web UI refuses images with more pixels than this
    max_message_chars: int = 2000  # web UI refuses longer questions (they would be replayed every turn)
    max_history_chars: int = 6000  # web UI gives the engine the image turn + newest turns within this many characters

    # --- notebook 02: InternVL 1.5's training stages in miniature (tiny model -> tiny_base_model_path)
    pretrain_images: int = 320  # drawn shape scenes the stages train on (448 px: one tile each)
    pretrain_heldout: int = 40  # drawn scenes kept out of training, to check the base model
    pretrain_food_per_dish: int = 256  # stage 0b: small (224 px) food photos per dish, labelled by looks, never by name
    pretrain_food_captioned_per_dish: int = 12  # stages 1-2: 448 px food photos per dish, captioned with their looks
    pretrain_max_tiles: int = 1  # max_dynamic_patch of the base model: the miniature sees one 448 px tile per image
    pretrain_stage0_steps: int = 150  # stage 0a: language warm-up steps of the LLM alone (16 texts a step)
    pretrain_stage0_lr: float = 3e-3  # stage 0a AdamW peak learning rate
    pretrain_text_food_share: float = 0.3  # stage 0a: share of texts that describe a dish's looks
    pretrain_vision_steps: int = 1600  # stage 0b: InternViT warm-up steps (32 images a step); its food
    # features bound what notebook 05 can learn with the ViT frozen (docs/course-development.md)
    pretrain_vision_lr: float = 3e-3  # stage 0b AdamW peak learning rate
    pretrain_vision_small_size: int = 112  # stage 0b: the first steps see images this small (4x fewer patches than 224 px)
    pretrain_vision_small_share: float = 0.75  # stage 0b: share of the steps at that size; the rest at 224 px
    pretrain_vision_food_batch: int = 24  # stage 0b: food photos among the 32 images of a step
    pretrain_stage1_epochs: int = 1  # stage 1 (InternViT + MLP, LLM frozen): passes over the captions
    pretrain_stage1_lr: float = 5e-4  # stage 1 peak learning rate (higher inflates the image tokens of a frozen LLM)
    pretrain_question_share: float = 1.0  # stage 2: share of drawn scenes asked one question besides their description
    pretrain_stage2_epochs: int = 3  # stage 2 (MLP + LLM): passes over the instructions (two per image)
    pretrain_stage2_lr: float = 1e-3  # stage 2 peak learning rate
    pretrain_vit_lr_mult: float = 0.0  # stages 1-2: InternViT's lr = lr x this; 0 keeps it frozen after stage 0b (its food features)
    pretrain_batch_size: int = 8  # stages 1 and 2: images per step

    extra: dict = field(default_factory=dict)  # notebook-level overrides, kept for the record

    @property
    def sivqa_file(self) -> Path:
        """FoodieQA single-image VQA file (`sivqa_tidy.json`) under data_root."""
        return self.data_root / "sivqa_tidy.json"

    @property
    def base_model_path(self) -> Path:
        """The "before fine-tuning" model: tiny-base when notebook 02 built it, else model_path."""
        if self.profile == "tiny" and (self.tiny_base_model_path / "config.json").exists():
            return self.tiny_base_model_path
        return self.model_path

    @cached_property
    def device(self) -> str:
        """"cuda" when a CUDA GPU is visible, else "cpu"."""
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"

    @cached_property
    def engine(self) -> str:
        """Inference engine: "lmdeploy" on a CUDA machine with LMDeploy installed, else "transformers"."""
        if os.environ.get("INTERNVL_ENGINE"):
            return os.environ["INTERNVL_ENGINE"]
        if self.device != "cuda":
            return "transformers"
        try:
            import lmdeploy  # noqa: F401
        except ImportError:
            return "transformers"
        return "lmdeploy"

    def replace(self, **changes) -> "Settings":
        """A copy with some fields changed (e.g. ``S.replace(max_epochs=2)``)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One paragraph saying what this run uses, for the top of each notebook."""
        data = "synthetic FoodieQA-format set" if self.data_is_synthetic else "FoodieQA"
        return (
            f"profile={self.profile} | model={repo_relative(self.model_path)} | data={data} at "
            f"{repo_relative(self.data_root)} "
            f"| device={self.device} | engine={self.engine}"
            + (f" | INTERNVL_SETTINGS: {', '.join(self.extra['from_env'])}" if self.extra.get("from_env") else "")
        )


def _env_overrides() -> dict:
    """Field overrides from ``INTERNVL_SETTINGS`` (a JSON object); a clear error for anything else."""
    import json

    raw = os.environ.get("INTERNVL_SETTINGS", "").strip()
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"INTERNVL_SETTINGS is not JSON ({err}): {raw[:80]!r}") from None
    if not isinstance(values, dict):
        raise ValueError(f"INTERNVL_SETTINGS must be a JSON object of Settings fields, got {type(values).__name__}")
    fixed = {"profile", "artifacts", "model_path", "data_root", "extra"}
    if set(values) & fixed:
        raise ValueError(f"INTERNVL_SETTINGS cannot set {sorted(set(values) & fixed)}: use the other INTERNVL_* variables")
    import dataclasses

    types = {f.name: f.type for f in dataclasses.fields(Settings)}  # unknown names: get_settings refuses them
    # JSON has no paths: a folder given as text becomes the Path every other caller of the field gets
    return {k: Path(v) if types.get(k) in ("Path", Path) and isinstance(v, str) else v for k, v in values.items()}


def repo_relative(path) -> str:
    """``path`` as notebooks show it: relative to the repository, never the machine's absolute path.

    Commands still get absolute paths; only what a learner reads goes through here.

    Args:
        path: a file or folder.

    Returns:
        ``"artifacts/..."`` inside the repository; ``"$INTERNVL_ARTIFACTS/..."`` inside an artifacts
        folder moved out of it with that variable; anything else as it is.

    Example:
        >>> repo_relative(REPO_ROOT / "artifacts" / "models")
        'artifacts/models'
    """
    resolved = Path(path).resolve()
    if resolved.is_relative_to(REPO_ROOT):
        return str(resolved.relative_to(REPO_ROOT))
    moved = os.environ.get("INTERNVL_ARTIFACTS")
    # a worktree or CI run that reads another checkout's artifacts would otherwise print that checkout's path
    if moved and resolved.is_relative_to(Path(moved).resolve()):
        return str(Path("$INTERNVL_ARTIFACTS") / resolved.relative_to(Path(moved).resolve()))
    return str(path)


def repo_relative_text(text: str) -> str:
    """``text`` with every path inside the repository written relative to it (a config or command shown to learners).

    The course's commands run from the repository root, so the shortened paths still work there;
    paths outside the repository are left as they are.

    Args:
        text: any text (a rendered config, a command line).

    Returns:
        The text with the repository root and the separator after it removed wherever a path starts with it.

    Example:
        >>> repo_relative_text(f"xtuner train {REPO_ROOT}/artifacts/runs/x.py --work-dir /tmp/w")
        'xtuner train artifacts/runs/x.py --work-dir /tmp/w'
    """
    return text.replace(f"{REPO_ROOT}{os.sep}", "")


def _config_value(model_dir: Path, key: str):
    """``key`` of ``model_dir/config.json``, or None when there is no such file or key."""
    import json

    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def get_settings(profile: str | None = None, **overrides) -> Settings:
    """Build the course settings from the environment.

    Args:
        profile: force "tiny" or "full"; by default "full" when ``INTERNVL_MODEL_PATH`` is set.
        **overrides: any :class:`Settings` field to change for this call.

    Returns:
        A frozen :class:`Settings`.

    Environment:
        INTERNVL_MODEL_PATH  an InternVL2-2B directory (switches to the full profile)
        FOODIEQA_ROOT        a FoodieQA copy with sivqa_tidy.json and images/
        INTERNVL_ARTIFACTS   where builds and runs go (default: <repo>/artifacts)
        INTERNVL_ENGINE      force "transformers" or "lmdeploy"
        INTERNVL_SETTINGS    a JSON object of field overrides for every notebook of a run, e.g.
                             '{"max_epochs": 1}' for a rehearsal with little GPU time (kept in
                             ``extra["from_env"]``, so notebooks can tell them from the recipe)

    Example:
        >>> S = get_settings("tiny", max_epochs=1)
        >>> S.max_epochs
        1
    """
    # an explicit model_path (a benchmark's own checkpoint) stands in for INTERNVL_MODEL_PATH
    env_model = str(overrides["model_path"]) if overrides.get("model_path") else os.environ.get("INTERNVL_MODEL_PATH")
    env_data = os.environ.get("FOODIEQA_ROOT")
    if profile is None:
        profile = "full" if env_model else "tiny"
    if profile not in ("tiny", "full"):
        raise ValueError(f"profile must be 'tiny' or 'full', got {profile!r}")
    if profile == "full" and not env_model:
        raise ValueError("the full profile needs INTERNVL_MODEL_PATH (an InternVL2-2B directory)")

    artifacts = Path(os.environ.get("INTERNVL_ARTIFACTS", REPO_ROOT / "artifacts")).resolve()
    tiny_model = artifacts / "models" / "internvl2-tiny"
    tiny_base = artifacts / "models" / "internvl2-tiny-base"
    synth_root = artifacts / "data" / "foodieqa-synth"
    data_root = Path(env_data).expanduser().resolve() if env_data else synth_root

    values: dict = dict(
        profile=profile,
        artifacts=artifacts,
        model_path=Path(env_model).expanduser().resolve() if profile == "full" else tiny_model,
        tiny_model_path=tiny_model,
        tiny_base_model_path=tiny_base,
        data_root=data_root,
        data_is_synthetic=not env_data,
        llava_dir=artifacts / "data" / ("llava-synth" if not env_data else "llava-foodieqa"),
        runs_dir=artifacts / "runs" / profile,
    )
    if profile == "tiny":
        values.update(
            # CPU: a 2-core machine must finish every notebook in minutes.
            # the checkpoint's own value, which XTuner and LMDeploy read too: 1 for the base model of notebook 02
            # (what notebooks 03-06 use once it exists), 6 for the tiny checkpoint
            max_dynamic_patch=_config_value(tiny_base, "max_dynamic_patch")
            or _config_value(tiny_model, "max_dynamic_patch") or 6,
            optim_wrapper="amp" if _cuda() else "plain",  # AmpOptimWrapper asserts a GPU: fp32 on a CPU
            dataloader_num_workers=0,  # worker processes only add start-up time on 2 cores
            # the recipe's 3e-5 leaves a tiny-width model's loss near its start; 1e-3 and 2e-3 end less accurate
            # (docs/course-development.md)
            lr=5e-4,
            accumulative_counts=1,  # twice the optimizer steps of accumulation 2, in the same time (times: benchmarks/README.md)
            llm_activation_checkpointing=False,  # a tiny model's activations are small: recomputing them only costs time
            cache_vision_features=True,  # the frozen ViT is a large share of a tiny model's step; its tiles repeat every epoch
            prepare_samples_once=True,  # decoding and tiling the photos again is a quarter of a cached step
        )
    from_env = _env_overrides()
    values.update(from_env)
    if from_env:
        values["extra"] = {"from_env": sorted(from_env)}
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    return Settings(**values)
