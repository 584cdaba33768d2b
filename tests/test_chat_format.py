"""The chat format is written once (helpers.prompts): training data, XTuner's dataset and LMDeploy agree on it.

One sample of the course's own data goes through the three paths that build a prompt from it:
the course's renderer (what the CPU engine and the web UI send), XTuner's InternVL dataset (what the
model is trained on; the xtuner environment) and LMDeploy's chat template (what the GPU pipeline sends;
the lmdeploy environment, formatted on the CPU). Each must give the same text.
"""
import json

import pytest

from helpers import prompts
from helpers.settings import INTERNVL2_SYSTEM_PROMPT, XTUNER_SYSTEM_PROMPT, get_settings


@pytest.fixture(scope="module")
def sample():
    """The first record of the course's converted training data (``make data``)."""
    S = get_settings()
    train = S.llava_dir / "train.json"
    if not train.is_file():
        pytest.skip(f"{train} missing: run `make data`")
    record = json.loads(train.read_text(encoding="utf-8"))[0]
    raw, answer = (t["value"] for t in record["conversations"][:2])
    assert raw.count(prompts.IMAGE) == 1
    # Wherever the data file puts the mark, the prompt has the image first (XTuner's dataset does the same).
    question = prompts.with_image_marks(raw.replace(prompts.IMAGE, "").strip(), 1)
    return dict(train=train, root=S.data_root, question=question, answer=answer)


def test_the_training_pieces_are_the_model_template(sample):
    """XTuner's pieces (prompts.XTUNER_*) put together give the renderer's prompt, then the answer."""
    q = sample["question"]
    course = prompts.render([(q, None)], XTUNER_SYSTEM_PROMPT)
    pieces = prompts.XTUNER_SYSTEM.format(system=XTUNER_SYSTEM_PROMPT) + prompts.XTUNER_INSTRUCTION.format(input=q)
    assert pieces == course
    assert prompts.render([(q, sample["answer"])], XTUNER_SYSTEM_PROMPT) == \
        course + sample["answer"] + prompts.XTUNER_SUFFIX


def test_xtuner_dataset_trains_on_the_course_prompt(sample, tiny_model_dir):
    pytest.importorskip("xtuner")
    from helpers.data.xtuner_sample import build_sample, load_xtuner_dataset

    ds = load_xtuner_dataset(sample["train"], sample["root"], model_path=tiny_model_dir)
    built = build_sample(ds, 0)
    assert built.system == XTUNER_SYSTEM_PROMPT
    course = prompts.expand_images(prompts.render([(sample["question"], None)], XTUNER_SYSTEM_PROMPT),
                                   [built.tiles], built.tokens_per_tile)
    assert built.rendered == course + sample["answer"] + prompts.XTUNER_SUFFIX


@pytest.mark.parametrize("system", [XTUNER_SYSTEM_PROMPT, INTERNVL2_SYSTEM_PROMPT])
def test_lmdeploy_template_sends_the_course_prompt(sample, system):
    pytest.importorskip("lmdeploy")
    template = prompts.internvl2_chat_template(system).chat_template()
    messages = [{"role": "user", "content": sample["question"]}]
    assert template.messages2prompt(messages) == prompts.render([(sample["question"], None)], system)
    two_turns = messages + [{"role": "assistant", "content": sample["answer"]}, {"role": "user", "content": "哪个菜系？"}]
    assert template.messages2prompt(two_turns) == prompts.render(
        [(sample["question"], sample["answer"]), ("哪个菜系？", None)], system)
