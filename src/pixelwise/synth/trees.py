"""Trees, broadleaf (a crown of ellipses) or conifer (stacked triangles), and their shadows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from .canvas import NEAR, Canvas, Piece, View, draw_key, front_polygon, ground_polygon
from .palette import CONCRETE, FOLIAGE, LEAVES, RGB, VEGETATION, pick


@dataclass
class Tree:
    x: float
    z: float
    trunk_h: float
    trunk_w: float
    trunk: RGB
    leaves: RGB
    conifer: bool
    blobs: list[tuple[float, float, float, float]]  # dx, dy, r, shade for broadleaf; layers for conifers

    def pieces(self, view: View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 300:
            return
        r = max(b[2] for b in self.blobs)
        yield draw_key(self.x - r, self.x + r, z - r), partial(self._draw, view, z)

    def _draw(self, view: View, z: float, cv: Canvas) -> None:
        w = self.trunk_w / 2
        cv.poly(front_polygon(view, self.x - w, self.x + w, 0.0, self.trunk_h + 0.5, z), view.col(self.trunk, z), VEGETATION, CONCRETE, 0.9)
        big = view.px(1.0, z) > 6.0
        for dx, dy, r, shade in self.blobs if big else self.blobs[:2]:
            col = view.col(tuple(c * shade for c in self.leaves), z)  # type: ignore[arg-type]
            if self.conifer:  # dy is the layer's base height, r its half width, height 1.6 r
                pts = [view.uv(self.x - r, dy, z), view.uv(self.x + r, dy, z), view.uv(self.x + dx, dy + 2.2 * r, z)]
                cv.poly(pts, col, VEGETATION, FOLIAGE, shade)
            else:
                u0, v0 = view.uv(self.x + dx - r, dy + r * 0.85, z)
                u1, v1 = view.uv(self.x + dx + r, dy - r * 0.85, z)
                cv.ellipse((u0, v0, u1, v1), col, VEGETATION, FOLIAGE, shade)

    def cast_shadow(self, view: View, cv: Canvas, length: float, factor: float, sun: int) -> None:
        z = self.z - view.zc
        if z < 1.5 or z > 150:
            return
        r = max(b[2] for b in self.blobs)
        off = -sun * (self.trunk_h + r) * length
        cv.shadow(ground_polygon(view, self.x + off - r, self.x + off + r, max(z - r * 0.6, NEAR), z + r * 0.6), factor)


def make_tree(rng: np.random.Generator, x: float, z: float) -> Tree:
    conifer = rng.random() < 0.4
    leaves = pick(rng, LEAVES, 0.15)
    if conifer:
        h = rng.uniform(5, 14)
        n = int(rng.integers(3, 6))
        blobs = []
        for i in range(n):
            frac = i / n
            r = h * 0.28 * (1 - frac * 0.75)
            blobs.append((rng.uniform(-0.2, 0.2), 1.0 + frac * h * 0.75, r, rng.uniform(0.8, 1.15)))
        return Tree(x, z, 1.2, rng.uniform(0.25, 0.5), pick(rng, [(70, 50, 35), (90, 70, 50)]), leaves, True, blobs)
    trunk_h = rng.uniform(1.5, 4)
    r = rng.uniform(1.5, 4)
    blobs = [(0.0, trunk_h + r, r, 1.0)]
    for _ in range(int(rng.integers(4, 9))):
        blobs.append((rng.uniform(-r, r) * 0.8, trunk_h + r + rng.uniform(-0.6, 0.8) * r, r * rng.uniform(0.35, 0.7), rng.uniform(0.7, 1.25)))
    return Tree(x, z, trunk_h, rng.uniform(0.2, 0.5), pick(rng, [(70, 50, 35), (90, 75, 60), (60, 55, 50)]), leaves, False, blobs)
