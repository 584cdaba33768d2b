"""Where a training step's GPU time goes: a ``torch.profiler`` window inside ``xtuner train``.

:class:`StepProfilerHook` is an mmengine hook for the course's XTuner config (benchmarks/
bench_finetune.py ``--profile N`` adds it). It profiles ``iters`` training iterations after
``start`` warm-up ones and writes, in the work directory:

* ``profile.json``: wall time of the window, the summed kernel time and the share of the wall
  time the GPU was busy, kernel time by category (:func:`kernel_category`: matmul, attention,
  elementwise, reduction / softmax / loss, optimizer, communication, copies), and the device
  time spent under each model part (InternViT forward, MLP projector, LLM decoder, LM head,
  loss) -- the parts are ``record_function`` ranges opened by forward hooks, so they count
  forward work only (backward and recompute run outside them);
* ``profile.txt``: the same as tables, plus the top kernels and operators.

Example (an mmengine config):
    >>> from helpers.train.profiling import StepProfilerHook                    # doctest: +SKIP
    >>> custom_hooks = [dict(type=StepProfilerHook, start=4, iters=2)]    # doctest: +SKIP
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

try:
    from mmengine.hooks import Hook
except ImportError:  # the LMDeploy environment has no mmengine; the summaries below still work
    Hook = object

# First match wins: optimizer kernels are elementwise too, communication kernels reduce.
CATEGORIES = [
    ("communication", r"nccl|allreduce|all_reduce|reduce_scatter|allgather"),
    ("optimizer", r"adam|multi_tensor|foreach|fused_optim"),
    ("attention", r"flash|fmha|attention|sdpa|_efficient_attention|cudnn.*(mha|sdpa)"),
    ("matmul", r"gemm|xmma|cutlass|cublas|sm\d+_.*(tn|nt|nn)|matmul|wgmma"),
    ("loss/softmax/reduction", r"softmax|cross_entropy|nll_loss|log_softmax|reduce|norm_kernel|layer_norm|rms"),
    ("copy/cast", r"memcpy|memset|copy|cast|cat_|index|gather|scatter|fill"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise|triton|mul_|add_|silu|gelu|dropout"),
]
PARTS = {"vision_model": "InternViT forward", "mlp1": "MLP projector forward",
         "decoder": "LLM decoder forward", "lm_head": "LM head forward", "causal_lm": "LLM forward incl. loss"}


def kernel_category(name: str) -> str:
    """The category of a CUDA kernel, from its name.

    Args:
        name: kernel name as the profiler reports it.

    Returns:
        One of the names in :data:`CATEGORIES`, or ``"other"``.

    Example:
        >>> kernel_category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64")
        'matmul'
        >>> kernel_category("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL")
        'communication'
    """
    low = name.lower()
    for cat, pattern in CATEGORIES:
        if re.search(pattern, low):
            return cat
    return "other"


def _device_self(evt) -> float:
    # torch >= 2.4 names it device time; older versions cuda time (microseconds either way)
    return float(getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0) or 0)


def _device_total(evt) -> float:
    return float(getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0) or 0)


def _is_kernel(evt) -> bool:
    # Operators (aten::mm ...) carry the time of the kernels they launch as their own "self device
    # time" too: only rows that ran on the device are kernels, else everything counts twice.
    # The record_function ranges show up on the device too (as GPU annotations): not kernels either.
    return (str(getattr(evt, "device_type", "")).rsplit(".", 1)[-1] in ("CUDA", "PrivateUse1")
            and _device_self(evt) > 0 and not evt.key.startswith("course::"))


def _cpu_total(evt) -> float:
    return float(getattr(evt, "cpu_time_total", 0) or 0)


def summarize(averages, wall_s: float, iters: int) -> dict:
    """Kernel time by category and by model part from a profiler's ``key_averages()``.

    Without CUDA (no kernel times at all) the parts and operators are given in CPU time instead,
    and ``clock`` says which.

    Args:
        averages: ``prof.key_averages()`` (or any rows with ``key``, ``count`` and device times).
        wall_s: wall-clock seconds of the profiled window.
        iters: iterations in the window.

    Returns:
        A dict: ``wall_ms_per_iter``, ``kernel_ms_per_iter``, ``gpu_busy`` (kernel time over wall
        time), ``categories`` (ms per iteration and share of kernel time), ``parts`` (ms per iteration
        under each forward range), ``top_kernels`` and ``top_ops`` (ms per iteration).
    """
    rows = list(averages)
    kernels = [(r.key, _device_self(r), r.count) for r in rows if _is_kernel(r)]
    kernel_us = sum(t for _, t, _ in kernels)
    cats: dict = {}
    for name, t, _ in kernels:
        cat = kernel_category(name)
        cats[cat] = cats.get(cat, 0.0) + t
    per = max(1, iters)
    total = _device_total if kernel_us else _cpu_total
    out = {
        "clock": "cuda" if kernel_us else "cpu",
        "iters": iters,
        "wall_ms_per_iter": round(wall_s * 1e3 / per, 2),
        "kernel_ms_per_iter": round(kernel_us / 1e3 / per, 2),
        "gpu_busy": round(kernel_us / 1e6 / wall_s, 3) if wall_s > 0 else None,
        "categories": {c: {"ms_per_iter": round(t / 1e3 / per, 2), "share": round(t / kernel_us, 3) if kernel_us else 0}
                       for c, t in sorted(cats.items(), key=lambda kv: -kv[1])},
        "parts": {label: round(total(r) / 1e3 / per, 2) for r in rows
                  for key, label in PARTS.items() if r.key == f"course::{key}"},
        "top_kernels": [{"name": n[:120], "ms_per_iter": round(t / 1e3 / per, 2), "calls_per_iter": round(c / per, 1),
                         "category": kernel_category(n)}
                        for n, t, c in sorted(kernels, key=lambda k: -k[1])[:25]],
        "top_ops": [{"name": r.key, "ms_per_iter": round(total(r) / 1e3 / per, 2)}
                    for r in sorted((r for r in rows if "::" in r.key and not r.key.startswith("course::")),
                                    key=lambda r: -total(r))[:25]],
    }
    return out


def format_summary(s: dict) -> str:
    """The summary of :func:`summarize` as plain-text tables."""
    lines = [f"{s['iters']} iterations: wall {s['wall_ms_per_iter']} ms/iter, kernels {s['kernel_ms_per_iter']} ms/iter,"
             f" GPU busy {s['gpu_busy']}", "", "category                  ms/iter   share"]
    lines += [f"{c:<24} {v['ms_per_iter']:>8}   {v['share']:.1%}" for c, v in s["categories"].items()]
    lines += ["", f"forward range ({s.get('clock', 'cuda')} time under it)     ms/iter"]
    lines += [f"{k:<38} {v:>8}" for k, v in s["parts"].items()]
    lines += ["", "top kernels                                                        ms/iter  calls  category"]
    lines += [f"{k['name'][:64]:<66} {k['ms_per_iter']:>8} {k['calls_per_iter']:>6}  {k['category']}"
              for k in s["top_kernels"]]
    lines += ["", f"top operators ({s.get('clock', 'cuda')} time incl. children)                 ms/iter"]
    lines += [f"{o['name'][:54]:<56} {o['ms_per_iter']:>8}" for o in s["top_ops"]]
    return "\n".join(lines)


def _find_parts(model) -> dict:
    """The modules whose forward gets a range: InternViT, the projector, the LLM's parts."""
    found, inner_lm = {}, False
    for name, mod in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        cls = type(mod).__name__
        if leaf == "vision_model" and "vision_model" not in found:
            found["vision_model"] = mod
        elif leaf == "mlp1" and "mlp1" not in found:
            found["mlp1"] = mod
        elif cls.endswith("ForCausalLM") and "causal_lm" not in found:
            # the outermost: with LoRA, peft's wrapper (peft calls the wrapped model's forward
            # directly, so hooks on the inner one never fire)
            found["causal_lm"] = mod
        if cls.endswith("ForCausalLM") and not cls.startswith("Peft") and not inner_lm:
            inner_lm = True  # the real LLM: its decoder and its head
            inner = getattr(mod, "model", None)
            head = getattr(mod, "output", None) or getattr(mod, "lm_head", None)
            if inner is not None:
                found["decoder"] = inner
            if head is not None:
                found["lm_head"] = head
    return found


def add_ranges(model) -> list:
    """Open a ``record_function("course::<part>")`` range around each part's forward.

    Args:
        model: the model being trained (XTuner's InternVL_V1_5 or the chat model itself).

    Returns:
        The hook handles (``h.remove()`` each to take the ranges away).
    """
    import torch

    handles = []
    for key, mod in _find_parts(model).items():
        stack = []

        def pre(_m, _args, key=key, stack=stack):
            rf = torch.profiler.record_function(f"course::{key}")
            rf.__enter__()
            stack.append(rf)

        def post(_m, _args, _out, stack=stack):
            if stack:
                stack.pop().__exit__(None, None, None)

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    return handles


class StepProfilerHook(Hook):
    """Profile ``iters`` training iterations after ``start`` and write profile.json / profile.txt.

    Args:
        start: training iterations to skip first (warm-up: allocator, cuDNN plans, dataloader).
        iters: iterations to profile.
    """

    priority = "VERY_LOW"

    def __init__(self, start: int = 4, iters: int = 2):
        self.start, self.iters = int(start), int(iters)
        self._prof = self._t0 = None
        self._handles = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.start or self._prof is not None:
            return
        import torch

        model = runner.model
        while not hasattr(model, "named_modules") and hasattr(model, "model"):
            model = model.model  # mmengine's DeepSpeed wrapper holds the engine, an nn.Module
        self._handles = add_ranges(model)
        acts = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            acts.append(torch.profiler.ProfilerActivity.CUDA)
            torch.cuda.synchronize()
        self._prof = torch.profiler.profile(activities=acts)
        self._prof.__enter__()
        self._t0 = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self._prof is None or runner.iter + 1 != self.start + self.iters:
            return
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self._t0
        self._prof.__exit__(None, None, None)
        for h in self._handles:
            h.remove()
        summary = summarize(self._prof.key_averages(), wall, self.iters)
        summary.update(start=self.start)
        out = Path(runner.work_dir)
        (out / "profile.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
        (out / "profile.txt").write_text(format_summary(summary) + "\n", encoding="utf-8")
        runner.logger.info("profile of iterations %d-%d written to %s/profile.txt", self.start,
                           self.start + self.iters - 1, out)
        self._prof = None
