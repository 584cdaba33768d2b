"""The stages' training data: drawn scenes and food appearance captions as LLaVA JSON, and the warm-up texts."""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict
from pathlib import Path

from helpers.settings import XTUNER_SYSTEM_PROMPT
from helpers.pretrain.scenes import CAPTION_PROMPTS, caption, draw_scene, instructions, questions, random_scene


# ----------------------------------------------------------------------------- food photos, described, never named
# The real InternViT saw countless food photos in pre-training, under captions that describe them
# far more often than they name a regional dish. The miniature does the same: photos of the
# course's dishes (drawn with seeds the course data never uses) captioned with what they look
# like (``Dish.looks``), never with a dish or cuisine name. Naming is what fine-tuning teaches.
FOOD_PROMPTS = ("描述这道菜的样子。", "图片里的食物是什么样的？")


def food_caption(dish) -> str:
    """What the base model learns to say about a food photo: its looks, never its name.

    Example:
        >>> from helpers.foods import dish
        >>> food_caption(dish("mapo_tofu"))
        '这是一道菜：红亮的辣油里泡着白色豆腐方块，撒着绿色葱花。'
    """
    return f"这是一道菜：{dish.looks}。"


def draw_food(index: int, seed: int = 0, long_side: int = 448):
    """Draw pre-training food photo ``index``: dish ``DISHES[index % 16]``, a phone-photo shape.

    The drawing seed comes from ``(seed, 7, index)``, a space disjoint from the course photos'
    ``(seed, index)`` (:func:`helpers.data.synth.plan_photos`), so no course photo is ever drawn here.

    Args:
        index: photo number (picks the dish, the aspect ratio and the drawing seed).
        seed: data-set seed.
        long_side: long side in pixels.

    Returns:
        ``(dish, image)``.

    Example:
        >>> d, img = draw_food(5, long_side=64)
        >>> d.key, max(img.size)
        ('mapo_tofu', 64)
    """
    import numpy as np

    from helpers.foods import DISHES
    from helpers.data.synth import ASPECTS
    from helpers.data.synth_draw import draw_photo

    d = DISHES[index % len(DISHES)]
    state = np.random.SeedSequence([seed, 7, index]).generate_state(2)
    aw, ah, _ = ASPECTS[int(state[1]) % len(ASPECTS)]
    scale = long_side / max(aw, ah)
    return d, draw_photo(d, max(16, round(aw * scale)), max(16, round(ah * scale)), seed=int(state[0]))


def _draw_food_file(job) -> str:
    index, seed, long_side, path = job
    d, img = draw_food(index, seed, long_side)
    img.save(path, quality=90)
    return d.key


def _draw_food_pool(out: Path, seed: int, n: int, food_size: int) -> list:
    """Stage 0b's pool: ``n`` small photos (cheap to draw, seen at 224 px); photo i shows DISHES[i % 16]."""
    if n:
        (out / "food").mkdir(exist_ok=True)
    jobs = [(i, seed, food_size, str(out / f"food/{i:05d}.jpg")) for i in range(n)]
    if len(jobs) >= 64 and (os.cpu_count() or 1) > 1:
        import multiprocessing

        # drawing is pure Python + PIL: one process per core (same bytes as drawing them in order)
        with multiprocessing.get_context("spawn").Pool(min(4, os.cpu_count() or 1)) as pool:
            keys = pool.map(_draw_food_file, jobs, chunksize=64)
    else:
        keys = [_draw_food_file(job) for job in jobs]
    return [dict(image=f"food/{i:05d}.jpg", dish=key) for i, key in enumerate(keys)]


def make_shapes_dataset(out_dir, n_images: int = 240, n_heldout: int = 40, seed: int = 0,
                        size: int = 448, food_per_dish: int = 0, food_captioned_per_dish: int = 0,
                        food_size: int = 224, question_share: float = 1 / 3) -> dict:
    """Draw the scenes (and food photos) and write the LLaVA-format files of stages 1 and 2.

    Files: ``images/NNNN.jpg``, ``stage1.json`` (one caption per training image),
    ``stage2.json`` (:func:`instructions`: one or two single-turn samples per training image),
    ``heldout.json`` (scenes never trained on, for checking the result) and ``scenes.json``.
    With ``food_per_dish``: a pool of small food photos ``food/NNNNN.jpg`` (:func:`draw_food`)
    listed in ``foods.json`` (image, dish key: stage 0b's data), then ``food_captioned_per_dish``
    full-size photos per dish, captioned in stage 1 and described in stage 2
    (:func:`food_caption`), and one more per dish in ``heldout_food.json``.

    Args:
        out_dir: output folder (recreated files; other files are left alone).
        n_images: training images.
        n_heldout: extra images kept out of training.
        seed: one seed for scenes and drawing.
        size: image side in pixels.
        food_per_dish: small food photos per dish for stage 0b (0: no food at all).
        food_captioned_per_dish: full-size food photos per dish for stages 1 and 2.
        food_size: long side of the pool photos.
        question_share: probability that a training scene also gets one question in stage 2
            (:func:`instructions`).

    Returns:
        ``{"root", "stage1", "stage2", "heldout", "n_train", "n_heldout", "foods", "heldout_food"}``.
    """
    from helpers.foods import DISHES

    if food_captioned_per_dish > food_per_dish:
        raise ValueError(f"food_captioned_per_dish={food_captioned_per_dish} > food_per_dish={food_per_dish}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    scenes, stage1, stage2, heldout = [], [], [], []
    for i in range(n_images + n_heldout):
        scene = random_scene(rng)
        name = f"images/{i:04d}.jpg"
        draw_scene(scene, size, seed * 100_003 + i).save(out / name, quality=90)
        scenes.append(dict(image=name, **asdict(scene)))
        if i >= n_images:
            heldout.append(dict(image=name, scene=asdict(scene), questions=questions(scene)))
            continue
        stage1.append(dict(id=f"cap-{i}", image=name, image_wh=[size, size], conversations=[
            {"from": "human", "value": "<image>\n" + rng.choice(CAPTION_PROMPTS)},
            {"from": "gpt", "value": caption(scene)}]))
        for k, (q, a) in enumerate(instructions(scene, rng, question_share)):
            stage2.append(dict(id=f"ins-{i}-{k}", image=name, image_wh=[size, size], conversations=[
                {"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]))
    heldout_food = []
    n_dishes = len(DISHES)
    foods = _draw_food_pool(out, seed, food_per_dish * n_dishes, food_size)
    # Stages 1-2 and the check: full-size photos, drawn after the pool (other seeds).
    first = food_per_dish * n_dishes
    for i in range(first, first + (food_captioned_per_dish + 1) * n_dishes if food_per_dish else first):
        d, img = draw_food(i, seed, size)
        name = f"food/{i:05d}.jpg"
        img.save(out / name, quality=90)
        if i >= first + food_captioned_per_dish * n_dishes:  # the last round: one unseen photo per dish
            heldout_food.append(dict(image=name, dish=d.key, looks=d.looks))
            continue
        wh = list(img.size)
        stage1.append(dict(id=f"food-cap-{i}", image=name, image_wh=[wh], conversations=[
            {"from": "human", "value": "<image>\n" + rng.choice(FOOD_PROMPTS + CAPTION_PROMPTS)},
            {"from": "gpt", "value": food_caption(d)}]))
        stage2.append(dict(id=f"food-ins-{i}", image=name, image_wh=[wh], conversations=[
            {"from": "human", "value": "<image>\n" + rng.choice(FOOD_PROMPTS)},
            {"from": "gpt", "value": food_caption(d)}]))
    files = {"stage1": stage1, "stage2": stage2, "heldout": heldout, "scenes": scenes, "foods": foods,
             "heldout_food": heldout_food}
    for key, records in files.items():
        (out / f"{key}.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return dict(root=str(out), stage1=str(out / "stage1.json"), stage2=str(out / "stage2.json"),
                heldout=str(out / "heldout.json"), n_train=n_images, n_heldout=n_heldout,
                foods=str(out / "foods.json"), heldout_food=str(out / "heldout_food.json"),
                n_food=len(foods), n_food_captioned=food_captioned_per_dish * n_dishes if food_per_dish else 0)


# ----------------------------------------------------------------------------- stage 0: language
def chat_text(pairs, system: str = XTUNER_SYSTEM_PROMPT) -> str:
    """A conversation in InternVL2's / XTuner's prompt format, answers included (no BOS).

    Example:
        >>> chat_text([("Q", "A")], system="S")
        '<|im_start|>system\\nS<|im_end|><|im_start|>user\\nQ<|im_end|><|im_start|>assistant\\nA<|im_end|>'
    """
    text = f"<|im_start|>system\n{system}<|im_end|>"
    for q, a in pairs:
        text += f"<|im_start|>user\n{q}<|im_end|><|im_start|>assistant\n{a}<|im_end|>"
    return text


def warmup_texts(n: int = 1200, seed: int = 0, context_share: float = 0.5, food_share: float = 0.0) -> list:
    """Text-only conversations about random scenes: the stage-0 corpus.

    Two kinds, mixed: plain question/answer turns (the model learns how answers are phrased),
    and turns whose user message first *states* the scene in words and then asks about it
    (the model learns to read the answer off the message, which is what it must later do
    with image tokens standing where the words were). All use XTuner's system prompt, the one
    stages 1-2 train with.

    Args:
        n: number of conversations.
        seed: random seed.
        context_share: share of conversations that state the scene first.
        food_share: share of conversations that describe a dish's looks (:func:`food_caption`).

    Returns:
        Conversation strings (:func:`chat_text`).
    """
    from helpers.foods import DISHES

    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        if rng.random() < food_share:
            answer = food_caption(rng.choice(DISHES))
            prompt = rng.choice(FOOD_PROMPTS)
            texts.append(chat_text([(answer + "\n" + prompt if rng.random() < context_share else prompt, answer)]))
            continue
        scene = random_scene(rng)
        pairs = rng.sample(questions(scene), rng.randint(1, 3))
        if rng.random() < context_share:
            q, a = pairs[0]
            pairs[0] = (caption(scene) + "\n" + q, a)
        texts.append(chat_text(pairs, XTUNER_SYSTEM_PROMPT))
    return texts
