"""Tests for helpers.serve.webui: upload checks on real odd files, and the launched Gradio app driven by
gradio_client on 127.0.0.1 (two turns with an image, session isolation, bad uploads, the queue)."""
from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from helpers.settings import get_settings

S = get_settings()
TINY = S.tiny_model_path
LIMITS = dict(max_upload_mb=1.0, max_image_pixels=4_000_000)  # small, so test files stay small


# --------------------------------------------------------------------------- test files


def _photo(size=(320, 240), colour=(200, 80, 40), spot=(250, 220, 60)):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, colour)
    ImageDraw.Draw(img).ellipse((size[0] // 5, size[1] // 5, size[0] // 2, size[1] // 2), fill=spot)
    return img


def make_files(d: Path) -> dict:
    """Good, odd and bad uploads, as files."""
    import numpy as np
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    f = {}
    f["jpeg"] = d / "dish.jpg"
    _photo().save(f["jpeg"], quality=90)
    f["other"] = d / "other.png"
    _photo((200, 300), (40, 120, 200), (240, 240, 240)).save(f["other"])
    f["text"] = d / "menu.txt"
    f["text"].write_text("宫保鸡丁 28 元\n", encoding="utf-8")
    f["fake_jpg"] = d / "fake.jpg"  # right name, wrong content
    f["fake_jpg"].write_bytes(b"<html>not a photo</html>" * 10)
    f["empty"] = d / "empty.png"
    f["empty"].write_bytes(b"")
    buf = io.BytesIO()
    _photo((640, 480)).save(buf, "JPEG", quality=95)
    f["truncated"] = d / "truncated.jpg"
    f["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    f["big_bytes"] = d / "big.jpg"  # a valid JPEG padded past the byte limit
    f["big_bytes"].write_bytes(buf.getvalue() + b"\0" * int(1.2 * 2**20))
    f["many_pixels"] = d / "wide.png"  # 6 MP > the 4 MP test limit, a few KB on disk
    Image.new("1", (3000, 2000)).save(f["many_pixels"])
    f["bomb"] = d / "bomb.png"  # 20000 x 20000: Pillow itself refuses to decode it
    Image.new("1", (20000, 20000)).save(f["bomb"])
    f["cmyk"] = d / "cmyk.jpg"
    Image.new("CMYK", (60, 40), (0, 255, 255, 0)).save(f["cmyk"])
    f["gray16"] = d / "gray16.png"
    Image.fromarray(np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)).save(f["gray16"])
    f["rgba"] = d / "rgba.png"
    rgba = Image.new("RGBA", (50, 50), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 25, 50))
    rgba.save(f["rgba"])
    f["palette"] = d / "palette.png"
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    pal.paste(1, (0, 0, 20, 40))
    pal.save(f["palette"], transparency=0)
    f["exif"] = d / "rotated.jpg"  # stored 80x40, EXIF says "rotate 90° clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo((80, 40)).save(f["exif"], exif=exif.tobytes())
    f["gif"] = d / "anim.gif"
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(f["gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    return f


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("uploads"))


# --------------------------------------------------------------------------- load_upload


@pytest.mark.parametrize("key, words", [
    ("text", "不是图片"), ("fake_jpg", "不是图片"), ("empty", "空文件"), ("truncated", "已损坏"),
    ("big_bytes", "超过上传上限 1 MB"), ("many_pixels", "3000×2000"), ("bomb", "约 400 百万像素"),
])
def test_bad_uploads_are_refused_with_a_reason(files, key, words):
    from helpers.serve.uploads import UploadError, load_upload

    with pytest.raises(UploadError) as err:
        load_upload(files[key], **LIMITS)
    message = str(err.value)
    assert words in message and files[key].name in message and "Traceback" not in message


def test_truncated_is_refused_even_after_lmdeploy_import(files):
    from PIL import ImageFile

    from helpers.serve.uploads import UploadError, load_upload

    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what `import lmdeploy` does process-wide
    try:
        with pytest.raises(UploadError, match="已损坏"):
            load_upload(files["truncated"], **LIMITS)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # put back for LMDeploy
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def test_odd_modes_become_rgb(files):
    from helpers.serve.uploads import load_upload

    img, notes = load_upload(files["cmyk"], **LIMITS)
    assert img.mode == "RGB" and img.getpixel((5, 5)) == (255, 0, 0) and any("CMYK" in n for n in notes)
    img, notes = load_upload(files["gray16"], **LIMITS)
    # scaled, not clipped: the 16-bit ramp still runs from black to white
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((63, 31)) == (255, 255, 255)
    assert 100 < img.getpixel((32, 16))[0] < 160
    img, _ = load_upload(files["rgba"], **LIMITS)
    assert img.getpixel((10, 10)) == (0, 0, 255) and img.getpixel((40, 10)) == (255, 255, 255)  # alpha -> white
    img, _ = load_upload(files["palette"], **LIMITS)
    assert img.getpixel((5, 5)) == (0, 200, 0) and img.getpixel((30, 5)) == (255, 255, 255)  # index 0 transparent
    img, notes = load_upload(files["exif"], **LIMITS)
    assert img.size == (40, 80) and any("EXIF" in n for n in notes)
    img, notes = load_upload(files["gif"], **LIMITS)
    assert img.getpixel((5, 5)) == (255, 0, 0) and any("第一帧" in n for n in notes)
    img, notes = load_upload(files["jpeg"], **LIMITS)
    assert img.size == (320, 240) and notes == []


def test_default_limits_come_from_settings(files):
    from helpers.serve.uploads import UploadError, load_upload

    load_upload(files["many_pixels"], settings=S)  # 6 MP is fine under the default 40 MP
    with pytest.raises(UploadError, match="2 百万像素"):
        load_upload(files["many_pixels"], settings=S.replace(max_image_pixels=2_000_000))


def test_example_images_one_per_dish(tmp_path):
    from helpers.serve.engine_pool import example_images

    (tmp_path / "images").mkdir()
    records = []
    for i, dish in enumerate(["烤羊肉串", "烤羊肉串", "肠粉", "麻婆豆腐"]):
        rel = f"images/{i}.jpg"
        _photo().save(tmp_path / rel)
        records.append({"food_name": dish, "food_meta": {"food_name": dish, "food_file": rel}})
    records.append({"food_name": "缺图", "food_meta": {"food_name": "缺图", "food_file": "images/missing.jpg"}})
    (tmp_path / "sivqa_tidy.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    found = example_images(S.replace(data_root=tmp_path), limit=8)
    assert [c for _, c in found] == ["烤羊肉串", "肠粉", "麻婆豆腐"]
    assert all(Path(p).is_file() for p, _ in found)
    assert example_images(S.replace(data_root=tmp_path / "nowhere")) == []


# --------------------------------------------------------------------------- the launched app

GEN = (12, 0.8, 0.8, False)  # max_new_tokens, temperature, top_p, do_sample (greedy)


class GatedEngine:
    """Wraps a real engine; holds every turn at a gate so a test controls when it may run."""

    def __init__(self, engine):
        self.inner, self.gate, self.started = engine, threading.Event(), threading.Event()
        self.engine_name, self.model_path, self.max_concurrency = "gated", engine.model_path, 1

    def session(self):
        return self.inner.session()

    def chat(self, *args, **kwargs):
        self.started.set()
        self.gate.wait(timeout=120)
        return self.inner.chat(*args, **kwargs)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    from helpers.serve.pipeline import make_pipeline

    return make_pipeline(tiny_model_dir, engine="transformers")


def _launch(demo, settings):
    from helpers.serve.api_server import free_port
    from helpers.serve.webui import launch

    port = free_port()
    launch(demo, "127.0.0.1", port, settings=settings, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app(engine, files):
    from helpers.serve.webui import build_app

    settings = S.replace(**LIMITS)
    demo = build_app(engine, settings, finetuned_model=str(TINY), examples=[(str(files["jpeg"]), "示例菜")])
    url = _launch(demo, settings)
    yield url, demo
    demo.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _texts(chat) -> list:
    """Chatbot value -> [(role, text)]."""
    out = []
    for m in chat:
        content = m["content"]
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        out.append((m["role"], content))
    return out


def _upload(client, path):
    from gradio_client import handle_file

    chat, preview, _ = client.predict(handle_file(str(path)), api_name="/load_image")
    return _texts(chat), preview


def _ask(client, question):
    state_chat = client.predict(question, *GEN, api_name="/chat")
    return _texts(state_chat)


def _expected(engine, image_path, questions):
    """What the engine answers when asked directly (greedy), turn by turn."""
    from helpers.serve.generation import generation_config
    from helpers.serve.uploads import load_upload

    image, _ = load_upload(image_path, **LIMITS)
    cfg = generation_config(max_new_tokens=GEN[0], do_sample=False, temperature=GEN[1], top_p=GEN[2])
    session, answers = None, []
    for i, q in enumerate(questions):
        session = engine.chat((q, image) if i == 0 else q, session=session, gen_config=cfg)
        answers.append(session.response.text)
    return answers


def test_two_turns_with_an_image(app, engine, files):
    url, _ = app
    client = _client(url)
    chat, preview = _upload(client, files["jpeg"])
    assert chat[-1][0] == "assistant" and "已载入 dish.jpg（320×240）" in chat[-1][1]
    assert preview
    first = _ask(client, "图中是什么菜？")
    second = _ask(client, "它属于哪个菜系？")
    assert [r for r, _ in second] == ["assistant", "user", "assistant", "user", "assistant"]
    assert second[1] == ("user", "图中是什么菜？") and second[3] == ("user", "它属于哪个菜系？")
    assert second[2] == first[2]
    # the UI gave the model the image and the first turn: same answers as asking the engine directly
    want = _expected(engine, files["jpeg"], ["图中是什么菜？", "它属于哪个菜系？"])
    assert [second[2][1], second[4][1]] == [a if a.strip() else "（模型没有生成文字）" for a in want]
    client.close()


def test_sessions_do_not_see_each_other(app, engine, files):
    url, _ = app
    a, b = _client(url), _client(url)
    _upload(a, files["jpeg"])
    _upload(b, files["other"])
    results = {}

    def run(name, client, questions):
        results[name] = [_ask(client, q) for q in questions]

    threads = [threading.Thread(target=run, args=("a", a, ["A号问题：这是什么？", "A号追问"])),
               threading.Thread(target=run, args=("b", b, ["B号问题：这是什么？"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    final_a, final_b = results["a"][-1], results["b"][-1]
    text_a, text_b = json.dumps(final_a, ensure_ascii=False), json.dumps(final_b, ensure_ascii=False)
    assert "A号" in text_a and "B号" not in text_a and "other.png" not in text_a
    assert "B号" in text_b and "A号" not in text_b and "dish.jpg" not in text_b
    assert len(final_a) == 5 and len(final_b) == 3
    # each model call saw its own session's image and history only
    assert final_a[4][1] == _expected(engine, files["jpeg"], ["A号问题：这是什么？", "A号追问"])[1] or \
        final_a[4][1] == "（模型没有生成文字）"
    assert final_b[2][1] == _expected(engine, files["other"], ["B号问题：这是什么？"])[0] or \
        final_b[2][1] == "（模型没有生成文字）"
    a.close()
    b.close()


def test_bad_uploads_get_messages_and_the_server_keeps_serving(app, files):
    url, _ = app
    client = _client(url)
    _upload(client, files["jpeg"])
    for key, words in [("text", "不是图片"), ("fake_jpg", "不是图片"), ("truncated", "已损坏"),
                       ("big_bytes", "超过上传上限"), ("many_pixels", "像素太多"), ("bomb", "像素太多")]:
        chat, _ = _upload(client, files[key])
        role, text = chat[-1]
        assert role == "assistant" and text.startswith("⚠️") and words in text, (key, text)
        assert "当前仍使用 dish.jpg" in text and "Traceback" not in text
    for key in ("cmyk", "gray16", "rgba", "palette", "exif", "gif"):
        chat, _ = _upload(client, files[key])
        assert "已载入" in chat[-1][1], (key, chat[-1])
    answer = _ask(client, "图中是什么？")  # still serving, with the last good image (the GIF frame)
    assert answer[-1][0] == "assistant" and not answer[-1][1].startswith("⚠️")
    client.close()


def test_new_chat_and_model_switch(app, files):
    url, demo = app
    client = _client(url)
    _upload(client, files["jpeg"])
    _ask(client, "第一问")
    chat = _texts(client.predict(api_name="/new_chat"))
    assert len(chat) == 1 and "新对话" in chat[0][1] and "dish.jpg" in chat[0][1]
    labels = demo.course_pool.labels
    assert len(labels) == 2
    chat = _texts(client.predict(labels[1], api_name="/switch_model"))
    assert "已切换到" in chat[0][1]
    after = _ask(client, "换模型后提问")
    assert [r for r, _ in after] == ["assistant", "user", "assistant"] and not after[-1][1].startswith("⚠️")
    assert isinstance(demo.course_pool.engines[labels[1]], type(demo.course_pool.engines[labels[0]]))
    client.close()


def test_busy_engine_queues_instead_of_failing(engine, files):
    from gradio_client.utils import Status

    from helpers.serve.webui import build_app

    gated = GatedEngine(engine)
    settings = S.replace(**LIMITS)
    demo = build_app(gated, settings, examples=[])
    assert demo.course_concurrency == 1
    url = _launch(demo, settings)
    try:
        first, second = _client(url), _client(url)
        job1 = first.submit("第一位", *GEN, api_name="/chat")
        assert gated.started.wait(timeout=60)  # first request holds the only slot
        job2 = second.submit("第二位", *GEN, api_name="/chat")
        seen = set()
        for _ in range(600):
            seen.add(job2.status().code)
            if Status.IN_QUEUE in seen:
                break
            time.sleep(0.05)
        assert Status.IN_QUEUE in seen, seen
        gated.gate.set()
        out1, out2 = _texts(job1.result(timeout=300)), _texts(job2.result(timeout=300))
        assert out1[0] == ("user", "第一位") and out2[0] == ("user", "第二位")
        assert not out1[-1][1].startswith("⚠️") and not out2[-1][1].startswith("⚠️")
        first.close()
        second.close()
    finally:
        gated.gate.set()
        demo.close()


def test_build_app_binds_loopback_and_no_share(engine):
    pytest.importorskip("gradio")
    from helpers.serve.webui import build_app, main

    assert S.server_host == "127.0.0.1"
    with pytest.raises(SystemExit):
        main(["--model", "/nonexistent/model"])
    demo = build_app(engine, S, examples=[], preload=False)
    assert demo.course_pool.labels == [f"模型：{TINY.name}"]


def test_webui_roundtrip_answers_like_the_pipeline(engine, files):
    """helpers.serve.roundtrip (notebooks 03 and 06): the UI's answer is the engine's answer to the same prompt."""
    from helpers.serve.generation import generation_config
    from helpers.serve.roundtrip import message_text, webui_roundtrip
    from helpers.serve.webui import build_app

    settings = S.replace(**LIMITS)
    demo = build_app(engine, settings, examples=[])
    trip = webui_roundtrip(demo, files["jpeg"], "这是什么菜？", settings, max_new_tokens=6)
    assert trip["roles"][-2:] == ["user", "assistant"] and trip["loaded"].startswith("📷")
    direct = engine.chat(("这是什么菜？", str(files["jpeg"])), gen_config=generation_config(max_new_tokens=6))
    assert trip["answer"].strip() == direct.response.text.strip()
    assert message_text({"content": [{"type": "text", "text": "a"}, {"text": "b"}]}) == "ab"
