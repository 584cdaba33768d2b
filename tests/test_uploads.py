"""Tests for helpers.serve.uploads: phone photos get no false notes, refused uploads do not stay on
disk, and one long message is neither answered nor replayed on every later turn."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from helpers.settings import get_settings
from helpers.serve.uploads import UploadError, load_upload


def photo(size=(320, 240)):
    img = Image.new("RGB", size, (200, 80, 40))
    img.paste((250, 220, 60), (40, 40, 120, 120))
    return img


def test_iphone_mpo_is_not_called_an_animation(tmp_path):
    path = tmp_path / "IMG_0001.jpg"
    photo().save(path, "MPO", save_all=True, append_images=[photo((160, 120))])
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2  # what Pillow reports for an iPhone photo
    image, notes = load_upload(path)
    assert image.size == (320, 240) and notes == []


def test_exif_orientation_0_is_not_called_a_rotation(tmp_path):
    path = tmp_path / "zero.jpg"
    exif = Image.Exif()
    exif[0x0112] = 0  # outside 1..8: exif_transpose leaves the pixels alone
    photo((80, 40)).save(path, exif=exif.tobytes())
    image, notes = load_upload(path)
    assert image.size == (80, 40) and notes == []


def test_opaque_rgba_gets_no_transparency_note(tmp_path):
    path = tmp_path / "opaque.png"
    photo().convert("RGBA").save(path)
    image, notes = load_upload(path)
    assert image.mode == "RGB" and notes == []


def test_discard_upload_only_inside_the_upload_folder(tmp_path):
    from helpers.serve.uploads import discard_upload

    folder = tmp_path / "gradio"
    upload = folder / "3f2a" / "menu.txt"
    upload.parent.mkdir(parents=True)
    upload.write_text("not a photo")
    outside = tmp_path / "example.jpg"
    outside.write_text("x")
    assert discard_upload(outside, folder) is False and outside.exists()
    assert discard_upload(upload, folder) is True and not upload.exists() and not upload.parent.exists()
    assert discard_upload(folder / "x\x00y", folder) is False


def test_bound_history_keeps_the_image_turn_and_the_newest_turns():
    from helpers.serve.uploads import bound_history, message_problem

    first = (("这是什么菜?", "IMAGE"), "烤鸭")
    history = [first] + [(f"问题{i}", "回答" * 50) for i in range(20)]
    kept, dropped = bound_history(history, max_chars=500)
    assert kept[0] is first and kept[-1] == history[-1]
    assert sum(len(q) + len(a) for q, a in kept[1:]) <= 500 and dropped == len(history) - len(kept) > 0
    assert bound_history(history[:3], 10_000) == (history[:3], 0)
    assert message_problem("问" * 2001, 2000) and message_problem("问" * 2000, 2000) is None


# --------------------------------------------------------------------------- in the app


class FakeEngine:
    """Records the history it is given; answers with a fixed short text."""

    max_concurrency, model_path = 1, "fake-model"

    def __init__(self):
        self.histories = []

    def session(self):
        return SimpleNamespace(history=[], close=lambda: None)

    def chat(self, prompt, session=None, gen_config=None, stream_response=False):
        self.histories.append(list(session.history))
        yield SimpleNamespace(text="这是烤鸭。" * 20, finish_reason="stop")


def handlers(demo) -> dict:
    return {fn.name: fn.fn for fn in demo.fns.values()}


@pytest.fixture()
def app(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from helpers.serve.webui import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    engine = FakeEngine()
    demo = build_app(engine, get_settings(), preload=False, examples=[])
    return demo, engine, handlers(demo)


def test_refused_upload_is_deleted_from_gradios_folder(app, tmp_path):
    demo, _, fns = app
    refused = tmp_path / "gradio" / "abc123" / "menu.txt"
    refused.parent.mkdir(parents=True)
    refused.write_bytes(b"\x00" * 4096)
    state, messages, _, _ = fns["on_upload"](str(refused), None)
    assert "不是图片" in messages[-1]["content"]
    assert not refused.exists()
    kept = tmp_path / "dish.jpg"  # a file outside the upload folder (an example photo) stays
    kept.write_text("also not a photo")
    fns["on_upload"](str(kept), None)
    assert kept.exists()


def test_long_message_is_refused_and_history_is_bounded(app, tmp_path):
    demo, engine, fns = app
    S = get_settings()
    path = tmp_path / "gradio" / "h" / "dish.jpg"
    path.parent.mkdir(parents=True)
    photo().save(path)
    state, *_ = fns["on_upload"](str(path), None)
    state, messages, _ = fns["on_send"]("问" * 100_000, state)  # a 100 KB message
    assert "超过上限" in messages[-1]["content"] and state["pending"] is None
    for i in range(40):
        state, _, _ = fns["on_send"](f"第 {i} 个问题：" + "这道菜怎么做?" * 20, state)
        for state, _ in fns["on_chat"](None, state, 32, 0.8, 0.8, False):
            pass
    assert len(engine.histories) == 40  # the long message never reached the engine
    last = engine.histories[-1]
    assert isinstance(last[0][0], tuple)  # the photo's turn is still given
    assert sum(len(q) + len(a) for q, a in last[1:]) <= S.max_history_chars < sum(
        len(q if isinstance(q, str) else q[0]) + len(a) for q, a in state["history"])
    assert f"每条问题最多 {S.max_message_chars} 字" in str(demo.config)


def test_a_large_photo_decodes_whole_and_cut_or_broken_files_are_refused_under_lmdeploys_setting(tmp_path):
    import numpy as np
    from PIL import Image, ImageFile

    from helpers.serve.uploads import UploadError, load_upload

    photo = tmp_path / "big.jpg"  # several of Pillow's 64 KiB read blocks
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(photo, quality=95)
    assert photo.stat().st_size > 4 * 65536
    cut = tmp_path / "cut.png"
    Image.open(photo).save(tmp_path / "whole.png")
    cut.write_bytes((tmp_path / "whole.png").read_bytes()[:-5000])
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what `import lmdeploy` does process-wide
    try:
        image, notes = load_upload(photo)
        with pytest.raises(UploadError, match="已损坏"):
            load_upload(cut)
        broken = bytearray((tmp_path / "whole.png").read_bytes())  # complete, but part of its data stream is garbage
        for i in range(len(broken) // 3, len(broken) // 3 + 200):
            broken[i] ^= 0x5A
        (tmp_path / "broken.png").write_bytes(bytes(broken))
        with pytest.raises(UploadError, match="已损坏"):
            load_upload(tmp_path / "broken.png")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # put back for LMDeploy
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(photo).convert("RGB"))) and notes == []
