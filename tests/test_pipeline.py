"""Tests for helpers.serve.pipeline: the transformers engine's LMDeploy-style API on the tiny checkpoint,
generation-config handling, and ApiServer process management (a stand-in HTTP server on CPU,
the real ``lmdeploy serve api_server`` in the GPU job)."""
from __future__ import annotations

import json
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import prompts
from helpers.serve import api_server, client, generation, messages, pipeline
from helpers.settings import get_settings

S = get_settings()
TINY = S.tiny_model_path


# --------------------------------------------------------------------------- generation config


def test_generation_config_defaults_match_lmdeploy():
    ours = generation.GenerationConfig()
    assert ours.do_sample is False and ours.max_new_tokens == 512
    lmdeploy = pytest.importorskip("lmdeploy")
    theirs = lmdeploy.GenerationConfig()
    for name, value in generation._GEN_DEFAULTS.items():
        assert getattr(theirs, name) == value, name


def test_gen_fields_reads_all_forms():
    assert generation._gen_fields(None)["do_sample"] is False
    assert generation._gen_fields({"max_new_tokens": 7})["max_new_tokens"] == 7
    assert generation._gen_fields(generation.GenerationConfig(top_p=0.5))["top_p"] == 0.5
    assert generation._gen_fields(generation.generation_config(temperature=0.3))["temperature"] == 0.3
    with pytest.raises(ValueError, match="unknown fields"):
        generation._gen_fields({"max_tokens": 3})


def test_prompt_forms():
    assert messages._split_prompt("hi") == ("hi", [])
    assert messages._split_prompt(("q", "a.jpg")) == ("q", ["a.jpg"])
    assert messages._split_prompt((["a.jpg", "b.jpg"], "q")) == ("q", ["a.jpg", "b.jpg"])
    with pytest.raises(TypeError, match="a prompt is"):
        messages._split_prompt(42)
    assert messages._place_images("q", 1) == "<image>\nq"
    assert messages._place_images("q", 2) == "Image-1: <image>\nImage-2: <image>\nq"
    assert messages._place_images("<image> vs <image>", 2) == "<image> vs <image>"
    with pytest.raises(ValueError, match="2 <image> placeholders but 1"):
        messages._place_images("<image><image>", 1)


def test_internvl2_chat_template_matches_the_models_template():
    pytest.importorskip("lmdeploy")
    from helpers.internvl.conversation import get_conv_template

    template = prompts.internvl2_chat_template("你是美食助手。").chat_template()
    messages = [{"role": "user", "content": "<image>\n这是什么菜？"}, {"role": "assistant", "content": "肠粉"},
                {"role": "user", "content": "哪个菜系？"}]
    conv = get_conv_template("internlm2-chat")
    conv.system_message = "你是美食助手。"
    for role, text in [(0, "<image>\n这是什么菜？"), (1, "肠粉"), (0, "哪个菜系？"), (1, None)]:
        conv.append_message(conv.roles[role], text)
    assert template.messages2prompt(messages) == conv.get_prompt()
    assert "<|im_end|>" in template.stop_words


def test_make_pipeline_rejects_unknown_engine_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        pipeline.make_pipeline(tmp_path, engine="vllm")
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        pipeline.make_pipeline(tmp_path, engine="transformers")


def test_make_pipeline_says_why_lmdeploy_cannot_run(tiny_model_dir):
    ok, reason = pipeline.server_available()
    if ok:
        pytest.skip("LMDeploy can run here (GPU job)")
    with pytest.raises(RuntimeError, match="use engine='transformers'"):
        pipeline.make_pipeline(tiny_model_dir, engine="lmdeploy")


# --------------------------------------------------------------------------- transformers engine (tiny model)

GREEDY = {"max_new_tokens": 8}


def _photos(n=3):
    """Distinct small food-like photos (RGB, near-square so each is one 448 px tile: quick on CPU)."""
    from PIL import Image, ImageDraw

    out = []
    for i in range(n):
        img = Image.new("RGB", (300 - 20 * i, 280 + 10 * i), (200 - 50 * i, 120 + 40 * i, 60 + 70 * i))
        ImageDraw.Draw(img).ellipse((20, 20, 200, 180), fill=(250, 230 - 60 * i, 40 * i))
        out.append(img)
    return out


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    eng = pipeline.make_pipeline(tiny_model_dir, engine="transformers")
    yield eng
    eng.close()


def test_single_call_response_fields(engine):
    img = _photos(1)[0]
    res = engine(("图中是什么菜？", img), gen_config=GREEDY)
    assert engine.engine_name == "transformers"
    assert isinstance(res.text, str) and res.text.strip()
    assert res.finish_reason in ("stop", "length")
    assert 0 < res.generate_token_len <= GREEDY["max_new_tokens"]
    # the prompt holds 256 image tokens per tile
    assert res.input_token_len > engine.model.num_image_token
    again = engine(("图中是什么菜？", img), gen_config=GREEDY)
    assert again.text == res.text and again.token_ids == res.token_ids  # greedy is deterministic


def test_matches_the_models_own_chat(engine):
    from helpers.tiling import to_pixel_values

    img = _photos(1)[0]
    ours = engine(("这道菜属于哪个菜系？", img), gen_config=GREEDY).text
    pv = to_pixel_values(img, max_num=engine.max_dynamic_patch, image_size=engine.image_size,
                         use_thumbnail=engine.use_thumbnail)
    theirs = engine.model.chat(engine.tokenizer, pv, "这道菜属于哪个菜系？",
                               dict(max_new_tokens=GREEDY["max_new_tokens"], do_sample=False))
    assert ours == theirs.strip()


def test_batch_equals_one_by_one(engine):
    imgs = _photos(3)
    prompts = [("图中是什么菜？", imgs[0]), ("这道菜的主要食材是什么？", imgs[1]), "你好", ("哪个菜系？", imgs[2])]
    batch = engine(prompts, gen_config=GREEDY)
    assert [r.index for r in batch] == [0, 1, 2, 3]
    single = [engine(p, gen_config=GREEDY) for p in prompts]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]
    assert [r.text for r in batch] == [r.text for r in single]
    assert [r.input_token_len for r in batch] == [r.input_token_len for r in single]


def test_batch_uses_one_generate_call(engine, monkeypatch):
    calls = []
    real = engine.model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.model, "generate", counting)
    imgs = _photos(2)
    engine([("a", imgs[0]), ("b", imgs[1])], gen_config={"max_new_tokens": 2})
    assert len(calls) == 1 and calls[0][0] == 2


def test_chat_session_two_turns(engine):
    img = _photos(1)[0]
    session = engine.chat(("图中是什么菜？", img), gen_config=GREEDY)
    first = session.response.text
    assert first.strip() and len(session.history) == 1
    session = engine.chat("它属于哪个菜系？", session=session, gen_config=GREEDY)
    assert len(session.history) == 2 and session.history[0] == (("图中是什么菜？", img), first)
    assert session.response.text.strip()
    # the second turn saw the first turn (image included): longer prompt than a fresh question
    fresh = engine("它属于哪个菜系？", gen_config=GREEDY)
    assert session.response.input_token_len > fresh.input_token_len + engine.model.num_image_token


def test_stream_infer_pieces_join_to_the_full_answer(engine):
    img = _photos(1)[0]
    full = engine(("描述这张图片", img), gen_config=GREEDY)
    pieces = list(engine.stream_infer(("描述这张图片", img), gen_config=GREEDY))
    assert pieces and pieces[-1].finish_reason == full.finish_reason
    assert all(p.finish_reason is None for p in pieces[:-1])
    assert "".join(p.text for p in pieces) == full.text
    assert sum(len(p.token_ids) for p in pieces) == len(full.token_ids)


def test_stream_infer_batch_indexes(engine):
    imgs = _photos(2)
    prompts = [("图中是什么菜？", imgs[0]), ("哪个菜系？", imgs[1])]
    full = engine(prompts, gen_config=GREEDY)
    texts = {0: "", 1: ""}
    for piece in engine.stream_infer(prompts, gen_config=GREEDY):
        texts[piece.index] += piece.text
    assert [texts[0], texts[1]] == [r.text for r in full]


def test_chat_streaming_updates_the_session(engine):
    img = _photos(1)[0]
    session = engine.session()
    text = "".join(p.text for p in engine.chat(("图中是什么菜？", img), session=session, gen_config=GREEDY,
                                               stream_response=True))
    assert session.history == [(("图中是什么菜？", img), text)]
    assert text == engine(("图中是什么菜？", img), gen_config=GREEDY).text


def test_multi_image_prompt(engine):
    imgs = _photos(2)
    res = engine(("这两道菜有什么不同？", imgs), gen_config=GREEDY)
    one = engine(("这两道菜有什么不同？", imgs[0]), gen_config=GREEDY)
    assert res.text.strip()
    query, tiles = engine._query([(("这两道菜有什么不同？", imgs), None)])
    assert "Image-1: <img>" in query and "Image-2: <img>" in query and len(tiles) == 2
    per_tile = engine.model.num_image_token
    assert res.input_token_len - one.input_token_len >= per_tile * tiles[1].shape[0]
    # a photo wider than 2:1 becomes several tiles plus the thumbnail, each with its own tokens
    wide = _photos(1)[0].resize((900, 300))
    query, tiles = engine._query([(("这是什么？", wide), None)])
    assert tiles[0].shape[0] == 4 and query.count("<IMG_CONTEXT>") == 4 * per_tile


def test_sampling_with_seed_is_reproducible(engine):
    img = _photos(1)[0]
    cfg = generation.generation_config(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0, top_p=1.0,
                                   random_seed=7)
    a = engine(("图中是什么菜？", img), gen_config=cfg)
    b = engine(("图中是什么菜？", img), gen_config=cfg)
    assert a.token_ids == b.token_ids


def test_describe_engine(engine, tiny_model_dir):
    from helpers.settings import REPO_ROOT, repo_relative

    line = pipeline.describe_engine(engine)
    assert "engine=transformers" in line and line.endswith(f"model={repo_relative(tiny_model_dir)}")
    assert str(REPO_ROOT) not in line  # a learner reads artifacts/..., not the maintainer's machine


# --------------------------------------------------------------------------- api_server management (CPU)

STAND_IN = textwrap.dedent('''
    """Stand-in for `lmdeploy serve api_server`: same routes the course uses, same key check."""
    import base64, io, json, os, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port, key = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "")
    print("stand-in starting", flush=True)
    if os.environ.get("STANDIN_FAIL"):
        print("stand-in: fatal start-up error", flush=True)
        sys.exit(3)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # like engine workers
    print(f"helper pid {helper.pid}", flush=True)
    time.sleep(float(os.environ.get("STANDIN_DELAY", "1")))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            print("request", fmt % args, flush=True)

        def _send(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorised(self):
            if key and self.headers.get("Authorization") != "Bearer " + key:
                self._send(401, {"error": {"message": "Please request with valid api key!", "type": "invalid"}})
                return False
            return True

        def do_GET(self):
            if self._authorised():
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "stand-in", "object": "model",
                                                                  "created": 0, "owned_by": "course"}]})
                else:
                    self._send(404, {"error": "not found"})

        def do_POST(self):
            if not self._authorised():
                return
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = request["messages"][-1]["content"]
            text = [p["text"] for p in parts if p["type"] == "text"][0]
            url = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"][0]
            head, data = url.split(",", 1)
            from PIL import Image
            img = Image.open(io.BytesIO(base64.b64decode(data)))
            answer = f"{text} | {head} | {img.size[0]}x{img.size[1]} | model={request['model']}"
            self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": request["model"],
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": answer}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
''')


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent has not collected it


@pytest.fixture()
def stand_in(tmp_path):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)

    def make(key="sk-test", delay="1", env=None):
        port = api_server.free_port()
        cmd = [sys.executable, str(script), str(port)] + ([key] if key else [])
        return api_server.ApiServer(TINY, port=port, api_keys=key, command=cmd, log_path=tmp_path / "server.log",
                                env={"STANDIN_DELAY": delay, **(env or {})})

    return make


def test_api_server_command_line(tmp_path):
    srv = api_server.ApiServer("/models/x", port=23999, api_keys="sk-1", tp=2, session_len=4096,
                           cache_max_entry_count=0.3, extra_args=["--max-batch-size", "8"], log_path=tmp_path / "l")
    cmd = srv.command
    assert cmd[:6] == [sys.executable, "-m", "lmdeploy", "serve", "api_server", "/models/x"]
    for flag, value in [("--server-name", "127.0.0.1"), ("--server-port", "23999"), ("--api-keys", "sk-1"),
                        ("--tp", "2"), ("--session-len", "4096"), ("--cache-max-entry-count", "0.3"),
                        ("--backend", "pytorch"), ("--max-batch-size", "8")]:
        assert cmd[cmd.index(flag) + 1] == value, flag
    assert "--trust-remote-code" in cmd
    assert srv.url == "http://127.0.0.1:23999" and not srv.running
    assert api_server.ApiServer("/m", port=1, log_path=tmp_path / "l").command.count("--api-keys") == 0
    with pytest.raises(ValueError, match="PyTorch engine only"):
        api_server.ApiServer("/m", backend="turbomind", log_path=tmp_path / "l")


def test_api_server_command_line_shows_repository_paths_relative(tmp_path):
    from helpers.settings import REPO_ROOT

    model = REPO_ROOT / "artifacts" / "models" / "not-built"
    srv = api_server.ApiServer(model, port=23333, log_path=tmp_path / "l", settings=S)
    assert srv.command[5] == str(model)  # the process gets the absolute path
    assert srv.command_line.startswith("lmdeploy serve api_server artifacts/models/not-built --backend pytorch")
    assert str(REPO_ROOT) not in srv.command_line and sys.executable not in srv.command_line
    other = api_server.ApiServer("/models/x", port=1, log_path=tmp_path / "l")
    assert other.command_line.split()[3] == "/models/x"  # outside the repository: as it is



def test_tp_workers_use_multiprocessing_without_ray(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.delenv("LMDEPLOY_EXECUTOR_BACKEND", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    assert pipeline.tp_executor_backend(1) is None  # one GPU: no workers to start
    assert pipeline.tp_executor_backend(2) == "mp"
    cmd = api_server.ApiServer("/m", port=1, tp=2, log_path=tmp_path / "l").command
    assert cmd[cmd.index("--distributed-executor-backend") + 1] == "mp"
    assert "--distributed-executor-backend" not in api_server.ApiServer("/m", port=1, log_path=tmp_path / "l").command
    monkeypatch.setenv("LMDEPLOY_EXECUTOR_BACKEND", "ray")  # the user's choice wins; LMDeploy reads it
    assert pipeline.tp_executor_backend(2) is None
    monkeypatch.delenv("LMDEPLOY_EXECUTOR_BACKEND")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ray" else None)
    assert pipeline.tp_executor_backend(2) is None  # Ray installed: LMDeploy's own default

def test_api_server_start_ready_key_and_stop(stand_in):
    srv = stand_in()
    with srv:
        assert srv.running
        assert srv.wait_ready(timeout=60, interval=0.2) == ["stand-in"]
        with pytest.raises(urllib.error.HTTPError) as refused:  # no key -> refused
            urllib.request.urlopen(srv.url + "/v1/models", timeout=5)
        assert refused.value.code == 401
        helper_pid = int([l for l in srv.logs(50).splitlines() if l.startswith("helper pid")][0].split()[-1])
        assert _alive(helper_pid)
        leader = srv.proc.pid
    assert not srv.running and srv.proc.returncode is not None
    assert not _alive(leader) and not _alive(helper_pid)  # the whole process group is gone
    assert "stand-in starting" in srv.logs(100)
    assert srv.stop() == srv.proc.returncode  # stopping twice is harmless


def test_openai_chat_sends_a_data_url_image(stand_in, tmp_path):
    openai = pytest.importorskip("openai")
    from PIL import Image

    image = tmp_path / "dish.png"
    Image.new("RGB", (64, 48), (200, 100, 50)).save(image)
    with stand_in() as srv:
        srv.wait_ready(timeout=60, interval=0.2)
        answer = client.openai_chat(srv.url, "sk-test", "这是什么菜？", image)
        assert answer == "这是什么菜？ | data:image/png;base64 | 64x48 | model=stand-in"
        with pytest.raises(openai.AuthenticationError):
            client.openai_chat(srv.url + "/v1", "wrong-key", "q", image, model="stand-in")
        assert client.status_without_key(srv.url, "stand-in", "这是什么菜？") == 401


def test_api_server_exit_before_ready_shows_the_log(stand_in):
    srv = stand_in(env={"STANDIN_FAIL": "1"}).start()
    with pytest.raises(RuntimeError, match=r"exited with code 3(.|\n)*fatal start-up error"):
        srv.wait_ready(timeout=60, interval=0.2)
    srv.stop()


def test_api_server_timeout_and_wrong_key(stand_in):
    slow = stand_in(delay="30").start()
    try:
        with pytest.raises(TimeoutError, match="not ready after"):
            slow.wait_ready(timeout=1.5, interval=0.2)
    finally:
        slow.stop()
    assert not slow.running
    srv = stand_in(key="sk-right")
    srv.api_keys = ["sk-wrong"]  # the key we would poll with is not the server's
    with srv:
        with pytest.raises(RuntimeError, match="refused our API key"):
            srv.wait_ready(timeout=60, interval=0.2)


def test_server_available_reason():
    ok, reason = pipeline.server_available()
    assert ok or reason  # never "unavailable" without saying why
    if ok:
        assert reason == ""


def test_image_data_url_errors(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt is not an image"):
        client.image_data_url(bad)
    with pytest.raises(FileNotFoundError):
        client.image_data_url(tmp_path / "missing.jpg")


# --------------------------------------------------------------------------- real LMDeploy (GPU job)

gpu = pytest.mark.gpu


def _need_gpu():
    ok, reason = pipeline.server_available()
    if not ok:
        pytest.skip(reason)


@gpu
@pytest.mark.slow
def test_lmdeploy_pipeline_on_gpu(tiny_model_dir):
    _need_gpu()
    pipe = pipeline.make_pipeline(tiny_model_dir, engine="lmdeploy", cache_max_entry_count=0.2, max_dynamic_patch=2,
                                system_prompt="你是美食助手。")
    try:
        assert pipe.engine_name == "lmdeploy" and "engine=lmdeploy" in pipeline.describe_engine(pipe)
        print(pipeline.describe_engine(pipe))
        assert pipe.async_engine.vl_encoder.model.config.max_dynamic_patch == 2
        img = _photos(1)[0]
        cfg = generation.generation_config(max_new_tokens=16)
        res = pipe(("图中是什么菜？", img), gen_config=cfg)
        assert res.generate_token_len > 0 and res.finish_reason in ("stop", "length")
        batch = pipe([("图中是什么菜？", img)] * 4, gen_config=cfg)
        assert [r.text for r in batch] == [res.text] * 4
        pieces = list(pipe.stream_infer(("图中是什么菜？", img), gen_config=cfg))
        assert "".join(p.text for p in pieces) == res.text
        session = pipe.chat(("图中是什么菜？", img), gen_config=cfg)
        session = pipe.chat("哪个菜系？", session=session, gen_config=cfg)
        assert len(session.history) == 2
        # the web UI's way: a fresh session per turn, history filled in, answer streamed
        fresh = pipe.session()
        fresh.history = list(session.history[:1])
        streamed = "".join(p.text for p in pipe.chat("哪个菜系？", session=fresh, gen_config=cfg,
                                                     stream_response=True))
        assert streamed == session.history[1][1] and len(fresh.history) == 2
        fresh.close()
        print("lmdeploy answers:", repr(res.text), repr(session.history[1][1]))
    finally:
        pipe.close()


@gpu
@pytest.mark.slow
def test_lmdeploy_pipeline_built_inside_a_running_event_loop(tiny_model_dir):
    """A Jupyter cell runs inside the kernel's asyncio loop; make_pipeline must still work there."""
    _need_gpu()
    import asyncio

    async def cell():
        pipe = pipeline.make_pipeline(tiny_model_dir, engine="lmdeploy", cache_max_entry_count=0.1)
        try:
            return pipe(("图中是什么菜？", _photos(1)[0]), gen_config=generation.generation_config(max_new_tokens=8))
        finally:
            pipe.close()

    res = asyncio.run(cell())
    assert res.generate_token_len > 0


@gpu
@pytest.mark.slow
def test_api_server_on_gpu_refuses_without_key(tiny_model_dir, tmp_path):
    _need_gpu()
    openai = pytest.importorskip("openai")
    image = tmp_path / "dish.jpg"
    _photos(1)[0].save(image)
    with api_server.ApiServer(tiny_model_dir, port=0, api_keys="sk-course", cache_max_entry_count=0.2,
                          log_path=tmp_path / "api.log") as srv:
        t0 = __import__("time").monotonic()
        models = srv.wait_ready(timeout=420)
        print(f"api_server ready after {__import__('time').monotonic() - t0:.0f} s; models {models}")
        assert models
        answer = client.openai_chat(srv.url, "sk-course", "图中是什么菜？", image, max_tokens=16)
        assert isinstance(answer, str)
        print("api_server answer:", repr(answer))
        with pytest.raises(openai.AuthenticationError):
            client.openai_chat(srv.url, None, "图中是什么菜？", image, model=models[0])
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(srv.url + "/v1/models", timeout=10)
        assert refused.value.code == 401
        print("without key: HTTP", refused.value.code, refused.value.read()[:200])
    assert not srv.running


def test_weight_format_reads_lmdeploy_awq_config_and_transformers_refuses_it(tiny_model_dir, tmp_path):
    import shutil

    from helpers.serve.pipeline import make_pipeline, weight_format

    assert weight_format(tiny_model_dir) is None
    awq = tmp_path / "w4a16"
    shutil.copytree(tiny_model_dir, awq)
    config = json.loads((awq / "config.json").read_text(encoding="utf-8"))
    # where LMDeploy's auto_awq puts it for an InternVL checkpoint
    config["llm_config"]["quantization_config"] = {"bits": 4, "group_size": 128, "quant_method": "awq"}
    (awq / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert weight_format(awq) == "awq"
    with pytest.raises(ValueError, match="awq weights.*engine='lmdeploy'"):
        make_pipeline(awq, engine="transformers")


def test_images_first_gives_lmdeploy_the_training_order(tmp_path):
    from PIL import Image

    from helpers.serve.messages import images_first

    img = Image.new("RGB", (32, 24), (200, 30, 30))
    path = tmp_path / "dish.jpg"
    img.save(path)
    swapped = images_first(("这是什么菜？", str(path)))
    assert isinstance(swapped[0], Image.Image) and swapped[1] == "这是什么菜？"  # a path becomes an image
    imgs, text = images_first(("两张图", [img, str(path)]))
    assert text == "两张图" and all(isinstance(i, Image.Image) for i in imgs)
    for unchanged in ("纯文本", (img, "已经是图片在前"), [{"role": "user", "content": "hi"}]):
        assert images_first(unchanged) is unchanged
    mm = pytest.importorskip("lmdeploy.serve.processors.multimodal", reason="LMDeploy's prompt formatting")
    fmt = mm.MultimodalProcessor._re_format_prompt_images_pair
    # LMDeploy's own reading of the two orders: text first as given, image first after images_first
    assert [c["type"] for c in fmt(("这是什么菜？", img))["content"]][0] == "text"
    assert [c["type"] for c in fmt(images_first(("这是什么菜？", img)))["content"]][0] != "text"
