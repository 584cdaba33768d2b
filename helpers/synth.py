"""Draw the course's synthetic FoodieQA-format food photos.

FoodieQA cannot be bundled (CC-BY-NC-ND, gated, evaluation only), so the default course data
is drawn here: every dish of :mod:`helpers.foods` painted with PIL from its ``looks``
description (skewers are brown cubes on sticks with red chili specks, 肠粉 white translucent
rolls in soy sauce, 麻婆豆腐 white cubes in red oil with green scallions ...), served on a random
plate / bowl / bamboo steamer / tray, on a random wood / tablecloth / stone table, photographed
with random framing, rotation, camera tilt, light, colour temperature, vignette, sensor noise
and JPEG quality, at phone aspect ratios. About one photo in ten is stored the way phones store
portrait shots: sideways pixels plus an EXIF ``Orientation`` tag (6 or 8).

The output is byte-for-byte deterministic for a seed and has exactly FoodieQA's
``sivqa_tidy.json`` format (two questions per photo: cuisine and dish name, 4 choices each).

Command line::

    python -m helpers.synth [--out DIR] [--per-dish N] [--seed N] [--long-side N] [--sheet PNG]

Example:
    >>> from helpers.synth import make_dataset, contact_sheet
    >>> root = make_dataset("/tmp/foodie-synth", per_dish=2)  # doctest: +SKIP
    >>> contact_sheet(root).save("/tmp/sheet.png")            # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from helpers.foods import CUISINES, DISH_BY_NAME, DISHES, LOCATIONS, Dish

# Phone photo shapes (width, height, weight): mostly 4:3 / 3:4, some 16:9, square, panoramas.
ASPECTS = ((4, 3, 5), (3, 4, 5), (16, 9, 2), (9, 16, 2), (1, 1, 2), (3, 1, 1), (1, 3, 1))
EXIF_SHARE = 0.1  # share of photos stored sideways with an EXIF Orientation tag
SUPERSAMPLE = 2  # polygons are drawn at 2x and box-filtered down: cheap anti-aliasing
MARKER = "SYNTHETIC FoodieQA-format food set"  # first line of README.txt; make_dataset only overwrites sets carrying it
CUISINE_Q = ("图片中的食物通常属于哪个菜系?", "The food in the picture usually belongs to which cuisine?")
NAME_Q = ("图片中的菜叫什么名字?", "What is the name of the dish in the picture?")
UPLOADERS = 4  # FoodieQA groups photos in one folder per volunteer upload; we mimic a few


# ----------------------------------------------------------------------------- drawing primitives
def _jit(rng, rgb, amount=14, alpha=None):
    """A colour near ``rgb`` (each channel moved by up to ``amount``), optionally with alpha."""
    c = tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in rgb[:3])
    return c + (alpha,) if alpha is not None else c


def _shade(rgb, factor, alpha=None):
    c = tuple(int(np.clip(v * factor, 0, 255)) for v in rgb[:3])
    return c + (alpha,) if alpha is not None else c


def _in_disc(rng, n, radius, cx=0.0, cy=0.0, squeeze=1.0):
    """n uniform points in a disc (an ellipse when squeeze != 1)."""
    r = radius * np.sqrt(rng.random(n))
    t = rng.random(n) * 2 * math.pi
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t) * squeeze], axis=1)


class _Pen:
    """Draws in *dish coordinates*: origin at the dish centre, 1.0 = the vessel radius.

    The dish is turned by ``angle`` on the table and squashed vertically by ``squash`` (camera
    tilt), so every primitive goes through one transform; ``mono`` draws plain silhouettes
    (used for the drop shadow).
    """

    def __init__(self, image, cx, cy, radius, angle, squash, mono=False):
        self.draw = ImageDraw.Draw(image, None if mono else "RGBA")
        self.cx, self.cy, self.r, self.squash, self.mono = cx, cy, radius, squash, mono
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        # light comes from the top-left of the photo; express that direction in dish coordinates
        self.light = (-0.6 * self.cos - 0.8 * self.sin, 0.6 * self.sin - 0.8 * self.cos)

    def xy(self, pts):
        p = np.asarray(pts, dtype=float).reshape(-1, 2)
        u = p[:, 0] * self.cos - p[:, 1] * self.sin
        v = p[:, 0] * self.sin + p[:, 1] * self.cos
        return list(zip((self.cx + u * self.r).tolist(), (self.cy + v * self.r * self.squash).tolist()))

    def _ink(self, fill):
        return 255 if self.mono else fill

    def poly(self, pts, fill, outline=None, width=0.01):
        w = max(1, round(width * self.r))
        self.draw.polygon(self.xy(pts), fill=self._ink(fill),
                          outline=None if outline is None else self._ink(outline), width=w)

    def ellipse(self, x, y, rx, ry, fill, rot=0.0, outline=None, width=0.01, n=48):
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        ex, ey = rx * np.cos(t), ry * np.sin(t)
        c, s = math.cos(rot), math.sin(rot)
        self.poly(np.stack([x + ex * c - ey * s, y + ex * s + ey * c], 1), fill, outline, width)

    def rect(self, x, y, w, h, fill, rot=0.0, outline=None, width=0.01):
        c, s = math.cos(rot), math.sin(rot)
        corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
        self.poly([(x + a * c - b * s, y + a * s + b * c) for a, b in corners], fill, outline, width)

    def line(self, pts, fill, width):
        self.draw.line(self.xy(pts), fill=self._ink(fill), width=max(1, round(width * self.r)), joint="curve")

    def blob(self, x, y, r, fill, rng, jag=0.25, n=9, stretch=1.0, rot=0.0, outline=None):
        """An irregular roundish shape: food chunks (few corners) or sauce pools, leaves (n >= 16: smooth)."""
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        if n >= 16:  # a smooth wobbly outline: a few low harmonics with random phases
            k = np.arange(2, 5)[:, None]
            wobble = (np.sin(k * t[None, :] + rng.random((3, 1)) * 6.3) / k).sum(0) / 0.9
        else:  # a chunky piece: corners at jittered angles
            t = t + rng.uniform(-0.35, 0.35, n) * (2 * math.pi / n)
            wobble = rng.random(n) * 2 - 1
        rad = r * (1 + jag * wobble)
        ex, ey = rad * np.cos(t) * stretch, rad * np.sin(t)
        c, s = math.cos(rot), math.sin(rot)
        self.poly(np.stack([x + ex * c - ey * s, y + ex * s + ey * c], 1), fill, outline)

    def chunk(self, x, y, r, colour, rng, jag=0.3, stretch=1.0, rot=None, gloss=150, n=9):
        """A lit food piece: dark rim, body shifted toward the light, specular highlight."""
        rot = rng.random() * math.pi if rot is None else rot
        lx, ly = self.light
        state = rng.bit_generator.state  # same outline for rim and body, so the rim stays thin
        self.blob(x, y, r, _shade(colour, 0.62), rng, jag, n=n, stretch=stretch, rot=rot)
        rng.bit_generator.state = state
        self.blob(x + lx * r * 0.12, y + ly * r * 0.12, r * 0.86, colour, rng, jag, n=n, stretch=stretch, rot=rot)
        if gloss:
            self.ellipse(x + lx * r * 0.4, y + ly * r * 0.4, r * 0.28 * stretch, r * 0.14,
                         _shade(colour, 1.35, gloss), rot=rot)

    def specks(self, rng, n, radius, colours, size, cx=0.0, cy=0.0, squeeze=1.0):
        for x, y in _in_disc(rng, n, radius, cx, cy, squeeze):
            col = colours[rng.integers(len(colours))]
            self.ellipse(x, y, size * (0.6 + rng.random()), size * (0.4 + 0.5 * rng.random()),
                         _jit(rng, col, 12), rot=rng.random() * 3, n=8)


# ----------------------------------------------------------------------------- tables and vessels
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


# ----------------------------------------------------------------------------- the dishes
def _skewers(pen, rng, style):
    n = int(rng.integers(3, 6))
    for y in np.linspace(-0.48, 0.48, n) + rng.uniform(-0.04, 0.04, n):
        a = rng.uniform(-0.12, 0.12)
        ca, sa = math.cos(a), math.sin(a)
        stick = _jit(rng, (185, 140, 85), 12)
        pen.line([(-1.08 * ca, y - 1.08 * sa), (0.98 * ca, y + 0.98 * sa)], _shade(stick, 0.7), 0.036)
        pen.line([(-1.08 * ca, y - 1.08 * sa), (0.98 * ca, y + 0.98 * sa)], stick, 0.024)
        k = int(rng.integers(5, 8))
        for t in np.linspace(-0.62, 0.62, k) + rng.uniform(-0.02, 0.02, k):
            size = rng.uniform(0.1, 0.125)
            if rng.random() < 0.3:  # a piece of lamb fat between the meat
                pen.chunk(t * ca, y + t * sa, size * 0.8, _jit(rng, (235, 215, 175), 10), rng, jag=0.15, n=6,
                          rot=a, gloss=60)
                continue
            pen.chunk(t * ca, y + t * sa, size, _jit(rng, (120, 58, 28), 18), rng, jag=0.15, n=7,
                      rot=a + rng.normal(0, 0.15), gloss=80)
            if rng.random() < 0.4:  # charred corner
                pen.blob(t * ca + 0.03, y + t * sa + 0.03, 0.035, (50, 28, 16), rng)
    pen.specks(rng, 320, 0.7, [(205, 30, 20), (170, 20, 15), (230, 70, 30)], 0.012, squeeze=0.85)
    pen.specks(rng, 140, 0.7, [(165, 125, 70), (120, 95, 55)], 0.011, squeeze=0.85)  # cumin


def _big_plate_chicken(pen, rng, style):
    pen.blob(0, 0, 0.8, (170, 100, 40, 200), rng, jag=0.08, n=48)
    for k in range(int(rng.integers(6, 10))):  # wide belt noodles peeking out at the edge
        t = rng.random() * 2 * math.pi
        pts = [(0.72 * math.cos(t + d), 0.72 * math.sin(t + d)) for d in np.linspace(0, 0.7, 6)]
        pen.line(pts, _jit(rng, (238, 210, 150), 10), 0.07)
    for x, y in _in_disc(rng, int(rng.integers(11, 17)), 0.6):
        pen.chunk(x, y, rng.uniform(0.1, 0.14), _jit(rng, (190, 115, 50), 18), rng, jag=0.3)
    for x, y in _in_disc(rng, int(rng.integers(6, 10)), 0.6):
        pen.chunk(x, y, rng.uniform(0.09, 0.12), _jit(rng, (232, 190, 95), 12), rng, jag=0.12, n=6)
    for x, y in _in_disc(rng, int(rng.integers(6, 10)), 0.65):
        pen.chunk(x, y, rng.uniform(0.06, 0.09), _jit(rng, (70, 150, 45), 15), rng, jag=0.35, stretch=1.8)
    for x, y in _in_disc(rng, int(rng.integers(3, 7)), 0.6):
        pen.chunk(x, y, 0.04, (180, 25, 20), rng, stretch=2.5, jag=0.15)


def _rice_noodle_roll(pen, rng, style):
    pen.blob(0, 0, 0.66, _jit(rng, (115, 60, 25), 10, 215), rng, jag=0.12, n=48, stretch=1.1)
    n = int(rng.integers(3, 5))
    a = rng.uniform(-0.2, 0.2)
    for y in (np.arange(n) - (n - 1) / 2) * 0.25:
        for x, yy in _in_disc(rng, 4, 0.08, 0, y):
            pen.blob(x * 6, yy, 0.05, (235, 140, 120, 170), rng)  # shrimp showing through
        # a cylinder lit from above: darker flanks, a pale middle, one bright streak
        pen.rect(0, y, 1.2, 0.23, (212, 206, 192, 235), rot=a)
        pen.rect(0, y - 0.01, 1.18, 0.15, (240, 238, 230, 200), rot=a)
        pen.rect(0, y - 0.04, 1.1, 0.035, (255, 255, 252, 170), rot=a)
        pen.ellipse(-0.6, y, 0.025, 0.11, (200, 192, 175, 220), rot=a)
    for _ in range(int(rng.integers(3, 6))):  # soy sauce drizzled over
        x0, y0 = rng.uniform(-0.5, 0.3), rng.uniform(-0.4, 0.4)
        pen.line([(x0, y0), (x0 + 0.2, y0 + rng.uniform(-0.1, 0.1)), (x0 + 0.4, y0)], (120, 65, 25, 190), 0.03)
    pen.specks(rng, int(rng.integers(0, 25)), 0.55, [(80, 160, 60), (225, 215, 170)], 0.015)


def _har_gow(pen, rng, style):
    n = int(rng.integers(3, 5))
    start = rng.random() * 2 * math.pi
    for k in range(n):
        t = start + k * 2 * math.pi / n
        x, y = 0.38 * math.cos(t), 0.38 * math.sin(t)
        rot = t + math.pi / 2 + rng.normal(0, 0.3)
        pen.ellipse(x, y, 0.15, 0.09, (240, 135, 105), rot=rot)  # the shrimp inside
        ang = np.linspace(0, math.pi, 22)  # crescent: flat bottom, pleated top
        top = np.stack([0.3 * np.cos(ang), -0.19 * np.sin(ang) * (1 + 0.08 * np.sin(ang * 18))], 1)
        bot = np.stack([0.3 * np.cos(ang[::-1]), 0.06 * np.sin(ang[::-1])], 1)
        c, s = math.cos(rot), math.sin(rot)
        pts = np.concatenate([top, bot])
        pts = np.stack([x + pts[:, 0] * c - pts[:, 1] * s, y + pts[:, 0] * s + pts[:, 1] * c], 1)
        pen.poly(pts, (248, 242, 236, 190), outline=(220, 210, 200, 230), width=0.01)
        for u in np.linspace(-0.2, 0.2, 7):  # pleats
            px, py = u, -0.19 * math.sqrt(max(0, 1 - (u / 0.3) ** 2))
            pen.line([(x + px * c - py * s, y + px * s + py * c),
                      (x + px * c - (py + 0.07) * s, y + px * s + (py + 0.07) * c)], (215, 205, 195, 220), 0.01)


def _guo_bao_rou(pen, rng, style):
    for x, y in _in_disc(rng, int(rng.integers(6, 10)), 0.45):
        pen.chunk(x, y, rng.uniform(0.19, 0.25), _jit(rng, (228, 160, 55), 16), rng, jag=0.15, stretch=1.5, gloss=190)
    for _ in range(int(rng.integers(12, 22))):  # carrot shreds
        x, y = _in_disc(rng, 1, 0.55)[0]
        a = rng.random() * math.pi
        pen.line([(x, y), (x + 0.18 * math.cos(a), y + 0.18 * math.sin(a))], _jit(rng, (240, 120, 30), 10), 0.014)
    for _ in range(int(rng.integers(4, 12))):  # scallion / coriander
        x, y = _in_disc(rng, 1, 0.5)[0]
        pen.blob(x, y, 0.03, _jit(rng, (70, 150, 50), 15), rng, stretch=1.8)


def _mapo_tofu(pen, rng, style):
    inner = 0.86 if style["kind"] == "bowl" else 0.75
    pen.blob(0, 0, inner * 0.97, _jit(rng, (175, 35, 18), 12), rng, jag=0.03, n=48)
    for x, y in _in_disc(rng, 8, inner * 0.7):
        pen.blob(x, y, rng.uniform(0.1, 0.22), (215, 75, 20, 110), rng, n=24, jag=0.3)
    for x, y in _in_disc(rng, 5, inner * 0.7):
        pen.blob(x, y, rng.uniform(0.08, 0.15), (110, 20, 10, 110), rng, n=24, jag=0.3)
    for x, y in _in_disc(rng, int(rng.integers(18, 28)), inner * 0.72):
        side, rot = rng.uniform(0.14, 0.19), rng.random() * math.pi
        pen.rect(x + 0.015, y + 0.02, side, side, (150, 30, 15), rot=rot)
        pen.rect(x, y, side, side, _jit(rng, (246, 236, 214), 8), rot=rot)
        pen.rect(x - 0.01, y - 0.01, side * 0.6, side * 0.6, (255, 250, 240, 140), rot=rot)
        if rng.random() < 0.5:
            pen.rect(x + side * 0.2, y, side * 0.5, side, (200, 60, 25, 110), rot=rot)
    pen.specks(rng, int(rng.integers(25, 45)), inner * 0.8, [(105, 45, 20), (85, 35, 15)], 0.022)
    pen.specks(rng, int(rng.integers(25, 50)), inner * 0.8, [(70, 165, 50), (120, 195, 70)], 0.018)
    pen.specks(rng, 30, inner * 0.8, [(60, 20, 15)], 0.009)


def _kung_pao(pen, rng, style):
    pen.blob(0, 0, 0.64, (160, 70, 30, 170), rng, jag=0.12, n=48)
    for x, y in _in_disc(rng, int(rng.integers(24, 34)), 0.56):
        pen.chunk(x, y, rng.uniform(0.07, 0.09), _jit(rng, (200, 125, 65), 16), rng, jag=0.15, n=6)
    for x, y in _in_disc(rng, int(rng.integers(18, 28)), 0.58):
        rot = rng.random() * math.pi
        pen.ellipse(x, y, 0.055, 0.036, _jit(rng, (218, 172, 112), 10), rot=rot, outline=(150, 95, 55), width=0.006)
        pen.ellipse(x - 0.01, y - 0.01, 0.025, 0.012, (245, 220, 170), rot=rot)
    for x, y in _in_disc(rng, int(rng.integers(10, 16)), 0.6):
        pen.chunk(x, y, 0.05, _jit(rng, (150, 20, 15), 15), rng, jag=0.1, stretch=2.4, gloss=120)
    for x, y in _in_disc(rng, int(rng.integers(6, 11)), 0.55):
        rot = rng.random() * math.pi
        pen.rect(x, y, 0.13, 0.055, _jit(rng, (110, 170, 70), 12), rot=rot)
        pen.rect(x + 0.03 * math.cos(rot), y + 0.03 * math.sin(rot), 0.05, 0.055, (230, 235, 210), rot=rot)


def _peking_duck(pen, rng, style):
    side = 1 if rng.random() < 0.5 else -1
    for k in range(int(rng.integers(4, 6))):  # stack of thin pancakes
        pen.ellipse(side * 0.48 + 0.015 * k, 0.2 - 0.012 * k, 0.27, 0.27, (248, 240, 218),
                    outline=(215, 200, 170), width=0.008)
    for _ in range(int(rng.integers(10, 18))):  # scallion shreds beside the pancakes
        x0, y0 = side * 0.45 + rng.uniform(-0.12, 0.12), -0.35 + rng.uniform(-0.08, 0.08)
        pen.line([(x0 - 0.16, y0), (x0 + 0.16, y0 + rng.uniform(-0.04, 0.04))],
                 (90, 170, 60) if rng.random() < 0.5 else (235, 240, 215), 0.013)
    for cx in (-side * 0.38, -side * 0.05):
        k = int(rng.integers(5, 8))
        for j, y in enumerate(np.linspace(-0.5, 0.5, k)):  # shingled slices: fat edge under glossy skin
            x = cx + rng.normal(0, 0.02)
            rot = rng.normal(0.5 * side, 0.1)
            pen.ellipse(x, y, 0.22, 0.12, _jit(rng, (238, 222, 196), 6), rot=rot, outline=(200, 170, 140), width=0.006)
            pen.ellipse(x - 0.01, y - 0.025, 0.2, 0.085, _jit(rng, (140, 52, 28), 15), rot=rot)
            pen.ellipse(x - 0.05, y - 0.05, 0.1, 0.022, (235, 150, 110, 150), rot=rot)


def _zhajiang(pen, rng, style):
    pen.ellipse(0, 0, 0.86, 0.86, (228, 196, 115))
    for _ in range(90):  # a heap of thick noodles
        x, y = _in_disc(rng, 1, 0.68)[0]
        a = rng.random() * math.pi
        t = np.linspace(0, 0.35, 7)
        pts = np.stack([x + t * math.cos(a) + 0.03 * np.sin(t * 25), y + t * math.sin(a) + 0.03 * np.cos(t * 25)], 1)
        pen.line(pts, _jit(rng, (200, 160, 80), 10), 0.045)
        pen.line(pts, _jit(rng, (240, 212, 130), 10), 0.03)
    dx, dy = rng.uniform(-0.15, 0.15, 2)
    pen.blob(dx, dy, 0.3, _jit(rng, (80, 42, 20), 8), rng, jag=0.2, n=40)
    pen.specks(rng, 40, 0.25, [(120, 70, 35), (60, 30, 15)], 0.025, dx, dy)
    pen.ellipse(dx - 0.08, dy - 0.1, 0.08, 0.03, (200, 150, 110, 150))
    cx, cy = -dx + rng.uniform(-0.1, 0.1), -dy + 0.3
    for _ in range(int(rng.integers(25, 40))):  # cucumber shreds
        x, y = _in_disc(rng, 1, 0.16, cx, cy)[0]
        a = rng.normal(0.4, 0.3)
        pen.line([(x, y), (x + 0.2 * math.cos(a), y + 0.2 * math.sin(a))], _jit(rng, (95, 165, 55), 15), 0.016)


def _xiaolongbao(pen, rng, style):
    n = int(rng.integers(5, 9))
    centres = [(0.0, 0.0)] if n in (6, 8) else []
    ring = n - len(centres)
    start = rng.random() * 2 * math.pi
    centres += [(0.52 * math.cos(start + k * 2 * math.pi / ring), 0.52 * math.sin(start + k * 2 * math.pi / ring))
                for k in range(ring)]
    for x, y in centres:
        r = rng.uniform(0.2, 0.23)
        lx, ly = pen.light
        pen.ellipse(x - lx * 0.03, y - ly * 0.03, r, r, (120, 90, 50, 120))  # contact shadow
        pen.ellipse(x, y, r, r, _jit(rng, (244, 240, 228), 5), outline=(215, 208, 190), width=0.008)
        twist = rng.uniform(0.3, 0.6)
        for k in range(14):  # pleats spiralling into the top knot
            t = k * 2 * math.pi / 14
            pts = [(x + rr * r * math.cos(t + twist * rr), y + rr * r * math.sin(t + twist * rr)) for rr in (0.2, 0.55, 0.9)]
            pen.line(pts, (205, 198, 180), 0.008)
        pen.ellipse(x, y, r * 0.2, r * 0.2, (225, 218, 200))
        pen.ellipse(x + lx * r * 0.45, y + ly * r * 0.45, r * 0.25, r * 0.14, (255, 255, 255, 150))


def _fish_outline(length=1.3, height=0.42):
    """A whole fish seen from above-side, head at -x, tail fan at +x."""
    t = np.linspace(0, math.pi, 24)
    x = -length / 2 + length * 0.85 * (1 - np.cos(t)) / 2
    half = height / 2 * np.sin(t) ** 0.8 * (1 - 0.25 * (1 - np.cos(t)) / 2)
    tail_x = x[-1]
    top = np.stack([x, -half], 1)
    tail = np.array([[tail_x + 0.22, -height * 0.42], [tail_x + 0.17, 0.0], [tail_x + 0.22, height * 0.42]])
    bottom = np.stack([x[::-1], half[::-1]], 1)
    return np.concatenate([top, tail, bottom])


def _fish(pen, rng, body, length, height):
    pts = _fish_outline(length, height)
    pen.poly(pts, body, outline=_shade(body, 0.6), width=0.01)
    hx = -length / 2 + 0.13
    pen.ellipse(hx + 0.05, 0, 0.09, height * 0.42, _shade(body, 0.85))  # gill cover
    pen.ellipse(hx - 0.03, -height * 0.18, 0.025, 0.025, (240, 240, 235))
    pen.ellipse(hx - 0.03, -height * 0.18, 0.012, 0.012, (20, 20, 20))
    return pts


def _west_lake_fish(pen, rng, style):
    pen.blob(0, 0, 0.5, _jit(rng, (70, 38, 18), 8, 235), rng, jag=0.06, n=48, stretch=1.6)
    length, height = rng.uniform(1.25, 1.45), rng.uniform(0.44, 0.52)
    _fish(pen, rng, _jit(rng, (205, 180, 140), 10), length, height)
    pen.poly(_fish_outline(length * 0.95, height * 0.8), (80, 45, 20, 95))  # dark glaze over the body
    for _ in range(int(rng.integers(4, 8))):  # glossy streaks
        x = rng.uniform(-0.4, 0.4)
        pen.line([(x, -0.1), (x + 0.12, -0.05)], (255, 240, 220, 140), 0.012)
    for _ in range(int(rng.integers(10, 20))):  # ginger shreds
        x, y = _in_disc(rng, 1, 0.35, squeeze=0.4)[0]
        a = rng.random() * math.pi
        pen.line([(x, y), (x + 0.12 * math.cos(a), y + 0.12 * math.sin(a))], _jit(rng, (232, 200, 110), 10), 0.012)


def _chopped_chili_fish_head(pen, rng, style):
    pen.blob(0, 0, 0.6, (205, 45, 20, 215), rng, jag=0.08, n=48, stretch=1.15)
    t = np.linspace(0, 2 * math.pi, 30, endpoint=False)
    head = np.stack([0.55 * np.cos(t) * (1 - 0.25 * np.cos(t)), 0.42 * np.sin(t)], 1)  # wide at the gills
    pen.poly(head, _jit(rng, (190, 185, 175), 10), outline=(120, 115, 110), width=0.015)
    pen.ellipse(0.3, 0.02, 0.05, 0.3, (170, 160, 150))  # mouth
    pen.ellipse(-0.05, -0.28, 0.03, 0.03, (240, 240, 235))
    for x, y in _in_disc(rng, int(rng.integers(260, 380)), 0.5, squeeze=0.78):
        col = (225, 30, 25) if rng.random() < 0.85 else (245, 170, 40)
        pen.rect(x, y, rng.uniform(0.025, 0.045), rng.uniform(0.02, 0.035), _jit(rng, col, 18), rot=rng.random() * 3)
    pen.specks(rng, int(rng.integers(20, 40)), 0.45, [(70, 160, 50), (120, 200, 80)], 0.016)


def _stinky_fish(pen, rng, style):
    pen.blob(0, 0, 0.48, _jit(rng, (150, 95, 40), 10, 220), rng, jag=0.06, n=48, stretch=1.6)
    length, height = rng.uniform(1.25, 1.4), rng.uniform(0.44, 0.52)
    _fish(pen, rng, _jit(rng, (178, 112, 50), 12), length, height)
    gap = rng.uniform(0.09, 0.12)
    for x in np.arange(-length / 2 + 0.3, length / 2 - 0.2, gap):  # diamond-scored flesh
        for d in (1, -1):
            pen.line([(x - 0.08, -d * height * 0.32), (x + 0.08, d * height * 0.32)], (105, 60, 25), 0.016)
    for _ in range(int(rng.integers(12, 22))):  # red pepper and scallion shreds
        x, y = _in_disc(rng, 1, 0.4, squeeze=0.35)[0]
        a = rng.random() * math.pi
        col = (215, 35, 25) if rng.random() < 0.7 else (80, 165, 55)
        pen.line([(x, y), (x + 0.16 * math.cos(a), y + 0.16 * math.sin(a))], _jit(rng, col, 12), 0.014)


def _luosifen(pen, rng, style):
    pen.ellipse(0, 0, 0.86, 0.86, _jit(rng, (200, 70, 25), 10))
    for x, y in _in_disc(rng, 12, 0.7):
        pen.ellipse(x, y, rng.uniform(0.03, 0.08), rng.uniform(0.02, 0.05), (235, 120, 40, 140))  # oil sheen
    for _ in range(45):  # tangled rice noodles
        x, y = _in_disc(rng, 1, 0.45)[0]
        a = rng.random() * 2 * math.pi
        t = np.linspace(0, 0.45, 8)
        pts = np.stack([x + t * math.cos(a) + 0.04 * np.sin(t * 14), y + t * math.sin(a) + 0.04 * np.cos(t * 11)], 1)
        pen.line(pts, _jit(rng, (245, 240, 225), 6), 0.02)
    for x, y in _in_disc(rng, int(rng.integers(5, 8)), 0.6):  # fried tofu skin
        pen.chunk(x, y, rng.uniform(0.08, 0.1), _jit(rng, (235, 175, 55), 12), rng, stretch=1.8, jag=0.2)
    for x, y in _in_disc(rng, int(rng.integers(8, 14)), 0.6):  # peanuts
        pen.ellipse(x, y, 0.04, 0.028, _jit(rng, (190, 110, 60), 12), rot=rng.random() * 3, outline=(120, 60, 30), width=0.005)
    for _ in range(int(rng.integers(8, 14))):  # sour bamboo shoots
        x, y = _in_disc(rng, 1, 0.6)[0]
        a = rng.random() * math.pi
        pen.line([(x, y), (x + 0.14 * math.cos(a), y + 0.14 * math.sin(a))], _jit(rng, (230, 220, 150), 10), 0.022)
    for x, y in _in_disc(rng, int(rng.integers(3, 6)), 0.6):  # greens
        pen.blob(x, y, 0.08, _jit(rng, (60, 140, 40), 15), rng, stretch=1.7, jag=0.2)


def _crossing_bridge(pen, rng, style):
    pen.ellipse(0, 0, 0.88, 0.88, _jit(rng, (236, 188, 75), 8))
    for x, y in _in_disc(rng, int(rng.integers(30, 50)), 0.8):  # fat droplets on the clear broth
        r = rng.uniform(0.015, 0.05)
        pen.ellipse(x, y, r, r, (252, 218, 120, 170), outline=(205, 150, 50, 200), width=0.004)
    fillings = ["noodles", "meat", "eggs", "greens", "tofu"]
    for (sx, sy, sr), what in zip(style["sides"], rng.permutation(fillings)):
        if what == "noodles":
            for _ in range(14):
                x, y = _in_disc(rng, 1, sr * 0.5, sx, sy)[0]
                a = rng.random() * 2 * math.pi
                pen.line([(x, y), (x + 0.12 * math.cos(a), y + 0.12 * math.sin(a)), (x + 0.16 * math.cos(a + 0.8),
                          y + 0.16 * math.sin(a + 0.8))], (248, 245, 235), 0.016)
        elif what == "meat":
            for k in range(5):
                pen.ellipse(sx - 0.1 + 0.05 * k, sy, 0.1, 0.06, _jit(rng, (235, 165, 160), 10), rot=0.6,
                            outline=(200, 120, 115), width=0.005)
        elif what == "eggs":
            for x, y in _in_disc(rng, 4, sr * 0.45, sx, sy):
                pen.ellipse(x, y, 0.07, 0.055, (250, 248, 240), outline=(210, 200, 190), width=0.005)
                pen.ellipse(x, y, 0.03, 0.03, (245, 190, 40))
        elif what == "greens":
            for x, y in _in_disc(rng, 7, sr * 0.5, sx, sy):
                pen.blob(x, y, 0.06, _jit(rng, (70, 150, 45), 15), rng, stretch=1.8)
        else:
            for x, y in _in_disc(rng, 6, sr * 0.5, sx, sy):
                pen.rect(x, y, 0.08, 0.05, _jit(rng, (240, 200, 110), 10), rot=rng.random() * 3)


def _yangrou_paomo(pen, rng, style):
    pen.ellipse(0, 0, 0.88, 0.88, _jit(rng, (236, 230, 214), 5))
    for x, y in _in_disc(rng, int(rng.integers(30, 45)), 0.68):  # torn bread
        pen.chunk(x, y, rng.uniform(0.05, 0.075), _jit(rng, (212, 182, 128), 12), rng, jag=0.25, n=6, gloss=0)
    for x, y in _in_disc(rng, int(rng.integers(6, 10)), 0.55):  # lamb slices
        pen.blob(x, y, 0.1, _jit(rng, (150, 115, 95), 12), rng, jag=0.15, stretch=1.6, rot=rng.random() * 3)
    for _ in range(8):  # glass noodles
        x, y = _in_disc(rng, 1, 0.55)[0]
        pen.line([(x, y), (x + 0.2, y + 0.1), (x + 0.35, y + 0.05)], (250, 250, 245, 150), 0.012)
    pen.specks(rng, int(rng.integers(15, 30)), 0.6, [(60, 150, 45), (95, 180, 60)], 0.025)
    (gx, gy, gr), (cx, cy, cr) = style["sides"]
    for x, y in _in_disc(rng, 5, gr * 0.45, gx, gy):  # sweet pickled garlic
        pen.ellipse(x, y, 0.07, 0.055, _jit(rng, (225, 205, 215), 8), rot=rng.random() * 3, outline=(160, 110, 140), width=0.006)
    pen.blob(cx, cy, cr * 0.55, _jit(rng, (185, 35, 20), 10), rng, jag=0.15)  # chili paste
    pen.specks(rng, 12, cr * 0.4, [(230, 90, 40)], 0.012, cx, cy)


_DRAWERS = {
    "lamb_skewers": _skewers, "big_plate_chicken": _big_plate_chicken, "rice_noodle_roll": _rice_noodle_roll,
    "har_gow": _har_gow, "guo_bao_rou": _guo_bao_rou, "mapo_tofu": _mapo_tofu, "kung_pao_chicken": _kung_pao,
    "peking_duck": _peking_duck, "zhajiang_noodles": _zhajiang, "xiaolongbao": _xiaolongbao,
    "west_lake_fish": _west_lake_fish, "chopped_chili_fish_head": _chopped_chili_fish_head,
    "stinky_mandarin_fish": _stinky_fish, "luosifen": _luosifen, "crossing_bridge_noodles": _crossing_bridge,
    "yangrou_paomo": _yangrou_paomo,
}


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
    _DRAWERS[dish.key](pen, rng, style)
    return _light(rng, img.reduce(ss))


# ----------------------------------------------------------------------------- the data set
@dataclass(frozen=True)
class PhotoPlan:
    """Everything that decides one photo and its two questions."""

    index: int  # position in the set; also food_meta.id
    dish: Dish  # what is on the plate
    width: int  # upright width in pixels
    height: int  # upright height in pixels
    seed: int  # drawing seed for draw_photo
    orientation: int  # EXIF Orientation stored with the file: 1 upright, 6 or 8 sideways pixels
    quality: int  # JPEG quality
    location: str  # food_meta.food_location
    food_file: str  # path relative to the data root


def _balanced(rng, n, weights):
    """n labels with counts proportional to weights (largest remainder), shuffled."""
    w = np.asarray(weights, dtype=float) / sum(weights)
    counts = np.floor(w * n).astype(int)
    for i in np.argsort(-(w * n - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    labels = np.repeat(np.arange(len(weights)), counts)
    return rng.permutation(labels)


def plan_photos(per_dish: int = 12, seed: int = 0, long_side: int = 896) -> list:
    """Decide every photo of the set (dish, size, seed, EXIF orientation, file name) up front.

    Photos are interleaved dish by dish (photo i shows ``DISHES[i % 16]``), so any prefix of
    the set covers all dishes.

    Args:
        per_dish: photos per dish.
        seed: data-set seed.
        long_side: long side of every photo in pixels.

    Returns:
        A list of :class:`PhotoPlan`.

    Example:
        >>> plans = plan_photos(per_dish=1)
        >>> len(plans), plans[0].dish.key
        (16, 'lamb_skewers')
    """
    if per_dish < 1:
        raise ValueError(f"per_dish must be >= 1, got {per_dish}")
    if long_side < 64:
        raise ValueError(f"long_side must be >= 64, got {long_side}")
    n = per_dish * len(DISHES)
    rng = np.random.default_rng([seed, 20240601])
    aspects = _balanced(rng, n, [a[2] for a in ASPECTS])
    n_exif = round(EXIF_SHARE * n)
    exif = set(rng.permutation(n)[:n_exif].tolist())
    folders = [f"{int(rng.integers(10_000_000, 99_999_999))}_all_synth{seed}" for _ in range(UPLOADERS)]
    plans = []
    for i in range(n):
        aw, ah, _ = ASPECTS[aspects[i]]
        scale = long_side / max(aw, ah)
        d = DISHES[i % len(DISHES)]
        plans.append(PhotoPlan(
            index=i, dish=d, width=round(aw * scale), height=round(ah * scale),
            seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]),
            orientation=int(rng.choice([6, 8])) if i in exif else 1, quality=int(rng.integers(82, 96)),
            location=LOCATIONS[int(rng.integers(len(LOCATIONS)))],
            food_file=f"images/{folders[int(rng.integers(UPLOADERS))]}/{i}_{d.key}.jpeg"))
    return plans


def save_photo(image: Image.Image, path, orientation: int = 1, quality: int = 90) -> None:
    """Save an upright photo as JPEG, optionally the way phones do (sideways + EXIF tag).

    Args:
        image: the upright photo.
        path: output ``.jpeg`` path.
        orientation: 1 (upright pixels), 6 or 8 (pixels stored turned; the tag says how to undo it).
        quality: JPEG quality.

    Example:
        >>> save_photo(draw_photo("har_gow", 300, 400), "/tmp/x.jpeg", orientation=6)  # doctest: +SKIP
    """
    exif = Image.Exif()
    if orientation == 6:  # viewer turns 90 deg clockwise, so store the photo turned counter-clockwise
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif orientation == 8:
        image = image.transpose(Image.Transpose.ROTATE_270)
    elif orientation != 1:
        raise ValueError(f"orientation must be 1, 6 or 8, got {orientation}")
    exif[0x0112] = orientation
    image.save(path, "JPEG", quality=quality, exif=exif.tobytes())


def _question(rng, plan, kind, qid):
    d = plan.dish
    if kind == "cuisine_type":
        others = [c for c in CUISINES if c != d.cuisine]
        picks = [d.cuisine] + [others[j] for j in rng.choice(len(others), 3, replace=False)]
        english = [CUISINES[c] for c in picks]
        question = CUISINE_Q
    else:
        others = [o for o in DISHES if o.key != d.key]
        chosen = [d] + [others[j] for j in rng.choice(len(others), 3, replace=False)]
        picks, english = [o.name for o in chosen], [o.name_en for o in chosen]
        question = NAME_Q
    order = rng.permutation(4)
    return {
        "question": question[0],
        "choices": [picks[j] for j in order],
        "answer": str(int(np.argmin(order))),  # where the correct option (index 0) ended up
        "question_type": kind,
        "food_name": d.name,
        "question_id": f"vqa-{qid}",
        "food_meta": {"main_ingredient": list(d.main_ingredient), "id": plan.index, "food_name": d.name,
                      "food_type": d.cuisine, "food_location": plan.location, "food_file": plan.food_file},
        "question_en": question[1],
        "choices_en": [english[j] for j in order],
    }


def _readme(per_dish, seed, long_side, n_images, n_questions):
    return (f"{MARKER}\n\n"
            "Every image here was drawn procedurally by helpers/synth.py of the course\n"
            "'InternVL 的部署与微调'. They are not photographs and contain no FoodieQA data; only the\n"
            "layout of sivqa_tidy.json follows FoodieQA (lyan62/FoodieQA, CC-BY-NC-ND-4.0, which is\n"
            "NOT included). The drawings carry no third-party rights; use them like the course code.\n\n"
            f"images: {n_images} ({per_dish} per dish x {len(DISHES)} dishes), questions: {n_questions}\n"
            f"seed: {seed}, long side: {long_side} px, ~{EXIF_SHARE:.0%} stored sideways with EXIF Orientation 6/8\n"
            f"rebuild: python -m helpers.synth --out <dir> --per-dish {per_dish} --seed {seed} --long-side {long_side}\n")


def make_dataset(out_dir, per_dish: int = 12, seed: int = 0, long_side: int = 896) -> Path:
    """Draw the synthetic set: ``out_dir/images/...`` and ``out_dir/sivqa_tidy.json``.

    Same arguments, same bytes. An existing set made by this function is replaced; any other
    non-empty folder is refused (so a real FoodieQA copy is never overwritten).

    Args:
        out_dir: the data root to write.
        per_dish: photos per dish (each gets a cuisine and a dish-name question).
        seed: data-set seed.
        long_side: long side of the photos in pixels.

    Returns:
        ``Path(out_dir)``.

    Raises:
        FileExistsError: ``out_dir`` holds something that is not a set made here.

    Example:
        >>> root = make_dataset("/tmp/synth-demo", per_dish=1, long_side=256)  # doctest: +SKIP
        >>> len(json.loads((root / "sivqa_tidy.json").read_text()))           # doctest: +SKIP
        32
    """
    out = Path(out_dir)
    readme = out / "README.txt"
    if out.exists() and any(out.iterdir()):
        if not (readme.is_file() and readme.read_text(encoding="utf-8").startswith(MARKER)):
            raise FileExistsError(f"{out} is not empty and not a synthetic set made by helpers.synth "
                                  f"(no {readme.name} starting with {MARKER!r}); refusing to overwrite it")
        shutil.rmtree(out / "images", ignore_errors=True)
        (out / "sivqa_tidy.json").unlink(missing_ok=True)
    plans = plan_photos(per_dish, seed, long_side)
    out.mkdir(parents=True, exist_ok=True)
    # README first: a run that dies half-way still leaves a folder the next run may replace
    readme.write_text(_readme(per_dish, seed, long_side, len(plans), 2 * len(plans)), encoding="utf-8")
    records = []
    for plan in plans:
        path = out / plan.food_file
        path.parent.mkdir(parents=True, exist_ok=True)
        save_photo(draw_photo(plan.dish, plan.width, plan.height, plan.seed), path, plan.orientation, plan.quality)
        qrng = np.random.default_rng([seed, plan.index, 7])
        for kind in ("cuisine_type", "food_name"):
            records.append(_question(qrng, plan, kind, len(records)))
    (out / "sivqa_tidy.json").write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return out


def _font(size):
    for name in ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "wqy-microhei.ttc", "DejaVuSans.ttf"):
        for folder in ("", "/usr/share/fonts/opentype/noto/", "/usr/share/fonts/truetype/wqy/",
                       "/usr/share/fonts/truetype/dejavu/"):
            try:
                return ImageFont.truetype(folder + name, size), "CJK" in name or "wqy" in name
            except OSError:
                continue
    return ImageFont.load_default(), False


def contact_sheet(root, n: int = 16, cell: int = 224, columns: int = 4) -> Image.Image:
    """A grid of thumbnails with dish names, one photo per dish first.

    Args:
        root: a data root with ``sivqa_tidy.json`` (synthetic or real FoodieQA).
        n: number of photos.
        cell: thumbnail box in pixels.
        columns: thumbnails per row.

    Returns:
        An RGB PIL image.

    Example:
        >>> contact_sheet("artifacts/data/foodieqa-synth").save("/tmp/sheet.png")  # doctest: +SKIP
    """
    from helpers.tiling import load_image

    root = Path(root)
    records = json.loads((root / "sivqa_tidy.json").read_text(encoding="utf-8"))
    seen, firsts, rest = set(), [], []
    for rec in records:
        meta = rec["food_meta"]
        if meta["food_file"] in seen:
            continue
        seen.add(meta["food_file"])
        (rest if any(m["food_name"] == meta["food_name"] for m in firsts) else firsts).append(meta)
    chosen = (firsts + rest)[:n]
    if not chosen:
        raise ValueError(f"{root / 'sivqa_tidy.json'} lists no images")
    font, cjk = _font(max(10, cell // 15))
    label_h = cell // 7
    rows = math.ceil(len(chosen) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_h)), (250, 250, 248))
    draw = ImageDraw.Draw(sheet)
    for k, meta in enumerate(chosen):
        photo = load_image(root / meta["food_file"])
        photo.thumbnail((cell - 8, cell - 8))
        x0, y0 = (k % columns) * cell, (k // columns) * (cell + label_h)
        sheet.paste(photo, (x0 + (cell - photo.width) // 2, y0 + (cell - photo.height) // 2))
        d = DISH_BY_NAME.get(meta["food_name"])
        label = (meta["food_name"] + " " if cjk or d is None else "") + (d.name_en if d else "")
        while len(label) > 1 and draw.textlength(label, font=font) > cell - 10:
            label = label[:-2] + "…"
        draw.text((x0 + 6, y0 + cell), label, fill=(30, 30, 30), font=font)
    return sheet


def main(argv=None) -> int:
    """``python -m helpers.synth``: draw the set where the course settings expect it."""
    from helpers.settings import get_settings

    S = get_settings()
    p = argparse.ArgumentParser(prog="python -m helpers.synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help=f"data root to write (default {S.data_root})")
    p.add_argument("--per-dish", type=int, default=S.synth_images_per_dish, help="photos per dish")
    p.add_argument("--seed", type=int, default=S.seed, help="data-set seed")
    p.add_argument("--long-side", type=int, default=S.synth_long_side, help="long side of each photo in px")
    p.add_argument("--sheet", type=Path, default=None, help="also save a contact sheet PNG here")
    args = p.parse_args(argv)
    out = args.out
    if out is None:
        if not S.data_is_synthetic:
            p.error(f"FOODIEQA_ROOT points at real data ({S.data_root}); pass --out to draw the synthetic set elsewhere")
        out = S.data_root
    start = time.perf_counter()
    try:
        root = make_dataset(out, args.per_dish, args.seed, args.long_side)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_q = len(json.loads((root / "sivqa_tidy.json").read_text(encoding="utf-8")))
    print(f"drew {n_q // 2} photos / {n_q} questions ({len(DISHES)} dishes, {len(CUISINES)} cuisines) "
          f"into {root} in {time.perf_counter() - start:.1f} s")
    if args.sheet:
        contact_sheet(root).save(args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
