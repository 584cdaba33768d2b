"""helpers.data.xtuner_sample: XTuner's own dataset and collate function, taken apart correctly."""
from __future__ import annotations

import copy

import pytest

from helpers.data.xtuner_sample import IGNORE_INDEX, collapse_runs, render_template
from helpers.data.xtuner_labels import masked_loss_demo, token_kinds

TEMPLATE = {"SYSTEM": "<S>{system}</S>", "INSTRUCTION": "<U>{input}</U><A>", "SUFFIX": "<E>"}


def test_render_template_image_run_goes_before_the_question():
    conv = [{"from": "human", "value": "问题?\n<image>"}, {"from": "gpt", "value": " 答案 "}]
    text = render_template(TEMPLATE, "sys", conv, 3)
    assert text == "<S>sys</S><U><img>" + "<IMG_CONTEXT>" * 3 + "</img>\n问题?</U><A>答案<E>"


def test_render_template_multi_turn_system_once_and_leading_answer_dropped():
    conv = [{"from": "gpt", "value": "orphan"},
            {"from": "human", "value": "<image>q1"}, {"from": "gpt", "value": "a1"},
            {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]
    text = render_template(TEMPLATE, "sys", conv, 1)
    assert text == "<S>sys</S><U><img><IMG_CONTEXT></img>\nq1</U><A>a1<E><U>q2</U><A>a2<E>"
    assert "orphan" not in text


def test_render_template_text_only_and_bad_role():
    conv = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    assert render_template(TEMPLATE, "s", conv, None) == "<S>s</S><U>q</U><A>a<E>"
    with pytest.raises(ValueError, match=r"conversations\[1\]\.from is 'bot'"):
        render_template(TEMPLATE, "s", [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}], None)


def test_collapse_runs():
    assert collapse_runs("a<IMG_CONTEXT><IMG_CONTEXT>b<IMG_CONTEXT>") == "a<IMG_CONTEXT> x 2b<IMG_CONTEXT> x 1"
    assert collapse_runs("no image") == "no image"


def test_token_kinds_codes_every_position():
    kinds = token_kinds([[1, 9, 9, 5, 6, 0]], [[-100, -100, -100, 5, 6, -100]], [[1, 1, 1, 1, 1, 0]], 9)
    assert kinds.tolist() == [[0, 1, 1, 2, 2, 3]]


def test_masked_loss_demo_ignores_prompt_positions():
    pytest.importorskip("torch")
    labels = [IGNORE_INDEX] * 20 + [3, 4, 5, 2]
    d = masked_loss_demo(labels, vocab_size=16, seed=1)
    assert d["loss_targets"] == 4
    assert d["loss"] == d["loss_by_hand"] == d["loss_prompt_scrambled"]
    assert d["loss_answer_changed"] < d["loss"]  # the answer token was made more likely
    assert masked_loss_demo(labels, 16, seed=1) == d


# ----------------------------------------------------------------------------- with XTuner

@pytest.fixture(scope="module")
def llava(small_llava):
    """The small synthetic set of conftest (16 photos, 32 questions, every record in train)."""
    return small_llava


@pytest.fixture(scope="module")
def ds(llava, tiny_model_dir):
    pytest.importorskip("xtuner")
    from helpers.data.xtuner_sample import load_xtuner_dataset

    return load_xtuner_dataset(llava[0], llava[1], model_path=tiny_model_dir)


def test_dataset_does_not_change_the_shared_template(ds):
    from xtuner.utils import PROMPT_TEMPLATE

    assert PROMPT_TEMPLATE.internlm2_chat.SYSTEM.endswith("<|im_end|>\n")  # XTuner's own, untouched
    assert ds.template["SYSTEM"] == "<|im_start|>system\n{system}<|im_end|>"  # the dataset's override


def test_build_sample_matches_rendering_and_masks_all_but_the_answer(ds):
    from helpers.data.xtuner_sample import build_sample
    from helpers.data.xtuner_labels import check_label_masking, label_spans, token_table
    from helpers.settings import XTUNER_SYSTEM_PROMPT

    tok = ds.tokenizer
    for i in range(0, len(ds), 5):
        s = build_sample(ds, i)
        assert s.system == XTUNER_SYSTEM_PROMPT
        assert s.decoded == tok.bos_token + s.rendered
        assert check_label_masking(s, tok) == []
        start, run = s.img_run
        assert run == 256 * s.tiles and s.tiles == s.pixel_values_shape[0] >= 1
        assert set(s.input_ids[start:start + run]) == {s.img_context_id}
        answer = s.record["conversations"][1]["value"]
        assert tok.decode([t for t in s.labels if t != IGNORE_INDEX]) == answer + "<|im_end|>"
        spans = label_spans(s, tok)
        assert spans[0]["start"] == 0 and spans[-1]["end"] == s.n_tokens
        assert all(a["end"] == b["start"] for a, b in zip(spans, spans[1:]))
        assert [r["loss"] for r in spans] == [False] * (len(spans) - 1) + [True]
        assert spans[-1]["text"] == answer + "<|im_end|>"
        assert any(r["text"] == f"<IMG_CONTEXT> x {run}" for r in spans)
        rows = token_table(s, tok)
        assert rows[-1]["token"] == "<|im_end|>" and rows[-1]["loss"]
        assert [r["pos"] for r in rows if r["loss"]] == s.loss_positions


def test_build_sample_leaves_the_record_as_it_was(ds):
    from helpers.data.xtuner_sample import build_sample

    before = copy.deepcopy(ds.data[3])
    a, b = build_sample(ds, 3), build_sample(ds, 3)
    assert ds.data[3] == before and "<image>" in ds.data[3]["conversations"][0]["value"]
    assert a.input_ids == b.input_ids and a.labels == b.labels
    with pytest.raises(IndexError):
        build_sample(ds, len(ds))


def test_check_label_masking_reports_each_kind_of_damage(ds):
    from helpers.data.xtuner_sample import build_sample
    from helpers.data.xtuner_labels import check_label_masking

    tok = ds.tokenizer
    good = build_sample(ds, 0)

    def damaged(**changes):
        s = copy.copy(good)
        for k, v in changes.items():
            setattr(s, k, v)
        return check_label_masking(s, tok)

    q = good.loss_positions[0] - 4  # a question/template token
    leak = list(good.labels)
    leak[q] = good.input_ids[q]
    assert any("not the answers" in p for p in damaged(labels=leak))
    shifted = list(good.labels)
    shifted[good.loss_positions[0]] = good.input_ids[0]
    assert any("differ from their input id" in p for p in damaged(labels=shifted))
    img = list(good.labels)
    img[good.img_run[0]] = good.img_context_id
    assert any("<IMG_CONTEXT> position carries loss" in p for p in damaged(labels=img))
    assert any("run has" in p for p in damaged(img_run=(good.img_run[0], good.img_run[1] - 1)))
    assert any("entries for" in p for p in damaged(labels=good.labels[:-1]))


def test_truncation_is_reported(llava, tiny_model_dir):
    pytest.importorskip("xtuner")
    from helpers.data.xtuner_sample import build_sample, load_xtuner_dataset
    from helpers.data.xtuner_labels import check_label_masking

    short = load_xtuner_dataset(llava[0], llava[1], model_path=tiny_model_dir, max_length=300)
    s = build_sample(short, 0)
    assert s.truncated and s.n_tokens == 300 < s.full_length
    assert any("max_length" in p for p in check_label_masking(s, short.tokenizer))


def test_unreadable_image_raises_instead_of_a_random_sample(llava, tiny_model_dir, tmp_path):
    pytest.importorskip("xtuner")
    import json
    import shutil

    from helpers.data.xtuner_sample import build_sample, load_xtuner_dataset

    train, root = llava
    records = json.loads(train.read_text(encoding="utf-8"))[:2]
    (tmp_path / "images").mkdir()
    src = root / records[0]["image"]
    data = src.read_bytes()
    (tmp_path / "images" / "cut.jpeg").write_bytes(data[: len(data) // 3])
    shutil.copyfile(root / records[1]["image"], tmp_path / "images" / "ok.jpeg")
    records[0]["image"], records[1]["image"] = "images/cut.jpeg", "images/ok.jpeg"
    (tmp_path / "t.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    bad = load_xtuner_dataset(tmp_path / "t.json", tmp_path, model_path=tiny_model_dir)
    with pytest.raises(ValueError, match=r"record 0 .*cut\.jpeg"):
        build_sample(bad, 0)
    assert build_sample(bad, 1).tiles >= 1


def test_load_xtuner_dataset_missing_inputs(tiny_model_dir, tmp_path):
    pytest.importorskip("xtuner")
    from helpers.data.xtuner_sample import load_xtuner_dataset

    with pytest.raises(FileNotFoundError, match="LLaVA file not found"):
        load_xtuner_dataset(tmp_path / "nope.json", tmp_path, model_path=tiny_model_dir)
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        load_xtuner_dataset(tmp_path / "nope.json", tmp_path, model_path=tmp_path)


def test_collated_batch_padding_mask_positions(ds):
    from xtuner.dataset.collate_fns import default_collate_fn

    from helpers.data.xtuner_sample import build_sample
    from helpers.data.xtuner_labels import describe_batch, plot_token_map

    from helpers.tiling import tile_count

    tiles = [tile_count(*r["image_wh"][0], min_num=ds.min_dynamic_patch, max_num=ds.max_dynamic_patch)
             for r in ds.data]
    picked = [build_sample(ds, tiles.index(min(tiles))), build_sample(ds, tiles.index(max(tiles)))]
    assert picked[0].n_tokens < picked[1].n_tokens
    batch = default_collate_fn([s.raw for s in picked])
    rows = describe_batch(batch)
    longest = picked[1].n_tokens
    assert [r["length"] for r in rows] == [s.n_tokens for s in picked]
    assert [r["padding"] for r in rows] == [longest - s.n_tokens for s in picked]
    assert rows[0]["pad_ids"] == [0] and rows[0]["pad_labels"] == [IGNORE_INDEX]
    assert rows[1]["pad_ids"] == [] and rows[1]["padding"] == 0
    assert [r["loss_tokens"] for r in rows] == [len(s.loss_positions) for s in picked]
    assert all(r["position_ids"] == f"0..{longest - 1}" for r in rows)
    assert [r["pixel_values"] for r in rows] == [s.pixel_values_shape for s in picked]
    assert describe_batch(batch["data"]) == rows
    fig = plot_token_map(batch, picked[0].img_context_id)
    assert len(fig.axes) == 1
    from helpers.display import figure_text

    text = figure_text(fig)
    assert "样本 0" in text and "位置（token）" in text and "填充 (padding)" in text


def test_summary_shows_the_image_relative_to_the_repository(ds):
    import dataclasses

    from helpers.data.xtuner_sample import build_sample
    from helpers.settings import REPO_ROOT

    s = dataclasses.replace(build_sample(ds, 0), image_path=str(REPO_ROOT / "artifacts" / "photo.jpeg"))
    first = s.summary().splitlines()[0]
    assert first.endswith("): artifacts/photo.jpeg") and str(REPO_ROOT) not in s.summary()
