"""Tests for helpers.train.finetune and helpers.train.xtuner_compat.

The pure tests (config text, batch split, checkpoint checks, log reading) run in both
environments. The training tests need XTuner (``.venv-xtuner``) and the tiny checkpoint
(``python -m helpers.models build-tiny``); they train a LoRA on CPU through ``xtuner train``
with the stock ``InternVL_V1_5_Dataset`` on a handful of drawn images.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from helpers.train import checkpoints, xtuner_config, convert, finetune, logs, train_run
from helpers.settings import XTUNER_SYSTEM_PROMPT, get_settings

N_TRAIN = 12  # samples; with batch 2 and 2 epochs: 12 iterations
COLOURS = {"番茄炒蛋": (220, 40, 30), "青椒肉丝": (40, 170, 60), "蓝莓山药": (50, 60, 200),
           "蛋炒饭": (235, 200, 60)}


def course_settings(**changes):
    """The full course recipe (what a GPU run uses), without needing InternVL2-2B on disk.

    Every recipe field the tiny profile overrides goes back to its course default, so the tests follow
    the tiny profile as it changes (max_dynamic_patch stays: it is the tiny checkpoint's own value).
    """
    import dataclasses

    from helpers.settings import Settings

    tiny = get_settings("tiny")
    course = {f.name: f.default for f in dataclasses.fields(Settings)
              if f.default is not dataclasses.MISSING and f.name != "max_dynamic_patch"
              and getattr(tiny, f.name) != f.default}
    return tiny.replace(**{**course, **changes})


# --------------------------------------------------------------------------- pure tests
def _train_json(tmp_path, n):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"image": "a.jpg", "conversations": []}] * n))
    return path


def test_render_config_has_recipe_values(tmp_path):
    S = course_settings()
    text = xtuner_config.render_config(S, tmp_path / "model", _train_json(tmp_path, 300),
                                  tmp_path, tmp_path / "run")
    compile(text, "config.py", "exec")  # valid Python
    for expected in ("lora_r = 128", "lora_alpha = 256", "lora_dropout = 0.05", "batch_size = 4",
                     "accumulative_counts = 2", "max_epochs = 10", "lr = 3e-05",
                     "betas = (0.9, 0.999)", "weight_decay = 0.05", "max_norm = 1.0",
                     "warmup_ratio = 0.03", "max_length = 8192", "dataloader_num_workers = 4",
                     "save_steps = 64", "save_total_limit = 2", "type=AmpOptimWrapper",
                     "amp_dtype = 'float16'", "type=LinearLR", "type=CosineAnnealingLR",
                     "type=LengthGroupedSampler", "type=InternVL_V1_5_Dataset",
                     "prompt_template = PROMPT_TEMPLATE.internlm2_chat",
                     "collate_fn=dict(type=default_collate_fn)", "freeze_llm=True",
                     "freeze_visual_encoder=True", "target_modules=None", 'task_type="CAUSAL_LM"',
                     "# visual_encoder_lora=dict(", "from helpers.train.xtuner_compat import CourseInternVL",
                     "--deepspeed deepspeed_zero2"):
        assert expected in text, expected
    assert "custom_imports" not in text  # ignored by lazy-import configs: imports by name
    assert "type=OptimWrapper" not in text
    # 300 samples, batch 4 x 2: 38 x 2 iterations a epoch; 3 % of 760 is enough warm-up.
    assert "760 iterations" in text and "differ from the course recipe" not in text


def test_tiny_profile_overrides_are_explained(tmp_path):
    S = get_settings("tiny", max_epochs=2, accumulative_counts=2)
    text = xtuner_config.render_config(S, tmp_path / "model", _train_json(tmp_path, 20),
                                  tmp_path, tmp_path / "run")
    assert "type=OptimWrapper" in text and "type=AmpOptimWrapper" not in text
    assert "AmpOptimWrapper asserts a CUDA device" in text
    # fp32 training holds the frozen weights in fp32 too (XTuner loads them in bf16)
    assert "import FullPrecisionInternVL" in text and "type=FullPrecisionInternVL" in text
    assert "CourseInternVL" not in text.replace("FullPrecisionInternVL", "")
    assert "optim_wrapper = 'plain' (course recipe: 'amp')" in text
    assert "max_epochs = 2 (course recipe: 10)" in text
    # 20 samples -> 6 iterations a epoch, 12 in all: 3 % would be 0 warm-up iterations.
    recipe = xtuner_config.Recipe.from_settings(S, n_train=20)
    assert recipe.max_iters == 12
    assert int(recipe.warmup_ratio * recipe.max_iters) >= 2
    assert f"warmup_ratio = {recipe.warmup_ratio}" in text
    assert "lora_r = 128" in text  # the LoRA recipe itself is not touched


def test_render_config_parses_with_mmengine(tmp_path):
    pytest.importorskip("xtuner")
    from mmengine.config import Config

    path = xtuner_config.write_config(course_settings(), tmp_path / "model",
                                 _train_json(tmp_path, 100), tmp_path, tmp_path / "run")
    assert path == tmp_path / "run.py"
    cfg = Config.fromfile(str(path))
    assert cfg.model.type.__name__ == "CourseInternVL"
    assert cfg.model.llm_lora.r == 128 and cfg.optim_wrapper.accumulative_counts == 2
    assert cfg.train_dataloader.sampler.per_device_batch_size == 8
    assert xtuner_config.config_values(path)["lr"] == 3e-5


def test_bad_training_file_is_named(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="train.json"):
        xtuner_config.render_config(course_settings(), tmp_path, bad, tmp_path, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        xtuner_config.render_config(course_settings(), tmp_path, tmp_path / "missing.json",
                               tmp_path, tmp_path / "run")


def test_split_batch_keeps_global_batch():
    for world in (1, 2, 4, 8):
        b, a = xtuner_config.split_batch(4, 2, world)
        assert b * a * world == 8 and b <= 4
    with pytest.raises(ValueError, match="3 GPUs"):
        xtuner_config.split_batch(4, 2, 3)


def test_distributed_options_keep_batch_and_warmup(tmp_path):
    S = get_settings("tiny", batch_size=2, accumulative_counts=2, max_epochs=2)
    config = xtuner_config.write_config(S, tmp_path / "model", _train_json(tmp_path, 12), tmp_path,
                                   tmp_path / "run")
    values = xtuner_config.config_values(config)
    assert values["warmup_ratio"] == xtuner_config.safe_warmup_ratio(0.03, 12)  # 12 iterations on 1 GPU
    options = dict(o.split("=") for o in finetune.distributed_options(config, 2))
    assert options["train_dataloader.batch_size"] == "2"
    assert options["optim_wrapper.accumulative_counts"] == "1"
    assert options["train_dataloader.sampler.per_device_batch_size"] == "2"
    # 2 GPUs: 6 iterations each, so the warm-up ratio must grow to keep 3 warm-up steps
    end = float(options["param_scheduler.0.end"])
    assert end == float(options["param_scheduler.1.begin"])
    assert int(end * 3) >= 3  # end is in epochs; 3 iterations an epoch per GPU



def test_launch_command_for_one_node_and_a_cluster(tmp_path):
    S = get_settings("tiny", batch_size=4, accumulative_counts=2, max_epochs=2)
    config = xtuner_config.write_config(S, tmp_path / "model", _train_json(tmp_path, 128), tmp_path, tmp_path / "run")
    one = finetune.launch_command(config, gpus=1, deepspeed="deepspeed_zero2")
    assert one == f"xtuner train {config} --deepspeed deepspeed_zero2"  # no torchrun variables for one GPU
    words = finetune.launch_command(config, tmp_path / "run", gpus=4, deepspeed="deepspeed_zero3", nnodes=2,
                                    node_rank=1, addr="10.0.0.1", port=29555).split()
    assert words[:5] == ["NPROC_PER_NODE=4", "NNODES=2", "NODE_RANK=1", "ADDR=10.0.0.1", "PORT=29555"]
    assert words[words.index("--deepspeed") + 1] == "deepspeed_zero3"
    assert words[words.index("--work-dir") + 1] == str(tmp_path / "run")
    options = dict(o.split("=") for o in words[words.index("--cfg-options") + 1:])
    # 2 nodes x 4 GPUs share the global batch of 4 x 2 = 8: one sample each, no accumulation
    assert (options["train_dataloader.batch_size"], options["optim_wrapper.accumulative_counts"]) == ("1", "1")
    with pytest.raises(ValueError, match="16 GPUs"):  # 8 samples cannot be shared by 16 GPUs
        finetune.launch_command(config, gpus=8, nnodes=2, addr="10.0.0.1")
    with pytest.raises(ValueError, match="addr"):
        finetune.launch_command(config, gpus=4, nnodes=2)
    with pytest.raises(ValueError, match="node_rank"):
        finetune.launch_command(config, gpus=4, nnodes=2, node_rank=2, addr="h")

def _fake_checkpoint(path: Path, payload: bytes = b"x" * 4096):
    with zipfile.ZipFile(path, "w") as z:  # the layout torch.save writes
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/data/0", payload)


def test_half_written_checkpoint_is_skipped(tmp_path, capsys):
    _fake_checkpoint(tmp_path / "iter_4.pth")
    _fake_checkpoint(tmp_path / "iter_8.pth")
    whole = (tmp_path / "iter_8.pth").read_bytes()
    (tmp_path / "iter_8.pth").write_bytes(whole[: len(whole) // 2])  # killed while saving
    (tmp_path / "iter_12.pth").write_bytes(b"")
    assert checkpoints.checkpoint_problem(tmp_path / "iter_4.pth") is None
    assert "truncated" in checkpoints.checkpoint_problem(tmp_path / "iter_8.pth")
    assert checkpoints.last_checkpoint(tmp_path) == tmp_path / "iter_4.pth"
    out = capsys.readouterr().out
    assert "跳过检查点" in out and "iter_8.pth" in out and "iter_12.pth" in out
    (tmp_path / "iter_4.pth").unlink()
    assert checkpoints.last_checkpoint(tmp_path) is None


def test_read_log_merges_resumed_launches(tmp_path):
    first, second = tmp_path / "20260101_000000", tmp_path / "20260101_010000"
    for d in (first, second):
        (d / "vis_data").mkdir(parents=True)
    rows1 = [{"lr": 1e-5 * i, "loss": 3.0 - 0.1 * i, "time": 0.5, "data_time": 0.1,
              "grad_norm": 1.0, "iter": i, "step": i} for i in range(1, 7)]
    rows2 = [{"lr": 1e-5 * i, "loss": 2.0, "time": 0.5, "data_time": 0.1, "iter": i, "step": i}
             for i in range(5, 9)]  # resumed from iteration 4: 5 and 6 are logged again
    (first / "vis_data" / "scalars.json").write_text(
        "\n".join(json.dumps(r) for r in rows1) + "\n{\"lr\": 0.1, \"lo")  # cut off by a kill
    (second / "vis_data" / "scalars.json").write_text("\n".join(json.dumps(r) for r in rows2))
    rows = logs.read_log(tmp_path)
    assert [r["iteration"] for r in rows] == list(range(1, 9))
    assert rows[5]["loss"] == 2.0 and rows[3]["loss"] == pytest.approx(2.6)
    assert rows[0]["grad_norm"] == 1.0 and rows[7]["grad_norm"] is None
    assert set(rows[0]) == set(logs.LOG_FIELDS)
    pytest.importorskip("matplotlib")
    fig = logs.plot_log(rows)
    assert len(fig.axes) == 2
    from helpers.display import DPI, figure_text

    assert fig.get_dpi() == DPI  # built by helpers.display.figure: CJK font applied
    assert {"训练 loss", "学习率", "训练步"} <= set(figure_text(fig))


def test_read_log_falls_back_to_text(tmp_path):
    (tmp_path / train_run.LOG_NAME).write_text(
        "11/26 10:00:00 - mmengine - INFO - Iter(train) [ 2/24]  base_lr: 1.0e-04 lr: 5.0000e-05  "
        "eta: 0:00:40  time: 1.2000  data_time: 0.0100  loss: 4.5000  grad_norm: 2.0000\n")
    rows = logs.read_log(tmp_path)
    assert rows == [{"iteration": 2, "loss": 4.5, "lr": 5e-5, "time": 1.2, "data_time": 0.01,
                     "memory": None, "grad_norm": 2.0}]


def test_compat_fixes():
    pytest.importorskip("xtuner")
    import torch
    import torch.distributed as dist

    from helpers.train import xtuner_compat

    created = xtuner_compat.ensure_process_group()
    try:
        assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
        assert xtuner_compat.ensure_process_group() is False  # an existing group is kept
    finally:
        if created:
            dist.destroy_process_group()
    # bf16 ViT features into an fp32 projector
    proj = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))
    proj.register_forward_pre_hook(xtuner_compat._cast_input_to_weight_dtype)
    assert proj(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.float32
    # bitsandbytes 0.45 cannot import with triton 3.x: peft must stop dispatching to it
    import peft.tuners.lora.model as lora_model
    try:
        import bitsandbytes  # noqa: F401
        broken = False
    except Exception:  # noqa: BLE001
        broken = True
    xtuner_compat.disable_broken_bitsandbytes()
    if broken:
        assert lora_model.is_bnb_available() is False and lora_model.is_bnb_4bit_available() is False


def test_speed_recipes_keep_the_maths_and_match_the_benchmark(tmp_path, monkeypatch):
    pytest.importorskip("mmengine", reason="benchmarks.bench_finetune reads mmengine configs: the xtuner environment")
    from helpers.train.speed_recipes import SPEED_RECIPES, speed_reasons, speed_settings

    monkeypatch.setenv("INTERNVL_MODEL_PATH", str(tmp_path / "model"))
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    from benchmarks.bench_finetune import RECIPES, overrides, recipe_settings

    course = get_settings("full")
    for name, bench in (("course", "upstream"), ("recommended", "recommended"), ("balanced", "balanced"),
                        ("lean", "lean")):
        S = speed_settings(course, name)
        assert S.batch_size * S.accumulative_counts == 8 and (S.lr, S.max_epochs, S.lora_r) == (3e-5, 10, 128)
        b = RECIPES[bench]
        assert (S.batch_size, S.accumulative_counts, S.llm_activation_checkpointing, S.fused_adamw,
                S.aligned_lm_head) == (b["batch"], b["accum"], b["checkpointing"], b["fused"], b.get("aligned", False)), name
        # the benchmark renders the recipe with the course's renderer: its own lines patch no recipe knob
        assert recipe_settings(course, b, smoke=False) == S.replace(dataloader_num_workers=b["workers"])
        assert "batch_size" not in overrides(bench, b, 10, smoke=False) and "fused" not in overrides(bench, b, 10, False)
    tiny = get_settings("tiny")
    assert speed_settings(tiny, "recommended").batch_size * speed_settings(tiny, "recommended").accumulative_counts \
        == tiny.batch_size * tiny.accumulative_counts
    with pytest.raises(ValueError, match="choose one of"):
        speed_settings(course, "fastest")
    assert set(SPEED_RECIPES) == {"course", "recommended", "balanced", "lean"}
    # the rendered config carries the knobs and says why they differ from the course recipe
    S = speed_settings(course, "balanced")
    recipe = xtuner_config.Recipe.from_settings(S, n_train=100, name="balanced", reasons=speed_reasons())
    text = xtuner_config.render_config(S, tmp_path / "model", _train_json(tmp_path, 100), tmp_path, tmp_path / "run",
                                  recipe=recipe)
    assert "recipe 'balanced'" in text and "\nllm_activation_checkpointing = False" in text
    assert "\nactivation_checkpointing =" not in text  # mmengine's Runner would read it as a module list
    assert "fused_adamw = True" in text and "batch_size = 2" in text and "accumulative_counts = 4" in text
    assert "llm_activation_checkpointing = False (course recipe: True) - no second forward" in text
    assert "smaller steps for the CPU" not in text
    from mmengine.config import Config

    path = tmp_path / "recommended.py"
    path.write_text(text, encoding="utf-8")
    cfg = Config.fromfile(str(path))
    assert cfg.model.activation_checkpointing is False and cfg.optim_wrapper.optimizer.fused is True
    assert cfg.model.aligned_lm_head is True and "aligned_lm_head = True (course recipe: False)" in text
    assert cfg.train_dataloader.batch_size == 2 and cfg.optim_wrapper.accumulative_counts == 4
    assert cfg.train_dataloader.sampler.per_device_batch_size == 8


@pytest.mark.parametrize("checkpointing", [True, False])
def test_llm_activation_checkpointing_switch(tiny_model_dir, checkpointing):
    pytest.importorskip("xtuner")
    import torch.distributed as dist
    from peft import LoraConfig

    from helpers.train.xtuner_compat import CourseInternVL

    kwargs = {} if checkpointing else {"activation_checkpointing": False}  # True: XTuner's behaviour, the default
    model = CourseInternVL(model_path=str(tiny_model_dir), freeze_llm=True, freeze_visual_encoder=True,
                           llm_lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM"), **kwargs)
    try:
        flags = [m.gradient_checkpointing for m in model.model.language_model.modules()
                 if hasattr(m, "gradient_checkpointing")]
        assert flags and all(f is checkpointing for f in flags), flags
        assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # LoRA still trains
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_activation_checkpointing_keeps_the_loss_and_gradients(tiny_model_dir):
    """The tiny profile trains without it: recomputation must not change what is learnt (LoRA dropout included)."""
    pytest.importorskip("xtuner")
    import torch
    import torch.distributed as dist
    from peft import LoraConfig

    from helpers.train.xtuner_compat import CourseInternVL

    runs = {}
    try:
        for checkpointing in (True, False):
            torch.manual_seed(0)
            model = CourseInternVL(model_path=str(tiny_model_dir), freeze_llm=True, freeze_visual_encoder=True,
                                   activation_checkpointing=checkpointing,
                                   llm_lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, task_type="CAUSAL_LM"))
            llm = model.model.language_model.train()
            assert any(getattr(m, "gradient_checkpointing", False) for m in llm.modules()) is checkpointing
            for name, p in llm.named_parameters():  # LoRA's B starts at zero: values make A's gradients count
                if "lora_B" in name:
                    torch.nn.init.normal_(p, std=0.05)
            torch.manual_seed(1)
            ids = torch.randint(3, 1000, (2, 24))
            losses = []
            for _ in range(2):  # two steps: dropout masks drawn twice from the same RNG stream
                loss = llm(input_ids=ids, labels=ids).loss
                loss.backward()
                losses.append(float(loss.detach()))
            runs[checkpointing] = losses, {n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    (loss_on, grads_on), (loss_off, grads_off) = runs[True], runs[False]
    assert loss_on == loss_off
    assert grads_on.keys() == grads_off.keys() and any("lora_A" in n for n in grads_on)
    for name in grads_on:
        assert torch.allclose(grads_on[name], grads_off[name], rtol=1e-5, atol=1e-7), name


def test_aligned_lm_head_gives_the_same_logits_and_gradients(tiny_model_dir):
    pytest.importorskip("xtuner")
    import torch
    import torch.distributed as dist
    from peft import LoraConfig

    from helpers.train.xtuner_compat import CourseInternVL, align_lm_head

    # target_modules=None as in the course recipe: XTuner puts LoRA on the head ("output") too
    model = CourseInternVL(model_path=str(tiny_model_dir), freeze_llm=True, freeze_visual_encoder=True,
                           llm_lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM"))
    try:
        llm = model.model.language_model
        head = llm.get_output_embeddings()
        assert hasattr(head, "lora_B"), type(head)
        rows = head.base_layer.weight.shape[0]
        assert rows % 64, "the tiny vocabulary must be unaligned for this test to mean anything"
        torch.manual_seed(0)
        for b in head.lora_B.values():  # LoRA's B starts at zero: give it values so it counts
            torch.nn.init.normal_(b.weight, std=0.1)
        lora_b = next(iter(head.lora_B.values())).weight
        x = torch.randn(2, 5, head.in_features, dtype=head.base_layer.weight.dtype, requires_grad=True)

        def run():
            out = head(x)
            gx, gb = torch.autograd.grad(out.float().square().sum(), (x, lora_b))
            return out, gx, gb

        before = run()
        assert align_lm_head(llm) is True
        after = run()
        assert after[0].shape == before[0].shape == (2, 5, rows)
        for a, b in zip(after, before):  # logits, input gradient, LoRA B gradient
            torch.testing.assert_close(a, b)
        with torch.no_grad():  # a frozen weight changed after the switch (DeepSpeed casts it) is padded again
            head.base_layer.weight.mul_(2)
        assert not torch.allclose(head(x), after[0])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- training (XTuner)
def _tiny_model_dir() -> Path:
    S = get_settings("tiny")
    if not (S.tiny_model_path / "config.json").exists():
        pytest.skip("tiny checkpoint missing: run `python -m helpers.models build-tiny`")
    return S.tiny_model_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A copy of the tiny checkpoint with 1 tile per image, and 12 drawn LLaVA samples."""
    pytest.importorskip("xtuner")
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("finetune")
    model = root / "model"
    shutil.copytree(_tiny_model_dir(), model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_dynamic_patch"] = 1  # one 448 px tile a sample keeps the CPU run short
    (model / "config.json").write_text(json.dumps(cfg, indent=2))

    images = root / "images"
    images.mkdir()
    records = []
    for i in range(N_TRAIN):
        dish, colour = list(COLOURS.items())[i % len(COLOURS)]
        img = Image.new("RGB", (640, 480), (245, 240, 230))
        ImageDraw.Draw(img).ellipse((100 + 5 * i, 80, 540 - 5 * i, 420), fill=colour)
        img.save(images / f"{i:02d}.jpg")
        records.append({"id": str(i), "image": f"{i:02d}.jpg", "image_wh": [[640, 480]],
                        "conversations": [{"from": "human", "value": "<image>\n这是什么菜？"},
                                          {"from": "gpt", "value": f"图中的菜是{dish}。"}]})
    train = root / "train.json"
    train.write_text(json.dumps(records, ensure_ascii=False))
    # A pipeline test, not the recipe: a higher LR shows learning within 12 iterations.
    settings = get_settings("tiny", batch_size=2, accumulative_counts=1, max_epochs=2,
                            lr=1e-3, save_steps=4, log_interval=1, dataloader_num_workers=0)
    return dict(root=root, model=model, images=images, train=train, settings=settings)


def _config(tiny, name, settings=None, train=None):
    return xtuner_config.write_config(settings or tiny["settings"], tiny["model"],
                                 train or tiny["train"], tiny["images"], tiny["root"] / name)


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, bytes (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(line.split()[1]) * 1024 for line in status.splitlines()
                     if line.startswith("VmRSS:"))  # none for a zombie
    return total


@pytest.fixture(scope="module")
def trained(tiny):
    """One uninterrupted CPU training run (12 iterations); prints wall-clock and peak RSS."""
    config = _config(tiny, "run-full")
    run = train_run.launch(config, tiny["root"] / "run-full")
    peak = 0
    while run.poll() is None:
        peak = max(peak, _tree_rss(run.proc.pid))
        time.sleep(0.5)
    result = run.result()
    print(f"\nCPU training: {result.max_iters} iterations in {result.wall_s:.1f} s wall-clock, "
          f"peak RSS {peak / 2**20:.0f} MiB (xtuner process tree)")
    return dict(config=config, run=run, result=result)


@pytest.mark.slow
def test_training_runs_and_loss_falls(trained):
    result = trained["result"]
    assert trained["run"].returncode == 0
    assert result.max_iters == 12 and result.checkpoint.name == "iter_12.pth"
    rows = logs.read_log(result.work_dir)
    assert [r["iteration"] for r in rows] == list(range(1, 13))
    losses = [r["loss"] for r in rows]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < lrs[1] < lrs[2] and lrs[-1] < max(lrs) / 2  # warm-up, then cosine decay
    # two checkpoints kept (save_total_limit), the last one final
    assert sorted(p.name for p in result.work_dir.glob("iter_*.pth")) == ["iter_12.pth", "iter_8.pth"]


@pytest.mark.slow
def test_convert_output_loads_and_chats(trained, tiny, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from helpers.tiling import to_pixel_values

    out = convert.convert(trained["config"], trained["result"].checkpoint, tmp_path / "merged")
    assert (out / "modeling_internvl_chat.py").exists()
    with pytest.raises(FileExistsError):
        convert.convert(trained["config"], trained["result"].checkpoint, out)
    chat_cfg = json.loads((out / "chat_template_config.json").read_text())
    assert chat_cfg["meta_instruction"] == XTUNER_SYSTEM_PROMPT
    sizes = convert.sizes(out)
    assert sizes["model_bytes"] > 0 and sizes["checkpoint_bytes"] > sizes["trainable_bytes"] > 0

    model = AutoModel.from_pretrained(out, trust_remote_code=True, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert XTUNER_SYSTEM_PROMPT in prompt and prompt.endswith("<|im_start|>assistant\n")
    pixel_values = to_pixel_values(tiny["images"] / "00.jpg", max_num=1)
    answer = model.chat(tokenizer, pixel_values, "<image>\n这是什么菜？",
                        dict(max_new_tokens=8, do_sample=False))
    assert isinstance(answer, str)
    # the merged weights differ from the base model's: the LoRA was applied
    base = AutoModel.from_pretrained(tiny["model"], trust_remote_code=True,
                                     torch_dtype=torch.float32)
    name = next(n for n, _ in base.language_model.named_parameters() if "wqkv" in n)
    merged = dict(model.language_model.named_parameters())[name]
    assert not torch.allclose(merged, dict(base.language_model.named_parameters())[name])


@pytest.mark.slow
def test_crash_is_detected_although_exit_status_is_0(tiny):
    records = json.loads(tiny["train"].read_text())
    # a role the dataset does not know: InternVL_V1_5_Dataset raises while building a batch
    bad = [dict(r, conversations=[{"from": "system", "value": "x"}] + r["conversations"])
           for r in records[:N_TRAIN // 2]]
    train = tiny["root"] / "train-bad.json"
    train.write_text(json.dumps(records[N_TRAIN // 2:] + bad, ensure_ascii=False))
    run = train_run.launch(_config(tiny, "run-crash", train=train), tiny["root"] / "run-crash")
    assert run.wait(progress=False) == 0  # what `xtuner train` reports
    with pytest.raises(train_run.TrainingFailed, match="NotImplementedError") as err:
        run.result()
    assert "Traceback" in str(err.value) and "train.log" in str(err.value)


@pytest.mark.slow
def test_interrupt_and_resume_matches_uninterrupted(trained, tiny, capsys, monkeypatch):
    work = tiny["root"] / "run-resume"
    config = _config(tiny, "run-resume")
    # Training blocks after iteration 5 (the checkpoint at 4 written, the one at 8 not yet): stopped there.
    support = Path(__file__).resolve().parent / "support"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(support), os.environ.get("PYTHONPATH")) if p))
    paused = config.with_name("paused.py")
    paused.write_text(config.read_text(encoding="utf-8") + "\nfrom course_pause_hook import PauseAfterIteration\n"
                      "custom_hooks = custom_hooks + [dict(type=PauseAfterIteration, iteration=5)]\n", encoding="utf-8")
    run = train_run.launch(paused, work)
    while run.poll() is None and not (run.iteration >= 5 and (work / "iter_4.pth").exists()):
        time.sleep(0.1)
    run.stop()
    assert run.iteration == 5, "the pause hook did not hold training at iteration 5"
    with pytest.raises(train_run.TrainingFailed, match="resume=True"):
        run.result()
    # as if the run had been killed while writing its next checkpoint
    good = checkpoints.last_checkpoint(work)
    half = work / f"iter_{int(good.stem.split('_')[1]) + 4}.pth"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FileExistsError):
        train_run.launch(config, work)  # a fresh start would mix two runs
    resumed = train_run.launch(config, work, resume=True)
    assert "跳过检查点" in capsys.readouterr().out
    assert resumed.resumed_from == good
    resumed.wait(progress=False)
    result = resumed.result()
    reference = trained["result"]
    assert result.max_iters == reference.max_iters == 12
    assert result.final_loss == pytest.approx(reference.final_loss, rel=0.02)
    assert logs.read_log(work)[-1]["iteration"] == 12


def test_iteration_times_undo_mmengine_moving_average():
    import random

    rng = random.Random(0)
    true = [3.0, 1.5] + [0.74 + rng.uniform(-0.02, 0.02) for _ in range(23)]
    rows = [{"iteration": n, "time": sum(true[max(0, n - 10):n]) / len(true[max(0, n - 10):n])}
            for n in range(1, len(true) + 1)]  # what mmengine logs with window 10
    got = logs.iteration_times(rows)
    assert got == pytest.approx(true, abs=1e-5)
    assert rows[9]["time"] > 1.0 and max(got[2:]) < 0.8  # the logged average hides how fast the steps are
    with pytest.raises(ValueError, match="every iteration"):
        logs.iteration_times(rows[1:])


def test_shown_config_and_commands_use_repository_relative_paths(tmp_path, monkeypatch):
    """Notebook 05 shows the config and commands relative to the repository; the file keeps absolute paths."""
    pytest.importorskip("mmengine")
    from mmengine.config import Config

    from helpers.settings import REPO_ROOT, get_settings, repo_relative_text

    S = get_settings("tiny")
    model, run = REPO_ROOT / "artifacts" / "models" / "m", REPO_ROOT / "artifacts" / "runs" / "tiny" / "r"
    recipe = xtuner_config.Recipe.from_settings(S, n_train=100, name="course")
    text = xtuner_config.render_config(S, model, _train_json(tmp_path, 100), REPO_ROOT / "artifacts" / "data",
                                       run / "work", recipe=recipe)
    assert f"path = '{model}'" in text  # the file written: absolute
    shown = repo_relative_text(text)
    assert str(REPO_ROOT) not in shown and "path = 'artifacts/models/m'" in shown
    (tmp_path / "shown.py").write_text(shown, encoding="utf-8")
    monkeypatch.chdir(REPO_ROOT)  # where learners run it: the relative paths name the same files
    cfg = Config.fromfile(str(tmp_path / "shown.py"))
    assert (REPO_ROOT / cfg.path).resolve() == model.resolve() and (REPO_ROOT / cfg.work_dir) == run / "work"
    assert finetune.launch_command(run / "work.py", run / "work") == \
        "xtuner train artifacts/runs/tiny/r/work.py --work-dir artifacts/runs/tiny/r/work"


def test_describe_run_names_the_recipe_and_relative_folders(tmp_path):
    from helpers.settings import REPO_ROOT, get_settings

    S = get_settings("tiny")
    recipe = xtuner_config.Recipe.from_settings(S, n_train=100, name="course")
    run = REPO_ROOT / "artifacts" / "runs" / "tiny" / "r"
    text = xtuner_config.describe_run(S, recipe, run, run / "work.py")
    assert text.splitlines()[0].startswith("speed recipe 'course': micro-batch 4 x accumulation 1")
    assert "LLM activation checkpointing False" in text  # the tiny profile's choice
    assert "run folder: artifacts/runs/tiny/r\nconfig:     artifacts/runs/tiny/r/work.py" in text
    assert f"{recipe.max_iters} iterations on one device ({recipe.iters_per_epoch} per epoch x 10 epochs)" in text
    assert "  note: llm_activation_checkpointing = False (course recipe: True)" in text
