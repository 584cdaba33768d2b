"""Checks of a raw FoodieQA ``sivqa_tidy.json``: entries, answers, texts, and the photos they name.

Example:
    >>> from helpers.data.foodieqa_checks import check_foodieqa
    >>> check_foodieqa("missing.json", ".").exit_code
    1
"""
from __future__ import annotations

import re
import time

from helpers.data.check_report import CheckReport, Problem, _check_images, _finish
from helpers.data.image_checks import ImageLimits
from helpers.data.jsonio import not_a_record, read_json_records
from helpers.data.pathsafe import find_image_root, safe_image_path, short_repr
from helpers.data.xtuner_rules import IMAGE_TOKEN, reserved_tokens_in

# FoodieQA's single-image question types as far as the paper and files show, plus the
# synthetic set's; an unknown one is only a warning unless the caller passes its own list.
KNOWN_QUESTION_TYPES = frozenset({
    "cuisine_type", "food_name", "main_ingredient", "ingredients", "flavor", "taste",
    "region", "regional", "present", "cooking_skills", "cooking_method", "food_type",
})
_ANSWER = re.compile(r"\s*[0-9]{1,9}\s*")  # ASCII digits only: "²".isdigit() is True, int("²") fails
_ANSWER = re.compile(r"\s*[0-9]{1,9}\s*")  # ASCII digits only: "²".isdigit() is True, int("²") fails


def check_foodieqa_record(rec, question_types=None) -> list:
    """Structural checks of one FoodieQA ``sivqa_tidy.json`` entry (no file access).

    Args:
        rec: the entry.
        question_types: allowed types; None = :data:`KNOWN_QUESTION_TYPES`, and then an
            unknown type is a warning (the real file may use types not listed there).

    Returns:
        ``[(field, kind, message, severity), ...]``.

    Example:
        >>> [k for _, k, _, _ in check_foodieqa_record({"question": "q"})][:2]
        ['missing_key', 'missing_key']
    """
    unusable = not_a_record(rec)
    if unusable:
        return unusable
    out = []
    add = lambda f, k, m, s="error": out.append((f, k, m, s))  # noqa: E731
    for key, typ in (("question", str), ("choices", list), ("answer", str), ("question_type", str),
                     ("food_meta", dict)):
        if key not in rec:
            add(key, "missing_key", f"no '{key}'")
        elif not isinstance(rec[key], typ):
            add(key, "wrong_type", f"{key} must be {typ.__name__}, got {type(rec[key]).__name__}")
    if isinstance(rec.get("question"), str) and not rec["question"].strip():
        add("question", "empty_question", "question is empty")
    choices = rec.get("choices") if isinstance(rec.get("choices"), list) else None
    if choices is not None:
        if not choices:
            add("choices", "empty_choices", "choices is empty")
        elif len(choices) != 4:
            add("choices", "wrong_choice_count", f"FoodieQA has 4 choices, got {len(choices)}")
        for j, c in enumerate(choices):
            if not isinstance(c, str) or not c.strip():
                add(f"choices[{j}]", "empty_choice", f"choice {j} must be a non-empty string, got {short_repr(c)}")
    answer = rec.get("answer")
    if isinstance(answer, str):
        if not _ANSWER.fullmatch(answer):
            add("answer", "bad_answer", f"answer must be an index string like '2', got {short_repr(answer)}")
        elif choices and not int(answer) < len(choices):
            add("answer", "answer_out_of_range", f"answer {answer.strip()} but only {len(choices)} choices")
    _check_foodieqa_text(rec, add)
    qtype = rec.get("question_type")
    if isinstance(qtype, str):
        allowed = KNOWN_QUESTION_TYPES if question_types is None else frozenset(question_types)
        if qtype not in allowed:
            add("question_type", "unknown_question_type", f"{short_repr(qtype)} not in {sorted(allowed)}",
                "warning" if question_types is None else "error")
    meta = rec.get("food_meta") if isinstance(rec.get("food_meta"), dict) else None
    if meta is not None:
        for key in ("food_file", "food_name"):
            if key not in meta:
                add(f"food_meta.{key}", "missing_key", f"no 'food_meta.{key}'")
            elif not isinstance(meta[key], str) or not meta[key].strip():
                add(f"food_meta.{key}", "wrong_type",
                    f"food_meta.{key} must be a non-empty string, got {short_repr(meta[key])}")
        if "food_type" in meta and not isinstance(meta["food_type"], str):
            add("food_meta.food_type", "wrong_type", "food_meta.food_type (cuisine) must be a string")
    return out


def _check_foodieqa_text(rec: dict, add) -> None:
    """The texts the converter puts into the training sample must not hold XTuner's special tokens."""
    texts = [("question", rec.get("question"))]
    if isinstance(rec.get("choices"), list):
        texts += [(f"choices[{j}]", c) for j, c in enumerate(rec["choices"])]
    if isinstance(rec.get("food_meta"), dict):
        texts.append(("food_meta.food_name", rec["food_meta"].get("food_name")))
    for fld, text in texts:
        if not isinstance(text, str):
            continue
        found = reserved_tokens_in(text)
        if found:
            add(fld, "reserved_token", f"{', '.join(found)} written in the text: the tokenizer makes it a special "
                "token (image slots or turn markers), not text")
        if IMAGE_TOKEN in text and fld != "question":
            add(fld, "image_token_in_answer", f"<image> in {fld}, which becomes part of the answer")
        elif IMAGE_TOKEN in text and not text.replace(IMAGE_TOKEN, "").strip():
            add(fld, "empty_question", "the question is empty apart from <image>")
        elif IMAGE_TOKEN in text:
            add(fld, "image_token_in_question", "the question already contains <image>; the converter "
                "removes it and puts exactly one after the question", "warning")


def check_foodieqa(file, image_root, workers: int | None = None, question_types=None, **limits) -> CheckReport:
    """Check a raw FoodieQA ``sivqa_tidy.json`` and the images its entries name.

    Args:
        file: the FoodieQA JSON list.
        image_root: the folder ``food_meta.food_file`` is relative to (``image_root/images``
            is taken instead when it holds the files; see :func:`find_image_root`).
        workers: image-check processes (None = CPU count).
        question_types: allowed ``question_type`` values (see :func:`check_foodieqa_record`).
        **limits: :class:`ImageLimits` fields.

    Returns:
        A :class:`CheckReport`.

    Example:
        >>> check_foodieqa("missing.json", ".").exit_code
        1
    """
    t0 = time.perf_counter()
    lim = ImageLimits(**limits)
    report = CheckReport(str(file), str(image_root))
    records = read_json_records(file, report.problems)
    if records is None:
        return _finish(report, [], {}, t0)
    root = find_image_root(image_root, [r["food_meta"].get("food_file") for r in records
                                        if isinstance(r, dict) and isinstance(r.get("food_meta"), dict)])
    report.image_root = str(root)
    refs = []
    for i, first in duplicate_question_ids(records).items():
        report.problems.append(Problem(report.file, i, "question_id", "duplicate_id",
                                       f"question_id already used by record {first}", "warning"))
    for i, rec in enumerate(records):
        problems = check_foodieqa_record(rec, question_types)
        for fld, kind, msg, sev in problems:
            report.problems.append(Problem(report.file, i, fld, kind, msg, sev))
        meta = rec.get("food_meta") if isinstance(rec, dict) else None
        if not isinstance(meta, dict) or any(f == "food_meta.food_file" for f, *_ in problems):
            continue
        food_file = meta["food_file"]
        path, err = safe_image_path(root, food_file)
        if err:
            report.problems.append(Problem(report.file, i, "food_meta.food_file", *err))
        else:
            refs.append((i, "food_meta.food_file", path))
    images = _check_images(report, refs, lim, workers)
    return _finish(report, records, images, t0)


def duplicate_question_ids(records: list) -> dict:
    """``{index: index of the first record with the same question_id}`` for every repeat.

    Example:
        >>> duplicate_question_ids([{"question_id": "a"}, {"question_id": "b"}, {"question_id": "a"}])
        {2: 0}
    """
    first, out = {}, {}
    for i, rec in enumerate(records):
        qid = rec.get("question_id") if isinstance(rec, dict) else None
        if isinstance(qid, (str, int)) and not isinstance(qid, bool):
            if qid in first:
                out[i] = first[qid]
            first.setdefault(qid, i)
    return out
