"""Does the base model see? Attribute questions about held-out scenes, and dish names in an answer."""
from __future__ import annotations

import json
from pathlib import Path

from helpers.pretrain.scenes import BACKGROUNDS, CAPTION_PROMPTS, COLOURS, COUNTS, POSITIONS, SHAPES, Scene, questions


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
    """
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
