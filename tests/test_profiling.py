"""helpers.train.profiling: kernel categories, forward ranges and the summary of a profiled step."""
import pytest

from helpers.train.profiling import add_ranges, format_summary, kernel_category, summarize

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name, category", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x2_tn_align8>", "matmul"),
    ("pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", "attention"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>", "loss/softmax/reduction"),
    ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor>", "optimizer"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "communication"),
    ("Memcpy DtoD (Device -> Device)", "copy/cast"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>", "elementwise"),
    ("some_unknown_kernel", "other"),
])
def test_kernel_category(name, category):
    assert kernel_category(name) == category


@pytest.mark.parametrize("lora", [False, True], ids=["plain", "peft-lora"])
def test_ranges_cover_the_model_parts_and_come_off(tiny_model_dir, lora):
    from helpers.models import load_model
    from helpers.tiling import to_pixel_values
    from PIL import Image

    model, tok = load_model(tiny_model_dir, dtype=torch.float32)
    if lora:  # as XTuner trains it: the LLM inside peft's wrapper
        peft = pytest.importorskip("peft")
        pytest.importorskip("xtuner", reason="XTuner's LoRA wrapping: the xtuner environment")
        from helpers.train.xtuner_compat import disable_broken_bitsandbytes

        disable_broken_bitsandbytes()  # as the course's XTuner model class does before LoRA
        model.language_model = peft.get_peft_model(model.language_model, peft.LoraConfig(
            r=4, target_modules=["wqkv", "wo", "w1", "w2", "w3"], task_type="CAUSAL_LM"))
    handles = add_ranges(model)
    assert len(handles) == 10  # pre + post hook on ViT, projector, LLM, decoder, LM head
    pixels = to_pixel_values(Image.new("RGB", (448, 448), (200, 80, 40)), max_num=1)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        feats = model.extract_feature(pixels)
        out = model.language_model(input_ids=ids, labels=ids)
        (out.loss + feats.float().mean()).backward()
    s = summarize(prof.key_averages(), wall_s=1.0, iters=1)
    assert s["clock"] == "cpu" and s["kernel_ms_per_iter"] == 0
    assert set(s["parts"]) == {"InternViT forward", "MLP projector forward", "LLM decoder forward",
                               "LM head forward", "LLM forward incl. loss"}
    assert all(v > 0 for v in s["parts"].values()), s["parts"]
    # the LLM's range holds its decoder and head (and the loss)
    assert s["parts"]["LLM forward incl. loss"] >= s["parts"]["LLM decoder forward"] + s["parts"]["LM head forward"]
    assert "InternViT forward" in format_summary(s)
    for h in handles:
        h.remove()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.extract_feature(pixels)
    assert not any(e.key.startswith("course::") for e in prof.key_averages())


class _Avg:
    def __init__(self, key, self_dev, total_dev=0.0, count=1, device="DeviceType.CUDA"):
        self.key, self.count, self.device_type = key, count, device
        self.self_device_time_total, self.device_time_total = self_dev, total_dev or self_dev


def test_summary_shares_and_busy_fraction():
    rows = [_Avg("sm90_xmma_gemm_bf16", 6000.0, count=4), _Avg("flash_fwd_kernel", 2000.0),
            _Avg("vectorized_elementwise_kernel", 2000.0),
            # an operator reports its kernels' time as its own self time too: not a kernel, not counted
            _Avg("aten::mm", 6000.0, 6000.0, device="DeviceType.CPU"),
            _Avg("course::vision_model", 0.0, 3000.0, device="DeviceType.CPU"),
            # ...and the same range as a GPU annotation: not a kernel
            _Avg("course::vision_model", 3000.0, 3000.0)]
    s = summarize(rows, wall_s=0.02, iters=2)  # 10 ms of kernels over 20 ms wall
    assert s["clock"] == "cuda"
    assert s["kernel_ms_per_iter"] == 5.0 and s["wall_ms_per_iter"] == 10.0 and s["gpu_busy"] == 0.5
    assert s["categories"]["matmul"] == {"ms_per_iter": 3.0, "share": 0.6}
    assert list(s["categories"])[0] == "matmul"
    assert s["parts"] == {"InternViT forward": 1.5}
    assert all(not k["name"].startswith("course::") for k in s["top_kernels"])
    assert s["top_kernels"][0]["calls_per_iter"] == 2.0
    assert s["top_ops"][0] == {"name": "aten::mm", "ms_per_iter": 3.0}
