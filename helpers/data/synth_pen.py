"""The synthetic photos' pen: colour jitter and shading, points in a disc, and a supersampled drawing pen.

Shared by the scene (:mod:`helpers.data.synth_draw`) and the dishes (:mod:`helpers.data.synth_dishes`).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import ImageDraw

SUPERSAMPLE = 2  # polygons are drawn at 2x and box-filtered down: cheap anti-aliasing


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
