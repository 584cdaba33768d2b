"""Paint one synthetic food photo: table, vessel, food, light (the drawing half of ``helpers.data.synth``).

A :class:`_Pen` draws in *dish coordinates* (origin at the dish centre, 1.0 = vessel radius), so
the food drawers of :mod:`helpers.data.synth_dishes` never deal with pixels, rotation or camera tilt.
:func:`draw_photo` puts it together: a wood / tablecloth / stone table, a drop shadow, a plate /
bowl / bamboo steamer / tray, sometimes chopsticks, the dish, then exposure, colour temperature,
vignette and sensor noise. Everything random comes from one seed, so a seed gives the same pixels.

The underscore names here are shared with :mod:`helpers.data.synth_dishes` only; the public entry is
:func:`draw_photo` (also importable from :mod:`helpers.data.synth`).

Example:
    >>> from helpers.data.synth_draw import draw_photo
    >>> draw_photo("har_gow", 320, 240, seed=5).size
    (320, 240)
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from helpers.data.synth_dishes import DRAWERS
from helpers.data.synth_pen import SUPERSAMPLE, _jit, _Pen, _shade
from helpers.foods import Dish

def _smooth_noise(rng, h, w, cells):
    """Low-frequency noise in [0, 1]: a coarse random grid, bicubic-upsampled."""
    ch, cw = max(2, int(cells * h / max(h, w)) + 2), max(2, int(cells * w / max(h, w)) + 2)
    small = Image.fromarray((rng.random((ch, cw)) * 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def _background(rng, w, h):
    """A table top: wood planks, a gingham tablecloth, stone / marble, or a painted surface."""
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    kind = rng.choice(["wood", "cloth", "stone", "plain"], p=[0.4, 0.25, 0.25, 0.1])
    scale = max(w, h) / 900.0
    if kind == "wood":
        base = np.array(rng.choice([(176, 128, 82), (120, 78, 48), (205, 165, 115), (90, 60, 40), (150, 95, 60)]))
        across = ys if rng.random() < 0.5 else xs  # planks run left-right or top-bottom
        plank = rng.uniform(90, 180) * scale
        idx = np.floor(across / plank)
        warp = _smooth_noise(rng, h, w, 6) * rng.uniform(20, 60) * scale
        grain = np.sin((across + warp + idx * 37) / (rng.uniform(3, 7) * scale))
        tone = 0.9 + 0.05 * grain + 0.08 * np.sin(idx * 12.9898) + 0.06 * _smooth_noise(rng, h, w, 20)
        tone = tone * np.where((across % plank) < 2.0 * scale, 0.55, 1.0)  # dark seams between planks
    elif kind == "cloth":
        colour = np.array(rng.choice([(190, 40, 45), (40, 80, 160), (50, 130, 80), (220, 170, 40), (60, 60, 60)]))
        white = np.array([238, 234, 226])
        a = rng.uniform(-0.3, 0.3)
        u, v = xs * math.cos(a) + ys * math.sin(a), ys * math.cos(a) - xs * math.sin(a)
        stripe = rng.uniform(22, 60) * scale
        mix = 0.5 * ((np.floor(u / stripe) % 2) + (np.floor(v / stripe) % 2))  # gingham: both stripes = full colour
        weave = (1 + 0.04 * np.sin(u * 1.7) * np.sin(v * 1.7)) * (0.9 + 0.1 * _smooth_noise(rng, h, w, 8))
        img = (white * (1 - mix[..., None]) + colour * mix[..., None]) * weave[..., None]
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    elif kind == "stone":
        base = np.array(rng.choice([(200, 200, 196), (150, 150, 150), (215, 205, 190), (70, 72, 76), (235, 235, 232)]))
        tone = 0.8 + 0.15 * _smooth_noise(rng, h, w, 5) + 0.1 * _smooth_noise(rng, h, w, 40)
        veins = np.abs(np.sin((xs * 0.7 + ys) / (40 * scale) + 6 * _smooth_noise(rng, h, w, 4)))
        tone = tone - rng.uniform(0.05, 0.18) * np.clip(1 - veins / 0.06, 0, 1)
        tone = tone + rng.uniform(-0.05, 0.05, (h, w)).astype(np.float32)  # grit
    else:
        base = np.array(_jit(rng, rng.choice([(230, 225, 215), (60, 50, 45), (160, 175, 170), (120, 40, 35)]), 15))
        tone = 0.9 + 0.1 * _smooth_noise(rng, h, w, 3)
    img = base.astype(np.float32)[None, None, :] * tone[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


# (vessel kinds to choose from, how far the serving reaches in vessel radii, side dishes)
_SERVING = {
    "lamb_skewers": (("tray", "plate"), 1.25, 0),
    "big_plate_chicken": (("plate",), 1.0, 0),
    "rice_noodle_roll": (("plate", "oval"), 1.0, 0),
    "har_gow": (("steamer",), 1.0, 0),
    "guo_bao_rou": (("plate", "oval"), 1.0, 0),
    "mapo_tofu": (("bowl", "plate"), 1.0, 0),
    "kung_pao_chicken": (("plate",), 1.0, 0),
    "peking_duck": (("plate", "oval"), 1.0, 0),
    "zhajiang_noodles": (("bowl",), 1.0, 0),
    "xiaolongbao": (("steamer",), 1.0, 0),
    "west_lake_fish": (("oval",), 1.0, 0),
    "chopped_chili_fish_head": (("plate", "oval"), 1.0, 0),
    "stinky_mandarin_fish": (("oval", "iron"), 1.0, 0),
    "luosifen": (("bowl",), 1.0, 0),
    "crossing_bridge_noodles": (("bowl",), 1.65, 5),
    "yangrou_paomo": (("bowl",), 1.45, 2),
}

_CERAMIC = ((246, 244, 238), (240, 234, 220), (200, 220, 205), (40, 40, 42), (235, 238, 242))


def _pick_vessel(rng, dish_key):
    kinds, _, n_sides = _SERVING[dish_key]
    style = {"kind": kinds[rng.integers(len(kinds))], "colour": _jit(rng, _CERAMIC[rng.integers(len(_CERAMIC))], 6),
             # a coloured ring on plates and bowls; on a steamer it means "lined with paper"
             "rim": None if rng.random() < 0.5 else _jit(rng, ((40, 70, 150), (150, 40, 40), (50, 110, 90))[rng.integers(3)]),
             "sides": []}
    if n_sides == 5:  # a ring of small dishes around the soup bowl
        start = rng.random() * 2 * math.pi
        style["sides"] = [(1.38 * math.cos(start + k * 2 * math.pi / 5), 1.38 * math.sin(start + k * 2 * math.pi / 5), 0.3)
                          for k in range(5)]
    elif n_sides == 2:
        side = 1 if rng.random() < 0.5 else -1
        style["sides"] = [(side * 1.2, -0.55, 0.28), (side * 1.15, 0.55, 0.26)]
    return style


def _plate(pen, x, y, r, colour, rim=None, ry=None):
    ry = r if ry is None else ry
    pen.ellipse(x, y, r, ry, _shade(colour, 0.8))
    pen.ellipse(x, y, r * 0.97, ry * 0.97, colour)
    if rim is not None:
        pen.ellipse(x, y, r * 0.9, ry * 0.9, None, outline=rim, width=0.025 * r)
    pen.ellipse(x, y, r * 0.8, ry * 0.8, _shade(colour, 0.95))


def _vessel(pen, style):
    """Draw the vessel (and side dishes) described by ``style``; deterministic given style."""
    col, rim, kind = style["colour"], style["rim"], style["kind"]
    if kind == "plate":
        _plate(pen, 0, 0, 1.0, col, rim)
    elif kind in ("oval", "iron"):
        if kind == "iron":  # cast-iron fish dish on a wooden stand
            pen.ellipse(0, 0, 1.02, 0.7, (95, 60, 35))
            pen.ellipse(0, 0, 0.95, 0.64, (45, 43, 42))
            pen.ellipse(0, 0, 0.88, 0.58, (30, 29, 29))
        else:
            _plate(pen, 0, 0, 1.0, col, rim, ry=0.66)
    elif kind == "bowl":
        pen.ellipse(0, 0, 1.0, 1.0, _shade(col, 0.78))
        pen.ellipse(0, 0, 0.97, 0.97, col)
        if rim is not None:
            pen.ellipse(0, 0, 0.93, 0.93, None, outline=rim, width=0.03)
        pen.ellipse(0, 0, 0.88, 0.88, _shade(col, 0.72))  # inner wall in shade
    elif kind == "steamer":
        pen.ellipse(0, 0, 1.0, 1.0, (150, 105, 55))
        pen.ellipse(0, 0, 0.94, 0.94, (200, 160, 95))
        pen.ellipse(0, 0, 0.86, 0.86, (180, 135, 75))
        for k in range(-8, 9):  # bamboo slats of the steamer floor
            pen.line([(k * 0.1, -0.82 * math.sqrt(max(0, 1 - (k / 8.6) ** 2))),
                      (k * 0.1, 0.82 * math.sqrt(max(0, 1 - (k / 8.6) ** 2)))], (150, 110, 60), 0.012)
        if rim is not None:  # a perforated paper liner
            pen.ellipse(0, 0, 0.8, 0.8, (238, 232, 212, 235))
    elif kind == "tray":
        pen.rect(0, 0, 2.3, 1.6, (70, 70, 72))
        pen.rect(0, 0, 2.15, 1.45, _shade(col, 0.85) if col[0] < 100 else (185, 185, 180))
    for sx, sy, sr in style["sides"]:
        _plate(pen, sx, sy, sr, col, rim)



# ----------------------------------------------------------------------------- the photo
def _chopsticks(pen, rng):
    x, y, a = rng.uniform(-1.6, 1.6), rng.uniform(-1.6, 1.6), rng.random() * math.pi
    col = ((150, 95, 50), (235, 225, 200), (30, 30, 30), (180, 40, 35))[rng.integers(4)]
    for off in (-0.035, 0.035):
        ox, oy = -math.sin(a) * off, math.cos(a) * off
        pen.line([(x + ox - 0.9 * math.cos(a), y + oy - 0.9 * math.sin(a)),
                  (x + ox + 0.9 * math.cos(a), y + oy + 0.9 * math.sin(a))], col, 0.035)


def _light(rng, img):
    """Exposure, colour temperature, directional falloff, vignette and sensor noise."""
    a = np.asarray(img, dtype=np.float32)
    h, w = a.shape[:2]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    gx, gy = rng.uniform(-0.12, 0.12, 2)
    falloff = (1 + gx * x + gy * y) * (1 - rng.uniform(0.0, 0.35) * (x * x + y * y) / 2)  # side light, vignette
    warm = rng.uniform(-1, 1)
    gain = rng.uniform(0.82, 1.12) * np.array([1 + 0.07 * warm, 1.0, 1 - 0.09 * warm], dtype=np.float32)
    a *= falloff[..., None]
    a *= gain
    k = int(rng.integers(2, 8))  # sensor noise; uniform integers are 7x cheaper than normal samples
    a += rng.integers(-k, k + 1, a.shape, dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def draw_photo(dish: Dish | str, width: int, height: int, seed: int = 0) -> Image.Image:
    """Draw one upright synthetic photo of a dish.

    Args:
        dish: a :class:`helpers.foods.Dish`, or its Chinese name / ASCII key.
        width: photo width in pixels.
        height: photo height in pixels.
        seed: everything random (table, vessel, food layout, framing, light) follows from it.

    Returns:
        An RGB PIL image (not yet JPEG-compressed).

    Example:
        >>> draw_photo("mapo_tofu", 448, 336, seed=1).size
        (448, 336)
    """
    if isinstance(dish, str):
        from helpers.foods import dish as find_dish

        dish = find_dish(dish)
    if width < 16 or height < 16:
        raise ValueError(f"photo must be at least 16x16 px, got {width}x{height}")
    rng = np.random.default_rng(seed)
    ss = SUPERSAMPLE
    table = _background(rng, width, height)
    _, extent, _ = _SERVING[dish.key]
    radius = min(width, height) * rng.uniform(0.4, 0.6) / extent  # vessel radius in px; > 0.5 = close-up, rim cut off
    squash = rng.uniform(0.72, 1.0)
    reach_x, reach_y = radius * extent * 0.88, radius * extent * squash * 0.88
    cx = width / 2 + rng.uniform(-1, 1) * max(0.0, width / 2 - reach_x)
    cy = height / 2 + rng.uniform(-1, 1) * max(0.0, height / 2 - reach_y)
    angle = rng.random() * 2 * math.pi
    style = _pick_vessel(rng, dish.key)
    # soft drop shadow, at 1/4 scale: the vessel silhouette shifted away from the light, blurred
    q = 4
    mask = Image.new("L", (max(1, width // q), max(1, height // q)), 0)
    _vessel(_Pen(mask, (cx + 0.6 * radius * 0.08) / q, (cy + 0.8 * radius * 0.08) / q, radius / q, angle, squash,
                 mono=True), style)
    mask = mask.filter(ImageFilter.GaussianBlur(radius * 0.05 / q)).resize(table.size, Image.Resampling.BILINEAR)
    table = Image.composite(table.point(lambda v: int(v * 0.55)), table, mask.point(lambda v: int(v * 0.6)))
    # supersampled drawing: NEAREST up + box down leaves the table pixels exactly as they were
    img = table.resize((width * ss, height * ss), Image.Resampling.NEAREST)
    if rng.random() < 0.4:
        _chopsticks(_Pen(img, cx * ss, cy * ss, radius * ss, angle, squash), rng)
    pen = _Pen(img, cx * ss, cy * ss, radius * ss, angle, squash)
    _vessel(pen, style)
    # imported here: the drawers build on this module's pen and colours, so a top-level import would be a cycle

    DRAWERS[dish.key](pen, rng, style)
    return _light(rng, img.reduce(ss))
