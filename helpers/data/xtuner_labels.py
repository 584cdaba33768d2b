"""Which tokens of an XTuner sample the loss sees: label spans, a token table, the masking check, the batch view and token map."""
from __future__ import annotations

from helpers.data.xtuner_sample import (BuiltSample, IGNORE_INDEX, IMG_END, IMG_START, REQUIREMENTS_HINT,
                                        collapse_runs)


def _piece(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, spaces_between_special_tokens=False)


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
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False, spaces_between_special_tokens=False)
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
TOKEN_KINDS = ("提示文本 (-100)", "<IMG_CONTEXT> (-100)", "回答 + <|im_end|> (loss)", "填充 (padding)")


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


def plot_token_map(batch: dict, img_context_id: int, title: str = "batch 里每个位置是什么"):
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
    ax.set_yticks(range(kinds.shape[0]), [f"样本 {b}" for b in range(kinds.shape[0])])
    ax.set_xlabel("位置（token）")
    for b in range(kinds.shape[0]):  # the orange answer is a few pixels wide: mark where it is
        where = (kinds[b] == 2).nonzero()[0]
        if len(where):
            ax.annotate(f"{len(where)} 个 loss token", (where[-1], b), xytext=(4, 0), textcoords="offset points",
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
