"""Buildings: facades with windows (a grid, bands or none), drawn slice by slice in depth, an end wall
where one starts, and the shadow they cast across the road.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from .canvas import FAR, NEAR, Canvas, Piece, View, depth_slices, front_polygon, ground_polygon, side_polygon
from .palette import BUILDING, CONCRETE, GLASS, RGB


@dataclass
class Building:
    side: int
    x0: float  # distance of the facade from the road centre line, metres
    depth: float
    z0: float
    z1: float
    height: float
    color: RGB
    trim: RGB
    style: str  # "grid", "bands" or "plain"
    glass: RGB
    lit: RGB
    col_sp: float
    floor_h: float
    win_w: float
    win_h: float
    lit_mask: np.ndarray  # which windows are lit, (columns, floors)
    shade_front: float
    shade_end: float

    def pieces(self, view: View) -> Iterator[Piece]:
        za, zb = self.z0 - view.zc, min(self.z1 - view.zc, FAR)
        if zb <= NEAR or za >= FAR:
            return
        for a, b in depth_slices(max(za, NEAR), zb):
            yield math.hypot(self.x0, a), partial(self._facade, view, a, b)
        if za > NEAR:
            yield math.hypot(self.x0, za) + 0.01, partial(self._end, view, za)

    def _window_ok(self, view: View, z: float) -> bool:
        return view.px(self.win_h, z) >= 3.0 and view.px(self.win_w, z) >= 1.5

    def _facade(self, view: View, a: float, b: float, cv: Canvas) -> None:
        x = self.side * self.x0
        cv.poly(side_polygon(view, x, a, b, 0.0, self.height), view.col(self.color, a), BUILDING, CONCRETE, self.shade_front)
        cv.poly(side_polygon(view, x, a, b, self.height - 0.6, self.height), view.col(self.trim, a), BUILDING, CONCRETE, self.shade_front)
        if self.style == "plain" or not self._window_ok(view, b):
            return
        glass = view.col(self.glass, a)
        n_floors = self.lit_mask.shape[1]
        if self.style == "bands":
            for j in range(n_floors):
                y0 = j * self.floor_h + 0.9
                cv.poly(side_polygon(view, x, a, b, y0, y0 + self.win_h), glass, BUILDING, GLASS, self.shade_front)
            return
        lit = view.col(self.lit, a)
        wz0, wz1 = a + view.zc, b + view.zc
        k0 = max(0, int((wz0 - self.z0) / self.col_sp))
        k1 = min(self.lit_mask.shape[0], int((wz1 - self.z0) / self.col_sp) + 1)
        for k in range(k0, k1):
            zc = self.z0 + (k + 0.5) * self.col_sp
            if not wz0 <= zc < wz1:
                continue
            za, zb = zc - self.win_w / 2 - view.zc, zc + self.win_w / 2 - view.zc
            if za <= NEAR:
                continue
            for j in range(n_floors):
                y0 = j * self.floor_h + (self.floor_h - self.win_h) * 0.6
                pts = [view.uv(x, y0, za), view.uv(x, y0, zb), view.uv(x, y0 + self.win_h, zb), view.uv(x, y0 + self.win_h, za)]
                cv.poly(pts, lit if self.lit_mask[k, j] else glass, BUILDING, GLASS, self.shade_front)

    def _end(self, view: View, z: float, cv: Canvas) -> None:
        s, x0, x1 = self.side, self.side * self.x0, self.side * (self.x0 + self.depth)
        cv.poly(front_polygon(view, x0, x1, 0.0, self.height, z), view.col(self.color, z), BUILDING, CONCRETE, self.shade_end)
        cv.poly(front_polygon(view, x0, x1, self.height - 0.6, self.height, z), view.col(self.trim, z), BUILDING, CONCRETE, self.shade_end)
        if self.style == "plain" or not self._window_ok(view, z):
            return
        glass = view.col(self.glass, z)
        n_floors = self.lit_mask.shape[1]
        if self.style == "bands":
            for j in range(n_floors):
                y0 = j * self.floor_h + 0.9
                cv.poly(front_polygon(view, x0, x1, y0, y0 + self.win_h, z), glass, BUILDING, GLASS, self.shade_end)
            return
        n = int(self.depth / self.col_sp)
        for k in range(n):
            xc = s * (self.x0 + (k + 0.5) * self.depth / n)
            for j in range(n_floors):
                y0 = j * self.floor_h + (self.floor_h - self.win_h) * 0.6
                pts = front_polygon(view, xc - self.win_w / 2, xc + self.win_w / 2, y0, y0 + self.win_h, z)
                cv.poly(pts, glass, BUILDING, GLASS, self.shade_end)

    def cast_shadow(self, view: View, cv: Canvas, length: float, factor: float) -> None:
        za, zb = max(self.z0 - view.zc + 2.0, NEAR), min(self.z1 - view.zc + 2.0, FAR)
        if zb <= za:
            return
        xa = self.side * self.x0
        xb = self.side * max(self.x0 - self.height * length, -30.0)
        cv.shadow(ground_polygon(view, min(xa, xb), max(xa, xb), za, zb), factor)
