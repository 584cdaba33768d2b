"""Every course path on the published InternVL2-2B layout (helpers.replica), in whichever environment runs it.

The replica has the published file set, config keys, InternLM2's slow sentencepiece tokenizer and
special-token ids; its model code counts as the checkpoint's own, so under transformers 5 the
course's loading rule must put a view with the course's code in front of it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import model_dir

PUBLISHED_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "configuration_intern_vit.py",
    "configuration_internlm2.py", "configuration_internvl_chat.py", "conversation.py", "modeling_intern_vit.py",
    "modeling_internlm2.py", "modeling_internvl_chat.py", "tokenizer.model", "tokenization_internlm2.py",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
}
PUBLISHED_IDS = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|plugin|>": 92538, "<|interpreter|>": 92539,
                 "<|action_end|>": 92540, "<|action_start|>": 92541, "<|im_end|>": 92542, "<|im_start|>": 92543,
                 "<img>": 92544, "</img>": 92545, "<IMG_CONTEXT>": 92546, "<quad>": 92547, "</quad>": 92548,
                 "<ref>": 92549, "</ref>": 92550, "<box>": 92551, "</box>": 92552}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _photo(colour=(200, 90, 40), size=(640, 480)):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (240, 235, 225))
    ImageDraw.Draw(img).ellipse((80, 60, size[0] - 80, size[1] - 60), fill=colour)
    return img


# --------------------------------------------------------------------------- the layout itself
def test_replica_has_the_published_files_keys_and_token_ids(replica_dir):
    assert PUBLISHED_FILES <= {p.name for p in replica_dir.iterdir()}
    cfg = _json(replica_dir / "config.json")
    assert cfg["llm_config"]["attn_implementation"] == "flash_attention_2"
    assert cfg["vision_config"]["use_flash_attn"] is True
    assert cfg["llm_config"]["rope_scaling"] == {"type": "dynamic", "factor": 2.0}
    assert (cfg["template"], cfg["max_dynamic_patch"], cfg["ps_version"]) == ("internlm2-chat", 12, "v2")
    assert cfg["llm_config"]["vocab_size"] == 92553 and cfg["llm_config"]["max_length"] == 20
    assert _json(replica_dir / "generation_config.json")["eos_token_id"] == [92542, 92543]
    tok_cfg = _json(replica_dir / "tokenizer_config.json")
    assert tok_cfg["auto_map"]["AutoTokenizer"] == ["tokenization_internlm2.InternLM2Tokenizer", None]
    assert {int(i): t["content"] for i, t in tok_cfg["added_tokens_decoder"].items()} == \
        {i: t for t, i in PUBLISHED_IDS.items()}
    assert _json(replica_dir / "added_tokens.json")["<IMG_CONTEXT>"] == 92546


def test_slow_internlm2_tokenizer(replica_model):
    _, tok = replica_model
    assert type(tok).__name__ == "InternLM2Tokenizer" and not tok.is_fast
    assert tok.convert_tokens_to_ids(list(PUBLISHED_IDS)) == list(PUBLISHED_IDS.values())
    text = "<|im_start|>user\n图片中的菜叫什么名字？ 123 abc<|im_end|>"
    ids = tok(text).input_ids
    assert ids[0] == 1 and ids[1] == 92543 and ids[-1] == 92542  # <s> first, markers are one id each
    assert tok.decode(ids[1:]) .replace(" <", "<") == text
    assert tok("<img>" + "<IMG_CONTEXT>" * 5 + "</img>", add_special_tokens=False).input_ids == [92544] + [92546] * 5 + [92545]


# --------------------------------------------------------------------------- loading and the model
def test_loads_with_the_logits_of_the_course_implementation(replica_dir, replica_model):
    import torch

    from helpers.internvl.modeling_internvl_chat import InternVLChatModel
    from helpers.prompts import build_query
    from helpers.tiling import to_pixel_values

    from safetensors.torch import load_file

    model, tok = replica_model
    on_disk = load_file(str(replica_dir / "model.safetensors"))
    loaded = model.state_dict()
    assert set(loaded) == set(on_disk)
    for name, tensor in on_disk.items():  # every tensor as stored (none tied, none re-initialised)
        assert torch.equal(loaded[name], tensor.float()), name
    course = InternVLChatModel.from_pretrained(str(replica_dir), torch_dtype=torch.float32).eval()
    course.img_context_token_id = model.img_context_token_id
    pv = to_pixel_values(_photo(), max_num=2)
    prompt, _ = build_query(model, "这是什么菜？", [len(pv)])
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        ours = model(pixel_values=pv, input_ids=ids).logits
        ref = course(pixel_values=pv, input_ids=ids).logits
    torch.testing.assert_close(ours, ref, atol=5e-6, rtol=1e-5)


def test_learners_directory_is_never_written(replica_dir, tmp_path, monkeypatch):
    from helpers.models import load_model

    learner = tmp_path / "InternVL2-2B"
    shutil.copytree(replica_dir, learner)
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in learner.iterdir()}
    monkeypatch.setenv("INTERNVL_ARTIFACTS", str(tmp_path / "artifacts"))
    model, tok = load_model(learner)
    assert model.chat(tok, None, "你好", dict(max_new_tokens=2, do_sample=False)) is not None
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in learner.iterdir()} == before
    views = list((tmp_path / "artifacts" / "model-views").glob("*")) if model_dir.transformers_major() >= 5 else []
    assert all(v.name.startswith("InternVL2-2B-") for v in views)


def test_walkthrough_of_notebook_01(replica_model):
    from helpers.concepts.walkthrough import internvl_walkthrough

    model, tok = replica_model
    walk = internvl_walkthrough(model, tok, _photo(), "图片中的菜叫什么名字?", max_num=2)
    assert walk["num_image_tokens"] == walk["num_tiles"] * 256 and walk["next_token_id"] >= 0


# --------------------------------------------------------------------------- serving paths
@pytest.fixture(scope="module")
def replica_engine(replica_dir):
    from helpers.serve.pipeline import make_pipeline

    return make_pipeline(replica_dir, engine="transformers")


def test_transformers_engine_equals_the_models_chat(replica_engine, replica_model):
    from helpers.serve.generation import generation_config
    from helpers.tiling import to_pixel_values

    model, tok = replica_model
    image = _photo()
    gen = generation_config(max_new_tokens=6, do_sample=False)
    one = replica_engine(("这是什么菜？", image), gen_config=gen)
    pv = to_pixel_values(image, max_num=replica_engine.max_dynamic_patch)
    want = model.chat(tok, pv, "<image>\n这是什么菜？", dict(max_new_tokens=6, do_sample=False))
    assert one.text == want
    both = replica_engine([("这是什么菜？", image), ("这是什么菜？", _photo((40, 160, 60)))], gen_config=gen)
    assert both[0].text == one.text and len(both) == 2
    streamed = "".join(r.text for r in replica_engine.stream_infer(("这是什么菜？", image), gen_config=gen))
    assert streamed.strip() == one.text
    session = replica_engine.chat(("这是什么菜？", image), gen_config=gen)
    session = replica_engine.chat("它属于哪个菜系？", session=session, gen_config=gen)
    assert len(session.history) == 2 and session.response.input_token_len > one.input_token_len


def test_evaluation(replica_dir, tmp_path):
    from helpers.evaluate.evaluation import evaluate_model
    from helpers.evaluate.items import load_split

    (tmp_path / "a.jpg").parent.mkdir(exist_ok=True)
    _photo().save(tmp_path / "a.jpg")
    record = {"id": "q0", "image": "a.jpg",
              "conversations": [{"from": "human", "value": "图片中的食物通常属于哪个菜系?\n<image>"},
                                {"from": "gpt", "value": "川菜，图中的菜是麻婆豆腐"}],
              "meta": {"question_type": "cuisine_type", "food_name": "麻婆豆腐", "cuisine": "川菜",
                       "choices": ["川菜", "粤菜", "鲁菜", "京菜"], "answer": 0}}
    (tmp_path / "val.json").write_text(json.dumps([record, dict(record, id="q1")], ensure_ascii=False))
    items = load_split(tmp_path / "val.json", tmp_path)
    result = evaluate_model(replica_dir, items, name="replica", engine="transformers", max_new_tokens=4)
    assert len(result.rows) == 2 and result.model_path == str(replica_dir)


def test_lmdeploy_and_api_server_get_the_runnable_directory(replica_dir, monkeypatch):
    lmdeploy = pytest.importorskip("lmdeploy")
    from helpers.serve import api_server, pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "server_available", lambda: (True, ""))
    monkeypatch.setattr(lmdeploy, "pipeline", lambda path, **kw: seen.setdefault("path", path) and _FakePipe())
    pipeline.make_pipeline(replica_dir, engine="lmdeploy")
    want = model_dir.runnable_dir(replica_dir)
    assert seen["path"] == str(want) and model_dir.code_origin(want) == "course"  # transformers 5: the view
    server = api_server.ApiServer(replica_dir, port=23999)
    assert server.command[server.command.index("api_server") + 1] == str(want)


class _FakePipe:
    """Stands in for LMDeploy's Pipeline where no GPU is."""

    backend_config = None

    def infer(self, prompts, *args, **kwargs):
        return prompts

    stream_infer = chat = infer


def test_web_ui_answers_with_the_replica(replica_engine):
    pytest.importorskip("gradio")
    gradio_client = pytest.importorskip("gradio_client")
    from helpers.serve.api_server import free_port
    from helpers.serve.generation import generation_config
    from helpers.settings import get_settings
    from helpers.serve.webui import build_app, launch

    settings = get_settings()
    demo = build_app(replica_engine, settings)
    port = free_port()
    launch(demo, "127.0.0.1", port, settings=settings, prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        chat = client.predict("你好", 8, 0.8, 0.95, api_name="/chat")
        answer = chat[-1]["content"]
        answer = "".join(p.get("text", "") for p in answer) if isinstance(answer, list) else answer
        want = replica_engine.chat("你好", gen_config=generation_config(max_new_tokens=8, do_sample=False))
        assert answer == (want.response.text or "（模型没有生成文字）")
        client.close()
    finally:
        demo.close()


# --------------------------------------------------------------------------- XTuner paths (xtuner environment)
def test_xtuner_builds_samples_from_the_replica(replica_dir, tmp_path):
    pytest.importorskip("xtuner")
    from helpers.data.xtuner_sample import build_sample, load_xtuner_dataset
    from helpers.data.xtuner_labels import check_label_masking

    _photo().save(tmp_path / "a.jpg")
    record = {"id": "0", "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\n这是什么菜？"}, {"from": "gpt", "value": "图中的菜是麻婆豆腐。"}]}
    (tmp_path / "train.json").write_text(json.dumps([record], ensure_ascii=False))
    ds = load_xtuner_dataset(tmp_path / "train.json", tmp_path, model_path=replica_dir)
    sample = build_sample(ds, 0)
    assert check_label_masking(sample, ds.tokenizer) == []
    assert sample.decoded == ds.tokenizer.bos_token + sample.rendered  # notebook 04's check, slow tokenizer too
    assert sample.input_ids.count(92546) == sample.tiles * 256 and sample.img_context_id == 92546


@pytest.mark.slow
def test_finetune_and_convert_from_the_replica(replica_dir, tmp_path):
    pytest.importorskip("xtuner")
    from helpers.train import xtuner_config, convert, train_run
    from helpers.models import load_model
    from helpers.settings import get_settings

    for i in range(6):
        _photo((40 * (i % 6), 120, 200 - 40 * (i % 6))).save(tmp_path / f"{i}.jpg")
    records = [{"id": str(i), "image": f"{i}.jpg", "conversations": [
        {"from": "human", "value": "<image>\n这是什么菜？"}, {"from": "gpt", "value": "图中的菜是麻婆豆腐。"}]}
        for i in range(6)]
    (tmp_path / "train.json").write_text(json.dumps(records, ensure_ascii=False))
    settings = get_settings("tiny", batch_size=1, accumulative_counts=1, max_epochs=1, max_dynamic_patch=1,
                            lr=1e-3, save_steps=6, log_interval=1, dataloader_num_workers=0)
    config = xtuner_config.write_config(settings, replica_dir, tmp_path / "train.json", tmp_path, tmp_path / "run")
    result = train_run.launch(config, tmp_path / "run").result()
    assert result.max_iters == 6 and result.checkpoint.name == "iter_6.pth"
    out = convert.convert(config, result.checkpoint, tmp_path / "merged")
    assert model_dir.code_origin(out) == "course"  # the converted model runs the course's code
    assert (out / "tokenizer.model").is_file()
    model, tok = load_model(out)
    assert type(tok).__name__ == "InternLM2Tokenizer"
    assert isinstance(model.chat(tok, None, "这是什么菜？", dict(max_new_tokens=3, do_sample=False)), str)


# --------------------------------------------------------------------------- settings
def test_full_profile_settings_from_the_replica(replica_dir, monkeypatch):
    from helpers.settings import get_settings

    monkeypatch.setenv("INTERNVL_MODEL_PATH", str(replica_dir))
    S = get_settings()
    assert S.profile == "full" and S.model_path == replica_dir.resolve()
    assert (S.max_dynamic_patch, S.max_length, S.lora_r, S.lora_alpha, S.batch_size) == (12, 8192, 128, 256, 4)
    assert S.base_model_path == S.model_path  # the full profile fine-tunes the learner's model
