"""One drawer per dish of :mod:`helpers.foods`, painting its ``looks`` with a dish-coordinate pen.

Each drawer is ``drawer(pen, rng, style)``: ``pen`` is a :class:`helpers.data.synth_pen._Pen` already
placed on the vessel (1.0 = vessel radius, light from the photo's top-left), ``rng`` the photo's
numpy generator (the order of draws is part of the output, so reordering them changes every
photo), and ``style`` the vessel chosen by ``helpers.data.synth_draw._pick_vessel`` (its kind and the
positions of side dishes). :data:`DRAWERS` maps each dish key to its drawer.

Example:
    >>> from helpers.foods import DISHES
    >>> from helpers.data.synth_dishes import DRAWERS
    >>> sorted(DRAWERS) == sorted(d.key for d in DISHES)
    True
"""
from __future__ import annotations

import math

import numpy as np

from helpers.data.synth_pen import _in_disc, _jit, _shade



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


# dish key -> drawer; helpers.data.synth_draw.draw_photo calls DRAWERS[dish.key](pen, rng, style)
DRAWERS = {
    "lamb_skewers": _skewers, "big_plate_chicken": _big_plate_chicken, "rice_noodle_roll": _rice_noodle_roll,
    "har_gow": _har_gow, "guo_bao_rou": _guo_bao_rou, "mapo_tofu": _mapo_tofu, "kung_pao_chicken": _kung_pao,
    "peking_duck": _peking_duck, "zhajiang_noodles": _zhajiang, "xiaolongbao": _xiaolongbao,
    "west_lake_fish": _west_lake_fish, "chopped_chili_fish_head": _chopped_chili_fish_head,
    "stinky_mandarin_fish": _stinky_fish, "luosifen": _luosifen, "crossing_bridge_noodles": _crossing_bridge,
    "yangrou_paomo": _yangrou_paomo,
}
