"""Tests for the troubleshooting lab (notebook 07): helpers.troubleshoot, troubleshoot_serving,
troubleshoot_training. Each reproduction must still reproduce, and each fix must still fix;
parts that need LMDeploy or the XTuner environment skip with the reason where those are missing."""
from __future__ import annotations

import asyncio
import json

import pytest

from helpers.troubleshoot import common as ts
from helpers.settings import XTUNER_SYSTEM_PROMPT, get_settings

S = get_settings()


def test_check_prediction_says_right_wrong_and_not_yet():
    assert ts.check_prediction("xtuner_exit", None).startswith("✍️")
    assert ts.check_prediction("xtuner_exit", "z").startswith("✍️")
    assert ts.check_prediction("xtuner_exit", " A ").startswith("✅")  # letters are normalised
    wrong = ts.check_prediction("xtuner_exit", "b")
    assert wrong.startswith("❌") and ts.EXERCISES["xtuner_exit"].hint in wrong
    # the measured outcome, not the stored answer, decides
    assert ts.check_prediction("xtuner_exit", "b", observed="b").startswith("✅")


def test_every_exercise_answer_is_one_of_its_choices():
    for name, ex in ts.EXERCISES.items():
        assert ex.answer in ex.choices, name
        assert ex.hint and ex.question, name


def test_event_loop_errors_reproduce_and_loop_thread_fixes_them():
    outcome = ts.reproduce_event_loop_errors()
    assert outcome.kind == "b", outcome.detail
    assert "bound to a different event loop" in outcome.data["calls"][1]
    assert "already running" in outcome.data["nested"]
    assert "0x" not in outcome.detail  # no memory addresses in the notebook output
    assert ts.fixed_event_loop_calls(3) == ["ok", "ok", "ok"]


def test_loop_thread_runs_coroutines_on_its_own_loop():
    with ts.LoopThread() as lt:
        loop = lt.run(_running_loop())
        assert loop is lt.loop
        assert lt.run(asyncio.sleep(0, result=5)) == 5


async def _running_loop():
    return asyncio.get_running_loop()


def test_package_source_hits_finds_lines_with_relative_paths():
    found = ts.package_source_hits("_pytest", [r"^def main\("])  # any installed package will do
    assert found[r"^def main\("] and all(h.startswith("_pytest/") for h in found[r"^def main\("])


def test_version_drift_in_both_environments():
    if not ts.XTUNER_PYTHON.exists() or not ts.LMDEPLOY_PYTHON.exists():
        pytest.skip("both course environments are needed (make envs)")
    rows = {r["env"]: r for r in ts.version_drift()}
    assert rows["xtuner"]["old_style_has_generate"] is True
    assert rows["lmdeploy"]["old_style_has_generate"] is False
    assert rows["lmdeploy"]["PreTrainedModel_inherits_GenerationMixin"] is False
    assert rows["xtuner"]["old_style_loads"] == "ok"
    assert "all_tied_weights_keys" in rows["lmdeploy"]["old_style_loads"]  # no post_init() in old remote code
    assert all(r["fixed_has_generate"] and r["fixed_loads"] == "ok" for r in rows.values())
    assert "GenerationMixin" in rows["xtuner"]["warning"]


def test_run_in_env_reports_a_failing_script():
    with pytest.raises(RuntimeError, match="boom"):
        ts.run_in_env(ts.sys.executable, "raise SystemExit('boom')")
    with pytest.raises(FileNotFoundError, match="make envs"):
        ts.run_in_env("/nonexistent/python", "print(1)")


# --------------------------------------------------------------------------- serving side
def test_kv_cache_plan_is_a_share_of_free_memory_and_matches_the_recorded_run():
    from helpers.concepts.memory import MODELS, kv_cache_bytes_per_token, serving_weight_bytes
    from helpers.troubleshoot.serving import kv_cache_plan, recorded_serving_memory

    weights = serving_weight_bytes(MODELS["InternVL2-2B"])
    plan = kv_cache_plan(139.8, weights, 0.8, kv_cache_bytes_per_token(MODELS["InternVL2-2B"]), 8192)
    assert plan["kv_cache_gib"] == pytest.approx(0.8 * (139.8 - weights / 2**30))
    assert plan["kv_cache_gib"] < 0.8 * 139.8
    assert plan["tokens"] > 100 * 8192
    pytest.importorskip("lmdeploy", reason="the default ratio comes from LMDeploy")
    rows = recorded_serving_memory()
    assert {r["cache_max_entry_count"] for r in rows} >= {0.8, 0.5}
    for r in rows:  # the recorded totals are within 3 GiB of weights + ratio x free
        expected = kv_cache_plan(r["card_gib"], weights, r["cache_max_entry_count"])["expected_in_use_gib"]
        assert abs(expected - r["gpu_used_gib"]) < 3, (r, expected)


def test_xtuner_training_format_is_read_from_xtuners_source():
    from helpers.troubleshoot.serving import training_prompt, xtuner_training_format

    if not ts.XTUNER_PYTHON.exists():
        pytest.skip("the XTuner environment is needed (make envs)")
    fmt = xtuner_training_format()
    assert fmt["system"] == XTUNER_SYSTEM_PROMPT
    assert training_prompt("Q", fmt) == (f"<|im_start|>system\n{XTUNER_SYSTEM_PROMPT}<|im_end|>"
                                         "<|im_start|>user\nQ<|im_end|><|im_start|>assistant\n")


def test_template_choice_follows_the_folder_name_without_a_chat_template(tiny_model_dir, tmp_path):
    pytest.importorskip("lmdeploy", reason="LMDeploy's template matching")
    from lmdeploy import ChatTemplateConfig

    from helpers.train.convert import chat_template_config
    from helpers.troubleshoot.serving import template_choice, tokenizer_copy

    good = template_choice(tokenizer_copy(tiny_model_dir, tmp_path / "internvl2-tiny"))
    assert good["template"] == "HFChatTemplate" and good["prompt"].startswith("<|im_start|>system")
    llama = template_choice(tokenizer_copy(tiny_model_dir, tmp_path / "foodie-llama2-lora", keep_template=False))
    assert llama["template"] == "Llama2" and "[INST]" in llama["prompt"]
    bare = tokenizer_copy(tiny_model_dir, tmp_path / "foodie-lora", keep_template=False)
    assert template_choice(bare)["refused"] is True
    named = template_choice(bare, chat_template_config=ChatTemplateConfig(**chat_template_config()))
    assert named["refused"] is False and XTUNER_SYSTEM_PROMPT in named["prompt"]


def test_stop_ids_need_generation_config(tiny_model_dir, tmp_path):
    pytest.importorskip("lmdeploy", reason="LMDeploy's stop-token resolution")
    from helpers.troubleshoot.serving import lmdeploy_stop_ids, tokenizer_copy

    assert "<|im_end|>" in lmdeploy_stop_ids(tiny_model_dir)
    bare = tokenizer_copy(tiny_model_dir, tmp_path / "converted", keep_generation_config=False)
    assert "<|im_end|>" not in lmdeploy_stop_ids(bare)


def test_toy_model_rambles_without_im_end_and_stops_with_it(tiny_model_dir):
    pytest.importorskip("lmdeploy", reason="prompts are rendered by LMDeploy's template class")
    from helpers.troubleshoot.serving import TOY_PAIRS, chat_prompt, greedy_reply, train_toy_chat

    lm, tok, loss = train_toy_chat(tiny_model_dir, XTUNER_SYSTEM_PROMPT)
    assert loss < 0.1
    prompt = chat_prompt(XTUNER_SYSTEM_PROMPT, TOY_PAIRS[0][0])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    stops = greedy_reply(lm, tok, prompt, [end, tok.eos_token_id])
    assert stops["stopped"] and stops["text"] == TOY_PAIRS[0][1] + "<|im_end|>"
    rambles = greedy_reply(lm, tok, prompt, [tok.eos_token_id], max_new_tokens=16)
    assert not rambles["stopped"] and rambles["new_tokens"] == 16


def test_image_order_puts_text_first_unless_images_first():
    pytest.importorskip("lmdeploy", reason="LMDeploy's prompt formatter")
    from PIL import Image

    from helpers.troubleshoot.serving import image_order

    plain, fixed = image_order("这是什么菜？", Image.new("RGB", (16, 16)))
    assert plain["content_order"][0] == "text" and plain["user_turn"].startswith("这是什么菜？")
    assert fixed["content_order"][0] != "text" and fixed["user_turn"].startswith("<img>")


# --------------------------------------------------------------------------- training side
def test_diagnose_checkpoint_kinds_and_wrong_loads(tiny_model, tmp_path):
    from helpers.troubleshoot.training import diagnose_checkpoint, fake_checkpoints, load_attempts

    model, _ = tiny_model
    paths = fake_checkpoints(model, tmp_path / "ckpt")
    kinds = {k: diagnose_checkpoint(p)["kind"] for k, p in paths.items()}
    assert kinds == {"mmengine_file": "xtuner_pth", "deepspeed_folder": "deepspeed_folder",
                     "deepspeed_optim_file": "deepspeed_part"}
    assert "iter_8.pth " in diagnose_checkpoint(paths["deepspeed_optim_file"])["fix"]  # the folder, not the file
    assert diagnose_checkpoint(tmp_path / "nope")["kind"] == "missing"
    rows = {r["checkpoint"]: r for r in load_attempts(model, {"pth": paths["mmengine_file"]})}
    assert rows["pth"]["from_pretrained"] != "loaded"
    assert rows["pth"]["missing"] == rows["pth"]["model_tensors"]  # not one model weight matches
    assert all(k.startswith("model.") for k in __import__("torch").load(
        paths["mmengine_file"], weights_only=False)["state_dict"])


def test_xtuner_converters_internvl_has_no_to_hf():
    from helpers.troubleshoot.training import xtuner_converters

    if not ts.XTUNER_PYTHON.exists():
        pytest.skip("the XTuner environment is needed (make envs)")
    rows = {r["cls"]: r for r in xtuner_converters()}
    assert rows["LLaVAModel"]["defines_to_hf"] and not rows["InternVL_V1_5"]["defines_to_hf"]


def test_sideways_photo_is_sideways_for_image_open_only(tmp_path):
    from PIL import Image

    from helpers.troubleshoot.training import exif_views, sideways_copy

    src = tmp_path / "portrait.jpeg"
    Image.new("RGB", (300, 900), (200, 50, 50)).save(src)
    raw, upright = exif_views(sideways_copy(src, tmp_path / "phone.jpeg"))
    assert raw["size"] == (900, 300) and upright["size"] == (300, 900)
    assert raw["grid"] != upright["grid"]


def test_converter_turns_the_phone_photo_upright_for_xtuner(tmp_path):
    from PIL import Image

    from helpers.data.synth import make_dataset
    from helpers.troubleshoot.training import convert_phone_photo, sideways_copy

    root = make_dataset(tmp_path / "synth", per_dish=1, long_side=448)
    src = tmp_path / "portrait.jpeg"
    Image.new("RGB", (300, 900), (200, 50, 50)).save(src)
    sideways_copy(src, tmp_path / "exif" / "images" / "phone_photo.jpeg")
    fixed = convert_phone_photo(root / "sivqa_tidy.json", 0, tmp_path / "exif")
    assert fixed["exif_baked"] == 1 and fixed["size"] == (300, 900)  # XTuner's Image.open now sees it upright
    assert fixed["baked"].is_file() and fixed["baked"].is_relative_to(tmp_path / "exif")


def test_prepare_lab_reads_the_records_and_makes_the_work_folder(tmp_path, tiny_model_dir):
    from helpers.troubleshoot.workspace import prepare_lab

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sivqa_tidy.json").write_text("[]", encoding="utf-8")
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "train.json").write_text('[{"id": "a"}]', encoding="utf-8")
    settings = S.replace(data_root=tmp_path / "data", llava_dir=tmp_path / "llava", runs_dir=tmp_path / "runs")
    lab = prepare_lab(settings)  # data there: nothing drawn or converted
    assert lab["tiny"] == tiny_model_dir and lab["records"] == [{"id": "a"}]
    assert lab["work"] == tmp_path / "runs" / "troubleshoot" and lab["work"].is_dir()


def test_scrub_and_small_llava_file(tmp_path):
    from helpers.settings import REPO_ROOT
    from helpers.troubleshoot.training import scrub, small_llava_file

    assert scrub(f"{REPO_ROOT}/artifacts/x.json") == "artifacts/x.json"
    f = small_llava_file([{"image": "a.jpg", "conversations": []}] * 2, tmp_path, missing_index=1)
    records = json.loads(f.read_text(encoding="utf-8"))
    assert records[0]["image"] == "a.jpg" and records[1]["image"] != "a.jpg"
