"""Road users, the things that move on their own: pedestrians on the sidewalks and vehicles in
the lanes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from .canvas import NEAR, Canvas, Piece, View, draw_key, front_polygon, ground_polygon, side_polygon
from .palette import CLOTHES, CONCRETE, FLAT, GLASS, METAL, PAINTS, PEDESTRIAN, RGB, SKIN, VEHICLES, pick


@dataclass
class _Pedestrian:
    x: float
    z: float
    height: float
    shirt: RGB
    pants: RGB
    skin: RGB
    hair: RGB
    stride: float
    speed: float  # metres per frame, sideways

    def pieces(self, view: View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 150:
            return
        x = self.x + self.speed * view.t
        yield draw_key(x - 0.3, x + 0.3, z - 0.2), partial(self._draw, view, x, z)

    def _draw(self, view: View, x: float, z: float, cv: Canvas) -> None:
        h = self.height
        leg, hip, shoulder = 0.47 * h, 0.5 * h, 0.82 * h
        pants, shirt, skin = view.col(self.pants, z), view.col(self.shirt, z), view.col(self.skin, z)
        for sgn in (-1, 1):
            foot = x + sgn * (0.06 + self.stride)
            cv.poly([view.uv(foot - 0.07, 0.0, z), view.uv(foot + 0.07, 0.0, z), view.uv(x + sgn * 0.13, hip, z), view.uv(x + sgn * 0.01, hip, z)], pants, PEDESTRIAN, CONCRETE, 0.9)
            cv.poly([view.uv(x + sgn * 0.2, shoulder, z), view.uv(x + sgn * 0.27, shoulder - 0.05, z), view.uv(x + sgn * (0.28 + self.stride * 0.5), leg + 0.05, z), view.uv(x + sgn * (0.21 + self.stride * 0.5), leg + 0.05, z)], shirt, PEDESTRIAN, CONCRETE, 0.85)
        cv.poly(front_polygon(view, x - 0.2, x + 0.2, hip - 0.05, shoulder, z), shirt, PEDESTRIAN, CONCRETE, 1.0)
        u0, v0 = view.uv(x - 0.1, h, z)
        u1, v1 = view.uv(x + 0.1, shoulder + 0.02, z)
        cv.ellipse((u0, v0, u1, v1), skin, PEDESTRIAN, CONCRETE, 1.0)
        u0, v0 = view.uv(x - 0.1, h + 0.02, z)
        u1, v1 = view.uv(x + 0.1, h - 0.07, z)
        cv.ellipse((u0, v0, u1, v1), view.col(self.hair, z), PEDESTRIAN, CONCRETE, 1.0)


@dataclass
class Vehicle:
    x: float
    z: float  # world z of the rear (or, oncoming, the front)
    width: float
    length: float
    height: float
    kind: str  # "car", "van", "truck"
    paint: RGB
    glass: RGB
    speed: float  # metres per frame
    oncoming: bool
    shade_side: float

    def _z(self, view: View) -> float:
        return self.z + self.speed * view.t - view.zc

    def pieces(self, view: View) -> Iterator[Piece]:
        z = self._z(view)
        if z + self.length < 2.0 or z > 300:
            return
        w = self.width / 2
        yield draw_key(self.x - w, self.x + w, z), partial(self._draw, view, z)

    def _draw(self, view: View, z: float, cv: Canvas) -> None:
        w, x, L, h = self.width / 2, self.x, self.length, self.height
        paint, glass, dark = view.col(self.paint, z), view.col(self.glass, z), view.col((25, 25, 28), z)
        body_top = h if self.kind != "car" else h * 0.58
        za, zb = max(z, NEAR), z + L
        # the side facing the camera, if any
        if x - w > 0.3 or x + w < -0.3:
            xs = x - w if x > 0 else x + w
            cv.poly(side_polygon(view, xs, za, zb, 0.3, body_top), paint, VEHICLES, METAL, self.shade_side)
            if self.kind == "car":
                ca, cb = z + 0.3 * L, z + 0.85 * L
                if ca > NEAR:
                    pts = [view.uv(xs, body_top, ca - 0.4), view.uv(xs, body_top, cb + 0.3), view.uv(xs, h, cb - 0.3), view.uv(xs, h, ca + 0.3)]
                    cv.poly(pts, paint, VEHICLES, METAL, self.shade_side)
                    pts = [view.uv(xs, body_top + 0.06, ca - 0.2), view.uv(xs, body_top + 0.06, cb + 0.15), view.uv(xs, h - 0.07, cb - 0.25), view.uv(xs, h - 0.07, ca + 0.3)]
                    cv.poly(pts, glass, VEHICLES, GLASS, self.shade_side)
            else:
                cv.poly(side_polygon(view, xs, max(z + 0.2 * L, NEAR), zb - 0.2, h * 0.62, h * 0.85), glass, VEHICLES, GLASS, self.shade_side)
            for zw in (z + 0.18 * L, z + 0.82 * L):
                if zw - 0.38 > NEAR:
                    u0, v0 = view.uv(xs, 0.76, zw - 0.38)
                    u1, v1 = view.uv(xs, 0.0, zw + 0.38)
                    cv.ellipse((min(u0, u1), v0, max(u0, u1), v1), dark, VEHICLES, METAL, 0.8)
        if z <= NEAR:
            return
        # the rear (or front) face
        for sgn in (-1, 1):
            cv.poly(front_polygon(view, x + sgn * (w - 0.05), x + sgn * (w - 0.4), 0.0, 0.5, z), dark, VEHICLES, METAL, 0.8)
        cv.poly(front_polygon(view, x - w, x + w, 0.3, body_top, z), paint, VEHICLES, METAL, 1.0)
        cv.poly(front_polygon(view, x - w, x + w, 0.3, 0.5, z), dark, VEHICLES, METAL, 1.0)
        if self.kind == "car":
            zz = z + 0.12 * L
            cv.poly([view.uv(x - w + 0.05, body_top, z), view.uv(x + w - 0.05, body_top, z), view.uv(x + w - 0.2, h, zz), view.uv(x - w + 0.2, h, zz)], paint, VEHICLES, METAL, 1.0)
            cv.poly([view.uv(x - w + 0.15, body_top + 0.05, z), view.uv(x + w - 0.15, body_top + 0.05, z), view.uv(x + w - 0.25, h - 0.06, zz), view.uv(x - w + 0.25, h - 0.06, zz)], glass, VEHICLES, GLASS, 1.0)
        else:
            cv.poly(front_polygon(view, x - w + 0.15, x + w - 0.15, h * 0.62, h * 0.85, z), glass, VEHICLES, GLASS, 1.0)
        lamp = (235, 235, 210) if self.oncoming else (200, 30, 25)
        ly = min(body_top - 0.1, 0.95)
        for sgn in (-1, 1):
            cv.poly(front_polygon(view, x + sgn * (w - 0.05), x + sgn * (w - 0.35), ly - 0.15, ly, z), view.col(lamp, z), VEHICLES, FLAT, 1.1)
        cv.poly(front_polygon(view, x - 0.26, x + 0.26, 0.55, 0.67, z), view.col((215, 215, 205), z), VEHICLES, FLAT, 1.0)

    def cast_shadow(self, view: View, cv: Canvas, factor: float) -> None:
        z = self._z(view)
        if z + self.length < 1.0 or z > 200:
            return
        w = self.width / 2 + 0.1
        cv.shadow(ground_polygon(view, self.x - w, self.x + w, max(z - 0.3, NEAR), z + self.length), factor)


def make_person(rng: np.random.Generator, x: float, z: float) -> _Pedestrian:
    walking = rng.random() < 0.6
    return _Pedestrian(
        x, z, rng.uniform(1.55, 1.9), pick(rng, CLOTHES + PAINTS, 0.15), pick(rng, CLOTHES, 0.15), pick(rng, SKIN, 0.08),
        pick(rng, [(30, 25, 20), (90, 60, 30), (180, 150, 90), (120, 120, 120)], 0.1),
        rng.uniform(0.08, 0.22) if walking else 0.02, rng.uniform(-0.05, 0.05) if walking else 0.0,
    )


def make_vehicle(rng: np.random.Generator, x: float, z: float, speed: float, oncoming: bool, sun: int) -> Vehicle:
    kind = str(rng.choice(["car", "van", "truck"], p=[0.72, 0.18, 0.1]))
    w, L, h = {
        "car": (rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9), rng.uniform(1.35, 1.6)),
        "van": (rng.uniform(1.9, 2.1), rng.uniform(4.5, 5.5), rng.uniform(1.8, 2.3)),
        "truck": (rng.uniform(2.4, 2.55), rng.uniform(7, 12), rng.uniform(2.9, 3.8)),
    }[kind]
    glass = pick(rng, [(30, 35, 45), (60, 70, 80), (20, 20, 25), (90, 100, 110)], 0.1)
    return Vehicle(x, z, w, L, h, kind, pick(rng, PAINTS, 0.1), glass, speed, oncoming, 0.7 if (x > 0) == (sun > 0) else 1.05)
