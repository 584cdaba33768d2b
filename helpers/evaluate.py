"""Score a model on a held-out split: the course's answer format and FoodieQA's multiple choice.

Notebook 06 measures the model before and after fine-tuning with these helpers:

* :func:`load_split` reads a LLaVA split written by :mod:`helpers.data` (``meta`` carries the
  question type, dish, cuisine, choices and answer index) and resolves the image paths.
* :func:`evaluate` asks an engine from :func:`helpers.deploy.make_pipeline` (LMDeploy on a GPU,
  transformers on a CPU; same call) every question, in batches, greedy, and scores each answer:

  - ``mode="course"``: the training question; the answer should read
    ``"{choice}，图中的菜是{dish}"`` and is judged by :func:`helpers.scoring.score_course`
    (right option before the join, right dish after it; ``correct`` needs both).
  - ``mode="choice"``: FoodieQA's form, the options listed as A-D; the pick is read by
    :func:`helpers.scoring.parse_choice` (a letter in any usual form, or the option's text).

* :class:`EvalResult` keeps every answer (for inspection), accuracy overall and per question
  type or cuisine, and saves to / loads from JSON.
* :func:`evaluate_model` builds the engine with a given system prompt, evaluates, and frees it;
  :func:`trained_system_prompt` reads the prompt a converted model was trained with.
* :func:`comparison_rows` / :func:`format_table` put results side by side; the figures
  (accuracy bars, a photo gallery with both models' answers) are in :mod:`helpers.eval_plots`.

Example:
    >>> score_course("新疆菜，图中的菜是大盘鸡", "新疆菜", "大盘鸡", ["新疆菜", "粤菜"], ["大盘鸡", "肠粉"])["correct"]
    True
    >>> parse_choice("答案是 C。", ["京菜", "徽菜", "新疆菜", "桂菜"])
    2
"""
from __future__ import annotations

import gc
import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from helpers.data import load_llava
from helpers.scoring import (LETTERS, choice_prompt, names_in, parse_choice,  # noqa: F401  (re-exported)
                             score_course, split_course_answer)

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
    """Read a LLaVA split written by :mod:`helpers.data` into :class:`EvalItem` s.

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


# --------------------------------------------------------------------------- results
@dataclass
class EvalResult:
    """Every answer of one evaluation run, with accuracy tables.

    Attributes:
        name: label for tables and plots (e.g. "base", "fine-tuned").
        model_path: the checkpoint evaluated.
        mode: "course" or "choice".
        system_prompt: the system prompt the engine used (None: the engine's default).
        engine: which engine answered.
        rows: one dict per question (id, image, question_type, cuisine, food_name, expected,
            reference, answer, and the verdict: correct plus choice_ok/dish_ok or picked/parsed).
        seconds: wall time of the answering.
    """

    name: str
    model_path: str
    mode: str
    system_prompt: str | None
    engine: str
    rows: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        """Share of questions answered correctly (0..1)."""
        return sum(r["correct"] for r in self.rows) / len(self.rows) if self.rows else 0.0

    def rate(self, key: str) -> float:
        """Share of rows where boolean ``key`` is true (e.g. "dish_ok", "parsed")."""
        return sum(bool(r.get(key)) for r in self.rows) / len(self.rows) if self.rows else 0.0

    def by(self, key: str) -> dict:
        """``{value of key: {"n", "correct", "accuracy"}}``, e.g. per question_type or cuisine."""
        groups: dict = defaultdict(lambda: [0, 0])
        for r in self.rows:
            groups[r[key]][0] += 1
            groups[r[key]][1] += bool(r["correct"])
        return {k: dict(n=n, correct=c, accuracy=c / n) for k, (n, c) in sorted(groups.items())}

    def wrong(self) -> list:
        """The rows answered wrongly (for inspection)."""
        return [r for r in self.rows if not r["correct"]]

    def summary(self) -> str:
        """One line: name, accuracy, counts, time."""
        extra = (f", choice {self.rate('choice_ok'):.0%}, dish {self.rate('dish_ok'):.0%}" if self.mode == "course"
                 else f", parsed {self.rate('parsed'):.0%}")
        n_right = sum(bool(r["correct"]) for r in self.rows)
        return (f"{self.name} [{self.mode}]: {self.accuracy:.1%} ({n_right}/{len(self.rows)} right{extra}) "
                f"in {self.seconds:.0f} s with {self.engine}")

    def save(self, path) -> Path:
        """Write the result as JSON (rows included); returns the path.

        The file is replaced in one step: an evaluation killed while saving leaves the earlier
        file whole.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "EvalResult":
        """Read a result written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        missing = {"name", "model_path", "mode", "system_prompt", "engine", "rows"} - set(data)
        if missing:
            raise ValueError(f"{path}: not an EvalResult file (missing {sorted(missing)})")
        return cls(**data)


# --------------------------------------------------------------------------- running
def _engine_name(pipe) -> str:
    return str(getattr(pipe, "engine_name", type(pipe).__name__))


def evaluate(pipe, items, mode: str = "course", *, name: str = "model", batch_size: int = 16,
             max_new_tokens: int = 32, progress: bool = True, system_prompt: str | None = None) -> EvalResult:
    """Ask an engine every question of a split (greedy, in batches) and score the answers.

    Args:
        pipe: an engine from :func:`helpers.deploy.make_pipeline` (LMDeploy or transformers).
        items: :class:`EvalItem` s from :func:`load_split`.
        mode: "course" (the training question and answer format) or "choice" (options A-D).
        name: label of the result.
        batch_size: prompts per engine call (both engines batch inside a call).
        max_new_tokens: answer length limit (the course answer is ~10 tokens).
        progress: show a tqdm bar.
        system_prompt: recorded in the result; the engine's own setting decides what it used.

    Returns:
        An :class:`EvalResult`.

    Example:
        >>> result = evaluate(make_pipeline(model_dir), load_split(val_json), name="base")  # doctest: +SKIP
        >>> print(result.summary())                                                      # doctest: +SKIP
    """
    from helpers.deploy import generation_config
    from helpers.tiling import load_image

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    items = list(items)
    if not items:
        raise ValueError("evaluate: no items")
    dishes = sorted({it.food_name for it in items} | {c for it in items if it.question_type == "food_name"
                                                      for c in it.choices})
    gen = generation_config(max_new_tokens=max_new_tokens, do_sample=False)
    bar = None
    if progress:
        import sys

        from tqdm.std import tqdm  # a text bar: a saved notebook shows its final state, not a widget's "0/N"

        bar = tqdm(total=len(items), desc=f"evaluate {name}", unit="q", file=sys.stdout)
    rows = []
    started = time.time()
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            prompts = [(it.question if mode == "course" else choice_prompt(it.question, it.choices),
                        load_image(it.image)) for it in chunk]
            answers = pipe(prompts, gen_config=gen)
            if len(answers) != len(chunk):
                raise RuntimeError(f"the engine returned {len(answers)} answers for {len(chunk)} prompts")
            rows += [score_item(it, a.text, mode, dishes) for it, a in zip(chunk, answers)]
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return EvalResult(name=name, model_path=str(getattr(pipe, "model_path", "")), mode=mode,
                      system_prompt=system_prompt, engine=_engine_name(pipe), rows=rows,
                      seconds=round(time.time() - started, 1))


def trained_system_prompt(model_dir) -> str | None:
    """The system prompt a converted model was trained with, from the files saved with it.

    Reads ``chat_template_config.json`` (``meta_instruction``: the LMDeploy chat template
    :func:`helpers.finetune.convert` writes), else ``conversion.json`` (``system_prompt``),
    else ``config.json`` (``system_message``).

    Returns:
        The prompt, or None when the directory records none.

    Example:
        >>> trained_system_prompt("artifacts/runs/tiny/finetune/merged")  # doctest: +SKIP
        'You are an AI assistant whose name is InternLM (书生·浦语).'
    """
    model_dir = Path(model_dir)
    for name, key in (("chat_template_config.json", "meta_instruction"), ("conversion.json", "system_prompt"),
                      ("config.json", "system_message")):
        path = model_dir / name
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8")).get(key)
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: not a JSON object ({exc})") from None
            if value:
                return value
    return None


def close_engine(pipe) -> None:
    """Free an engine's memory (LMDeploy's GPU cache or the transformers model)."""
    close = getattr(pipe, "close", None)
    if callable(close):
        close()
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_model(model_dir, items, *, name: str, mode: str = "course", system_prompt: str | None = None,
                   engine: str | None = None, settings=None, save_to=None, **kwargs) -> EvalResult:
    """Build an engine for ``model_dir`` with ``system_prompt``, evaluate, free the engine.

    Args:
        model_dir: checkpoint directory.
        items: from :func:`load_split`.
        name: label of the result.
        mode: "course" or "choice".
        system_prompt: system prompt to serve with (None: the engine's default for this model).
        engine: "lmdeploy" or "transformers" (default: ``settings.engine``).
        settings: a Settings (default: ``get_settings()``).
        save_to: write the result there as JSON too.
        **kwargs: passed to :func:`evaluate` (batch_size, max_new_tokens, progress).

    Returns:
        An :class:`EvalResult` (``system_prompt`` is the one the engine actually used).

    Example:
        >>> r = evaluate_model(S.base_model_path, items, name="base")  # doctest: +SKIP
    """
    from helpers.deploy import make_pipeline
    from helpers.settings import get_settings

    S = settings or get_settings()
    pipe = make_pipeline(model_dir, engine=engine or S.engine, system_prompt=system_prompt, settings=S)
    try:
        used = system_prompt if system_prompt is not None else getattr(pipe, "system_prompt", None)
        result = evaluate(pipe, items, mode, name=name, system_prompt=used, **kwargs)
        result.model_path = str(model_dir)
    finally:
        close_engine(pipe)
    if save_to is not None:
        result.save(save_to)
    return result


# --------------------------------------------------------------------------- comparing
def comparison_rows(results, by: str | None = "question_type") -> list:
    """Accuracy of several results side by side, overall and per group.

    Args:
        results: ``{label: EvalResult}`` (same items, e.g. base and fine-tuned).
        by: row key to group on ("question_type", "cuisine") or None for overall only.

    Returns:
        ``[{"group": ..., "n": ..., label: accuracy, ...}, ...]``; the first row is "all".

    Example:
        >>> rows = comparison_rows({"base": base, "fine-tuned": tuned})  # doctest: +SKIP
    """
    results = dict(results)
    ids = [sorted(r["id"] for r in res.rows) for res in results.values()]
    if any(i != ids[0] for i in ids):
        raise ValueError("the results cover different questions; evaluate them on the same split")
    first = next(iter(results.values()))
    table = [dict(group="all", n=len(first.rows), **{k: v.accuracy for k, v in results.items()})]
    if by:
        groups = {k: v.by(by) for k, v in results.items()}
        for g, stats in groups[next(iter(groups))].items():
            table.append(dict(group=g, n=stats["n"], **{k: groups[k][g]["accuracy"] for k in results}))
    return table


def format_table(rows, percent: bool = True) -> str:
    """Plain-text table of :func:`comparison_rows` (fixed width; stable for notebook checks).

    Example:
        >>> print(format_table([{"group": "all", "n": 4, "base": 0.0, "tuned": 0.75}]))
        group  n  base  tuned
        all    4    0%    75%
    """
    if not rows:
        return "(empty)"
    keys = list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.0%}" if percent else f"{v:.3f}"
        return str(v)

    cells = [keys] + [[cell(r[k]) for k in keys] for r in rows]
    widths = [max(_width(c[i]) for c in cells) for i in range(len(keys))]
    lines = []
    for line in cells:
        parts = []
        for i, c in enumerate(line):
            pad = " " * (widths[i] - _width(c))
            parts.append(c + pad if i == 0 else pad + c)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
