"""What XTuner 0.2.0's ``InternVL_V1_5_Dataset`` can load and train on: one place for the rules.

Every rule here is a way a record passes into training and then breaks it, or silently trains
on something else (all read from ``xtuner/dataset/internvl_dataset.py``):

* structure: roles, turn order, one ``<image>`` per sample, no empty question or answer;
* text: the tokenizer turns ``<IMG_CONTEXT>``, ``<img>``, ``</img>`` written in a turn into the
  image tokens themselves (more image slots than image features), and ``<|im_start|>`` /
  ``<|im_end|>`` into turn markers (the model learns to end its turn mid-answer);
* ``length``: fed as is to the length-grouped sampler (a torch int64 tensor);
* sequence length: XTuner cuts ``input_ids`` at ``max_length`` without a word, so a long sample
  loses its answer's end, or all of it (:func:`length_problems`).

Image paths are checked by :mod:`helpers.data.pathsafe`, image files by :mod:`helpers.data.image_checks`.

Example:
    >>> rec = {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>这是什么?"},
    ...                                           {"from": "gpt", "value": "烤鸭<|im_end|>"}]}
    >>> [k for _, k, _, _ in check_llava_record(rec)]
    ['reserved_token']
"""
from __future__ import annotations

from helpers.data.jsonio import not_a_record
from helpers.data.pathsafe import short_repr
from helpers.prompts import (IMAGE, IMAGE_MARKERS, IMG_CONTEXT, IMG_END, IMG_START, TURN_TOKENS,  # noqa: F401
                             XTUNER_INSTRUCTION, XTUNER_SUFFIX, XTUNER_SYSTEM)

IMAGE_TOKEN = IMAGE
ROLES = ("human", "gpt")
# Written into text, these become the special ids themselves (InternVL2's tokenizer).
IMAGE_SLOT_TOKENS = (IMG_CONTEXT, IMG_START, IMG_END)
RESERVED_TOKENS = IMAGE_SLOT_TOKENS + TURN_TOKENS
# The sampler sorts lengths in a torch int64 tensor; no real sample is longer than the
# context window, and 2**31 - 1 leaves any sum of lengths far from overflowing.
MAX_LENGTH_FIELD = 2**31 - 1

def reserved_tokens_in(text: str) -> list:
    """The special tokens of :data:`RESERVED_TOKENS` written literally in ``text``.

    Example:
        >>> reserved_tokens_in("a <IMG_CONTEXT> b")
        ['<IMG_CONTEXT>']
    """
    return [t for t in RESERVED_TOKENS if t in text]


def check_llava_record(rec, require_image: bool = True) -> list:
    """Structural and text checks of one LLaVA record (no file access).

    Args:
        rec: the record (any JSON value, or an :class:`helpers.data.jsonio.InvalidRecord`).
        require_image: a record without ``image`` is an error.

    Returns:
        ``[(field, kind, message, severity), ...]``; empty when XTuner can train on it.

    Example:
        >>> check_llava_record({"image": "a.jpg", "conversations": []})[0][1]
        'empty_conversation'
    """
    unusable = not_a_record(rec)
    if unusable:
        return unusable
    out = []
    add = lambda f, k, m, s="error": out.append((f, k, m, s))  # noqa: E731
    _check_fields(rec, add, require_image)
    conv = rec.get("conversations")
    if "conversations" not in rec:
        add("conversations", "missing_key", "no 'conversations'")
    elif not isinstance(conv, list):
        add("conversations", "wrong_type", f"conversations must be a list, got {type(conv).__name__}")
    elif not conv:
        add("conversations", "empty_conversation", "conversations is empty")
    else:
        _check_turns(rec, conv, add)
    return out


def _check_fields(rec: dict, add, require_image: bool) -> None:
    if "id" in rec and not isinstance(rec["id"], (str, int)):
        add("id", "wrong_type", f"id must be a string or int, got {type(rec['id']).__name__}")
    image = rec.get("image")
    if "image" not in rec or image is None:
        if require_image:
            add("image", "missing_key", "no 'image' (this course trains on image questions)")
    elif isinstance(image, list) and len(image) != 1:
        add("image", "wrong_type", f"one image per sample; got a list of {len(image)}")
    elif not isinstance(image, (str, list)) or (isinstance(image, list) and not isinstance(image[0], str)):
        add("image", "wrong_type", f"image must be a path string, got {type(image).__name__}")
    if "image_wh" in rec and rec["image_wh"] is not None and wh_of(rec["image_wh"]) is None:
        add("image_wh", "wrong_type",
            f"image_wh must be [[w, h]] with positive ints below 2**31, got {short_repr(rec['image_wh'])}")
    if "length" in rec and not _is_int(rec["length"], 1, MAX_LENGTH_FIELD):
        add("length", "bad_length", f"length must be an int in 1..{MAX_LENGTH_FIELD} (XTuner's length-grouped "
            f"sampler sorts it as the sample's token count), got {short_repr(rec['length'])}")


def _check_turns(rec: dict, conv: list, add) -> None:
    n_tokens, order_reported, per_turn = 0, False, False
    for j, turn in enumerate(conv):
        f = f"conversations[{j}]"
        if not isinstance(turn, dict):
            add(f, "wrong_type", f"a turn must be an object, got {type(turn).__name__}")
            continue
        role, value = turn.get("from"), turn.get("value")
        for key in ("from", "value"):
            if key not in turn:
                add(f"{f}.{key}", "missing_key", f"turn has no '{key}'")
        if "value" in turn and not isinstance(value, str):
            add(f"{f}.value", "wrong_type", f"value must be a string, got {type(value).__name__}")
            value = None
        if "from" in turn and role not in ROLES:
            add(f"{f}.from", "bad_role", f"role must be 'human' or 'gpt', got {short_repr(role)}")
        elif "from" in turn and role != ROLES[j % 2] and not order_reported:
            order_reported = True
            add(f"{f}.from", "role_order", f"turn {j} is {role!r}; turns must alternate human, gpt, ... starting with human")
        if value is not None:
            count = _check_text(f, role, value, add)
            n_tokens, per_turn = n_tokens + count, per_turn or count > 1
    if all(isinstance(t, dict) for t in conv) and conv[-1].get("from") == "human" and not order_reported:
        add(f"conversations[{len(conv) - 1}].from", "role_order", "ends with a human turn that has no answer")
    has_image = rec.get("image") is not None
    if has_image and n_tokens == 0:
        add("conversations[0].value", "no_image_token", "the record has an image but no human turn has <image>")
    elif has_image and n_tokens > 1 and not per_turn:
        add("conversations", "extra_image_token", f"{n_tokens} <image> markers over the turns; one image per sample")
    elif not has_image and n_tokens:
        add("conversations", "image_token_without_image", "<image> in the text but the record has no image")


def _check_text(f: str, role, value: str, add) -> int:
    """Checks of one turn's text; returns its number of ``<image>`` markers (human turns)."""
    found = reserved_tokens_in(value)
    if any(t in IMAGE_SLOT_TOKENS for t in found):
        add(f"{f}.value", "reserved_token", f"{', '.join(found)} written in the text: the tokenizer makes it the "
            "image-slot token itself (more image slots than image features); write <image> only")
    elif found:
        add(f"{f}.value", "reserved_token", f"{', '.join(found)} written in the text: the tokenizer makes it a turn "
            "marker (the model learns to end its turn mid-answer)")
    count = value.count(IMAGE_TOKEN)
    if role == "gpt":
        if count:
            add(f"{f}.value", "image_token_in_answer", "an answer (gpt turn) contains <image>")
        if not value.strip():
            add(f"{f}.value", "empty_answer", "the answer is empty")
        return 0
    if role == "human" and count > 1:
        add(f"{f}.value", "extra_image_token", f"{count} <image> markers in one turn; one image per sample")
    if role == "human" and not value.replace(IMAGE_TOKEN, "").strip():
        add(f"{f}.value", "empty_question", "the question is empty apart from <image>")
    return count if role == "human" else 0


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def wh_of(value):
    """``(w, h)`` from an ``image_wh`` value (``[[w, h]]`` or ``[w, h]``), or None when malformed.

    Example:
        >>> wh_of([[640, 480]]), wh_of([[0, 1]])
        ((640, 480), None)
    """
    wh = value[0] if isinstance(value, list) and value and isinstance(value[0], list) else value
    if isinstance(wh, list) and len(wh) == 2 and all(_is_int(x, 1, MAX_LENGTH_FIELD) for x in wh):
        return tuple(wh)
    return None


def xtuner_rounds(conversations: list) -> list:
    """The (question, has_image, answer) rounds XTuner builds from a well-formed conversation.

    As ``get_inputid_labels``: leading answers are dropped, consecutive questions are joined,
    ``<image>`` is removed (XTuner puts the image tokens in front of that question).

    Example:
        >>> xtuner_rounds([{"from": "human", "value": "q\\n<image>"}, {"from": "gpt", "value": " a "}])
        [('q', True, 'a')]
    """
    rounds, text, image = [], "", False
    turns = list(conversations)
    while turns and turns[0].get("from") == "gpt":
        turns = turns[1:]
    for turn in turns:
        value = turn.get("value") or ""
        if turn.get("from") == "human":
            if IMAGE_TOKEN in value:
                value, image = value.replace(IMAGE_TOKEN, "").strip(), True
            text += value.strip()
        else:
            rounds.append((text, image, value.strip()))
            text, image = "", False
    return rounds


def _token_counts(tokenizer, texts: set, special: bool) -> dict:
    texts = sorted(texts)
    if not texts:
        return {}
    ids = tokenizer(texts, add_special_tokens=special)["input_ids"]  # one batch call: fast tokenizers run it in Rust
    return {t: len(i) for t, i in zip(texts, ids)}


def length_problems(items, tokenizer, max_length: int, system: str) -> list:
    """Samples XTuner would cut at ``max_length``, counted with the course's tokenizer.

    The count follows XTuner's dataset: system + user turn (``<img>``, the image's
    ``<IMG_CONTEXT>`` tokens, ``</img>``, question) + answer + ``<|im_end|>`` per round.

    Args:
        items: ``[(index, conversations, image_tokens)]`` of well-formed records
            (``image_tokens``: the image's ``<IMG_CONTEXT>`` count, 0 without an image).
        tokenizer: a Hugging Face tokenizer (callable on a list of strings).
        max_length: XTuner's ``max_length``.
        system: the system prompt XTuner uses.

    Returns:
        ``[(index, kind, message)]``: ``no_answer_left`` when the cut leaves no answer token
        (the sample trains nothing), ``too_long`` when it cuts the end of an answer.

    Example:
        >>> length_problems([(0, conv, 256)], tok, 8192, XTUNER_SYSTEM_PROMPT)  # doctest: +SKIP
        []
    """
    first = XTUNER_SYSTEM.format(system=system)
    plan, prompts, later, answers = [], set(), set(), set()
    for index, conv, n_image in items:
        rounds = [((first if r == 0 else "") + XTUNER_INSTRUCTION.format(input=q), img, a + XTUNER_SUFFIX)
                  for r, (q, img, a) in enumerate(xtuner_rounds(conv))]
        if not rounds:
            continue
        prompts.add(rounds[0][0])
        later.update(p for p, _, _ in rounds[1:])
        answers.update(a for _, _, a in rounds)
        plan.append((index, rounds, n_image))
    counts_first = _token_counts(tokenizer, prompts, True)
    counts_plain = _token_counts(tokenizer, later | answers | {IMAGE_MARKERS}, False)
    out = []
    for index, rounds, n_image in plan:
        pos, starts = 0, []
        for r, (prompt, img, answer) in enumerate(rounds):
            pos += counts_first[prompt] if r == 0 else counts_plain[prompt]
            pos += counts_plain[IMAGE_MARKERS] + n_image if img else 0
            starts.append(pos)
            pos += counts_plain[answer]
        if pos <= max_length:
            continue
        if starts[0] >= max_length:
            out.append((index, "no_answer_left", f"{pos} tokens; the first answer starts at token {starts[0]}, "
                        f"beyond max_length {max_length}: XTuner cuts the sample there and it trains nothing"))
        else:
            out.append((index, "too_long", f"{pos} tokens > max_length {max_length}: XTuner cuts the last "
                        f"{pos - max_length} (the end of the answer and its <|im_end|>), so the model learns "
                        "answers that stop mid-way"))
    return out
