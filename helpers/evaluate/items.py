"""The evaluation split: FoodieQA records as :class:`EvalItem` (question, images, answer, metadata) and how one answer is scored."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.data.llava import load_llava
from helpers.evaluate.scoring import LETTERS, parse_choice, score_course


MODES = ("course", "choice")


REQUIRED_META = ("question_type", "food_name", "cuisine", "choices", "answer")


# --------------------------------------------------------------------------- the split
@dataclass(frozen=True)
class EvalItem:
    """One question of a split, ready to ask."""

    id: str  # record id
    image: str  # absolute image path
    question: str  # the human turn without the <image> placeholder
    reference: str  # the training answer ("{choice}，图中的菜是{dish}")
    question_type: str  # FoodieQA question_type (cuisine_type, food_name, ...)
    food_name: str  # the dish
    cuisine: str  # the dish's cuisine (FoodieQA food_type)
    choices: tuple  # the four options
    answer: int  # index of the right option


def _field(path, index, record, dotted):
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{path}: record {index} (id {record.get('id')!r}) has no field {dotted!r}")
        value = value[key]
    return value


def load_split(path, image_root=None, limit: int | None = None) -> list:
    """Read a LLaVA split written by :mod:`helpers.data.llava` into :class:`EvalItem` s.

    Args:
        path: ``train.json`` / ``val.json`` (records with ``meta``).
        image_root: folder relative ``image`` paths start from (default: ``Settings.data_root``,
            the ``image_folder`` XTuner trains with); absolute paths are kept.
        limit: keep the first ``limit`` records (None: all).

    Returns:
        A list of :class:`EvalItem`.

    Raises:
        ValueError: a record lacks a field, or its answer index is outside its choices (the
            message names the file, record and field). FileNotFoundError: an image is missing.

    Example:
        >>> items = load_split("artifacts/data/llava-synth/val.json")  # doctest: +SKIP
        >>> items[0].question_type                                     # doctest: +SKIP
        'cuisine_type'
    """
    if image_root is None:
        from helpers.settings import get_settings

        image_root = get_settings().data_root
    path, root = Path(path), Path(image_root)
    items = []
    for i, rec in enumerate(load_llava(path)[:limit]):
        turns = _field(path, i, rec, "conversations")
        if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
            raise ValueError(f"{path}: record {i} field 'conversations' needs a human and a gpt turn")
        human, gpt = (str(_field(path, i, t, "value")) for t in turns[:2])
        meta = {k: _field(path, i, rec, f"meta.{k}") for k in REQUIRED_META}
        choices = meta["choices"]
        if not isinstance(choices, list) or not isinstance(meta["answer"], int) \
                or not 0 <= meta["answer"] < len(choices) or len(choices) > len(LETTERS):
            raise ValueError(f"{path}: record {i} field 'meta.answer' ({meta['answer']!r}) is not an index "
                             f"into meta.choices ({choices!r})")
        image = Path(str(_field(path, i, rec, "image")))
        image = image if image.is_absolute() else root / image
        if not image.is_file():
            raise FileNotFoundError(f"{path}: record {i} field 'image': {image} does not exist")
        items.append(EvalItem(id=str(rec.get("id", i)), image=str(image),
                              question=human.replace("<image>", "").strip(), reference=gpt.strip(),
                              question_type=str(meta["question_type"]), food_name=str(meta["food_name"]),
                              cuisine=str(meta["cuisine"]), choices=tuple(str(c) for c in choices),
                              answer=meta["answer"]))
    if not items:
        raise ValueError(f"{path}: no records to evaluate")
    return items


def score_item(item: EvalItem, text: str, mode: str, dishes) -> dict:
    """One scored row: the item's fields, the answer and its verdict in ``mode``."""
    row = dict(id=item.id, image=item.image, question_type=item.question_type, cuisine=item.cuisine,
               food_name=item.food_name, expected=item.choices[item.answer], reference=item.reference,
               answer=text)
    if mode == "course":
        row.update(score_course(text, item.choices[item.answer], item.food_name, item.choices, dishes))
    else:
        picked = parse_choice(text, item.choices)
        row.update(picked=None if picked is None else LETTERS[picked], parsed=picked is not None,
                   correct=picked == item.answer)
    return row
