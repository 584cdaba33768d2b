"""The tiny model's tokenizer: a corpus from the course's own words, InternLM2's special tokens and chat template, a BPE trained on it."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from helpers.env import need
from helpers.model_dir import write_json
from helpers.foods import CUISINES, DISHES, LOCATIONS
from helpers.settings import INTERNVL2_SYSTEM_PROMPT, XTUNER_SYSTEM_PROMPT


BASE_SPECIAL = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in InternLM2


ADDED_SPECIAL = ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                 "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")


CJK_CHAR = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"  # CJK ideographs and punctuation


BPE_VOCAB = 8000  # target size of the learned vocabulary (the course text saturates a little below)


# --------------------------------------------------------------------------- tokenizer
COLOURS = (("红色", "red"), ("绿色", "green"), ("蓝色", "blue"), ("黄色", "yellow"), ("白色", "white"),
           ("黑色", "black"), ("橙色", "orange"), ("紫色", "purple"), ("粉色", "pink"), ("棕色", "brown"),
           ("灰色", "grey"), ("金黄色", "golden"))


SHAPES = (("圆形", "circle"), ("正方形", "square"), ("三角形", "triangle"), ("长方形", "rectangle"),
          ("星形", "star"), ("椭圆", "ellipse"), ("圆环", "ring"), ("菱形", "diamond"), ("线条", "line"))


POSITIONS = (("左上角", "top left corner"), ("右上角", "top right corner"), ("左下角", "bottom left corner"),
             ("右下角", "bottom right corner"), ("中间", "center"), ("左边", "left side"), ("右边", "right side"),
             ("上方", "top"), ("下方", "bottom"))


COUNTS = (("一", "one"), ("两", "two"), ("三", "three"), ("四", "four"), ("五", "five"), ("六", "six"),
          ("七", "seven"), ("八", "eight"), ("九", "nine"), ("十", "ten"))


def tokenizer_corpus() -> list:
    """The text the tiny tokenizer is trained on (deterministic, a few tens of thousands of lines).

    Dish names, cuisines, ingredients and looks from :mod:`helpers.foods`; FoodieQA-style
    questions and answers; both system prompts; the chat markup; and Chinese/English captions
    and questions about shapes, colours, counts and positions for the pre-training stage.

    Returns:
        List of strings.
    """
    lines = [INTERNVL2_SYSTEM_PROMPT, XTUNER_SYSTEM_PROMPT, "system", "user", "assistant",
             "图片中的食物通常属于哪个菜系?", "图片中的菜叫什么名字?", "请描述这张图片。", "Describe this image.",
             "The food in the picture usually belongs to which cuisine?", "What is the name of the dish in the picture?",
             "Answer with the option's letter from the given choices directly.", "请直接回答选项字母。",
             "Answer the question using a single word or phrase.", "请用一句话回答。", "0 1 2 3 4 5 6 7 8 9 10 100"]
    lines = lines * 3  # the fixed phrases appear once; repeat them so BPE still learns their characters
    cuisines = list(CUISINES)
    for i, d in enumerate(DISHES):
        en = CUISINES[d.cuisine]
        ings = "、".join(d.main_ingredient)
        choices = [d.cuisine] + [cuisines[(i + k * 5) % len(cuisines)] for k in (1, 2, 3)]
        lines += [
            f"{d.cuisine}，图中的菜是{d.name}", f"图中的菜是{d.name}。", f"这道菜属于{d.cuisine}。",
            f"{d.name}是{d.cuisine}的代表菜，主要食材是{ings}。", f"{d.looks}。", f"图片里{d.looks}。",
            f"{d.name}（{d.name_en}）", f"This is {d.name_en}, a dish of {en}.", f"The dish is {d.name_en}.",
            f"{d.name_en} belongs to {en}.", f"选项：{'、'.join(choices)}", f"Choices: {', '.join(CUISINES[c] for c in choices)}",
            "A. {} B. {} C. {} D. {}".format(*choices), f"答案：{d.cuisine}", f"Answer: {en}",
        ] + [f"这张照片是在{loc}拍的，菜是{d.name}。" for loc in LOCATIONS]
    for (cz, ce), (sz, se), (nz, ne), (pz, pe) in itertools.product(COLOURS, SHAPES, COUNTS, POSITIONS):
        lines += [f"图中有{nz}个{cz}的{sz}，位于{pz}。", f"There are {ne} {ce} {se}s in the {pe} of the image."]
    for (cz, ce), (sz, se), (pz, pe) in itertools.product(COLOURS, SHAPES, POSITIONS):
        lines += [f"{pz}有一个大的{cz}{sz}和一个小的{sz}。", f"A large {ce} {se} is in the {pe}.",
                  f"图中有几个{cz}的{sz}？", f"How many {ce} {se}s are in the image?", f"{cz}的{sz}在图片的什么位置？",
                  f"Where is the {ce} {se}?", f"{sz}是什么颜色的？", f"What colour is the {se}?"]
    return lines


def make_chat_template(default_system: str = INTERNVL2_SYSTEM_PROMPT) -> str:
    """Jinja chat template rendering InternVL2's internlm2-chat prompt (no BOS; the tokenizer adds it).

    ``<|im_start|>system\\n{sys}<|im_end|><|im_start|>user\\n{q}<|im_end|><|im_start|>assistant\\n``;
    a leading system message replaces ``default_system``; list contents render their text parts
    and ``<image>\\n`` for image parts.

    Args:
        default_system: system prompt used when the messages bring none.

    Returns:
        The template string (for tokenizer_config.json ``chat_template``).
    """
    sys_json = json.dumps(default_system, ensure_ascii=False)
    return (
        "{%- macro text(c) -%}{%- if c is string -%}{{ c }}{%- else -%}{%- for p in c -%}"
        "{%- if p['type'] == 'text' -%}{{ p['text'] }}{%- elif p['type'] in ['image', 'image_url'] -%}{{ '<image>\\n' }}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = text(messages[0]['content']) -%}"
        "{%- set turns = messages[1:] -%}{%- else -%}{%- set system = " + sys_json + " -%}{%- set turns = messages -%}"
        "{%- endif -%}{{ '<|im_start|>system\\n' + system + '<|im_end|>' }}"
        "{%- for m in turns -%}{{ '<|im_start|>' + m['role'] + '\\n' + text(m['content']) + '<|im_end|>' }}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def train_tokenizer(out_dir, vocab_size: int = BPE_VOCAB, model_max_length: int = 32768) -> int:
    """Train the byte-level BPE tokenizer and write tokenizer.json + tokenizer_config.json + special_tokens_map.json.

    Args:
        out_dir: directory to write into.
        vocab_size: target learned vocabulary (specials included).
        model_max_length: recorded in tokenizer_config.json.

    Returns:
        The full vocabulary size (learned + added special tokens) = the model's vocab_size.
    """
    tk = need("tokenizers")
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers

    out_dir = Path(out_dir)
    tok = tk.Tokenizer(models.BPE(unk_token="<unk>"))
    # Chinese has no spaces and no segmenter is available offline: each CJK character is its own
    # pre-token (so tokens never split or glue characters), everything else is GPT-2 byte-level.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tk.Regex(CJK_CHAR), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(BASE_SPECIAL),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_SPECIAL])
    # BOS on every encode, as InternLM2's tokenizer does (XTuner relies on it for the first turn).
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", 1)]),
    ])
    for i, t in enumerate(BASE_SPECIAL):
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"tokenizer: {t} got id {tok.token_to_id(t)}, expected {i}")
    tok.save(str(out_dir / "tokenizer.json"))
    specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>",
                    additional_special_tokens=list(ADDED_SPECIAL))
    tok_cfg = dict(tokenizer_class="PreTrainedTokenizerFast", add_bos_token=True, add_eos_token=False,
                   clean_up_tokenization_spaces=False, model_max_length=model_max_length, padding_side="right",
                   **specials, chat_template=make_chat_template())
    write_json(out_dir / "tokenizer_config.json", tok_cfg)
    write_json(out_dir / "special_tokens_map.json", specials)
    return tok.get_vocab_size(with_added_tokens=True)
