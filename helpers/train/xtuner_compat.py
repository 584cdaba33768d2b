"""The course's model class for XTuner configs: ``InternVL_V1_5`` plus the fixes this stack needs.

XTuner 0.2.0's ``InternVL_V1_5`` was written for a torchrun-launched GPU job with flash-attn
and a working bitsandbytes. On the course machines some of that is missing, and each gap
breaks training in its own way (seen in CPU and GPU trial runs of this stack). This class
applies only the fixes those runs justified; everything else is XTuner's code unchanged:

* a 1-process gloo group when ``torch.distributed`` is not initialised
  (``xtuner train CONFIG`` without torchrun: XTuner calls ``get_rank()`` in every forward);
* peft sees bitsandbytes as unavailable when bitsandbytes cannot be imported
  (bitsandbytes 0.45 imports ``triton.ops``, which triton 3.x removed);
* fp32 master copies of the trainable parameters (the projector ``mlp1`` is loaded in bf16)
  and ViT features cast to ``mlp1``'s dtype on the way in;
* optionally (``aligned_lm_head=True``) the LM head computed through weights padded to a
  multiple of 64 rows (:func:`align_lm_head`): InternLM2's vocabulary of 92,553 rows is odd,
  and cuBLAS then falls back to slow kernels for the largest matmul of the step;
* optionally (``answer_only_lm_head=True``) the LM head and the loss computed only at the
  positions that carry a label (:mod:`helpers.train.answer_loss`): the same loss and gradients
  without the (batch x length x 92,553) fp32 logits;
* optionally (``cache_vision_features=True``) a frozen ViT that encodes each tile once
  (:mod:`helpers.train.vit_cache`); and :class:`PreparedOnceDataset`, XTuner's dataset that
  decodes, tiles and tokenizes each sample once. Both give every epoch what the first got.

This module imports XTuner at the top on purpose: it is only imported by an XTuner config,
inside the XTuner environment (``requirements-xtuner.txt``).

Example (in an XTuner config, imported by name because mmengine's lazy-import configs
ignore ``custom_imports``)::

    from helpers.train.xtuner_compat import CourseInternVL
    model = dict(type=CourseInternVL, model_path=path, freeze_llm=True, ...)
"""
from __future__ import annotations

import atexit
import importlib.util
import sys

import torch
from mmengine import print_log

from xtuner.dataset import InternVL_V1_5_Dataset
from xtuner.model import InternVL_V1_5


def ensure_process_group() -> bool:
    """Create a 1-process gloo group when no ``torch.distributed`` group exists.

    ``InternVL_V1_5._llm_forward`` calls ``torch.distributed.get_rank()`` unconditionally,
    which raises when ``xtuner train`` runs without a launcher (one CPU or one GPU, no
    torchrun). torchrun + gloo does not help on CPU either: mmengine then calls
    ``torch.cuda.set_device``. An in-memory store needs no port and no rendezvous.

    Returns:
        True when this call created the group, False when one already existed.

    Example:
        >>> ensure_process_group() in (True, False)
        True
    """
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    # Without this torch warns at exit that the group was never destroyed.
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    print_log("No distributed launcher: created a 1-process gloo group (world_size=1).",
              logger="current")
    return True


def disable_broken_bitsandbytes() -> bool:
    """Make peft treat bitsandbytes as absent when it is installed but cannot be imported.

    peft decides by ``find_spec("bitsandbytes")`` and then imports it while applying LoRA;
    bitsandbytes 0.45.0 imports ``triton.ops`` (removed in triton 3.x), so LoRA fails with
    ``ModuleNotFoundError: No module named 'triton.ops'``. The course never quantises
    (``quantization_llm=False``), so nothing is lost.

    Returns:
        True when the peft checks were switched off.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        return False  # peft already sees it as absent
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a RuntimeError from its CUDA probing
        reason = f"{type(exc).__name__}: {exc}"
    else:
        return False

    def _unavailable() -> bool:
        return False

    # peft modules bind these checks with `from peft.import_utils import ...`, so every
    # module that already holds a reference is patched, and peft.import_utils itself
    # for the modules imported later.
    for name, module in list(sys.modules.items()):
        if name == "peft" or name.startswith("peft."):
            for attr in ("is_bnb_available", "is_bnb_4bit_available"):
                if hasattr(module, attr):
                    setattr(module, attr, _unavailable)
    print_log(f"bitsandbytes cannot be imported ({reason}); peft will not use it.",
              logger="current")
    return True


def _cast_input_to_weight_dtype(module: torch.nn.Module, args: tuple):
    """Forward pre-hook: bf16 ViT features into an fp32 (or any other dtype) projector."""
    weight = next(module.parameters(), None)
    if weight is None or not args or not torch.is_tensor(args[0]):
        return None
    if args[0].is_floating_point() and args[0].dtype != weight.dtype:
        return (args[0].to(weight.dtype), *args[1:])
    return None


def _align_linear(linear, multiple: int) -> bool:
    """Run ``linear`` through a weight padded with zero rows to ``multiple``; slice the output back."""
    rows = linear.weight.shape[0]
    pad = -rows % multiple
    if not pad:
        return False
    cache: dict = {}

    def padded(t):
        return torch.nn.functional.pad(t, (0, 0, 0, pad) if t.dim() == 2 else (0, pad))

    def forward(x):
        w, b = linear.weight, linear.bias
        if w.requires_grad:  # a trained weight (LoRA's B): pad on every call, gradients flow through the pad
            return torch.nn.functional.linear(x, padded(w), None if b is None else padded(b))[..., :rows]
        # A frozen one is padded once; DeepSpeed casts and moves the model after __init__, so pad
        # again whenever the weight changed (new storage, dtype or device, or an in-place write).
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if cache.get("key") != key:
            cache.update(key=key, w=padded(w.detach()), b=None if b is None else padded(b.detach()))
        return torch.nn.functional.linear(x, cache["w"], cache["b"])[..., :rows]

    linear.forward = forward
    return True


def align_lm_head(llm, multiple: int = 64) -> bool:
    """Compute the LM head's logits through weights padded to ``multiple`` rows.

    The logits of the real rows are the same numbers (the extra rows are zeros and are sliced
    off before anything reads them), and so are the gradients; only the memory layout changes,
    so cuBLAS can use its aligned tensor-core kernels. InternLM2's vocabulary (92,553 rows) is
    odd: profiled at InternVL2-2B size, the head's matmuls ran in sm75-era CUTLASS kernels, a
    noticeable share of the step (benchmarks/README.md). XTuner's LoRA (``target_modules=None``) also wraps the
    head (it is named ``output``, not ``lm_head``), so both the frozen weight and LoRA's B
    (92,553 x r) are aligned.

    Args:
        llm: the causal LM (``get_output_embeddings()`` gives its head), peft-wrapped or not.
        multiple: row alignment.

    Returns:
        True when a matmul of the head was switched, False when none needed it.

    Example:
        >>> align_lm_head(model.language_model)   # doctest: +SKIP
        True
    """
    head = llm.get_output_embeddings()
    if hasattr(head, "base_layer") and hasattr(head, "lora_B"):  # a peft LoRA layer
        linears = [head.base_layer, *head.lora_B.values()]
    else:
        linears = [head]
    return any([_align_linear(m, multiple) for m in linears if isinstance(m, torch.nn.Linear)])


class CourseInternVL(InternVL_V1_5):
    """XTuner's ``InternVL_V1_5`` with the course's compatibility fixes (see module docstring).

    Takes exactly ``InternVL_V1_5``'s arguments, so a config can switch between the two by
    changing ``type``; the saved ``.pth`` and ``convert_to_official`` are unchanged.

    Args:
        *args, **kwargs: passed to ``xtuner.model.InternVL_V1_5`` (model_path, freeze_llm,
            freeze_visual_encoder, llm_lora, visual_encoder_lora, ...).
        activation_checkpointing: keep XTuner's activation checkpointing of the LLM (True, its
            behaviour); False trades memory for speed: no forward is run twice.
        aligned_lm_head: compute the LM head through padded weights (:func:`align_lm_head`).
        answer_only_lm_head: run the LM head and the loss on labelled positions only
            (:func:`helpers.train.answer_loss.answer_only_loss`).
        fused_kernels: liger-kernel's RMSNorm and SwiGLU on the LLM
            (:func:`helpers.train.fused_kernels.fuse_internlm2_kernels`; CUDA only).
        cache_vision_features: with the ViT frozen, encode each tile once and reuse its tokens in
            later epochs (:func:`helpers.train.vit_cache.cache_frozen_vision`).

    Example (config file)::

        model = dict(type=CourseInternVL, model_path=path, freeze_llm=True,
                     freeze_visual_encoder=True, llm_lora=dict(type=LoraConfig, r=128, ...))
    """

    def __init__(self, *args, activation_checkpointing: bool = True, aligned_lm_head: bool = False,
                 answer_only_lm_head: bool = False, fused_kernels: bool = False,
                 cache_vision_features: bool = False, **kwargs):
        ensure_process_group()
        self.answer_only_lm_head = answer_only_lm_head
        disable_broken_bitsandbytes()
        # XTuner forces flash_attention_2 on the LLM config. Nothing is done about that
        # here: the course's modeling_internlm2.py runs that setting through PyTorch sdpa
        # when flash-attn is missing, and InternVL2-2B's own InternLM2 code falls back to
        # eager attention by itself.
        super().__init__(*args, **kwargs)
        if not activation_checkpointing:
            # XTuner turns it on twice (in __init__ and again through peft's
            # prepare_model_for_kbit_training when it adds LoRA): switch it off once both ran.
            self.activation_checkpointing_disable()
        if aligned_lm_head and align_lm_head(self.model.language_model):
            print_log("LM head computed through a weight padded to a multiple of 64 rows.", logger="current")
        if fused_kernels and not torch.cuda.is_available():
            # Triton kernels need a GPU; the maths is the same either way, so a CPU run goes on without them
            print_log("fused_kernels=True: no CUDA GPU, so RMSNorm and SwiGLU stay PyTorch's (same maths).",
                      logger="current", level=30)
        elif fused_kernels:
            from helpers.train.fused_kernels import fuse_internlm2_kernels

            print_log(f"liger-kernel fused modules: {fuse_internlm2_kernels(self.model.language_model)}.",
                      logger="current")
        if answer_only_lm_head:
            print_log("LM head and loss computed on labelled positions only.", logger="current")
        self.vision_cache, self._forwards = None, 0
        if cache_vision_features:
            self._cache_vision()
        self._keep_trainables_in_fp32()

    def _cache_vision(self) -> None:
        from helpers.train.vit_cache import cache_frozen_vision, cacheable_reason

        self.vision_cache = cache_frozen_vision(self.model)
        if self.vision_cache is None:
            print_log(f"cache_vision_features=True, but {cacheable_reason(self.model.vision_model)}: every step "
                      "encodes its tiles.", logger="current", level=30)
            return
        print_log("Frozen ViT: each tile is encoded once, later epochs reuse its tokens.", logger="current")

    def _llm_forward(self, pixel_values, labels=None, **kwargs):
        """XTuner's forward of the LLM, or with ``answer_only_lm_head`` the loss alone (no logits returned)."""
        if self.vision_cache is not None:
            self._forwards += 1
            if self._forwards % 200 == 0:
                print_log(self.vision_cache.summary(), logger="current")
        if not self.answer_only_lm_head or labels is None:
            return super()._llm_forward(pixel_values, labels=labels, **kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        from helpers.train.answer_loss import answer_only_loss

        loss = answer_only_loss(self.model, pixel_values, kwargs["input_ids"], kwargs.get("attention_mask"),
                                kwargs.get("position_ids"), kwargs["image_flags"], labels)
        return CausalLMOutputWithPast(loss=loss)

    def _keep_trainables_in_fp32(self) -> None:
        """Hold every trainable parameter in fp32.

        XTuner loads the model in bf16 and peft upcasts only the LLM, so the trainable
        projector ``mlp1`` stays bf16: AmpOptimWrapper's gradient unscaling has no bf16 kernel
        on CUDA, and AdamW steps of lr 3e-5 vanish in bf16 rounding on CPU. Under DeepSpeed
        the engine casts the whole model to bf16 again, which it handles itself.
        """
        upcast = []
        for name, param in self.named_parameters():
            if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
                param.data = param.data.float()
                upcast.append(name)
        if upcast:
            print_log(f"Trainable parameters kept in fp32: {len(upcast)} tensors "
                      f"(e.g. {upcast[0]}).", logger="current")
        # The frozen ViT still produces bf16 features; the projector takes its own dtype.
        self.model.mlp1.register_forward_pre_hook(_cast_input_to_weight_dtype)


class FullPrecisionInternVL(CourseInternVL):
    """XTuner's InternVL_V1_5 (course fixes included) holding every weight in fp32 (notebook 02's stages, and
    notebook 05 wherever it trains with the fp32 ``OptimWrapper``, i.e. on a CPU).

    XTuner loads the checkpoint in bf16 and the course class keeps only the *trainable*
    weights in fp32. With the LLM frozen and no LoRA (stage 1), the fp32 projector's tokens
    then meet the bf16 LLM's embeddings and the splice fails on the dtype mismatch. A tiny
    model costs nothing to hold in fp32, and fp32 matmuls are faster than bf16 on a CPU.
    The saved ``.pth`` and ``convert_to_official`` are unchanged.

    On a GPU the stages run in full fp32, TF32 off (:func:`helpers.env.full_fp32_matmuls`): this
    class is built in the ``xtuner train`` process before the first step, and cuDNN's default
    TF32 convolutions alone let a miniature trained on a GPU drift from the CPU-trained one.
    """

    def __init__(self, *args, **kwargs):
        from helpers.env import full_fp32_matmuls

        flags = full_fp32_matmuls()
        print_log(f"Full fp32 matmuls and convolutions (no TF32 on CUDA): {flags}.", logger="current")
        super().__init__(*args, **kwargs)
        self.model.float()


class PreparedOnceDataset(InternVL_V1_5_Dataset):
    """XTuner's ``InternVL_V1_5_Dataset`` that decodes, tiles and tokenizes each sample once.

    XTuner's dataset has no randomness in ``prepare_data`` (no augmentation: a fixed resize of
    fixed tiles), so every epoch rebuilds the same tensors from the same JPEG. This class keeps
    the first result per sample in memory; two questions about one photo share its pixels. A
    sample whose image fails to load is never kept: every epoch reports it and draws a
    replacement, as XTuner does (:mod:`helpers.train.replaced_samples`).

    Takes exactly ``InternVL_V1_5_Dataset``'s arguments.

    Example (config file)::

        llava_dataset = dict(type=PreparedOnceDataset, model_path=path, data_paths=data_path, ...)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prepared: dict = {}
        self._pixels: dict = {}

    def prepare_data(self, index):
        kept = self._prepared.get(index)
        if kept is None:
            kept = super().prepare_data(index)
            if kept is None:
                return None  # an image that failed to load: XTuner logged it; every epoch does so again
            image = self.data[index].get("image")
            if image is not None:
                path = (self.image_folder[index], str(image))
                kept["pixel_values"] = self._pixels.setdefault(path, kept["pixel_values"])
            self._prepared[index] = kept
        return dict(kept)  # a new dict each time: the collate function must not change the kept one
