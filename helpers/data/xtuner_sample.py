"""What XTuner's ``InternVL_V1_5_Dataset`` builds from one LLaVA record, laid out for reading.

Training never sees the JSON record itself. XTuner turns it into three things: ``input_ids``
(system prompt + question with a run of ``<IMG_CONTEXT>`` placeholders + answer, in XTuner's
InternLM2 chat format), ``labels`` (the same ids, with every position that must not be learned
set to -100) and ``pixel_values`` (the image tiles). ``default_collate_fn`` then pads several
samples into one batch. This module runs XTuner's own code and takes the result apart:

* :func:`load_xtuner_dataset` -- the dataset exactly as an XTuner config builds it;
* :func:`build_sample` -> :class:`BuiltSample` -- one record through ``prepare_data``, with the
  template rendered independently (:func:`render_template`) so the two can be compared;
* :func:`label_spans` / :func:`token_table` -- which tokens carry loss, as compact tables;
* :func:`helpers.data.xtuner_labels.check_label_masking` -- every label that is not -100 is an answer token or ``<|im_end|>``,
  and the ``<IMG_CONTEXT>`` run is 256 tokens per tile;
* :func:`describe_batch` / :func:`plot_token_map` -- padding, attention mask, position ids;
* :func:`masked_loss_demo` -- why the -100 positions contribute nothing to the loss.

Everything here needs the XTuner environment (``requirements-xtuner.txt``).

Example:
    >>> from helpers.settings import get_settings
    >>> from helpers.data.xtuner_sample import load_xtuner_dataset, build_sample
    >>> from helpers.data.xtuner_labels import check_label_masking
    >>> S = get_settings()
    >>> ds = load_xtuner_dataset(S.llava_dir / "train.json", S.data_root)   # doctest: +SKIP
    >>> sample = build_sample(ds, 0)                                       # doctest: +SKIP
    >>> check_label_masking(sample, ds.tokenizer)                          # doctest: +SKIP
    []
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from helpers.env import install_hint
from helpers.prompts import IMAGE as IMAGE_TOKEN, IMG_CONTEXT, IMG_END, IMG_START
from helpers.settings import repo_relative

IGNORE_INDEX = -100  # xtuner.utils.IGNORE_INDEX; also the ignore_index of the LLM's cross-entropy


REQUIREMENTS_HINT = install_hint("xtuner")


def _xtuner():
    try:
        from xtuner.dataset.internvl_dataset import InternVL_V1_5_Dataset
        from xtuner.utils import PROMPT_TEMPLATE
    except ImportError as exc:
        raise ImportError(f"helpers.data.xtuner_sample needs xtuner 0.2.0: {REQUIREMENTS_HINT} ({exc})") from exc
    return InternVL_V1_5_Dataset, PROMPT_TEMPLATE


def pick_model_path(settings=None) -> Path:
    """The checkpoint whose tokenizer and config the dataset is built with.

    ``settings.base_model_path`` (the model notebook 05 fine-tunes) when it holds a
    ``config.json``, else the tiny checkpoint.

    Args:
        settings: :class:`helpers.settings.Settings`; None = ``get_settings()``.

    Returns:
        A directory path.

    Example:
        >>> (pick_model_path() / "config.json").is_file()  # doctest: +SKIP
        True
    """
    from helpers.settings import get_settings

    S = settings or get_settings()
    base = Path(S.base_model_path)
    return base if (base / "config.json").is_file() else Path(S.tiny_model_path)


def load_xtuner_dataset(data_file, image_folder, model_path=None, max_length: int | None = None,
                        settings=None, verbose: bool = False):
    """XTuner's ``InternVL_V1_5_Dataset`` over one LLaVA file, as the course's config builds it.

    The template is ``PROMPT_TEMPLATE.internlm2_chat``, passed as a *copy*: the dataset
    writes its own SYSTEM/INSTRUCTION strings into the template object it is given, and the
    shared one would otherwise change for the whole process.

    Args:
        data_file: LLaVA ``.json``/``.jsonl`` (e.g. ``S.llava_dir / "train.json"``).
        image_folder: folder the records' image paths are relative to (``S.data_root``).
        model_path: checkpoint for tokenizer and tiling config; None = :func:`pick_model_path`.
        max_length: token limit (longer samples are cut); None = ``settings.max_length``.
        settings: :class:`helpers.settings.Settings`; None = ``get_settings()``.
        verbose: keep XTuner's INFO log lines of the construction ("Starting to loading data
            and calc length" ...); warnings and errors are always shown.

    Returns:
        An ``xtuner.dataset.internvl_dataset.InternVL_V1_5_Dataset``.

    Raises:
        FileNotFoundError: the data file or the checkpoint's config.json is missing.

    Example:
        >>> ds = load_xtuner_dataset("artifacts/data/llava-synth/train.json",
        ...                          "artifacts/data/foodieqa-synth")  # doctest: +SKIP
        >>> len(ds)  # doctest: +SKIP
        288
    """
    from helpers.settings import get_settings

    S = settings or get_settings()
    model_path = Path(model_path) if model_path is not None else pick_model_path(S)
    if not (model_path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {model_path} (config.json missing); "
                                "run `python -m helpers.models build-tiny`")
    if not Path(data_file).is_file():
        raise FileNotFoundError(f"LLaVA file not found: {data_file} (run `python -m helpers.data convert`)")
    InternVL_V1_5_Dataset, PROMPT_TEMPLATE = _xtuner()
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    saved = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        return InternVL_V1_5_Dataset(str(model_path), copy.deepcopy(PROMPT_TEMPLATE.internlm2_chat),
                                     [str(data_file)], [str(image_folder)],
                                     max_length=S.max_length if max_length is None else max_length)
    finally:
        logger.setLevel(saved)


def render_template(template, system: str, conversations: list, n_image_tokens: int | None) -> str:
    """The training text of one record, written out from the template strings.

    This is the format XTuner's InternVL dataset produces for InternLM2 (``<s>`` not
    included: the tokenizer adds it): the system turn once, then per question/answer pair
    ``INSTRUCTION.format(input=question)`` + answer + ``SUFFIX``. In the human turn that
    holds ``<image>``, the marker is removed and ``<img>`` + ``<IMG_CONTEXT>`` x n + ``</img>``
    and a newline are put in front of the question.

    Args:
        template: a mapping with ``SYSTEM``, ``INSTRUCTION`` and ``SUFFIX`` (``dataset.template``).
        system: the system prompt (``dataset._system``).
        conversations: the record's ``conversations`` (human/gpt turns, alternating).
        n_image_tokens: length of the ``<IMG_CONTEXT>`` run; None for a text-only record.

    Returns:
        The text.

    Raises:
        ValueError: a turn's role is neither human nor gpt.

    Example:
        >>> t = {"SYSTEM": "S:{system}|", "INSTRUCTION": "U:{input}|A:", "SUFFIX": "<E>"}
        >>> render_template(t, "sys", [{"from": "human", "value": "q?\\n<image>"},
        ...                            {"from": "gpt", "value": "a"}], 2)
        'S:sys|U:<img><IMG_CONTEXT><IMG_CONTEXT></img>\\nq?|A:a<E>'
    """
    text, question, pairs = "", "", 0
    turns = list(conversations)
    while turns and turns[0].get("from") == "gpt":  # a leading answer has no question: XTuner drops it
        turns = turns[1:]
    for j, turn in enumerate(turns):
        role, value = turn.get("from"), turn.get("value", "")
        if role == "human":
            if IMAGE_TOKEN in value:
                value = value.replace(IMAGE_TOKEN, "").strip()
                if n_image_tokens is not None:
                    value = f"{IMG_START}{IMG_CONTEXT * n_image_tokens}{IMG_END}\n{value}"
            question += value.strip()
        elif role == "gpt":
            if pairs == 0:
                text += template["SYSTEM"].format(system=system)
            pairs += 1
            text += template["INSTRUCTION"].format(input=question, round=pairs) + value.strip()
            text += template.get("SUFFIX") or ""
            question = ""
        else:
            raise ValueError(f"conversations[{j}].from is {role!r}; expected 'human' or 'gpt'")
    return text


def collapse_runs(text: str, token: str = IMG_CONTEXT) -> str:
    """Write a run of ``token`` as ``token x N`` so a long sample fits on screen.

    Example:
        >>> collapse_runs("<img>" + "<IMG_CONTEXT>" * 3 + "</img>")
        '<img><IMG_CONTEXT> x 3</img>'
    """
    out, i, n = [], 0, len(token)
    while i < len(text):
        if text.startswith(token, i):
            j = i
            while text.startswith(token, j):
                j += n
            out.append(f"{token} x {(j - i) // n}")
            i = j
        else:
            k = text.find(token, i)
            k = len(text) if k < 0 else k
            out.append(text[i:k])
            i = k
    return "".join(out)


@dataclass
class BuiltSample:
    """One record after XTuner's ``prepare_data``, with what is needed to read it."""

    index: int  # position in the dataset
    record: dict  # the LLaVA record as the file has it (XTuner edits its own copy in place)
    image_path: str  # the file XTuner opened
    input_ids: list  # token ids the LLM reads
    labels: list  # target ids; -100 where no loss is computed
    pixel_values_shape: tuple  # (tiles, 3, 448, 448)
    tokens_per_tile: int  # <IMG_CONTEXT> tokens per tile (256 for 448 px, patch 14, ratio 0.5)
    system: str  # the system prompt XTuner trains with
    template: dict  # SYSTEM / INSTRUCTION / SUFFIX strings the dataset used
    rendered: str  # render_template(...): the text before tokenisation (no <s>)
    decoded: str  # tokenizer.decode(input_ids): the ids turned back into text
    img_context_id: int  # id of <IMG_CONTEXT>
    img_run: tuple  # (start position, length) of the <IMG_CONTEXT> run; (None, 0) without image
    truncated: bool  # input_ids were cut at max_length
    full_length: int  # length before the cut (== len(input_ids) when not truncated)
    raw: dict = field(repr=False, default_factory=dict)  # prepare_data's output, for the collate function

    @property
    def tiles(self) -> int:
        return self.pixel_values_shape[0]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def loss_positions(self) -> list:
        """Positions whose label is not -100."""
        return [i for i, v in enumerate(self.labels) if v != IGNORE_INDEX]

    def summary(self) -> str:
        """A few lines: sizes, the image run, how many tokens carry loss."""
        start, length = self.img_run
        n_loss = len(self.loss_positions)
        return "\n".join([
            f"record {self.index} (id {self.record.get('id')!r}): {repo_relative(self.image_path) if self.image_path else '(no image)'}",
            f"pixel_values {tuple(self.pixel_values_shape)} -> {self.tiles} tiles x {self.tokens_per_tile} "
            f"= {self.tiles * self.tokens_per_tile} image tokens",
            f"input_ids {self.n_tokens} tokens; <IMG_CONTEXT> run at [{start}, {(start or 0) + length}) length {length}",
            f"labels: {self.n_tokens - n_loss} x -100, {n_loss} tokens carry loss"
            + (" (TRUNCATED at max_length)" if self.truncated else ""),
        ])


def _image_run(ids: list, token_id: int) -> tuple:
    where = [i for i, t in enumerate(ids) if t == token_id]
    if not where:
        return (None, 0)
    if where[-1] - where[0] + 1 != len(where):
        raise ValueError(f"<IMG_CONTEXT> tokens are not one contiguous run: positions {where[0]}..{where[-1]}, "
                         f"{len(where)} tokens")
    return (where[0], len(where))


def build_sample(dataset, index: int) -> BuiltSample:
    """Run XTuner's ``prepare_data`` on one record and keep everything needed to read the result.

    ``prepare_data`` is called rather than ``dataset[index]``: when an image cannot be
    loaded, ``__getitem__`` silently returns a *random other* sample, which would make this
    view lie. XTuner also rewrites the record's question in place (``<image>`` becomes the
    token run); the record is restored afterwards so repeated calls give the same result.

    Args:
        dataset: an ``InternVL_V1_5_Dataset`` (see :func:`load_xtuner_dataset`).
        index: record position.

    Returns:
        A :class:`BuiltSample`.

    Raises:
        IndexError: index out of range.
        ValueError: XTuner could not build the sample (unreadable image), naming the file.

    Example:
        >>> s = build_sample(ds, 0)  # doctest: +SKIP
        >>> s.img_run[1] == 256 * s.tiles  # doctest: +SKIP
        True
    """
    import os

    if not 0 <= index < len(dataset):
        raise IndexError(f"index {index} out of range for a dataset of {len(dataset)} records")
    record = copy.deepcopy(dataset.data[index])
    image = record.get("image")
    image = image[0] if isinstance(image, (list, tuple)) else image
    image_path = os.path.join(dataset.image_folder[index], image) if image is not None else ""
    try:
        out = dataset.prepare_data(index)
    finally:
        dataset.data[index] = copy.deepcopy(record)
    if out is None:
        raise ValueError(f"record {index} (id {record.get('id')!r}): XTuner could not load image "
                         f"{repo_relative(image_path)}; in training, __getitem__ would silently use a random "
                         "other sample instead")
    tok = dataset.tokenizer
    ids, labels = list(out["input_ids"]), list(out["labels"])
    img_id = tok.convert_tokens_to_ids(IMG_CONTEXT)
    shape = tuple(out["pixel_values"].shape)
    n_image = shape[0] * dataset.patch_token if image is not None else None
    template = {k: dataset.template.get(k) for k in ("SYSTEM", "INSTRUCTION", "SUFFIX")}
    rendered = render_template(template, dataset._system, record["conversations"], n_image)
    # The untruncated length, by XTuner's own tokenisation with the limit lifted (text only, cheap).
    saved, dataset.max_length = dataset.max_length, float("inf")
    try:
        image_str = f"{IMG_START}{IMG_CONTEXT * n_image}{IMG_END}" if n_image is not None else None
        full = dataset.get_inputid_labels(copy.deepcopy(record["conversations"]), image_str)["input_ids"]
    finally:
        dataset.max_length = saved
    return BuiltSample(index=index, record=record, image_path=image_path, input_ids=ids, labels=labels,
                       pixel_values_shape=shape, tokens_per_tile=dataset.patch_token, system=dataset._system,
                       template=template, rendered=rendered,
                       # no spaces between special tokens: a slow (sentencepiece) tokenizer adds them by default
                       decoded=tok.decode(ids, skip_special_tokens=False, spaces_between_special_tokens=False),
                       img_context_id=img_id,
                       img_run=_image_run(ids, img_id), truncated=len(full) > len(ids),
                       full_length=len(full), raw=out)
