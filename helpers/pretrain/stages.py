"""InternVL 1.5's training stages in miniature, for real, on the tiny model (notebook 02).

The released InternVL2 went through large-scale pre-training; the course's tiny checkpoint
(``make tiny``) has random weights. This module gives it a small version of that history, so
later notebooks start from a model that sees and speaks, but knows no dish:

0. **warm-ups** (plain PyTorch): the real InternLM2 and InternViT arrive pre-trained, the tiny
   ones are random. 0a: the LLM alone learns the language of the captions and answers below,
   as text. 0b: the ViT alone learns, at 224 px, to see the drawn attributes (InternViT-6B was
   pre-trained at 224 px too; InternVL 1.2 raised it to 448 px).
1. **stage 1** (XTuner, InternVL 1.5's pre-training): InternViT + the MLP projector are trained
   at 448 px, the LLM is frozen, on image captions of drawn scenes.
2. **stage 2** (XTuner, InternVL 1.5's fine-tuning): the whole model is trained on
   instructions (descriptions and questions) about such scenes.

The scenes are drawn here: 1-3 shapes of one colour and kind, grouped on one side of a
textured background (:func:`draw_scene`); every caption and answer is derived from the scene
(:func:`caption`, :func:`questions`). No food photo is ever used for training here.

:func:`build_base` runs all stages into ``Settings.tiny_base_model_path`` and skips them when
that model was built from the same inputs (a fingerprint of the tiny model, this module's
source and the recipe).

Example:
    >>> import random
    >>> scene = random_scene(random.Random(0))
    >>> caption(scene).startswith("图中有")
    True
    >>> draw_scene(scene, size=112, seed=0).size
    (112, 112)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.settings import REPO_ROOT, XTUNER_SYSTEM_PROMPT, Settings

# ----------------------------------------------------------------------------- the drawn world
COLOURS = {  # colour name -> RGB; a broad palette, as in food: brown, red oil, green, white, ...
    "红色": (205, 40, 35), "橙色": (245, 135, 20), "黄色": (240, 205, 40), "绿色": (50, 150, 55),
    "蓝色": (40, 95, 200), "紫色": (130, 70, 170), "粉色": (245, 150, 185), "棕色": (125, 75, 40),
    "白色": (245, 245, 240), "黑色": (25, 25, 25),
}
BACKGROUNDS = {  # background name -> RGB of its (textured) base
    "浅灰色": (185, 185, 185), "米色": (225, 205, 165), "深灰色": (80, 80, 85), "浅蓝色": (175, 205, 230),
}
SHAPES = ("圆形", "正方形", "三角形", "星形", "菱形")
POSITIONS = ("左边", "右边", "上方", "下方", "中间")
COUNTS = {1: "一", 2: "两", 3: "三"}
# English names, for plot titles (the course's machines have no CJK font).
ENGLISH = {"红色": "red", "橙色": "orange", "黄色": "yellow", "绿色": "green", "蓝色": "blue", "紫色": "purple",
           "粉色": "pink", "棕色": "brown", "白色": "white", "黑色": "black", "圆形": "circle", "正方形": "square",
           "三角形": "triangle", "星形": "star", "菱形": "diamond", "左边": "left", "右边": "right", "上方": "top",
           "下方": "bottom", "中间": "centre", "浅灰色": "light grey", "米色": "beige", "深灰色": "dark grey",
           "浅蓝色": "light blue"}
# Where each position puts the group: (x0, y0, x1, y1) as fractions of the image.
_REGIONS = {"左边": (0.0, 0.0, 0.45, 1.0), "右边": (0.55, 0.0, 1.0, 1.0), "上方": (0.0, 0.0, 1.0, 0.45),
            "下方": (0.0, 0.55, 1.0, 1.0), "中间": (0.2, 0.2, 0.8, 0.8)}


@dataclass(frozen=True)
class Scene:
    """What one drawn image shows; captions and answers are derived from it."""

    count: int  # 1-3 shapes
    colour: str  # a key of COLOURS
    shape: str  # one of SHAPES
    position: str  # one of POSITIONS: where the group sits
    background: str  # a key of BACKGROUNDS


def random_scene(rng: random.Random) -> Scene:
    """A uniformly random :class:`Scene`.

    Example:
        >>> random_scene(random.Random(1)).shape in SHAPES
        True
    """
    return Scene(rng.choice(list(COUNTS)), rng.choice(list(COLOURS)), rng.choice(SHAPES),
                 rng.choice(POSITIONS), rng.choice(list(BACKGROUNDS)))


def _polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list:
    if shape == "正方形":
        k, radii = 4, [r * 0.95]
    elif shape == "三角形":
        k, radii = 3, [r * 1.1]
    elif shape == "菱形":
        k, radii, turn = 4, [r], 0.0  # a square stood on its corner
    elif shape == "星形":
        k, radii = 10, [r * 1.1, r * 0.45]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    start = {"正方形": math.pi / 4, "菱形": 0.0}.get(shape, -math.pi / 2) + turn
    return [(cx + radii[i % len(radii)] * math.cos(start + 2 * math.pi * i / k),
             cy + radii[i % len(radii)] * math.sin(start + 2 * math.pi * i / k)) for i in range(k)]


def _place(rng: random.Random, n: int, box: tuple, size: int) -> list:
    """n non-overlapping (cx, cy, r) inside box (pixel coordinates); shrinks r until they fit."""
    x0, y0, x1, y1 = (v * size for v in box)
    # Big shapes: like a dish in a food photo, the subject fills much of the frame.
    r = size * rng.uniform(0.14, 0.2)
    for _ in range(60):
        placed = []
        for _ in range(200):
            if len(placed) == n:
                return placed
            cx, cy = rng.uniform(x0 + r, x1 - r), rng.uniform(y0 + r, y1 - r)
            if all(math.hypot(cx - px, cy - py) > 2.15 * r for px, py, _ in placed):
                placed.append((cx, cy, r))
        r *= 0.92
    raise RuntimeError(f"could not place {n} shapes in box {box}")  # unreachable for n <= 3


def draw_scene(scene: Scene, size: int = 448, seed: int = 0):
    """Draw a scene: a noisy, shaded background and the shapes with jittered colour.

    Args:
        scene: what to draw.
        size: image side in pixels (448: one InternVL tile).
        seed: drawing seed (positions, sizes, texture).

    Returns:
        An RGB PIL image.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    # Low-frequency texture + light falloff, so colour is not a constant the ViT can shortcut.
    coarse = nrng.normal(0, 14, (6, 6, 1)).astype(np.float32)
    texture = np.array(Image.fromarray(coarse[..., 0]).resize((size, size), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 1.0 + 0.12 * (rng.random() - 0.5) * 2 * (xx - 0.5) + 0.12 * (rng.random() - 0.5) * 2 * (yy - 0.5)
    pixels = (base[None, None, :] + texture[..., None]) * light[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    rgb = COLOURS[scene.colour]
    for cx, cy, r in _place(rng, scene.count, _REGIONS[scene.position], size):
        fill = tuple(int(min(255, max(0, v + rng.randint(-18, 18)))) for v in rgb)
        if scene.shape == "圆形":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(_polygon(scene.shape, cx, cy, r, rng.uniform(-0.3, 0.3)), fill=fill)
    noise = nrng.normal(0, 5, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


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


def caption(scene: Scene) -> str:
    """The scene's caption, e.g. ``图中有两个红色的圆形，位于左边，背景是米色。``"""
    return (f"图中有{COUNTS[scene.count]}个{scene.colour}的{scene.shape}，"
            f"位于{scene.position}，背景是{scene.background}。")


CAPTION_PROMPTS = ("描述这张图片。", "请简单描述图片的内容。", "图片里有什么？")


def questions(scene: Scene) -> list:
    """Instruction pairs ``(question, answer)`` about a scene (stage 2 data).

    Example:
        >>> q = dict(questions(Scene(2, "红色", "圆形", "左边", "米色")))
        >>> q["图中有几个形状？"]
        '图中有两个。'
    """
    it = "它们" if scene.count > 1 else "它"
    these = "这些形状" if scene.count > 1 else "这个形状"
    return [
        ("图中有几个形状？", f"图中有{COUNTS[scene.count]}个。"),
        (f"{these}是什么颜色的？", f"{it}是{scene.colour}的。"),
        ("图中画的是什么形状？", f"图中画的是{scene.shape}。"),
        (f"{these}在图片的什么位置？", f"位于图片的{scene.position}。"),
        ("背景是什么颜色？", f"背景是{scene.background}。"),
        ("这是什么？", f"这是{COUNTS[scene.count]}个{scene.colour}的{scene.shape}。"),
        ("描述这张图片。", caption(scene)),
    ]


def instructions(scene: Scene, rng: random.Random, question_share: float = 1 / 3) -> list:
    """Stage-2 instructions for one image: a description request, and sometimes one question.

    Each becomes its own single-turn sample (in a multi-turn sample later answers could be
    copied from earlier ones instead of read off the image). Descriptions dominate: a tiny
    model learns to read an image fastest from them, because their fixed word order says
    which attribute comes next; the questions teach it to answer one thing when asked.

    Args:
        scene: the image's scene.
        rng: random source.
        question_share: probability of adding one random question.

    Returns:
        ``[(prompt, answer), ...]`` (one or two pairs).
    """
    pairs = [(rng.choice(CAPTION_PROMPTS), caption(scene))]
    if rng.random() < question_share:
        pairs.append(rng.choice(questions(scene)[:6]))
    return pairs


def make_shapes_dataset(out_dir, n_images: int = 240, n_heldout: int = 40, seed: int = 0,
                        size: int = 448, food_per_dish: int = 0, food_captioned_per_dish: int = 0,
                        food_size: int = 224) -> dict:
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
        for k, (q, a) in enumerate(instructions(scene, rng)):
            stage2.append(dict(id=f"ins-{i}-{k}", image=name, image_wh=[size, size], conversations=[
                {"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]))
    foods, heldout_food = [], []
    n_dishes = len(DISHES)
    if food_per_dish:
        (out / "food").mkdir(exist_ok=True)
    # Stage 0b's pool: many small photos (cheap to draw, seen at 224 px); photo i shows DISHES[i % 16].
    jobs = [(i, seed, food_size, str(out / f"food/{i:05d}.jpg")) for i in range(food_per_dish * n_dishes)]
    if len(jobs) >= 64 and (os.cpu_count() or 1) > 1:
        import multiprocessing

        # drawing is pure Python + PIL: one process per core (same bytes as drawing them in order)
        with multiprocessing.get_context("spawn").Pool(min(4, os.cpu_count() or 1)) as pool:
            keys = pool.map(_draw_food_file, jobs, chunksize=64)
    else:
        keys = [_draw_food_file(job) for job in jobs]
    foods = [dict(image=f"food/{i:05d}.jpg", dish=key) for i, key in enumerate(keys)]
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


def language_warmup(model_dir, out_dir, texts, steps: int = 60, batch_size: int = 16, lr: float = 3e-3,
                    seed: int = 0, log_every: int = 5) -> list:
    """Stage 0: train only the language model on ``texts`` (next-token loss on every token).

    Args:
        model_dir: InternVL2 checkpoint to start from (the tiny model).
        out_dir: where the whole checkpoint (ViT and projector unchanged) is written.
        texts: training conversations (:func:`warmup_texts`).
        steps: optimizer steps.
        batch_size: texts per step.
        lr: AdamW peak learning rate (linear warm-up over 10 % of the steps, then cosine).
        seed: sampling seed.
        log_every: print the loss every N steps.

    Returns:
        ``[(step, loss), ...]`` for every step.
    """
    try:
        import torch
    except ImportError as exc:
        raise ImportError("stage 0 needs torch; install requirements-xtuner.txt") from exc
    from helpers.models import load_model

    torch.manual_seed(seed)
    model, tok = load_model(model_dir, dtype=torch.float32)
    llm = model.language_model.train()
    model.vision_model.requires_grad_(False)
    model.mlp1.requires_grad_(False)
    encoded = [tok(t).input_ids for t in texts]  # BOS added by the tokenizer, as in XTuner's data
    opt = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    warm = max(2, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(
        math.pi * min(1.0, max(0, s - warm) / max(1, steps - warm))))))
    rng = random.Random(seed)
    losses = []
    for step in range(1, steps + 1):
        batch = rng.sample(encoded, min(batch_size, len(encoded)))
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        loss = llm(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append((step, round(float(loss.detach()), 4)))
        if log_every and (step % log_every == 0 or step == 1):
            print(f"stage 0a step {step:>3}/{steps}  loss {float(loss):.3f}", flush=True)
    _save_checkpoint(model, tok, model_dir, out_dir)
    return losses


def _save_checkpoint(model, tokenizer, src_dir, out_dir) -> None:
    """A complete model dir: bf16 weights (as the checkpoints ship), tokenizer, remote code."""
    import torch

    from helpers.models import copy_remote_code

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    copy_remote_code(out)
    src = Path(src_dir) / "generation_config.json"
    if src.exists():
        (out / "generation_config.json").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")


def vision_warmup(model_dir, out_dir, data_root, scenes, steps: int = 120, batch_size: int = 32,
                  lr: float = 3e-3, size: int = 224, seed: int = 0, log_every: int = 20, foods=None,
                  food_batch: int = 24) -> list:
    """Stage 0b: pre-train InternViT alone, at 224 px, to see the drawn attributes and food.

    The real InternViT-6B arrives pre-trained (at 224 px, by InternVL 1.0's image-text
    training) and InternVL 1.2 only raised it to 448 px. The tiny ViT is random, so it first
    learns here, on small images (4x fewer patches, much cheaper), with a linear head per
    attribute applied to **every** patch token: each token learns to carry the colour, shape,
    count, position and background of a scene. Food photos get one more linear head, on the
    mean of their patch tokens: which of the 16 looks (``Dish.looks``) the photo shows. The
    heads are thrown away; the model dir written is the input model with the new ViT weights.

    Args:
        model_dir: checkpoint to start from (stage 0a's output).
        out_dir: where to write the checkpoint.
        data_root: folder the scenes' and foods' image paths are relative to.
        scenes: records with ``image`` and the :class:`Scene` fields (``scenes.json``).
        steps: optimizer steps.
        batch_size: images per step (scenes + food photos).
        lr: AdamW peak learning rate (linear warm-up 10 %, then cosine).
        size: image side for this stage (the ViT interpolates its position embeddings).
        seed: sampling seed.
        log_every: print loss and batch accuracy every N steps.
        foods: records with ``image`` and ``dish`` (``foods.json``); None trains on scenes only.
        food_batch: food photos per step when ``foods`` is given.

    Returns:
        ``[(step, loss), ...]``.
    """
    try:
        import numpy as np
        import torch
    except ImportError as exc:
        raise ImportError("stage 0b needs torch; install requirements-xtuner.txt") from exc
    from helpers.foods import DISHES
    from helpers.models import load_model
    from helpers.tiling import IMAGENET_MEAN, IMAGENET_STD, load_image

    if not scenes:
        raise ValueError("vision_warmup needs at least one scene")
    foods = list(foods or [])
    n_food = min(food_batch, batch_size - 1) if foods else 0
    torch.manual_seed(seed)
    model, tok = load_model(model_dir, dtype=torch.float32)
    vit = model.vision_model.train()
    values = {"colour": list(COLOURS), "shape": list(SHAPES), "count": list(COUNTS), "position": list(POSITIONS),
              "background": list(BACKGROUNDS)}
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def as_uint8(path, side=None):
        img = load_image(Path(data_root) / path)
        if side:
            img = img.resize((side, side), 3)  # 3: bicubic
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)

    pixels = torch.stack([as_uint8(rec["image"], size) for rec in scenes])
    targets = {a: torch.tensor([v.index(rec[a]) for rec in scenes]) for a, v in values.items()}
    keys = [d.key for d in DISHES]
    # Whole photos squashed to a square, as a one-tile model sees a phone photo.
    food_pixels = torch.stack([as_uint8(rec["image"], size) for rec in foods]) if foods else None
    food_targets = torch.tensor([keys.index(rec["dish"]) for rec in foods]) if foods else None
    width = model.config.vision_config.hidden_size
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(width, len(v)) for a, v in values.items()})
    heads["food"] = torch.nn.Linear(width, len(keys))
    params = list(vit.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(2, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(
        math.pi * min(1.0, max(0, s - warm) / max(1, steps - warm))))))
    gen = torch.Generator().manual_seed(seed)

    def norm(x):
        return (x.float() / 255 - mean) / std

    losses = []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(scenes), (batch_size - n_food,), generator=gen)
        batch = [norm(pixels[idx])]
        if n_food:
            fidx = torch.randint(0, len(foods), (n_food,), generator=gen)
            batch.append(norm(food_pixels[fidx]))
        tokens = vit(pixel_values=torch.cat(batch)).last_hidden_state[:, 1:]  # every patch token, no class token
        scene_tokens, food_tokens = tokens[:len(idx)], tokens[len(idx):]
        n_patch = tokens.shape[1]
        parts = {a: torch.nn.functional.cross_entropy(heads[a](scene_tokens).flatten(0, 1),
                                                      targets[a][idx].repeat_interleave(n_patch)) for a in values}
        if n_food:
            parts["food"] = torch.nn.functional.cross_entropy(heads["food"](food_tokens.mean(1)), food_targets[fidx])
        loss = sum(parts.values()) / len(parts)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append((step, round(float(loss.detach()), 4)))
        if log_every and (step % log_every == 0 or step == 1):
            with torch.no_grad():
                acc = {a: float((heads[a](scene_tokens).mean(1).argmax(-1) == targets[a][idx]).float().mean())
                       for a in values}
                if n_food:
                    acc["food"] = float((heads["food"](food_tokens.mean(1)).argmax(-1)
                                         == food_targets[fidx]).float().mean())
            print(f"stage 0b step {step:>3}/{steps}  loss {float(loss.detach()):.3f}  batch accuracy "
                  + " ".join(f"{a} {v:.2f}" for a, v in acc.items()), flush=True)
    _save_checkpoint(model, tok, model_dir, out_dir)
    return losses


# ----------------------------------------------------------------------------- stages 1-2: XTuner
STAGE_CONFIG = """\
# XTuner config: {title}
# Written by helpers.pretrain.stages (notebook 02). Full-parameter training with XTuner's InternVL_V1_5
# recipe: no LoRA; freeze_llm / freeze_visual_encoder decide which parts learn.
#   xtuner train {config_name} --work-dir {work_dir}
from mmengine.hooks import CheckpointHook, DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook
from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
from torch.optim import AdamW

from xtuner.dataset import InternVL_V1_5_Dataset
from xtuner.dataset.collate_fns import default_collate_fn
from xtuner.dataset.samplers import LengthGroupedSampler
from xtuner.engine.runner import TrainLoop
from xtuner.utils import PROMPT_TEMPLATE

# XTuner's InternVL_V1_5 with the fixes this stack needs (helpers/train/xtuner_compat.py), held in
# fp32: a frozen bf16 LLM cannot take the fp32 projector's output, and fp32 is faster on a CPU.
from helpers.pretrain.stages import FullPrecisionInternVL

# PART 1  Settings
path = {model_path!r}  # checkpoint this stage starts from
data_path = {data_path!r}  # LLaVA-format JSON
image_folder = {image_folder!r}  # the JSON's image paths are relative to this
prompt_template = PROMPT_TEMPLATE.internlm2_chat
max_length = {max_length}  # tokens per sample, image tokens included
freeze_llm = {freeze_llm}  # stage 1: True (only InternViT + MLP learn); stage 2: False
freeze_visual_encoder = {freeze_vit}  # True: InternViT keeps its stage-0b weights (pretrain_vit_lr_mult 0)
batch_size = {batch_size}  # samples per step
accumulative_counts = 1  # no gradient accumulation
dataloader_num_workers = 0  # worker processes only add start-up time on a small CPU
max_epochs = {max_epochs}  # passes over the data
lr = {lr}  # AdamW peak learning rate (a tiny model from scratch learns fast)
vit_lr_mult = {vit_lr_mult}  # InternViT's learning rate = lr x this
betas = (0.9, 0.999)
weight_decay = 0.05  # AdamW decoupled weight decay (the XTuner recipes use 0.05)
max_norm = 1.0  # gradient clipping
warmup_ratio = {warmup_ratio}  # linear warm-up ({warmup_iters} iterations), then cosine decay to 0
log_interval = {log_interval}  # log every N iterations
seed = {seed}

# PART 2  Model
model = dict(type=FullPrecisionInternVL, model_path=path, freeze_llm=freeze_llm,
             freeze_visual_encoder=freeze_visual_encoder)

# PART 3  Data
llava_dataset = dict(type=InternVL_V1_5_Dataset, model_path=path, data_paths=data_path,
                     image_folders=image_folder, template=prompt_template, max_length=max_length)
train_dataloader = dict(
    batch_size=batch_size, num_workers=dataloader_num_workers, dataset=llava_dataset,
    sampler=dict(type=LengthGroupedSampler, length_property="modality_length",
                 per_device_batch_size=batch_size * accumulative_counts),
    collate_fn=dict(type=default_collate_fn))

# PART 4  Optimizer and schedule (plain fp32 OptimWrapper: AmpOptimWrapper needs a GPU)
optim_wrapper = dict(type=OptimWrapper,
                     optimizer=dict(type=AdamW, lr=lr, betas=betas, weight_decay=weight_decay),
                     clip_grad=dict(max_norm=max_norm, error_if_nonfinite=False),
                     accumulative_counts=accumulative_counts,
                     # the ViT learns slower than the rest, so its warmed-up features are refined, not overwritten
                     paramwise_cfg=dict(custom_keys={{"vision_model": dict(lr_mult=vit_lr_mult)}}))
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-2, by_epoch=True, begin=0, end=warmup_ratio * max_epochs,
         convert_to_iter_based=True),
    dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=True, begin=warmup_ratio * max_epochs,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)

# PART 5  Runtime: one checkpoint, at the end
default_hooks = dict(
    timer=dict(type=IterTimerHook),
    logger=dict(type=LoggerHook, log_metric_by_epoch=False, interval=log_interval),
    param_scheduler=dict(type=ParamSchedulerHook),
    checkpoint=dict(type=CheckpointHook, save_optimizer=False, by_epoch=False, interval=100000,
                    max_keep_ckpts=1),
    sampler_seed=dict(type=DistSamplerSeedHook))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
visualizer = None
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=seed, deterministic=False)
log_processor = dict(by_epoch=False)
"""


def _full_precision_class():
    """``CourseInternVL`` with the whole model in fp32 (built on first use: it imports XTuner)."""
    from helpers.train.xtuner_compat import CourseInternVL

    class FullPrecisionInternVL(CourseInternVL):
        """XTuner's InternVL_V1_5 (course fixes included) holding every weight in fp32.

        XTuner loads the checkpoint in bf16 and the course class keeps only the *trainable*
        weights in fp32. With the LLM frozen and no LoRA (stage 1), the fp32 projector's tokens
        then meet the bf16 LLM's embeddings and the splice fails on the dtype mismatch. A tiny
        model costs nothing to hold in fp32, and fp32 matmuls are faster than bf16 on a CPU.
        The saved ``.pth`` and ``convert_to_official`` are unchanged.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.model.float()

    return FullPrecisionInternVL


def __getattr__(name):
    # Lets an XTuner config `from helpers.pretrain.stages import FullPrecisionInternVL` without this
    # module importing XTuner for everyone else.
    if name == "FullPrecisionInternVL":
        cls = _full_precision_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_stage_config(path, title: str, model_path, data_path, image_folder, work_dir, freeze_llm: bool,
                       freeze_vit: bool, n_samples: int, batch_size: int, max_epochs: int, lr: float,
                       vit_lr_mult: float = 1.0, seed: int = 0, max_length: int = 1024) -> Path:
    """Write an XTuner config for one full-parameter stage (InternVL 1.5's recipe).

    The warm-up spans 10 % of the iterations, and at least 2 (a shorter one leaves the LR at
    ``lr x 1e-2`` for the only warm-up step); the log gets about 25 points.

    Args:
        path: config file to write (outside ``work_dir``: mmengine dumps its own copy there).
        title: first comment line.
        model_path: checkpoint to start from.
        data_path: LLaVA-format JSON.
        image_folder: root of the JSON's image paths.
        work_dir: the run's work dir (only named in the comment; pass it to ``launch``).
        freeze_llm: freeze InternLM2.
        freeze_vit: freeze InternViT.
        n_samples: records in ``data_path`` (sizes the warm-up and log interval).
        batch_size: samples per step.
        max_epochs: passes over the data.
        lr: peak learning rate.
        vit_lr_mult: InternViT's learning rate as a multiple of ``lr``.
        seed: randomness seed.
        max_length: token limit per sample.

    Returns:
        The config path.
    """
    iters = math.ceil(n_samples / batch_size) * max_epochs
    warmup_iters = max(2, iters // 10)
    if iters < 2 * warmup_iters:
        raise ValueError(f"{iters} iterations are too few for warm-up + decay; use more data or epochs")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAGE_CONFIG.format(
        title=title, config_name=path, work_dir=work_dir, model_path=str(model_path), data_path=str(data_path),
        image_folder=str(image_folder), max_length=max_length, freeze_llm=freeze_llm, freeze_vit=freeze_vit,
        batch_size=batch_size, max_epochs=max_epochs, lr=lr, vit_lr_mult=vit_lr_mult, warmup_ratio=round((warmup_iters + 0.5) / iters, 6),
        warmup_iters=warmup_iters, log_interval=max(1, iters // 25), seed=seed), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the whole pipeline
@dataclass(frozen=True)
class PretrainRecipe:
    """Sizes and hyper-parameters of the stages (from :class:`Settings`, ``pretrain_*`` fields)."""

    images: int
    heldout: int
    food_per_dish: int
    food_captioned_per_dish: int
    max_tiles: int
    stage0_steps: int
    stage0_lr: float
    text_food_share: float
    vision_steps: int
    vision_lr: float
    vision_food_batch: int
    stage1_epochs: int
    stage1_lr: float
    stage2_epochs: int
    stage2_lr: float
    vit_lr_mult: float
    batch_size: int
    seed: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "PretrainRecipe":
        """The recipe of ``settings`` (``pretrain_*`` fields and ``seed``)."""
        return cls(images=settings.pretrain_images, heldout=settings.pretrain_heldout,
                   food_per_dish=settings.pretrain_food_per_dish,
                   food_captioned_per_dish=settings.pretrain_food_captioned_per_dish,
                   max_tiles=settings.pretrain_max_tiles,
                   stage0_steps=settings.pretrain_stage0_steps, stage0_lr=settings.pretrain_stage0_lr,
                   text_food_share=settings.pretrain_text_food_share,
                   vision_steps=settings.pretrain_vision_steps, vision_lr=settings.pretrain_vision_lr,
                   vision_food_batch=settings.pretrain_vision_food_batch,
                   stage1_epochs=settings.pretrain_stage1_epochs, stage1_lr=settings.pretrain_stage1_lr,
                   stage2_epochs=settings.pretrain_stage2_epochs, stage2_lr=settings.pretrain_stage2_lr,
                   vit_lr_mult=settings.pretrain_vit_lr_mult, batch_size=settings.pretrain_batch_size,
                   seed=settings.seed)


MANIFEST = "pretrain.json"  # written into the base model dir: fingerprint, losses, timings


def fingerprint(tiny_dir, recipe: PretrainRecipe) -> str:
    """SHA-256 of everything the base model is built from.

    The tiny checkpoint's files, the model code (``helpers/internvl``), this package, the XTuner
    compatibility class and the recipe: a change to any of them rebuilds the base.
    """
    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    tiny_dir = Path(tiny_dir)
    files = [tiny_dir / n for n in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")]
    helpers = REPO_ROOT / "helpers"
    files += sorted((helpers / "internvl").glob("*.py")) + sorted((helpers / "pretrain").glob("*.py"))
    files += [helpers / "train" / "xtuner_compat.py", helpers / "foods.py"]
    files += sorted((helpers / "data").glob("synth_*.py"))
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"fingerprint: {f} is missing (is the tiny model built? `make tiny`)")
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def set_max_tiles(model_dir, max_tiles: int) -> None:
    """Set ``max_dynamic_patch`` in a checkpoint's config.json (XTuner, LMDeploy and the course read it).

    Example:
        >>> set_max_tiles("artifacts/models/internvl2-tiny-base", 1)   # doctest: +SKIP
    """
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles}")
    cfg["max_dynamic_patch"] = int(max_tiles)
    path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def read_manifest(model_dir) -> dict | None:
    """The manifest :func:`build_base` wrote into a base model dir, or None."""
    path = Path(model_dir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _run_xtuner_stage(name, config, work_dir, out_dir, progress):
    from helpers.train import finetune

    started = time.time()
    run = finetune.launch(config, work_dir, overwrite=True)
    run.wait(progress=progress)
    result = run.result()  # raises TrainingFailed with the log's traceback
    trained = time.time()
    finetune.convert(config, result.checkpoint, out_dir, overwrite=True)
    rows = finetune.read_log(work_dir)
    print(f"{name}: {result.max_iters} iterations, final loss {result.final_loss}, "
          f"train {trained - started:.0f} s + convert {time.time() - trained:.0f} s", flush=True)
    return dict(iterations=result.max_iters, final_loss=result.final_loss,
                loss=[(r["iteration"], r["loss"]) for r in rows if r["loss"] is not None],
                train_s=round(trained - started, 1), convert_s=round(time.time() - trained, 1))


def build_base(settings: Settings, force: bool = False, progress: bool = True) -> dict:
    """Run stages 0-2 on the tiny model into ``settings.tiny_base_model_path`` (cached).

    Skipped when the base model exists and its manifest's fingerprint (:func:`fingerprint`)
    matches the current inputs; ``force=True`` rebuilds anyway. Work files go under
    ``settings.runs_dir / "pretrain"``, the drawn scenes under ``artifacts/data/shapes``.

    Args:
        settings: course settings (tiny profile: ``tiny_model_path`` must exist).
        force: rebuild even when cached.
        progress: show XTuner progress bars.

    Returns:
        The manifest: ``fingerprint``, ``skipped``, ``seconds`` per stage, ``loss`` per stage
        as ``[(step, loss), ...]``, ``data`` (dataset paths and sizes).

    Example:
        >>> info = build_base(get_settings())        # doctest: +SKIP
        >>> sorted(info["loss"])                     # doctest: +SKIP
        ['stage0a', 'stage0b', 'stage1', 'stage2']
    """
    from helpers.models import set_system_prompt

    recipe = PretrainRecipe.from_settings(settings)
    tiny = settings.tiny_model_path
    if not (tiny / "config.json").is_file():
        raise FileNotFoundError(f"no tiny model at {tiny}; build it first: python -m helpers.models build-tiny")
    key = fingerprint(tiny, recipe)
    out = settings.tiny_base_model_path
    manifest = read_manifest(out)
    if not force and manifest and manifest.get("fingerprint") == key and (out / "model.safetensors").is_file():
        print(f"Base model up to date: {out} (built in {manifest['seconds']['total']:.0f} s); "
              f"pass force=True to rebuild.")
        return dict(manifest, skipped=True)

    t0 = time.time()
    seconds = {}
    work = settings.runs_dir / "pretrain"
    data = make_shapes_dataset(settings.artifacts / "data" / "shapes", recipe.images, recipe.heldout, recipe.seed,
                               food_per_dish=recipe.food_per_dish,
                               food_captioned_per_dish=recipe.food_captioned_per_dish)
    seconds["data"] = round(time.time() - t0, 1)
    print(f"drew {recipe.images} + {recipe.heldout} scenes and {data['n_food']} + {data['n_food_captioned']} "
          f"food photos in {seconds['data']:.0f} s", flush=True)

    t = time.time()
    texts = warmup_texts(seed=recipe.seed, food_share=recipe.text_food_share)
    losses = {"stage0a": language_warmup(tiny, work / "stage0a-model", texts, recipe.stage0_steps,
                                         lr=recipe.stage0_lr, seed=recipe.seed)}
    # From here on every stage sees one 448 px tile per image (the base keeps this setting).
    set_max_tiles(work / "stage0a-model", recipe.max_tiles)
    seconds["stage0a"] = round(time.time() - t, 1)
    t = time.time()
    scenes = json.loads(Path(data["root"], "scenes.json").read_text(encoding="utf-8"))[:recipe.images]
    foods = json.loads(Path(data["foods"]).read_text(encoding="utf-8"))
    stage0_dir = work / "stage0b-model"
    losses["stage0b"] = vision_warmup(work / "stage0a-model", stage0_dir, data["root"], scenes, recipe.vision_steps,
                                      lr=recipe.vision_lr, seed=recipe.seed, foods=foods,
                                      food_batch=recipe.vision_food_batch, log_every=100)
    seconds["stage0b"] = round(time.time() - t, 1)

    stages = {}
    # A ViT learning rate of 0 means frozen: XTuner then skips its gradients altogether.
    freeze_vit = recipe.vit_lr_mult == 0
    what = "MLP learns (InternViT kept from stage 0b)" if freeze_vit else "InternViT + MLP learn"
    plan = [("stage1", f"stage 1 - {what}, LLM frozen, on captions", stage0_dir,
             data["stage1"], True, recipe.stage1_epochs, recipe.stage1_lr, work / "stage1-model"),
            ("stage2", "stage 2 - MLP + LLM learn, on instructions" if freeze_vit
             else "stage 2 - the whole model learns, on instructions", work / "stage1-model",
             data["stage2"], False, recipe.stage2_epochs, recipe.stage2_lr, out)]
    for name, title, start, data_json, freeze_llm, epochs, lr, model_out in plan:
        t = time.time()
        n_samples = len(json.loads(Path(data_json).read_text(encoding="utf-8")))
        config = write_stage_config(work / f"{name}.py", title, start, data_json, data["root"], work / name,
                                    freeze_llm=freeze_llm, freeze_vit=freeze_vit, n_samples=n_samples,
                                    batch_size=recipe.batch_size, max_epochs=epochs, lr=lr,
                                    vit_lr_mult=recipe.vit_lr_mult, seed=recipe.seed)
        stages[name] = _run_xtuner_stage(name, config, work / name, model_out, progress)
        losses[name] = stages[name].pop("loss")
        seconds[name] = round(time.time() - t, 1)
    # The base answers in the format and with the system prompt it was trained with.
    set_system_prompt(out, XTUNER_SYSTEM_PROMPT)
    seconds["total"] = round(time.time() - t0, 1)
    manifest = dict(fingerprint=key, recipe=asdict(recipe), seconds=seconds, loss=losses, stages=stages,
                    data=data, built=time.strftime("%Y-%m-%d %H:%M:%S"))
    (out / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return dict(manifest, skipped=False)


# ----------------------------------------------------------------------------- checking the result
ATTRIBUTES = {"count": 0, "colour": 1, "shape": 2, "position": 3, "background": 4}  # index in questions()
_VALUES = {"count": [f"{v}个" for v in COUNTS.values()], "colour": list(COLOURS), "shape": list(SHAPES),
           "position": list(POSITIONS), "background": list(BACKGROUNDS)}


def _expected(scene: Scene, attribute: str) -> str:
    return f"{COUNTS[scene.count]}个" if attribute == "count" else getattr(scene, attribute)


def answer_is_right(answer: str, scene: Scene, attribute: str) -> bool:
    """True when the answer names the scene's value of ``attribute`` and no other value of it.

    Example:
        >>> s = Scene(2, "红色", "圆形", "左边", "米色")
        >>> answer_is_right("它们是红色的。", s, "colour"), answer_is_right("红色和蓝色。", s, "colour")
        (True, False)
    """
    right = _expected(scene, attribute)
    return right in answer and not any(v in answer for v in _VALUES[attribute] if v != right)


def check_attributes(model, tokenizer, heldout_json, n: int = 12, attributes=("colour", "shape", "count", "position"),
                     mode: str = "questions", max_new_tokens: int = 32) -> dict:
    """Ask a model about held-out scenes; score each attribute (greedy decoding).

    Args:
        model: a loaded InternVL2 model (``helpers.models.load_model``).
        tokenizer: its tokenizer.
        heldout_json: ``heldout.json`` of :func:`make_shapes_dataset`.
        n: scenes to ask about (the first n).
        attributes: which attributes to score (keys of :data:`ATTRIBUTES`).
        mode: "questions" asks one question per attribute; "caption" asks for a description
            once and scores every attribute in it.
        max_new_tokens: answer length limit.

    Returns:
        ``{"accuracy": {attribute: share right}, "answers": [{image, attribute, question, answer, right}]}``.
    """
    import torch

    from helpers.tiling import load_image, to_pixel_values

    if mode not in ("questions", "caption"):
        raise ValueError(f"mode must be 'questions' or 'caption', got {mode!r}")
    records = json.loads(Path(heldout_json).read_text(encoding="utf-8"))[:n]
    if not records:
        raise ValueError(f"{heldout_json} holds no held-out scenes")
    root = Path(heldout_json).parent
    rows = []
    for rec in records:
        scene = Scene(**rec["scene"])
        pv = to_pixel_values(load_image(root / rec["image"]), max_num=model.config.max_dynamic_patch)
        pv = pv.to(next(model.parameters()).dtype)
        qs = ([questions(scene)[ATTRIBUTES[a]][0] for a in attributes] if mode == "questions"
              else [CAPTION_PROMPTS[0]])
        with torch.no_grad():
            answers = model.batch_chat(tokenizer, pv.repeat(len(qs), 1, 1, 1), qs,
                                       dict(max_new_tokens=max_new_tokens, do_sample=False),
                                       num_patches_list=[len(pv)] * len(qs))
        if mode == "caption":
            answers = answers * len(attributes)
            qs = qs * len(attributes)
        for a, q, ans in zip(attributes, qs, answers):
            rows.append(dict(image=rec["image"], attribute=a, question=q, answer=ans,
                             right=answer_is_right(ans, scene, a)))
    acc = {a: round(sum(r["right"] for r in rows if r["attribute"] == a) / len(records), 3) for a in attributes}
    return dict(accuracy=acc, answers=rows)


def dish_names_in(text: str) -> list:
    """Dish names of the course catalogue that occur in ``text`` (the base must never say one).

    Example:
        >>> dish_names_in("图中的菜是麻婆豆腐"), dish_names_in("图中有两个红色的圆形。")
        (['麻婆豆腐'], [])
    """
    from helpers.foods import DISHES

    return [d.name for d in DISHES if d.name in text]
