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
* :func:`check_label_masking` -- every label that is not -100 is an answer token or ``<|im_end|>``,
  and the ``<IMG_CONTEXT>`` run is 256 tokens per tile;
* :func:`describe_batch` / :func:`plot_token_map` -- padding, attention mask, position ids;
* :func:`masked_loss_demo` -- why the -100 positions contribute nothing to the loss.

Everything here needs the XTuner environment (``requirements-xtuner.txt``).

Example:
    >>> from helpers.settings import get_settings
    >>> from helpers.data.xtuner_sample import load_xtuner_dataset, build_sample, check_label_masking
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

IGNORE_INDEX = -100  # xtuner.utils.IGNORE_INDEX; also the ignore_index of the LLM's cross-entropy
IMG_CONTEXT = "<IMG_CONTEXT>"
IMG_START = "<img>"
IMG_END = "</img>"
IMAGE_TOKEN = "<image>"
REQUIREMENTS_HINT = "install requirements-xtuner.txt (the XTuner environment, .venv-xtuner)"


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
            f"record {self.index} (id {self.record.get('id')!r}): {self.image_path}",
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
        raise ValueError(f"record {index} (id {record.get('id')!r}): XTuner could not load image {image_path}; "
                         "in training, __getitem__ would silently use a random other sample instead")
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
                       decoded=tok.decode(ids, skip_special_tokens=False), img_context_id=img_id,
                       img_run=_image_run(ids, img_id), truncated=len(full) > len(ids),
                       full_length=len(full), raw=out)


def _piece(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def label_spans(sample: BuiltSample, tokenizer) -> list:
    """The sample cut into runs of tokens, each with whether it carries loss.

    A new run starts where the label switches between -100 and "= input id", where the
    ``<IMG_CONTEXT>`` run begins or ends, and at each ``<|im_start|>`` / ``<img>``, so each
    row is one piece of the template (system turn, image, question, answer ...).

    Args:
        sample: from :func:`build_sample`.
        tokenizer: the dataset's tokenizer.

    Returns:
        Rows ``{"start", "end", "tokens", "labels", "loss", "text"}`` (``end`` exclusive,
        ``labels`` is "-100" or "= input_ids", ``text`` decoded with the image run collapsed).

    Example:
        >>> [r["loss"] for r in label_spans(sample, ds.tokenizer)][-1]  # doctest: +SKIP
        True
    """
    ids, labels = sample.input_ids, sample.labels
    breakers = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", IMG_START)}
    img_end = tokenizer.convert_tokens_to_ids(IMG_END)
    rows, start = [], 0
    for i in range(1, len(ids) + 1):
        cut = i == len(ids)
        if not cut:
            cut = ((labels[i] == IGNORE_INDEX) != (labels[i - 1] == IGNORE_INDEX)
                   or (ids[i] == sample.img_context_id) != (ids[i - 1] == sample.img_context_id)
                   or ids[i] in breakers or ids[i - 1] == img_end)
        if cut:
            loss = labels[start] != IGNORE_INDEX
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False)
            rows.append({"start": start, "end": i, "tokens": i - start,
                         "labels": "= input_ids" if loss else "-100", "loss": loss,
                         "text": collapse_runs(text)})
            start = i
    return rows


def token_table(sample: BuiltSample, tokenizer, start: int | None = None, stop: int | None = None) -> list:
    """Token-by-token rows: position, id, the token's text, its label, whether it carries loss.

    Args:
        sample: from :func:`build_sample`.
        tokenizer: the dataset's tokenizer.
        start: first position (default: 8 tokens before the first labelled one).
        stop: end position, exclusive (default: the end of the sample).

    Returns:
        Rows ``{"pos", "input_id", "token", "label", "label_token", "loss"}``.

    Example:
        >>> token_table(sample, ds.tokenizer)[-1]["token"]  # doctest: +SKIP
        '<|im_end|>'
    """
    first = sample.loss_positions[0] if sample.loss_positions else len(sample.input_ids)
    start = max(0, first - 8) if start is None else start
    stop = len(sample.input_ids) if stop is None else stop
    rows = []
    for i in range(start, stop):
        tid, lab = sample.input_ids[i], sample.labels[i]
        rows.append({"pos": i, "input_id": tid, "token": _piece(tokenizer, tid), "label": lab,
                     "label_token": "" if lab == IGNORE_INDEX else _piece(tokenizer, lab),
                     "loss": lab != IGNORE_INDEX})
    return rows


def check_label_masking(sample: BuiltSample, tokenizer) -> list:
    """Everything that must hold for the labels and the image run; returns the violations.

    * ``labels`` has the length of ``input_ids``; a label that is not -100 equals its input id;
    * the labelled tokens, in order, are exactly each answer followed by the template's
      SUFFIX (``<|im_end|>``), tokenised as XTuner does -- nothing from the system prompt,
      the question or the image run;
    * ``<IMG_CONTEXT>`` appears once as a contiguous run of ``tokens_per_tile x tiles``;
    * the sample was not cut at ``max_length`` (a cut can remove the answer).

    Args:
        sample: from :func:`build_sample`.
        tokenizer: the dataset's tokenizer.

    Returns:
        A list of messages; empty when everything holds.

    Example:
        >>> check_label_masking(sample, ds.tokenizer)  # doctest: +SKIP
        []
    """
    problems = []
    ids, labels = sample.input_ids, sample.labels
    if len(ids) != len(labels):
        problems.append(f"labels has {len(labels)} entries for {len(ids)} input_ids")
    wrong = [i for i, (t, lab) in enumerate(zip(ids, labels)) if lab != IGNORE_INDEX and lab != t]
    if wrong:
        problems.append(f"{len(wrong)} labels differ from their input id (first at position {wrong[0]})")
    suffix = sample.template.get("SUFFIX") or ""
    expected = []
    for turn in sample.record.get("conversations", []):
        if turn.get("from") == "gpt":
            expected += tokenizer.encode(turn["value"].strip() + suffix, add_special_tokens=False)
    got = [lab for lab in labels if lab != IGNORE_INDEX]
    if got != expected:
        problems.append(f"labelled tokens {tokenizer.decode(got)!r} are not the answers + {suffix!r}: "
                        f"{tokenizer.decode(expected)!r}")
    if any(lab == sample.img_context_id for lab in labels):
        problems.append("an <IMG_CONTEXT> position carries loss")
    start, length = sample.img_run
    if sample.record.get("image") is not None:
        want = sample.tokens_per_tile * sample.tiles
        if length != want:
            problems.append(f"<IMG_CONTEXT> run has {length} tokens, expected {sample.tokens_per_tile} x "
                            f"{sample.tiles} tiles = {want}")
    if sample.truncated:
        problems.append("input_ids were cut at max_length")
    return problems


def describe_batch(batch: dict) -> list:
    """Per sample of a collated batch: real length, padding, mask, position ids, loss tokens.

    Args:
        batch: ``default_collate_fn(...)`` output (``{"data": {...}}``) or its ``data`` dict.

    Returns:
        Rows ``{"sample", "length", "padding", "attention_mask_sum", "loss_tokens",
        "position_ids", "pad_ids", "pad_labels", "pixel_values"}``.

    Example:
        >>> from xtuner.dataset.collate_fns import default_collate_fn  # doctest: +SKIP
        >>> describe_batch(default_collate_fn([s.raw for s in samples]))  # doctest: +SKIP
    """
    data = batch.get("data", batch)
    ids, labels, mask, pos = (data[k] for k in ("input_ids", "labels", "attention_mask", "position_ids"))
    pixels = data.get("pixel_values")
    rows = []
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        pv = pixels[b] if pixels is not None else None
        rows.append({
            "sample": b, "length": n, "padding": int(ids.shape[1] - n), "attention_mask_sum": n,
            "loss_tokens": int((labels[b] != IGNORE_INDEX).sum()),
            "position_ids": f"{int(pos[b, 0])}..{int(pos[b, -1])}",
            "pad_ids": sorted({int(x) for x in ids[b, n:]}),
            "pad_labels": sorted({int(x) for x in labels[b, n:]}),
            "pixel_values": tuple(pv.shape) if pv is not None else None,
        })
    return rows


# Categories of plot_token_map, drawn left to right along the sequence.
TOKEN_KINDS = ("prompt text (-100)", "<IMG_CONTEXT> (-100)", "answer + <|im_end|> (loss)", "padding")
_KIND_COLOURS = ("#9a9a9a", "#9cc5ea", "#e8590c", "#f6efd0")


def token_kinds(input_ids, labels, attention_mask, img_context_id: int):
    """A 0..3 code per position (see :data:`TOKEN_KINDS`) for a batch, as a numpy array.

    Example:
        >>> token_kinds([[5, 9, 7, 0]], [[-100, -100, 7, -100]], [[1, 1, 1, 0]], 9).tolist()
        [[0, 1, 2, 3]]
    """
    import numpy as np

    ids, lab, mask = (np.asarray(x) for x in (input_ids, labels, attention_mask))
    kinds = np.zeros(ids.shape, dtype=int)
    kinds[ids == img_context_id] = 1
    kinds[lab != IGNORE_INDEX] = 2
    kinds[~mask.astype(bool)] = 3
    return kinds


def plot_token_map(batch: dict, img_context_id: int, title: str = "what each position of the batch is"):
    """One row per sample: prompt text, image tokens, loss-carrying answer, padding.

    Args:
        batch: ``default_collate_fn`` output or its ``data`` dict.
        img_context_id: id of ``<IMG_CONTEXT>``.
        title: figure title.

    Returns:
        A matplotlib Figure.

    Example:
        >>> fig = plot_token_map(batch, tok.convert_tokens_to_ids("<IMG_CONTEXT>"))  # doctest: +SKIP
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from helpers.display import figure

    data = batch.get("data", batch)
    kinds = token_kinds(data["input_ids"], data["labels"], data["attention_mask"], img_context_id)
    fig = figure((9, 0.45 * kinds.shape[0] + 1.4))
    ax = fig.subplots()
    ax.imshow(kinds, aspect="auto", interpolation="nearest", cmap=ListedColormap(_KIND_COLOURS), vmin=0, vmax=3)
    ax.set_yticks(range(kinds.shape[0]), [f"sample {b}" for b in range(kinds.shape[0])])
    ax.set_xlabel("position (token)")
    for b in range(kinds.shape[0]):  # the orange answer is a few pixels wide: mark where it is
        where = (kinds[b] == 2).nonzero()[0]
        if len(where):
            ax.annotate(f"{len(where)} loss tokens", (where[-1], b), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=8)
    fig.legend(handles=[Patch(facecolor=c, edgecolor="black", label=k) for k, c in zip(TOKEN_KINDS, _KIND_COLOURS)],
               loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    ax.set_title(title)
    return fig


def masked_loss_demo(labels, vocab_size: int, seed: int = 0) -> dict:
    """Show numerically that positions labelled -100 add nothing to the training loss.

    The LLM's loss is ``cross_entropy(logits[:-1], labels[1:], ignore_index=-100)``: position
    t predicts token t+1, and only targets that are not -100 are averaged. With random
    logits this computes that loss, the same mean taken by hand over the answer targets only,
    and the loss again after (a) scrambling every logit that predicts a -100 target and (b)
    changing one logit row that predicts an answer token.

    Args:
        labels: one sample's labels (list or 1-D tensor).
        vocab_size: size of the logits' last dimension (``len(tokenizer)``).
        seed: for the random logits.

    Returns:
        ``{"loss_targets", "loss", "loss_by_hand", "loss_prompt_scrambled", "loss_answer_changed"}``
        (floats rounded to 6 digits; loss_targets = how many targets are averaged).

    Example:
        >>> d = masked_loss_demo([-100, -100, 5, 6], vocab_size=10)
        >>> d["loss_targets"], d["loss"] == d["loss_by_hand"] == d["loss_prompt_scrambled"]
        (2, True)
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as exc:
        raise ImportError(f"masked_loss_demo needs torch: {REQUIREMENTS_HINT}") from exc
    lab = torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(lab), vocab_size, generator=gen, dtype=torch.float64)
    targets = lab[1:]
    keep = targets != IGNORE_INDEX

    def loss_of(lg):
        return F.cross_entropy(lg[:-1], targets, ignore_index=IGNORE_INDEX).item()

    loss = loss_of(logits)
    by_hand = -F.log_softmax(logits[:-1][keep], dim=-1).gather(1, targets[keep, None]).mean().item()
    scrambled = logits.clone()
    rows = torch.nonzero(~keep).flatten()
    scrambled[rows] = 100 * torch.randn(len(rows), vocab_size, generator=gen, dtype=torch.float64)
    changed = logits.clone()
    answer_rows = torch.nonzero(keep).flatten()
    if len(answer_rows):
        changed[answer_rows[0], targets[answer_rows[0]]] += 5.0  # make the first answer token more likely
    return {"loss_targets": int(keep.sum()),
            "loss": round(loss, 6), "loss_by_hand": round(by_hand, 6),
            "loss_prompt_scrambled": round(loss_of(scrambled), 6),
            "loss_answer_changed": round(loss_of(changed), 6)}
