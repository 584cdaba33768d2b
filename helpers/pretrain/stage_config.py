"""The XTuner config of stages 1 and 2 (full-parameter InternVL_V1_5 training, no LoRA)."""
from __future__ import annotations

import math
from pathlib import Path


# ----------------------------------------------------------------------------- stages 1-2: XTuner
STAGE_CONFIG = """\
# XTuner config: {title}
# Written by helpers.pretrain.build (notebook 02). Full-parameter training with XTuner's InternVL_V1_5
# recipe: no LoRA; freeze_llm / freeze_visual_encoder decide which parts learn.
#   xtuner train {config_name} --work-dir {work_dir}
from mmengine.hooks import CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
from torch.optim import AdamW

from xtuner.dataset import InternVL_V1_5_Dataset
from xtuner.dataset.collate_fns import default_collate_fn
from xtuner.dataset.samplers import LengthGroupedSampler
from xtuner.engine.runner import TrainLoop
from xtuner.utils import PROMPT_TEMPLATE

# XTuner's InternVL_V1_5 with the fixes this stack needs (helpers/train/xtuner_compat.py), held in
# fp32: a frozen bf16 LLM cannot take the fp32 projector's output, and fp32 is faster on a CPU.
from helpers.train.xtuner_compat import FullPrecisionInternVL, PreparedOnceDataset

# PART 1  Settings
path = {model_path!r}  # checkpoint this stage starts from
data_path = {data_path!r}  # LLaVA-format JSON
image_folder = {image_folder!r}  # the JSON's image paths are relative to this
prompt_template = PROMPT_TEMPLATE.internlm2_chat
max_length = {max_length}  # tokens per sample, image tokens included
freeze_llm = {freeze_llm}  # stage 1: True (only InternViT + MLP learn); stage 2: False
freeze_visual_encoder = {freeze_vit}  # True: InternViT keeps its stage-0b weights (pretrain_vit_lr_mult 0)
# (not `activation_checkpointing`: mmengine's Runner reads a top-level key of that name as a module list)
llm_activation_checkpointing = {checkpointing}  # recompute the LLM's activations in backward: less memory, more time
cache_vision_features = {cache_vision}  # a frozen InternViT encodes each image once; later epochs reuse its tokens
prepare_samples_once = {prepare_once}  # each sample decoded, tiled and tokenized once (XTuner's dataset class otherwise)
batch_size = {batch_size}  # samples per step
accumulative_counts = 1  # no gradient accumulation
dataloader_num_workers = 0  # worker processes only add start-up time on a small CPU
max_epochs = {max_epochs}  # passes over the data
lr = {lr}  # AdamW peak learning rate (a tiny model from scratch learns fast)
vit_lr_mult = {vit_lr_mult}  # InternViT's learning rate = lr x this
betas = (0.9, 0.999)
weight_decay = 0.05  # AdamW decoupled weight decay (the XTuner recipes use 0.05)
max_norm = 1.0  # gradient clipping
warmup_ratio = {warmup_ratio}  # linear warm-up ({warmup_iters} iterations), then cosine decay to 0
log_interval = {log_interval}  # log every N iterations
seed = {seed}

# PART 2  Model
model = dict(type=FullPrecisionInternVL, model_path=path, freeze_llm=freeze_llm,
             freeze_visual_encoder=freeze_visual_encoder, activation_checkpointing=llm_activation_checkpointing,
             cache_vision_features=cache_vision_features)

# PART 3  Data
llava_dataset = dict(type=PreparedOnceDataset if prepare_samples_once else InternVL_V1_5_Dataset, model_path=path, data_paths=data_path,
                     image_folders=image_folder, template=prompt_template, max_length=max_length)
train_dataloader = dict(
    batch_size=batch_size, num_workers=dataloader_num_workers, dataset=llava_dataset,
    sampler=dict(type=LengthGroupedSampler, length_property="modality_length",
                 per_device_batch_size=batch_size * accumulative_counts),
    collate_fn=dict(type=default_collate_fn))

# PART 4  Optimizer and schedule (plain fp32 OptimWrapper: AmpOptimWrapper needs a GPU)
optim_wrapper = dict(type=OptimWrapper,
                     optimizer=dict(type=AdamW, lr=lr, betas=betas, weight_decay=weight_decay),
                     clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
                     accumulative_counts=accumulative_counts,
                     # the ViT learns slower than the rest, so its warmed-up features are refined, not overwritten
                     paramwise_cfg=dict(custom_keys={{"vision_model": dict(lr_mult=vit_lr_mult)}}))
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-2, by_epoch=True, begin=0, end=warmup_ratio * max_epochs,
         convert_to_iter_based=True),
    dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=True, begin=warmup_ratio * max_epochs,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

# PART 5  Runtime: one checkpoint, at the end
default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=log_interval),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, save_optimizer=False, by_epoch=False, interval=100000,
                    max_keep_ckpts=1),
    sampler_seed=dict(type=DistSamplerSeedHook))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
visualizer = None
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=seed, deterministic=False)
log_processor = dict(by_epoch=False)
"""


def write_stage_config(path, title: str, model_path, data_path, image_folder, work_dir, freeze_llm: bool,
                       freeze_vit: bool, n_samples: int, batch_size: int, max_epochs: int, lr: float,
                       vit_lr_mult: float = 1.0, seed: int = 0, max_length: int = 1024,
                       activation_checkpointing: bool = True, cache_vision_features: bool = False,
                       prepare_samples_once: bool = False) -> Path:
    """Write an XTuner config for one full-parameter stage (InternVL 1.5's recipe).

    The warm-up spans 10 % of the iterations, and at least 2 (a shorter one leaves the LR at
    ``lr x 1e-2`` for the only warm-up step); the log gets about 25 points.

    Args:
        path: config file to write (outside ``work_dir``: mmengine dumps its own copy there).
        title: first comment line.
        model_path: checkpoint to start from.
        data_path: LLaVA-format JSON.
        image_folder: root of the JSON's image paths.
        work_dir: the run's work dir (only named in the comment; pass it to ``launch``).
        freeze_llm: freeze InternLM2.
        freeze_vit: freeze InternViT.
        n_samples: records in ``data_path`` (sizes the warm-up and log interval).
        batch_size: samples per step.
        max_epochs: passes over the data.
        lr: peak learning rate.
        vit_lr_mult: InternViT's learning rate as a multiple of ``lr``.
        seed: randomness seed.
        max_length: token limit per sample.
        activation_checkpointing: recompute the LLM's activations in backward (XTuner's default);
            False gives the same loss and gradients without the second forward.
        cache_vision_features: with ``freeze_vit``, encode each image once and reuse its tokens
            (:mod:`helpers.train.vit_cache`; same loss and gradients).
        prepare_samples_once: decode, tile and tokenize each sample once
            (:class:`helpers.train.xtuner_compat.PreparedOnceDataset`; same samples).

    Returns:
        The config path.
    """
    iters = math.ceil(n_samples / batch_size) * max_epochs
    warmup_iters = max(2, iters // 10)
    if iters < 2 * warmup_iters:
        raise ValueError(f"{iters} iterations are too few for warm-up + decay; use more data or epochs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAGE_CONFIG.format(
        title=title, config_name=path, work_dir=work_dir, model_path=str(model_path), data_path=str(data_path),
        image_folder=str(image_folder), max_length=max_length, freeze_llm=freeze_llm, freeze_vit=freeze_vit,
        batch_size=batch_size, max_epochs=max_epochs, lr=lr, vit_lr_mult=vit_lr_mult, warmup_ratio=round((warmup_iters + 0.5) / iters, 6),
        warmup_iters=warmup_iters, log_interval=max(1, iters // 25), seed=seed,
        checkpointing=bool(activation_checkpointing), cache_vision=bool(cache_vision_features),
        prepare_once=bool(prepare_samples_once)), encoding="utf-8")
    return path
