"""Fused Triton kernels (liger-kernel) for InternLM2's RMSNorm and SwiGLU, patched onto a loaded model.

A LoRA training step at InternVL2-2B size spends about a third of its GPU time in small
elementwise kernels and dtype casts (benchmarks/README.md has the profile). Two of their sources
are InternLM2's RMSNorm (an fp32 round trip per call, 49 calls a forward) and the MLP's
``silu(w1 x) * w3 x``. liger-kernel (``pip install liger-kernel``: a pure-Python wheel; its
kernels are Triton, so CUDA only) computes each in one kernel forward and one backward.

The patch works on any InternLM2 the course meets, OpenGVLab's remote code or the course's own,
because it only relies on what both define: RMSNorm modules with ``weight`` and
``variance_epsilon``, and MLP modules with ``w1``, ``w2``, ``w3`` and a SiLU ``act_fn``. peft's LoRA
layers inside the MLP still run (they are the ``w1``/``w3`` being called). Each patched module keeps
its weights; only its ``forward`` changes, for this model instance.

Example:
    >>> from helpers.train.fused_kernels import fuse_internlm2_kernels
    >>> fuse_internlm2_kernels(model.language_model)   # doctest: +SKIP
    {'rms_norm': 49, 'swiglu': 24}
"""
from __future__ import annotations

import torch


def liger_functions():
    """liger-kernel's RMSNorm and SiLU-multiply autograd functions, as ``(rms_norm, silu_mul)``.

    Raises:
        ImportError: liger-kernel is not installed (with the install hint).
    """
    try:
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    except ImportError as exc:
        raise ImportError("fused kernels need liger-kernel (pip install liger-kernel; CUDA + Triton) "
                          "in the XTuner environment (requirements-xtuner.txt)") from exc

    def rms_norm(x, weight, eps):
        # "llama" casting: only the inverse RMS in fp32, as InternLM2's RMSNorm does; not in place,
        # because the residual stream still needs the gradient it would overwrite.
        return LigerRMSNormFunction.apply(x, weight, eps, 0.0, "llama", False)

    def silu_mul(a, b):
        return LigerSiLUMulFunction.apply(a, b)

    return rms_norm, silu_mul


def _is_rms_norm(module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon") \
        and isinstance(getattr(module, "weight", None), torch.Tensor)


def _is_swiglu_mlp(module) -> bool:
    act = getattr(module, "act_fn", None)
    if not callable(act) or not all(hasattr(module, n) for n in ("w1", "w2", "w3")):
        return False
    # transformers' activation classes differ between versions (torch's SiLU, its own SiLUActivation):
    # ask the function, not its type
    probe = torch.linspace(-3, 3, 7)
    return torch.allclose(act(probe), torch.nn.functional.silu(probe))


def fuse_internlm2_kernels(llm: torch.nn.Module, rms_norm=None, silu_mul=None) -> dict:
    """Route every InternLM2 RMSNorm and SwiGLU MLP of ``llm`` through fused kernels.

    Args:
        llm: the language model (``InternLM2ForCausalLM``), peft-wrapped or not.
        rms_norm: ``f(x, weight, eps)``; default liger-kernel's (CUDA only).
        silu_mul: ``f(a, b) = silu(a) * b``; default liger-kernel's.

    Returns:
        How many modules were patched: ``{"rms_norm": n, "swiglu": m}``.

    Raises:
        ImportError: liger-kernel missing and no functions given.
        ValueError: nothing to patch (not an InternLM2-style model).
    """
    if rms_norm is None or silu_mul is None:
        default_norm, default_mul = liger_functions()
        rms_norm, silu_mul = rms_norm or default_norm, silu_mul or default_mul
    counts = {"rms_norm": 0, "swiglu": 0}
    for module in llm.modules():
        if _is_rms_norm(module):
            module.forward = (lambda m: lambda x: rms_norm(x, m.weight, m.variance_epsilon))(module)
            counts["rms_norm"] += 1
        elif _is_swiglu_mlp(module):
            module.forward = (lambda m: lambda x: m.w2(silu_mul(m.w1(x), m.w3(x))))(module)
            counts["swiglu"] += 1
    if not counts["rms_norm"] and not counts["swiglu"]:
        raise ValueError(f"{type(llm).__name__}: no InternLM2 RMSNorm or SwiGLU MLP modules to fuse")
    return counts
