"""Does the base model see? Attribute questions about held-out scenes, and dish names in an answer."""
from __future__ import annotations

import json
from pathlib import Path

from helpers.pretrain.scenes import BACKGROUNDS, CAPTION_PROMPTS, COLOURS, COUNTS, POSITIONS, SHAPES, Scene, questions
from helpers.pretrain.stage_data import FOOD_PROMPTS, food_caption


# ----------------------------------------------------------------------------- checking the result
ATTRIBUTES = {"count": 0, "colour": 1, "shape": 2, "position": 3, "background": 4}  # index in questions()


_VALUES = {"count": [f"{v}个" for v in COUNTS.values()], "colour": list(COLOURS), "shape": list(SHAPES),
           "position": list(POSITIONS), "background": list(BACKGROUNDS)}


def _expected(scene: Scene, attribute: str) -> str:
    return f"{COUNTS[scene.count]}个" if attribute == "count" else getattr(scene, attribute)


def answer_is_right(answer: str, scene: Scene, attribute: str) -> bool:
    """True when the answer names the scene's value of ``attribute`` and no other value of it.

    Example:
        >>> s = Scene(2, "红色", "圆形", "左边", "米色")
        >>> answer_is_right("它们是红色的。", s, "colour"), answer_is_right("红色和蓝色。", s, "colour")
        (True, False)
        >>> answer_is_right("两个红色的圆形，背景是浅蓝色。", s, "colour")
        True
    """
    if attribute != "background":
        # a background's name holds a colour's ("浅蓝色" holds "蓝色"): a described background is no colour answer
        for name in BACKGROUNDS:
            answer = answer.replace(name, "")
    right = _expected(scene, attribute)
    return right in answer and not any(v in answer for v in _VALUES[attribute] if v != right)


def check_attributes(model, tokenizer, heldout_json, n: int = 12, attributes=("colour", "shape", "count", "position"),
                     mode: str = "questions", max_new_tokens: int = 32) -> dict:
    """Ask a model about held-out scenes; score each attribute (greedy decoding).

    Args:
        model: a loaded InternVL2 model (``helpers.models.load_model``).
        tokenizer: its tokenizer.
        heldout_json: ``heldout.json`` of :func:`make_shapes_dataset`.
        n: scenes to ask about (the first n).
        attributes: which attributes to score (keys of :data:`ATTRIBUTES`).
        mode: "questions" asks one question per attribute; "caption" asks for a description
            once and scores every attribute in it.
        max_new_tokens: answer length limit.

    Returns:
        ``{"accuracy": {attribute: share right}, "answers": [{image, attribute, question, answer, right}]}``.
    """
    import torch

    from helpers.tiling import load_image, to_pixel_values

    if mode not in ("questions", "caption"):
        raise ValueError(f"mode must be 'questions' or 'caption', got {mode!r}")
    records = json.loads(Path(heldout_json).read_text(encoding="utf-8"))[:n]
    if not records:
        raise ValueError(f"{heldout_json} holds no held-out scenes")
    root = Path(heldout_json).parent
    rows = []
    for rec in records:
        scene = Scene(**rec["scene"])
        pv = to_pixel_values(load_image(root / rec["image"]), max_num=model.config.max_dynamic_patch)
        pv = pv.to(next(model.parameters()).dtype)
        qs = ([questions(scene)[ATTRIBUTES[a]][0] for a in attributes] if mode == "questions"
              else [CAPTION_PROMPTS[0]])
        with torch.no_grad():
            answers = model.batch_chat(tokenizer, pv.repeat(len(qs), 1, 1, 1), qs,
                                       dict(max_new_tokens=max_new_tokens, do_sample=False),
                                       num_patches_list=[len(pv)] * len(qs))
        if mode == "caption":
            answers = answers * len(attributes)
            qs = qs * len(attributes)
        for a, q, ans in zip(attributes, qs, answers):
            rows.append(dict(image=rec["image"], attribute=a, question=q, answer=ans,
                             right=answer_is_right(ans, scene, a)))
    acc = {a: round(sum(r["right"] for r in rows if r["attribute"] == a) / len(records), 3) for a in attributes}
    return dict(accuracy=acc, answers=rows)


def dish_names_in(text: str) -> list:
    """Dish names of the course catalogue that occur in ``text`` (the base must never say one).

    Example:
        >>> dish_names_in("图中的菜是麻婆豆腐"), dish_names_in("图中有两个红色的圆形。")
        (['麻婆豆腐'], [])
    """
    from helpers.foods import DISHES

    return [d.name for d in DISHES if d.name in text]


# ----------------------------------------------------------------------------- notebook 02's verdicts on the base
MODES = ("caption", "questions")  # describe the scene once, or one question per attribute
CAPTION_TEMPLATE = r"^图中有[一两三]个.+的.+，位于.+，背景是.+。$"  # the sentence pattern of every training caption
FOOD_QUESTIONS = (FOOD_PROMPTS[0], "图片中的菜叫什么名字?")  # the first is a training prompt, the second never was
MIN_COLOUR = 0.5  # colour accuracy the base must reach in both modes (chance: 1 in 10)
MIN_FLUENCY = 0.9  # share of captions in the training sentence pattern


def chance_levels() -> dict:
    """Accuracy of a uniform random guess per attribute: 1 / the number of values it takes.

    Returns:
        ``{attribute: chance}`` for colour, shape, count and position.

    Example:
        >>> chance_levels()["shape"]
        0.2
    """
    return {a: 1 / len(v) for a, v in (("colour", COLOURS), ("shape", SHAPES), ("count", COUNTS),
                                       ("position", POSITIONS))}


def attribute_report(model, tokenizer, heldout_json, n: int = 12) -> dict:
    """:func:`check_attributes` in both :data:`MODES` on the first ``n`` held-out scenes.

    Args:
        model: the loaded base model.
        tokenizer: its tokenizer.
        heldout_json: ``heldout.json`` of the shapes dataset.
        n: scenes asked about.

    Returns:
        ``{mode: {"accuracy": ..., "answers": [...]}}``.

    Example:
        >>> report = attribute_report(base, tok, info["data"]["heldout"])   # doctest: +SKIP
        >>> report["questions"]["accuracy"]["colour"] >= MIN_COLOUR          # doctest: +SKIP
        True
    """
    return {mode: check_attributes(model, tokenizer, heldout_json, n=n, mode=mode) for mode in MODES}


def attribute_table(report: dict) -> list:
    """Rows for notebook 02: accuracy per attribute in each mode, then the random-guess row (Chinese headers).

    Args:
        report: :func:`attribute_report`'s result.

    Returns:
        One row per mode (方式 and the accuracies), then 随机猜测 with :func:`chance_levels`, rounded.

    Example:
        >>> r = {"caption": {"accuracy": {"colour": 0.5}}}
        >>> attribute_table(r)[-1]
        {'方式': '随机猜测', 'colour': 0.1}
    """
    attrs = list(next(iter(report.values()))["accuracy"])
    chance = chance_levels()
    return ([{"方式": mode, **r["accuracy"]} for mode, r in report.items()]
            + [{"方式": "随机猜测", **{a: round(chance[a], 3) for a in attrs}}])


def above_chance(report: dict) -> dict:
    """The attributes each mode scored above a random guess.

    Args:
        report: :func:`attribute_report`'s result.

    Returns:
        ``{mode: [attribute, ...]}``.

    Example:
        >>> above_chance({"questions": {"accuracy": {"colour": 0.5, "shape": 0.1}}})
        {'questions': ['colour']}
    """
    chance = chance_levels()
    return {mode: [a for a, v in r["accuracy"].items() if v > chance[a]] for mode, r in report.items()}


def captions(report: dict) -> dict:
    """The base's description of each scene, from the caption mode of :func:`attribute_report`.

    Args:
        report: :func:`attribute_report`'s result.

    Returns:
        ``{image: description}``.

    Example:
        >>> captions({"caption": {"answers": [{"image": "a.jpg", "answer": "图中有一个红色的圆形。"}]}})
        {'a.jpg': '图中有一个红色的圆形。'}
    """
    return {r["image"]: r["answer"] for r in report["caption"]["answers"]}


def caption_fluency(report: dict) -> float:
    """Share of the base's descriptions that follow the training sentence pattern (:data:`CAPTION_TEMPLATE`).

    Args:
        report: :func:`attribute_report`'s result (its caption mode is read).

    Returns:
        A share between 0 and 1.

    Example:
        >>> caption_fluency({"caption": {"answers": [{"image": "a", "answer": "图中有两个红色的圆形，位于左边，背景是米色。"},
        ...                                          {"image": "b", "answer": "红色"}]}})
        0.5
    """
    import re

    said = captions(report)
    return sum(bool(re.match(CAPTION_TEMPLATE, a)) for a in said.values()) / len(said)


def caption_examples(report: dict, heldout_json, n_images: int = 4, n_questions: int = 8) -> list:
    """Printable lines: true caption, the base's description and a ✓/✗ per attribute; then the first questions.

    Args:
        report: :func:`attribute_report`'s result.
        heldout_json: the same ``heldout.json`` (for the true captions).
        n_images: scenes shown with their description.
        n_questions: question-mode answers shown.

    Returns:
        Lines of text (the first one empty, to set them apart from the table).

    Example:
        >>> for line in caption_examples(report, info["data"]["heldout"]):   # doctest: +SKIP
        ...     print(line)
    """
    from helpers.pretrain.scenes import caption

    records = json.loads(Path(heldout_json).read_text(encoding="utf-8"))
    said = captions(report)
    lines = [""]
    for rec in [r for r in records if r["image"] in said][:n_images]:
        marks = " ".join(f"{r['attribute']}{'✓' if r['right'] else '✗'}"
                         for r in report["caption"]["answers"] if r["image"] == rec["image"])
        lines.append(f"{rec['image']}  真实: {caption(Scene(**rec['scene']))}\n{'':>16}回答: {said[rec['image']]}  {marks}")
    lines += [f"{r['image']}  {r['question']} -> {r['answer']}  {'✓' if r['right'] else '✗'}"
              for r in report["questions"]["answers"][:n_questions]]
    return lines


def ask_about_foods(model, tokenizer, heldout_food_json, root, questions=FOOD_QUESTIONS, max_new_tokens: int = 40) -> dict:
    """Ask the base each of ``questions`` about every held-out food photo (greedy decoding).

    Args:
        model: the loaded base model.
        tokenizer: its tokenizer.
        heldout_food_json: ``heldout_food.json`` of the shapes dataset (one unseen photo per dish).
        root: the folder its image paths are relative to.
        questions: asked about each photo, in one batch.
        max_new_tokens: answer length limit.

    Returns:
        ``{"records": [...], "questions": [...], "answers": {image: [answer per question]}, "tiles": {image: n}}``.

    Example:
        >>> food = ask_about_foods(base, tok, info["data"]["heldout_food"], info["data"]["root"])   # doctest: +SKIP
        >>> set(food["tiles"].values())                                                              # doctest: +SKIP
        {1}
    """
    import torch

    from helpers.tiling import load_image, to_pixel_values

    records = json.loads(Path(heldout_food_json).read_text(encoding="utf-8"))
    answers, tiles = {}, {}
    for rec in records:
        pv = to_pixel_values(load_image(Path(root) / rec["image"]), max_num=model.config.max_dynamic_patch)
        tiles[rec["image"]] = pv.shape[0]
        with torch.no_grad():
            answers[rec["image"]] = model.batch_chat(tokenizer, pv.repeat(len(questions), 1, 1, 1), list(questions),
                                                     dict(max_new_tokens=max_new_tokens, do_sample=False),
                                                     num_patches_list=[pv.shape[0]] * len(questions))
    return dict(records=records, questions=list(questions), answers=answers, tiles=tiles)


def food_summary(food: dict) -> dict:
    """What :func:`ask_about_foods` found: descriptions, dish names said, and how the name question was answered.

    Args:
        food: :func:`ask_about_foods`'s result (the first question asks for the looks, the second for the name).

    Returns:
        ``photos``, ``answers`` (counts), ``exact`` (descriptions equal to the photo's true looks),
        ``described`` and ``named`` (the answers to each question, in record order), ``dish_names``
        (catalogue names said anywhere, sorted) and ``named_counts`` (the four most frequent name answers).

    Example:
        >>> food_summary(ask_about_foods(base, tok, heldout_food, root))["dish_names"]   # doctest: +SKIP
        []
    """
    from collections import Counter

    from helpers.foods import dish

    records, answers = food["records"], food["answers"]
    everything = [a for pair in answers.values() for a in pair]
    named = [answers[rec["image"]][1] for rec in records]
    return dict(photos=len(records), answers=len(everything),
                exact=sum(answers[rec["image"]][0] == food_caption(dish(rec["dish"])) for rec in records),
                described=[answers[rec["image"]][0] for rec in records], named=named,
                dish_names=sorted({n for a in everything for n in dish_names_in(a)}),
                named_counts=dict(Counter(named).most_common(4)))


def base_verdicts(report: dict, food: dict) -> dict:
    """Notebook 02's checks of the base, each True or False (what ``python -m helpers.pretrain`` exits on).

    Args:
        report: :func:`attribute_report`'s result.
        food: :func:`food_summary`'s result.

    Returns:
        ``{"colour_<mode>": ..., "fluent_captions": ..., "food_described": ..., "no_dish_names": ...}``.

    Example:
        >>> all(base_verdicts(report, food_summary(food)).values())   # doctest: +SKIP
        True
    """
    out = {f"colour_{mode}": r["accuracy"]["colour"] >= MIN_COLOUR for mode, r in report.items()}
    out["fluent_captions"] = caption_fluency(report) >= MIN_FLUENCY
    out["food_described"] = all(a.startswith("这是一道菜：") for a in food["described"])
    out["no_dish_names"] = food["dish_names"] == []
    return out
