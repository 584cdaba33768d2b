"""helpers.prompts: the one chat format, equal to what the model's own chat() builds."""
from __future__ import annotations

import pytest

from helpers import prompts
from helpers.settings import INTERNVL2_SYSTEM_PROMPT, XTUNER_SYSTEM_PROMPT

QUESTION = "图片中的菜叫什么名字?"


def test_render_is_the_internlm2_chat_format():
    text = prompts.render([("<image>\nQ1", "A1"), ("Q2", None)], "S")
    assert text == ("<|im_start|>system\nS<|im_end|><|im_start|>user\n<image>\nQ1<|im_end|>"
                    "<|im_start|>assistant\nA1<|im_end|><|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n")
    assert prompts.stop_marker() == "<|im_end|>"
    assert set(prompts.SYSTEM_PROMPTS.values()) == {INTERNVL2_SYSTEM_PROMPT, XTUNER_SYSTEM_PROMPT}


def test_unknown_template_is_refused_by_name():
    with pytest.raises(ValueError, match="phi3-chat"):
        prompts.render([("hi", None)], "S", template="phi3-chat")


def test_image_marks_go_first_and_expand_in_order():
    assert prompts.with_image_marks(QUESTION, 2) == "<image>\n<image>\n" + QUESTION
    assert prompts.with_image_marks("<image>\n" + QUESTION, 1) == "<image>\n" + QUESTION
    out = prompts.expand_images("<image><image>", [1, 2], num_image_token=3)
    assert out == "<img>" + "<IMG_CONTEXT>" * 3 + "</img><img>" + "<IMG_CONTEXT>" * 6 + "</img>"
    with pytest.raises(ValueError, match="fewer <image> marks"):
        prompts.expand_images("no marks", [1])


def test_image_marks_can_go_after_the_question():
    after = prompts.with_image_marks(QUESTION, 1, position="after")
    assert after == QUESTION + "\n<image>"
    assert prompts.with_image_marks(after, 1, position="after") == after  # a present mark is kept
    text = prompts.expand_images(prompts.render([(after, None)], "S"), [1], num_image_token=2)
    assert QUESTION + "\n<img><IMG_CONTEXT><IMG_CONTEXT></img><|im_end|>" in text
    with pytest.raises(ValueError, match="position"):
        prompts.with_image_marks(QUESTION, 1, position="middle")


@pytest.mark.parametrize("question, tiles, history", [
    (QUESTION, [3], []),
    (f"{QUESTION}\n<image>", [1], []),
    (QUESTION, [], []),
    ("它属于哪个菜系?", [], [("<image>\n" + QUESTION, "川菜")]),
    ("再看这张", [2], [("<image>\n" + QUESTION, "川菜")]),
])
def test_build_query_equals_the_models_own_prompt(tiny_model, question, tiles, history):
    model, _ = tiny_model
    ours = prompts.build_query(model, question, tiles, history)
    assert ours == model._build_prompt(question, history, tiles)  # the course model's chat() prompt
    assert ours[0].count("<IMG_CONTEXT>") == sum(tiles) * model.num_image_token


def test_build_query_uses_the_given_system_message(tiny_model):
    model, _ = tiny_model
    prompt, _ = prompts.build_query(model, QUESTION, [], system_message=XTUNER_SYSTEM_PROMPT)
    assert prompt.startswith("<|im_start|>system\n" + XTUNER_SYSTEM_PROMPT + "<|im_end|>")


def test_stop_ids_are_turn_end_then_eos(tiny_model):
    _, tok = tiny_model
    ids = prompts.stop_token_ids(tok)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_end|>") and ids[1:] == [tok.eos_token_id]
