"""Barriers: walls, fences, guard rails and hedges, the long low things along the road."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from .canvas import FAR, NEAR, Canvas, Piece, View, depth_slices, depth_steps, side_polygon
from .palette import CONCRETE, FENCE, FOLIAGE, GUARD_RAIL, METAL, RGB, VEGETATION, WALL


@dataclass
class Barrier:
    """Something long and low along the road: a wall, a fence, a guard rail or a hedge."""

    kind: str
    side: int
    x: float  # distance from the road centre line
    z0: float
    z1: float
    height: float
    color: RGB
    color2: RGB
    shade: float

    def pieces(self, view: View) -> Iterator[Piece]:
        za, zb = self.z0 - view.zc, min(self.z1 - view.zc, FAR)
        if zb <= NEAR or za >= FAR:
            return
        for a, b in depth_slices(max(za, NEAR), zb):
            yield math.hypot(self.x, a), partial(self._draw, view, a, b)

    def _draw(self, view: View, a: float, b: float, cv: Canvas) -> None:
        x, h = self.side * self.x, self.height
        c1, c2 = view.col(self.color, a), view.col(self.color2, a)
        if self.kind == "wall":
            cv.poly(side_polygon(view, x, a, b, 0.0, h), c1, WALL, CONCRETE, self.shade)
            cv.poly(side_polygon(view, x, a, b, h - 0.15, h), c2, WALL, CONCRETE, self.shade)
            if view.px(0.1, b) >= 1.0:  # joints between panels
                for zj in _posts(a + view.zc, b + view.zc, 4.0):
                    cv.poly(side_polygon(view, x, zj - view.zc, zj - view.zc + 0.06, 0.0, h), c2, WALL, CONCRETE, self.shade * 0.8)
        elif self.kind == "hedge":
            zs = depth_steps(a, b, 5)
            top = [view.uv(x, h + 0.15 * math.sin(1.7 * (z + view.zc)) + 0.1 * math.sin(4.1 * (z + view.zc)), z) for z in zs]
            cv.poly([view.uv(x, 0.0, z) for z in zs] + top[::-1], c1, VEGETATION, FOLIAGE, self.shade)
        elif self.kind == "guardrail":
            cv.poly(side_polygon(view, x, a, b, h - 0.35, h), c1, GUARD_RAIL, METAL, self.shade)
            cv.poly(side_polygon(view, x, a, b, h - 0.22, h - 0.13), c2, GUARD_RAIL, METAL, self.shade * 0.8)
            if view.px(0.12, b) >= 0.7:
                for zp in _posts(a + view.zc, b + view.zc, 2.0):
                    z = zp - view.zc
                    cv.poly(side_polygon(view, x + self.side * 0.05, z, z + 0.12, 0.0, h - 0.3), c2, GUARD_RAIL, METAL, self.shade * 0.7)
        else:  # fence: posts, rails and close bars where they can be told apart
            if view.px(0.25, b) < 3.0:
                cv.poly(side_polygon(view, x, a, b, 0.0, h), c1, FENCE, METAL, self.shade)
            else:
                for zp in _posts(a + view.zc, b + view.zc, 0.25):
                    z = zp - view.zc
                    cv.poly(side_polygon(view, x, z, z + 0.05, 0.05, h - 0.1), c1, FENCE, METAL, self.shade)
            for y in (0.1, h - 0.15):
                cv.poly(side_polygon(view, x, a, b, y, y + 0.07), c2, FENCE, METAL, self.shade)
            for zp in _posts(a + view.zc, b + view.zc, 2.5):
                z = zp - view.zc
                cv.poly(side_polygon(view, x, z, z + 0.1, 0.0, h + 0.05), c2, FENCE, METAL, self.shade)


def _posts(wz0: float, wz1: float, spacing: float) -> list[float]:
    """World positions of regularly spaced things within [wz0, wz1)."""
    k0 = math.ceil(wz0 / spacing)
    k1 = math.ceil(wz1 / spacing)
    return [k * spacing for k in range(k0, k1)][:400]
