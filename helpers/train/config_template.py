"""The text of the course's XTuner config (a ``string.Template``; :mod:`helpers.train.xtuner_config` fills it from a :class:`Recipe`)."""
from __future__ import annotations

from string import Template


TEMPLATE = Template('''\
# XTuner config: LoRA fine-tuning of InternVL2 on FoodieQA-format data.
# Written by helpers.train.xtuner_config.write_config for the course "InternVL 的部署与微调";
# $generated_for
#
# Run it by hand from the repository root (XTuner environment):
#   xtuner train $config_name                              # one GPU, AmpOptimWrapper (or CPU, see below)
#   xtuner train $config_name --deepspeed deepspeed_zero2  # the upstream course command (GPU)
#   NPROC_PER_NODE=2 xtuner train $config_name             # two GPUs (halve accumulative_counts to keep the batch)
#   xtuner train $config_name --resume <work_dir>/iter_N.pth   # continue; needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
# Then merge the LoRA into a standalone model:
#   python -m xtuner.configs.internvl.v1_5.convert_to_official $config_name <work_dir>/iter_N.pth <out_dir>
from mmengine.hooks import (
    CheckpointHook,
    DistSamplerSeedHook,
    IterTimerHook,
    LoggerHook,
    ParamSchedulerHook,
)
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR, OptimWrapper
from peft import LoraConfig
from torch.optim import AdamW
from transformers import AutoTokenizer

from xtuner.dataset import InternVL_V1_5_Dataset
from xtuner.dataset.collate_fns import default_collate_fn
from xtuner.dataset.samplers import LengthGroupedSampler
from xtuner.engine.hooks import DatasetInfoHook
from xtuner.engine.runner import TrainLoop
from xtuner.utils import PROMPT_TEMPLATE

# XTuner's InternVL_V1_5 plus the fixes this software stack needs (1-process group without
# torchrun, fp32 trainable projector, bitsandbytes that cannot import). Same arguments and
# same saved .pth as InternVL_V1_5.
from helpers.train.xtuner_compat import $compat_imports

#######################################################################
#                          PART 1  Settings                           #
#######################################################################
# Model: an InternVL2 checkpoint directory (config.json + remote code + tokenizer).
path = $model_path

# Data: LLaVA-format JSON; "image" paths in it are relative to image_folder.
data_path = $data_path
image_folder = $image_folder
# XTuner's InternLM2 chat format; InternVL_V1_5_Dataset adds XTuner's system prompt
# "You are an AI assistant whose name is InternLM (书生·浦语)." to every sample.
prompt_template = PROMPT_TEMPLATE.internlm2_chat
max_length = $max_length  # samples longer than this many tokens are cut (image tokens included)

# Where checkpoints and logs go (`xtuner train --work-dir` overrides it).
work_dir = $work_dir

# LoRA on the language model; both towers stay frozen, the projector mlp1 is trained in full.
lora_r = $lora_r  # rank of the low-rank update
lora_alpha = $lora_alpha  # scaling numerator: the update is multiplied by alpha / r
lora_dropout = $lora_dropout  # dropout on the LoRA branch input

# Scheduler & Optimizer
batch_size = $batch_size  # samples per device per step
accumulative_counts = $accumulative_counts  # gradient accumulation: global batch = batch_size x this x GPUs
dataloader_num_workers = $dataloader_num_workers  # dataloader worker processes
# (not `activation_checkpointing`: mmengine's Runner reads a top-level key of that name as a module list)
llm_activation_checkpointing = $activation_checkpointing  # recompute the LLM's activations in backward: less memory, more time
fused_adamw = $fused_adamw  # the AdamW update as one fused CUDA kernel
aligned_lm_head = $aligned_lm_head  # LM head through weights padded to 64 rows: same logits, faster matmuls
fused_kernels = $fused_kernels  # liger-kernel's fused RMSNorm and SwiGLU on the LLM (CUDA)
answer_only_lm_head = $answer_only_lm_head  # LM head + loss only at labelled positions: same loss and gradients
cache_vision_features = $cache_vision_features  # each tile through the frozen ViT once: later epochs reuse its tokens
prepare_samples_once = $prepare_samples_once  # each sample decoded, tiled and tokenized once (PreparedOnceDataset)
max_epochs = $max_epochs  # passes over the training set
optim_type = AdamW
lr = $lr  # peak learning rate
betas = $betas  # AdamW momentum coefficients
weight_decay = $weight_decay  # AdamW decoupled weight decay
max_norm = $max_norm  # gradient clipping (global L2 norm)
warmup_ratio = $warmup_ratio  # share of training spent in linear warm-up, then cosine decay to 0
$optim_wrapper_settings
# Save & log
save_steps = $save_steps  # checkpoint every N iterations (and at the last one)
save_total_limit = $save_total_limit  # checkpoints kept on disk (-1 keeps all); >= 2 lets resume skip a broken one
save_optimizer = $save_optimizer  # keep AdamW state in checkpoints so a resumed run continues exactly
log_interval = $log_interval  # log loss / lr every N iterations
seed = $seed  # one seed for sampling order, dropout and LoRA initialisation
$profile_notes
#######################################################################
#            PART 2  Model & Tokenizer & Image Processor              #
#######################################################################
model = dict(
    type=$model_class,
    model_path=path,
    freeze_llm=True,
    freeze_visual_encoder=True,
    activation_checkpointing=llm_activation_checkpointing,
    aligned_lm_head=aligned_lm_head,
    answer_only_lm_head=answer_only_lm_head,
    fused_kernels=fused_kernels,
    cache_vision_features=cache_vision_features,
    # comment the following lines if you don't want to use Lora in llm
    llm_lora=dict(
        type=LoraConfig,
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=None,  # None: every linear layer of the LLM (XTuner finds them)
        task_type="CAUSAL_LM",
    ),
    # uncomment the following lines if you want to use Lora in the visual encoder too
    # visual_encoder_lora=dict(
    #     type=LoraConfig, r=64, lora_alpha=16, lora_dropout=0.05,
    #     target_modules=['attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'])
)

#######################################################################
#                      PART 3  Dataset & Dataloader                   #
#######################################################################
llava_dataset = dict(
    type=$dataset_class,
    model_path=path,
    data_paths=data_path,
    image_folders=image_folder,
    template=prompt_template,
    max_length=max_length,
)

train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
    dataset=llava_dataset,
    sampler=dict(
        type=LengthGroupedSampler,
        length_property="modality_length",
        per_device_batch_size=batch_size * accumulative_counts,
    ),
    collate_fn=dict(type=default_collate_fn),
)

#######################################################################
#                    PART 4  Scheduler & Optimizer                    #
#######################################################################
# optimizer (`--deepspeed` replaces the wrapper with DeepSpeed's and keeps `optimizer`)
$optim_wrapper_block

# learning policy: linear warm-up, then cosine annealing to 0, both converted to iterations
param_scheduler = [
    dict(
        type=LinearLR,
        start_factor=1e-5,
        by_epoch=True,
        begin=0,
        end=warmup_ratio * max_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type=CosineAnnealingLR,
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_ratio * max_epochs,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]

# train, val, test setting
train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

#######################################################################
#                           PART 5  Runtime                           #
#######################################################################
# Log the first processed training sample (decoded) before training starts
tokenizer = dict(
    type=AutoTokenizer.from_pretrained,
    pretrained_model_name_or_path=path,
    trust_remote_code=True,
)

custom_hooks = [
    dict(type=DatasetInfoHook, tokenizer=tokenizer),
]

default_hooks = dict(
    # record the time of every iteration.
    timer=dict(type=IterTimerHook),
    # print the log every `log_interval` iterations.
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=log_interval),
    # enable the parameter scheduler.
    param_scheduler=dict(type=ParamSchedulerHook),
    # save a checkpoint every `save_steps` iterations.
    checkpoint=dict(
        type=CheckpointHook,
        save_optimizer=save_optimizer,
        by_epoch=False,
        interval=save_steps,
        max_keep_ckpts=save_total_limit,
    ),
    # set sampler seed in distributed environment.
    sampler_seed=dict(type=DistSamplerSeedHook),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    # used only under torchrun / NPROC_PER_NODE > 1
    dist_cfg=dict(backend="nccl"),
)

# None: mmengine's default visualizer, which writes <work_dir>/<timestamp>/vis_data/scalars.json
visualizer = None

log_level = "INFO"

# load weights from a checkpoint (None: start from `path`)
load_from = None

# whether to resume training from the loaded checkpoint (`xtuner train --resume` sets both)
resume = False

randomness = dict(seed=seed, deterministic=False)

log_processor = dict(by_epoch=False)
''')


AMP_SETTINGS = '''\
amp_dtype = $amp_dtype  # AmpOptimWrapper compute dtype (float16 as upstream; bfloat16 where the card has it)
'''


AMP_BLOCK = '''\
optim_wrapper = dict(
    type=AmpOptimWrapper,
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused_adamw),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
    loss_scale="dynamic",
    dtype=amp_dtype,
)'''


PLAIN_SETTINGS = '''\
# OptimWrapper (fp32, no loss scaling) instead of the recipe's AmpOptimWrapper: AmpOptimWrapper
# asserts a CUDA device, so it cannot run on CPU. With it the model is FullPrecisionInternVL (the
# same class, every weight held in fp32): XTuner loads the frozen towers in bf16, and a CPU without
# bf16 instructions runs bf16 matmuls in a slow generic kernel.
'''


PLAIN_BLOCK = '''\
optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused_adamw),
    clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
    accumulative_counts=accumulative_counts,
)'''
