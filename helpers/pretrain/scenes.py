"""The drawn world of notebook 02's stages: scenes of 1-3 coloured shapes, their captions, questions and instructions.

Example:
    >>> import random
    >>> scene = random_scene(random.Random(0))
    >>> caption(scene).startswith("图中有")
    True
    >>> draw_scene(scene, size=112, seed=0).size
    (112, 112)
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass


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
