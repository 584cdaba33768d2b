"""Tests for helpers.pretrain.build: the drawn world, its data files, stage configs, stage 0, the pipeline."""
from __future__ import annotations

import json
import random

import pytest

from helpers.pretrain import build, checks, scenes, stage_config, stage_data, warmup


def test_caption_and_questions_follow_the_scene():
    scene = scenes.Scene(3, "蓝色", "星形", "右边", "深灰色")
    assert scenes.caption(scene) == "图中有三个蓝色的星形，位于右边，背景是深灰色。"
    qa = dict(scenes.questions(scene))
    assert qa["这些形状是什么颜色的？"] == "它们是蓝色的。"
    assert qa["背景是什么颜色？"] == "背景是深灰色。"
    one = dict(scenes.questions(scenes.Scene(1, "红色", "圆形", "中间", "米色")))
    assert one["这个形状是什么颜色的？"] == "它是红色的。"
    assert len(scenes.questions(scene)) == len({q for q, _ in scenes.questions(scene)})  # distinct questions


def test_every_attribute_value_is_judged_exactly():
    s = scenes.Scene(2, "白色", "正方形", "下方", "浅蓝色")
    assert checks.answer_is_right("图中有两个正方形。", s, "count")
    assert not checks.answer_is_right("图中有三个正方形。", s, "count")
    assert checks.answer_is_right("位于图片的下方。", s, "position")
    assert not checks.answer_is_right("位于图片的下方和左边。", s, "position")
    assert not checks.answer_is_right("它们是黑色的。", s, "colour")
    assert checks.answer_is_right("背景是浅蓝色。", s, "background")
    # a caption names the background too, and "浅蓝色" holds the colour name "蓝色"
    assert checks.answer_is_right("图中有两个白色的正方形，位于下方，背景是浅蓝色。", s, "colour")
    blue = scenes.Scene(2, "蓝色", "正方形", "下方", "浅蓝色")
    assert checks.answer_is_right("图中有两个蓝色的正方形，背景是浅蓝色。", blue, "colour")
    assert not checks.answer_is_right("图中有两个白色的正方形，背景是浅蓝色。", blue, "colour")


def test_draw_scene_is_deterministic_and_paints_the_colour():
    np = pytest.importorskip("numpy")
    scene = scenes.Scene(2, "红色", "三角形", "左边", "浅蓝色")
    a, b = scenes.draw_scene(scene, 112, seed=3), scenes.draw_scene(scene, 112, seed=3)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != scenes.draw_scene(scene, 112, seed=4).tobytes()
    px = np.asarray(a).astype(int)
    red = (px[..., 0] > 150) & (px[..., 1] < 90) & (px[..., 2] < 90)
    assert red.sum() > 50  # the red triangles are there
    cols = np.nonzero(red)[1]
    assert cols.max() < 0.5 * 112  # ... and on the left


def test_make_shapes_dataset_files(tmp_path):
    info = stage_data.make_shapes_dataset(tmp_path, n_images=6, n_heldout=2, seed=1, size=112)
    s1 = json.loads((tmp_path / "stage1.json").read_text())
    s2 = json.loads((tmp_path / "stage2.json").read_text())
    held = json.loads((tmp_path / "heldout.json").read_text())
    assert (len(s1), len(held)) == (6, 2) and 6 <= len(s2) <= 12 and info["n_train"] == 6
    for rec in s1 + s2:
        conv = rec["conversations"]
        assert [m["from"] for m in conv] == ["human", "gpt"]
        assert conv[0]["value"].startswith("<image>\n") and conv[0]["value"].count("<image>") == 1
        assert (tmp_path / rec["image"]).is_file()
    assert sum(r["conversations"][0]["value"][8:] in scenes.CAPTION_PROMPTS for r in s2) == 6  # one description each
    trained = {r["image"] for r in s1} | {r["image"] for r in s2}
    assert not trained & {r["image"] for r in held}  # held-out images are never trained on


def test_no_dish_name_anywhere_in_the_training_text(tmp_path):
    stage_data.make_shapes_dataset(tmp_path, n_images=30, n_heldout=0, seed=0, size=64)
    text = (tmp_path / "stage1.json").read_text() + (tmp_path / "stage2.json").read_text()
    text += "".join(stage_data.warmup_texts(200))
    assert checks.dish_names_in(text) == []


def test_instructions_are_a_description_and_sometimes_a_question():
    scene = scenes.Scene(2, "绿色", "菱形", "上方", "米色")
    rng = random.Random(0)
    runs = [scenes.instructions(scene, rng) for _ in range(60)]
    assert all(r[0] == (r[0][0], scenes.caption(scene)) and r[0][0] in scenes.CAPTION_PROMPTS for r in runs)
    assert all(len(r) == 1 or r[1] in scenes.questions(scene)[:6] for r in runs)
    assert 10 <= sum(len(r) == 2 for r in runs) <= 35  # about a third get a question
    assert all(len(scenes.instructions(scene, rng, question_share=1.0)) == 2 for _ in range(5))


def test_chat_text_format():
    text = stage_data.chat_text([("Q1", "A1"), ("Q2", "A2")], system="S")
    assert text == ("<|im_start|>system\nS<|im_end|><|im_start|>user\nQ1<|im_end|><|im_start|>assistant\nA1<|im_end|>"
                    "<|im_start|>user\nQ2<|im_end|><|im_start|>assistant\nA2<|im_end|>")


def test_stage_config_values(tmp_path):
    from helpers.train.xtuner_config import config_values

    cfg = stage_config.write_stage_config(tmp_path / "s1.py", "t", "/m", "/d.json", "/imgs", tmp_path / "w",
                                freeze_llm=True, freeze_vit=False, n_samples=40, batch_size=8, max_epochs=2, lr=1e-3)
    v = config_values(cfg)
    assert (v["path"], v["freeze_llm"], v["freeze_visual_encoder"], v["batch_size"], v["max_epochs"]) == \
        ("/m", True, False, 8, 2)
    iters = 10  # ceil(40 / 8) * 2
    assert int(v["warmup_ratio"] * iters) == 2  # mmengine's int() conversion leaves >= 2 warm-up iterations
    with pytest.raises(ValueError, match="too few"):
        stage_config.write_stage_config(tmp_path / "s2.py", "t", "/m", "/d", "/i", "/w", True, False, n_samples=8,
                              batch_size=8, max_epochs=1, lr=1e-3)


def test_stage_config_parses_in_xtuner(tmp_path):
    pytest.importorskip("xtuner")
    from mmengine.config import Config

    cfg = stage_config.write_stage_config(tmp_path / "s2.py", "t", "/m", "/d.json", "/imgs", tmp_path / "w",
                                freeze_llm=False, freeze_vit=False, n_samples=40, batch_size=8, max_epochs=1, lr=5e-4)
    parsed = Config.fromfile(str(cfg))
    model_type = parsed.model["type"]
    model_type = getattr(model_type, "build", lambda: model_type)()  # LazyObject -> the class
    assert model_type.__name__ == "FullPrecisionInternVL"
    assert parsed.model["freeze_llm"] is False
    assert parsed.model["activation_checkpointing"] is True  # XTuner's default unless the recipe says otherwise
    off = stage_config.write_stage_config(tmp_path / "s3.py", "t", "/m", "/d.json", "/imgs", tmp_path / "w",
                                          freeze_llm=True, freeze_vit=True, n_samples=40, batch_size=8, max_epochs=1,
                                          lr=5e-4, activation_checkpointing=False)
    assert Config.fromfile(str(off)).model["activation_checkpointing"] is False
    assert "\nactivation_checkpointing =" not in off.read_text()  # mmengine's Runner would read it as a module list


def test_tiny_profile_trains_without_activation_checkpointing():
    from helpers.settings import get_settings

    assert get_settings("tiny").llm_activation_checkpointing is False
    assert build.PretrainRecipe.from_settings(get_settings("tiny")).activation_checkpointing is False
    assert get_settings("tiny", llm_activation_checkpointing=True).llm_activation_checkpointing is True


def test_full_precision_stage_model_turns_tf32_off(tiny_model_dir):
    """Stages 1-2 build this class inside `xtuner train`: building it is what turns TF32 off there."""
    pytest.importorskip("xtuner")
    import torch
    import torch.distributed as dist

    from helpers.env import fp32_matmul_flags
    from helpers.train.xtuner_compat import FullPrecisionInternVL

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        model = FullPrecisionInternVL(model_path=str(tiny_model_dir), freeze_llm=True, freeze_visual_encoder=True)
        assert fp32_matmul_flags() == {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False,
                                       "float32_matmul_precision": "highest"}
        assert all(p.dtype == torch.float32 for p in model.parameters())
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
        if dist.is_initialized():
            dist.destroy_process_group()


def test_fingerprint_follows_the_recipe(tiny_model_dir):
    import dataclasses

    from helpers.settings import get_settings

    recipe = build.PretrainRecipe.from_settings(get_settings("tiny"))
    same = build.fingerprint(tiny_model_dir, recipe)
    assert same == build.fingerprint(tiny_model_dir, recipe)
    for change in (dict(stage2_epochs=recipe.stage2_epochs + 1), dict(food_per_dish=recipe.food_per_dish + 1),
                   dict(max_tiles=recipe.max_tiles + 1)):
        assert build.fingerprint(tiny_model_dir, dataclasses.replace(recipe, **change)) != same, change
    with pytest.raises(FileNotFoundError, match="tiny model"):
        build.fingerprint(tiny_model_dir.parent / "nothing-here", recipe)


def test_fingerprint_follows_the_stages_code_but_not_the_checks(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from helpers.settings import REPO_ROOT, get_settings

    shutil.copytree(REPO_ROOT / "helpers", tmp_path / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(build, "REPO_ROOT", tmp_path)
    recipe = build.PretrainRecipe.from_settings(get_settings("tiny"))
    before = build.fingerprint(tiny_model_dir, recipe)
    pretrain = tmp_path / "helpers" / "pretrain"
    for name in ("checks.py", "__main__.py"):  # they only read a built base
        (pretrain / name).write_text((pretrain / name).read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert build.fingerprint(tiny_model_dir, recipe) == before
    stage = pretrain / "stage_data.py"
    stage.write_text(stage.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    assert build.fingerprint(tiny_model_dir, recipe) != before


def test_language_warmup_trains_only_the_llm(tiny_model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from helpers.models import load_model

    losses = warmup.language_warmup(tiny_model_dir, tmp_path / "m", stage_data.warmup_texts(32), steps=4, batch_size=4,
                                lr=3e-3, log_every=0)
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    before, tok0 = load_model(tiny_model_dir)
    after, tok = load_model(tmp_path / "m")
    sd0, sd1 = before.state_dict(), after.state_dict()
    # weights are stored in bf16: compare at that precision
    same = {k: torch.equal(sd0[k].bfloat16(), sd1[k].bfloat16()) for k in sd0}
    assert all(v for k, v in same.items() if k.startswith(("vision_model.", "mlp1.")))
    assert not all(v for k, v in same.items() if k.startswith("language_model."))
    assert tok.convert_tokens_to_ids("<IMG_CONTEXT>") == tok0.convert_tokens_to_ids("<IMG_CONTEXT>")


def test_vision_warmup_trains_only_the_vit(tiny_model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from helpers.models import load_model

    stage_data.make_shapes_dataset(tmp_path / "d", n_images=4, n_heldout=0, seed=2, size=112)
    scenes = json.loads((tmp_path / "d" / "scenes.json").read_text())
    losses = warmup.vision_warmup(tiny_model_dir, tmp_path / "m", tmp_path / "d", scenes, steps=3, batch_size=2,
                              size=112, log_every=0)
    assert len(losses) == 3 and all(v > 0 for _, v in losses)
    before, _ = load_model(tiny_model_dir)
    after, _ = load_model(tmp_path / "m")
    sd0, sd1 = before.state_dict(), after.state_dict()
    same = {k: torch.equal(sd0[k].bfloat16(), sd1[k].bfloat16()) for k in sd0}
    assert all(v for k, v in same.items() if not k.startswith("vision_model."))
    assert not all(v for k, v in same.items() if k.startswith("vision_model."))
    with pytest.raises(ValueError, match="at least one scene"):
        warmup.vision_warmup(tiny_model_dir, tmp_path / "x", tmp_path / "d", [], steps=1)


def test_vision_warmup_starts_small_then_trains_at_full_size(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    stage_data.make_shapes_dataset(tmp_path / "d", n_images=4, n_heldout=0, seed=2, size=112)
    scenes = json.loads((tmp_path / "d" / "scenes.json").read_text())
    seen = []
    sample = warmup._VisionData.sample

    def record(self, gen, n_scene, n_food):
        batch = sample(self, gen, n_scene, n_food)
        seen.append(batch.pixels.shape[-1])
        return batch

    monkeypatch.setattr(warmup._VisionData, "sample", record)
    warmup.vision_warmup(tiny_model_dir, tmp_path / "m", tmp_path / "d", scenes, steps=4, batch_size=2, size=112,
                         log_every=0, small_size=56, small_share=0.75)
    assert seen == [56, 56, 56, 112]
    seen.clear()
    warmup.vision_warmup(tiny_model_dir, tmp_path / "m2", tmp_path / "d", scenes, steps=2, batch_size=2, size=112,
                         log_every=0, small_size=56, small_share=0.0)
    assert seen == [112, 112]


@pytest.mark.slow
def test_build_base_end_to_end_and_cache(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("xtuner")
    from helpers.settings import get_settings

    monkeypatch.setenv("INTERNVL_ARTIFACTS", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "internvl2-tiny").symlink_to(tiny_model_dir)
    S = get_settings("tiny", pretrain_images=16, pretrain_heldout=2, pretrain_stage0_steps=3, pretrain_vision_steps=2,
                     pretrain_stage1_epochs=1, pretrain_stage2_epochs=1, pretrain_batch_size=4,
                     pretrain_food_per_dish=1, pretrain_food_captioned_per_dish=1)
    info = build.build_base(S, progress=False)
    assert not info["skipped"] and set(info["loss"]) == {"stage0a", "stage0b", "stage1", "stage2"}
    assert info["stages"]["stage1"]["iterations"] == 8 and len(info["loss"]["stage2"]) >= 2  # (16 + 16) / 4
    base = S.tiny_base_model_path
    assert (base / "model.safetensors").is_file() and (base / "modeling_internvl_chat.py").is_file()
    config = json.loads((base / "config.json").read_text())
    assert config["system_message"].startswith("You are an AI assistant")
    assert config["max_dynamic_patch"] == S.pretrain_max_tiles == 1
    again = build.build_base(S, progress=False)
    assert again["skipped"] and again["fingerprint"] == info["fingerprint"]


def test_food_photos_are_described_never_named_and_never_course_photos(tmp_path):
    from helpers.foods import DISHES
    from helpers.data.synth import plan_photos

    info = stage_data.make_shapes_dataset(tmp_path, n_images=2, n_heldout=0, seed=0, size=96, food_per_dish=2,
                                  food_captioned_per_dish=1, food_size=48)
    foods = json.loads((tmp_path / "foods.json").read_text())
    held = json.loads((tmp_path / "heldout_food.json").read_text())
    s1 = json.loads((tmp_path / "stage1.json").read_text())
    s2 = json.loads((tmp_path / "stage2.json").read_text())
    assert (info["n_food"], info["n_food_captioned"], len(held)) == (32, 16, 16)
    assert [r["dish"] for r in foods[:16]] == [d.key for d in DISHES]  # every dish in each round
    food_s1 = [r for r in s1 if r["id"].startswith("food-")]
    food_s2 = [r for r in s2 if r["id"].startswith("food-")]
    assert len(food_s1) == len(food_s2) == 16
    answers = {r["conversations"][1]["value"] for r in food_s1 + food_s2}
    assert answers == {stage_data.food_caption(d) for d in DISHES}
    assert checks.dish_names_in("".join(answers)) == []
    from helpers.foods import CUISINES

    assert not [c for c in CUISINES if c in "".join(answers)]  # no cuisine either
    trained = {r["image"] for r in food_s1 + food_s2} | {r["image"] for r in foods}
    assert not trained & {r["image"] for r in held}
    # The pool photos are small, the captioned ones full size; seeds never those of the course photos.
    from PIL import Image

    assert max(Image.open(tmp_path / foods[0]["image"]).size) == 48
    assert max(Image.open(tmp_path / food_s1[0]["image"]).size) == 96
    a = stage_data.draw_food(3, seed=0, long_side=64)[1]
    course = plan_photos(per_dish=1, seed=0, long_side=64)[3]
    from helpers.data.synth_draw import draw_photo

    assert a.tobytes() != draw_photo(course.dish, a.width, a.height, course.seed).tobytes()


def test_warmup_texts_mix_in_food_looks():
    texts = stage_data.warmup_texts(200, seed=1, food_share=0.5)
    food = [t for t in texts if "这是一道菜：" in t]
    assert 60 <= len(food) <= 140
    assert checks.dish_names_in("".join(texts)) == []
    assert not [t for t in stage_data.warmup_texts(50, seed=1) if "这是一道菜：" in t]  # off by default


def test_vision_warmup_adds_the_food_objective(tiny_model_dir, tmp_path):
    pytest.importorskip("torch")
    stage_data.make_shapes_dataset(tmp_path / "d", n_images=4, n_heldout=0, seed=2, size=112, food_per_dish=1, food_size=64)
    scenes = json.loads((tmp_path / "d" / "scenes.json").read_text())
    foods = json.loads((tmp_path / "d" / "foods.json").read_text())
    losses = warmup.vision_warmup(tiny_model_dir, tmp_path / "m", tmp_path / "d", scenes, steps=3, batch_size=6,
                              size=112, log_every=0, foods=foods, food_batch=4)
    assert len(losses) == 3
    # the food head adds ln(16) ~ 2.77 to the mean over 6 heads at the start: more than scenes alone
    alone = warmup.vision_warmup(tiny_model_dir, tmp_path / "m2", tmp_path / "d", scenes, steps=1, batch_size=6,
                             size=112, log_every=0)
    assert losses[0][1] != alone[0][1]


def test_set_max_tiles(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_dynamic_patch": 6, "x": 1}))
    build.set_max_tiles(tmp_path, 1)
    assert json.loads((tmp_path / "config.json").read_text()) == {"max_dynamic_patch": 1, "x": 1}
    with pytest.raises(ValueError):
        build.set_max_tiles(tmp_path, 0)


def test_food_pool_drawn_in_processes_equals_drawing_in_order(tmp_path):
    from PIL import Image

    stage_data.make_shapes_dataset(tmp_path, n_images=1, n_heldout=0, size=64, food_per_dish=4, food_size=32)  # 64: a pool
    foods = json.loads((tmp_path / "foods.json").read_text())
    assert len(foods) == 64
    for i in (0, 37, 63):
        d, img = stage_data.draw_food(i, 0, 32)
        img.save(tmp_path / "again.jpg", quality=90)
        assert foods[i]["dish"] == d.key
        assert Image.open(tmp_path / foods[i]["image"]).tobytes() == Image.open(tmp_path / "again.jpg").tobytes()


def test_stage_table_and_freeze_flags(tmp_path):
    from types import SimpleNamespace

    from helpers.pretrain.build import stage_freeze_flags, stage_table

    recipe = dict(vit_lr_mult=0, stage0_steps=10, stage0_lr=1e-3, vision_steps=20, vision_lr=3e-3, stage1_epochs=2,
                  stage1_lr=1e-3, stage2_epochs=3, stage2_lr=5e-4)
    info = dict(recipe=recipe, seconds=dict(data=1, stage0a=2, stage0b=3, stage1=4, stage2=5, total=15))
    rows = stage_table(info)
    assert [r["阶段"] for r in rows][-1] == "合计" and rows[-1]["秒"] == 15
    assert rows[3]["训练"] == "MLP" and rows[3]["冻结"] == "InternViT + LLM"  # ViT multiplier 0: frozen
    S = SimpleNamespace(runs_dir=tmp_path)
    assert stage_freeze_flags(S, info) == {}  # no configs written: nothing to compare
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "stage1.py").write_text("freeze_llm = True\nfreeze_visual_encoder = True\n")
    ((found, expected),) = stage_freeze_flags(S, info).values()
    assert found == expected


def _fake_report(colour=(0.5, 0.25), caption="图中有两个红色的圆形，位于左边，背景是米色。"):
    answers = [{"image": "images/0001.jpg", "attribute": "colour", "question": "q", "answer": caption, "right": True}]
    return {"caption": {"accuracy": {"colour": colour[0], "shape": 0.1}, "answers": answers},
            "questions": {"accuracy": {"colour": colour[1], "shape": 0.3}, "answers": answers}}


def test_attribute_table_chance_and_fluency():
    report = _fake_report()
    chance = checks.chance_levels()
    assert chance["colour"] == 1 / len(scenes.COLOURS) and set(chance) == {"colour", "shape", "count", "position"}
    rows = checks.attribute_table(report)
    assert [r["方式"] for r in rows] == ["caption", "questions", "随机猜测"]
    assert rows[-1] == {"方式": "随机猜测", "colour": round(chance["colour"], 3), "shape": round(chance["shape"], 3)}
    assert checks.above_chance(report) == {"caption": ["colour"], "questions": ["colour", "shape"]}
    assert checks.caption_fluency(report) == 1.0
    assert checks.caption_fluency(_fake_report(caption="红色的圆形")) == 0.0


def test_base_verdicts_fail_on_each_check():
    food = {"described": ["这是一道菜：红色的汤。"], "dish_names": []}
    assert all(checks.base_verdicts(_fake_report(colour=(0.5, 0.5)), food).values())
    failed = checks.base_verdicts(_fake_report(colour=(0.5, 0.25)), food)  # issue 15: 0.25 in question mode
    assert failed == {"colour_caption": True, "colour_questions": False, "fluent_captions": True,
                      "food_described": True, "no_dish_names": True}
    assert not checks.base_verdicts(_fake_report(caption="红色"), food)["fluent_captions"]
    assert not checks.base_verdicts(_fake_report(), dict(food, dish_names=["麻婆豆腐"]))["no_dish_names"]
    assert not checks.base_verdicts(_fake_report(), dict(food, described=["图中画的是星形。"]))["food_described"]


def test_caption_examples_and_food_checks_on_the_tiny_model(tiny_model, tmp_path):
    from PIL import Image

    from helpers.tiling import tile_count

    model, tok = tiny_model
    data = stage_data.make_shapes_dataset(tmp_path / "d", n_images=1, n_heldout=2, seed=3, size=112)
    report = {"caption": checks.check_attributes(model, tok, data["heldout"], n=2, mode="caption", max_new_tokens=4),
              "questions": checks.check_attributes(model, tok, data["heldout"], n=1, mode="questions", max_new_tokens=4)}
    lines = checks.caption_examples(report, data["heldout"], n_images=1, n_questions=2)
    assert lines[0] == "" and "真实: 图中有" in lines[1] and len(lines) == 1 + 1 + 2
    records = []
    for i in range(2):
        dish, img = stage_data.draw_food(i, seed=0, long_side=112)
        img.save(tmp_path / f"f{i}.jpg")
        records.append({"image": f"f{i}.jpg", "dish": dish.key, "looks": dish.looks})
    (tmp_path / "heldout_food.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    food = checks.ask_about_foods(model, tok, tmp_path / "heldout_food.json", tmp_path, max_new_tokens=4)
    assert set(food["answers"]) == {"f0.jpg", "f1.jpg"} and all(len(a) == 2 for a in food["answers"].values())
    assert food["tiles"] == {r["image"]: tile_count(*Image.open(tmp_path / r["image"]).size,
                                                    max_num=model.config.max_dynamic_patch) for r in records}
    summary = checks.food_summary(food)
    assert (summary["photos"], summary["answers"]) == (2, 4) and 0 <= summary["exact"] <= 2
    assert summary["described"] == [food["answers"][r["image"]][0] for r in records]
    assert sum(summary["named_counts"].values()) <= 2


def test_cli_refuses_bad_input_without_a_traceback(tmp_path):
    import subprocess
    import sys

    from helpers.pretrain.__main__ import main
    from helpers.settings import REPO_ROOT

    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file")]) == 2
    assert main(["--out", str(tmp_path / "o"), "--tiny", str(tmp_path / "no-tiny-here")]) == 2
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "helpers.pretrain", "--out", str(tmp_path / "file")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "is a file" in done.stderr and "Traceback" not in done.stderr
