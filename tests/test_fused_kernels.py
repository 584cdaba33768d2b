"""helpers.train.fused_kernels: which modules are patched, and that the patched model computes the same."""
from __future__ import annotations

import copy
import sys

import pytest

torch = pytest.importorskip("torch")

from helpers.train.fused_kernels import fuse_internlm2_kernels  # noqa: E402


def _reference():
    """Plain-torch versions of the two fused operations (the maths liger-kernel implements)."""
    calls = {"rms_norm": 0, "swiglu": 0}

    def rms_norm(x, weight, eps):
        calls["rms_norm"] += 1
        x32 = x.float()
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def silu_mul(a, b):
        calls["swiglu"] += 1
        return torch.nn.functional.silu(a) * b

    return rms_norm, silu_mul, calls


@pytest.mark.parametrize("which", ["tiny_model", "replica_model"])
def test_patched_llm_gives_the_same_logits(which, request):
    model, _ = request.getfixturevalue(which)
    llm = copy.deepcopy(model.language_model)  # the fixture model is shared
    layers = llm.config.num_hidden_layers
    ids = torch.randint(5, 200, (2, 9))
    with torch.no_grad():
        before = llm(input_ids=ids).logits
    rms_norm, silu_mul, calls = _reference()
    counts = fuse_internlm2_kernels(llm, rms_norm=rms_norm, silu_mul=silu_mul)
    assert counts == {"rms_norm": 2 * layers + 1, "swiglu": layers}  # 2 norms a layer + the final one
    with torch.no_grad():
        after = llm(input_ids=ids).logits
    assert calls == counts  # every patched module ran through the given functions, once
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_foreign_model_and_missing_liger_are_named(monkeypatch):
    with pytest.raises(ValueError, match="no InternLM2 RMSNorm or SwiGLU"):
        fuse_internlm2_kernels(torch.nn.Linear(2, 2), rms_norm=lambda *a: a[0], silu_mul=lambda a, b: a)
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "liger_kernel.ops.rms_norm", None)
    with pytest.raises(ImportError, match="requirements-xtuner.txt"):
        fuse_internlm2_kernels(torch.nn.Linear(2, 2))


@pytest.mark.gpu
def test_liger_kernels_match_the_reference_on_cuda(tiny_model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("liger_kernel")
    model, _ = tiny_model
    llm = copy.deepcopy(model.language_model).to("cuda", torch.bfloat16)
    ids = torch.randint(5, 200, (2, 33), device="cuda")
    before = llm(input_ids=ids).logits.float()
    fuse_internlm2_kernels(llm)  # liger-kernel's Triton kernels
    after = llm(input_ids=ids).logits.float()
    after.sum().backward()  # the backward kernels run too
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in llm.parameters())
    torch.testing.assert_close(after, before, rtol=3e-2, atol=3e-2)  # bf16: rounding differs, maths does not
