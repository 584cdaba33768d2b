"""Score a model on a held-out split: the course's answer format and FoodieQA's multiple choice.

Notebook 06 measures the model before and after fine-tuning with these helpers:

* :func:`load_split` reads a LLaVA split written by :mod:`helpers.data.llava` (``meta`` carries the
  question type, dish, cuisine, choices and answer index) and resolves the image paths.
* :func:`evaluate` asks an engine from :func:`helpers.serve.pipeline.make_pipeline` (LMDeploy on a GPU,
  transformers on a CPU; same call) every question, in batches, greedy, and scores each answer:

  - ``mode="course"``: the training question; the answer should read
    ``"{choice}，图中的菜是{dish}"`` and is judged by :func:`helpers.evaluate.scoring.score_course`
    (right option before the join, right dish after it; ``correct`` needs both).
  - ``mode="choice"``: FoodieQA's form, the options listed as A-D; the pick is read by
    :func:`helpers.evaluate.scoring.parse_choice` (a letter in any usual form, or the option's text).

* :class:`EvalResult` keeps every answer (for inspection), accuracy overall and per question
  type or cuisine, and saves to / loads from JSON.
* :func:`evaluate_model` builds the engine with a given system prompt, evaluates, and frees it;
  :func:`trained_system_prompt` reads the prompt a converted model was trained with.
* :func:`comparison_rows` / :func:`format_table` put results side by side; the figures
  (accuracy bars, a photo gallery with both models' answers) are in :mod:`helpers.evaluate.plots`.

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

from helpers.evaluate.scoring import choice_prompt
from helpers.evaluate.items import MODES, score_item


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
        """One line in Chinese: name, mode, accuracy, counts, time, engine."""
        extra = (f"，菜系对 {self.rate('choice_ok'):.0%}，菜名对 {self.rate('dish_ok'):.0%}" if self.mode == "course"
                 else f"，读出选项 {self.rate('parsed'):.0%}")
        n_right = sum(bool(r["correct"]) for r in self.rows)
        mode = {"course": "课程格式", "choice": "选择题"}.get(self.mode, self.mode)
        return (f"{self.name}（{mode}）：准确率 {self.accuracy:.1%}（{n_right}/{len(self.rows)} 题对{extra}），"
                f"{self.seconds:.0f} s，引擎 {self.engine}")

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
        pipe: an engine from :func:`helpers.serve.pipeline.make_pipeline` (LMDeploy or transformers).
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
    from helpers.serve.generation import generation_config
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
    :func:`helpers.train.convert.convert` writes), else ``conversion.json`` (``system_prompt``),
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
    from helpers.serve.pipeline import make_pipeline
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
