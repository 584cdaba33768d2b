"""Reading the evaluation of notebook 06: multiple choice, confusions, and what fine-tuning cost.

Everything here is computed from saved :class:`helpers.evaluate.EvalResult` rows or by asking
the models again; no number is typed in.

Example:
    >>> answer_chance_percent(4)
    25.0
    >>> image_position_direction(0.8, 0.3, n=48)
    '下降'
"""
from __future__ import annotations

from collections import Counter

from helpers.lessons.exercise import check

ATTRIBUTE_NAMES = {"colour": "颜色", "shape": "形状", "count": "数量", "position": "位置"}
DIRECTIONS = ("下降", "不变", "上升")  # what the image-position exercise asks the learner to predict


def answer_chance_percent(n_choices: int) -> float:
    """Accuracy in % of picking one of ``n_choices`` options at random."""
    return 100.0 / n_choices


def check_chance_percent(prediction, n_choices: int = 4, quiet: bool = False):
    """Check a prediction (%, ±1) of :func:`answer_chance_percent`."""
    return check(prediction, answer_chance_percent(n_choices), tol=1.0, quiet=quiet,
                 hint="四个选项里随便选一个，选中正确那个的概率是多少？")


def choice_analysis(result, n_choices: int = 4) -> dict:
    """What a multiple-choice evaluation shows beyond its accuracy.

    Args:
        result: an :class:`~helpers.evaluate.EvalResult` in "choice" mode.
        n_choices: options per question (FoodieQA: 4).

    Returns:
        ``accuracy``, ``parsed`` (share of answers read as one option), ``chance``, and
        ``accuracy_parsed`` (accuracy among the parsed answers), all 0..1.

    Example:
        >>> from helpers.evaluate.evaluation import EvalResult
        >>> r = EvalResult("x", "m", "choice", None, "t", rows=[dict(parsed=True, correct=True),
        ...                                                      dict(parsed=False, correct=False)])
        >>> choice_analysis(r)["accuracy_parsed"]
        1.0
    """
    parsed = [r for r in result.rows if r.get("parsed")]
    return dict(accuracy=result.accuracy, parsed=result.rate("parsed"), chance=1 / n_choices,
                accuracy_parsed=sum(bool(r["correct"]) for r in parsed) / len(parsed) if parsed else 0.0)


def dish_confusions(result, n: int = 6) -> list:
    """The most frequent (dish in the photo, dish the model named) pairs among wrong dish names.

    Args:
        result: an :class:`~helpers.evaluate.EvalResult` in "course" mode.
        n: how many pairs.

    Returns:
        Rows ``{"照片里的菜", "模型说的菜", "次数", "同一菜系", "共同主料", "照片里的菜的样子", "说成的菜的样子"}``,
        most frequent first (the looks are the drawing briefs of the synthetic photos).
    """
    from helpers.foods import DISHES
    from helpers.pretrain.checks import dish_names_in

    by_name = {d.name: d for d in DISHES}
    cuisine = {d.name: d.cuisine for d in DISHES}
    pairs = Counter()
    for r in result.rows:
        if r.get("dish_ok"):
            continue
        named = dish_names_in(r["answer"])
        pairs[(r["food_name"], named[0] if named else "（没有说菜名）")] += 1
    def shared(a, b):
        both = set(by_name[a].main_ingredient) & set(by_name[b].main_ingredient) if a in by_name and b in by_name else ()
        return "、".join(sorted(both)) or "无"

    return [{"照片里的菜": a, "模型说的菜": b, "次数": k,
             "同一菜系": "是" if cuisine.get(a) and cuisine.get(a) == cuisine.get(b) else "否",
             "共同主料": shared(a, b),
             "照片里的菜的样子": by_name[a].looks if a in by_name else "",
             "说成的菜的样子": by_name[b].looks if b in by_name else ""}
            for (a, b), k in pairs.most_common(n)]


def forgetting(models: dict, heldout_json, n: int = 8) -> list:
    """The general skills notebook 02 taught, measured on held-out scenes for each model.

    Args:
        models: ``{label: model directory}`` (e.g. the base and the fine-tuned model).
        heldout_json: ``heldout.json`` of notebook 02's scenes (never trained on).
        n: scenes to ask about (greedy decoding; a few seconds each on a CPU).

    Returns:
        One row per model: accuracy of colour, shape, count and position, asked as questions, and
        the share of descriptions in the trained sentence form.
    """
    import re

    from helpers.models import load_model
    from helpers.pretrain.checks import check_attributes

    form = re.compile(r"^图中有[一两三]个.+的.+，位于.+，背景是.+。$")
    rows = []
    for label, path in models.items():
        model, tok = load_model(path)
        asked = check_attributes(model, tok, heldout_json, n=n, mode="questions")
        described = check_attributes(model, tok, heldout_json, n=n, mode="caption", attributes=("colour",))
        answers = {a["image"]: a["answer"] for a in described["answers"]}
        fluent = sum(bool(form.match(a)) for a in answers.values()) / len(answers)
        rows.append({"模型": label, **{ATTRIBUTE_NAMES.get(k, k): round(v, 2) for k, v in asked["accuracy"].items()},
                     "描述合乎句式": round(fluent, 2)})
        del model
    return rows


def check_base_accuracy(prediction, base_result, quiet: bool = False):
    """Check a prediction (%, ±2) of the base model's course-format accuracy."""
    return check(prediction, 100 * base_result.accuracy, tol=2.0, quiet=quiet,
                 hint="回想 notebook 02：基座的训练数据里出现过菜名吗？")


def summary_rows(results: dict, choice: dict) -> list:
    """Summary table of notebook 06: accuracy per evaluation, computed from the results.

    Args:
        results: ``{label: EvalResult}`` in course mode.
        choice: ``{label: EvalResult}`` in choice mode.

    Returns:
        Rows ``{"评测", "准确率", "说明"}`` (percentages as text).
    """
    rows = [{"评测": k, "准确率": f"{r.accuracy:.0%}",
             "说明": f"菜系对 {r.rate('choice_ok'):.0%}，菜名对 {r.rate('dish_ok'):.0%}"} for k, r in results.items()]
    for k, r in choice.items():
        a = choice_analysis(r)
        rows.append({"评测": k, "准确率": f"{a['accuracy']:.0%}",
                     "说明": f"读出一个选项 {a['parsed']:.0%}，其中选对 {a['accuracy_parsed']:.0%}；随机猜测 {a['chance']:.0%}"})
    return rows


def image_position_direction(before: float, after: float, n: int) -> str:
    """Whether accuracy went down, stayed or went up, ignoring changes of a couple of answers.

    Args:
        before: accuracy (0..1) with the image before the question.
        after: accuracy (0..1) with the image after it.
        n: questions asked (a change within 5 points, or within 2 answers when n < 40, is "不变").

    Returns:
        One of :data:`DIRECTIONS`.
    """
    noise = max(2 / n, 0.05)
    return "下降" if after < before - noise else "上升" if after > before + noise else "不变"


def image_position_effect(model_dir, items, *, system_prompt=None, settings=None, n: int = 48) -> dict:
    """Ask the same questions with ``<image>`` before and after the question; score both.

    The course format's questions are built by :func:`helpers.prompts.with_image_marks` (the one
    chat format), only the image's position differs. Runs on the transformers engine: it takes
    the ``<image>`` mark where the text puts it (LMDeploy moves images itself).

    Args:
        model_dir: a model directory (notebook 06: the fine-tuned model).
        items: :class:`~helpers.evaluate.items.EvalItem` of a split; every ``len/n``-th is asked.
        system_prompt: the system prompt to deploy with (the trained one).
        settings: a Settings (None: ``get_settings()``).
        n: questions to ask in each order.

    Returns:
        ``{"before": EvalResult, "after": EvalResult, "n": ..., "direction": one of DIRECTIONS, "seconds": ...}``.

    Example:
        >>> effect = image_position_effect(TUNED, items, system_prompt=TRAINED_PROMPT)  # doctest: +SKIP
        >>> effect["before"].accuracy, effect["after"].accuracy                       # doctest: +SKIP
    """
    import dataclasses
    import time

    from helpers import prompts
    from helpers.evaluate.evaluation import close_engine, evaluate
    from helpers.serve.pipeline import make_pipeline

    items = list(items)
    subset = items[::max(1, len(items) // n)][:n]
    started = time.time()
    pipe = make_pipeline(model_dir, engine="transformers", system_prompt=system_prompt, settings=settings)
    try:
        results = {}
        for position, name in (("before", "图片在问题前（训练时的顺序）"), ("after", "图片在问题后")):
            asked = [dataclasses.replace(it, question=prompts.with_image_marks(it.question, 1, position=position))
                     for it in subset]
            results[position] = evaluate(pipe, asked, "course", name=name, batch_size=16, max_new_tokens=24,
                                         progress=False, system_prompt=system_prompt)
    finally:
        close_engine(pipe)
    before, after = results["before"].accuracy, results["after"].accuracy
    return dict(results, n=len(subset), direction=image_position_direction(before, after, len(subset)),
                seconds=round(time.time() - started, 1))


def check_image_after(prediction, effect: dict, quiet: bool = False):
    """Check a prediction ("下降" / "不变" / "上升") of how accuracy moves with the image after the question."""
    if prediction is not None and prediction not in DIRECTIONS:
        if not quiet:
            print(f"PREDICTION 写 {' / '.join(repr(d) for d in DIRECTIONS)} 之一。")
        return False
    return check(prediction, effect["direction"], quiet=quiet,
                 hint="微调数据里 <image> 总在问题前面；模型是因果语言模型，前面的 token 看不到后面的。"
                      "换个位置，模型看到的输入还和训练时一样吗？")
