"""Street furniture: poles with what they carry (street lamps, power lines, signs, traffic lights),
bins and billboards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from .canvas import Canvas, Piece, View, draw_key, front_polygon
from .palette import FLAT, METAL, POLE, RGB, STATIC, TRAFFIC_LIGHT, TRAFFIC_SIGN, jitter, pick


@dataclass
class _Post:
    """A pole, with what it carries: a street lamp, a sign or a traffic light."""

    kind: str  # "lamp", "power", "sign", "light", "light_arm"
    x: float
    z: float
    height: float
    width: float
    color: RGB
    arm: float  # lateral reach towards the road (signed), metres
    plate: str  # sign shape
    plate_rgb: RGB
    plate_rgb2: RGB
    plate_y: float
    lamp_on: int  # which traffic light lamp is on: 0 red, 1 amber, 2 green
    housing: RGB

    def pieces(self, view: View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 300:
            return
        yield draw_key(self.x - self.width, self.x + self.width, z), partial(self._draw, view, z)

    def _draw(self, view: View, z: float, cv: Canvas) -> None:
        w, x, h = self.width / 2, self.x, self.height
        pole = view.col(self.color, z)
        cv.poly(front_polygon(view, x - w, x + w, 0.0, h, z), pole, POLE, METAL, 0.95)
        if self.kind == "lamp":
            cv.poly(front_polygon(view, min(x, x + self.arm), max(x, x + self.arm), h - 0.12, h, z), pole, POLE, METAL, 0.95)
            e = x + self.arm
            cv.poly(front_polygon(view, e - 0.35, e + 0.35, h - 0.25, h - 0.05, z), view.col((220, 220, 200), z), POLE, METAL, 1.1)
        elif self.kind == "power":
            cv.poly(front_polygon(view, x - 1.0, x + 1.0, h - 0.7, h - 0.55, z), pole, POLE, METAL, 0.95)
        elif self.kind == "sign":
            self._sign(view, z, cv)
        else:
            if self.kind == "light_arm":
                cv.poly(front_polygon(view, min(x, x + self.arm), max(x, x + self.arm), h - 0.3, h - 0.15, z), pole, POLE, METAL, 0.95)
                self._light(view, x + self.arm * 0.85, h - 0.3, z, cv)
                self._light(view, x + self.arm * 0.45, h - 0.3, z, cv)
            else:
                self._light(view, x, h + 1.05, z, cv)

    def _light(self, view: View, x: float, top: float, z: float, cv: Canvas) -> None:
        cv.poly(front_polygon(view, x - 0.2, x + 0.2, top - 1.05, top, z), view.col(self.housing, z), TRAFFIC_LIGHT, METAL, 1.0)
        if view.px(0.2, z) < 2.0:
            return
        lamps = ((220, 40, 30), (235, 170, 30), (60, 220, 120))
        for i, rgb in enumerate(lamps):
            yc = top - 0.2 - 0.32 * i
            on = i == self.lamp_on
            c = rgb if on else (rgb[0] * 0.25 + 20, rgb[1] * 0.25 + 20, rgb[2] * 0.25 + 20)
            u0, v0 = view.uv(x - 0.12, yc + 0.12, z)
            u1, v1 = view.uv(x + 0.12, yc - 0.12, z)
            cv.ellipse((u0, v0, u1, v1), view.col(c, z), TRAFFIC_LIGHT, FLAT, 1.4 if on else 1.0)

    def _sign(self, view: View, z: float, cv: Canvas) -> None:
        x, y = self.x, self.plate_y
        c1, c2 = view.col(self.plate_rgb, z), view.col(self.plate_rgb2, z)
        r = 0.38
        if self.plate == "circle":
            u0, v0 = view.uv(x - r, y + r, z)
            u1, v1 = view.uv(x + r, y - r, z)
            cv.ellipse((u0, v0, u1, v1), c1, TRAFFIC_SIGN, FLAT)
            d = (u1 - u0) * 0.18
            cv.ellipse((u0 + d, v0 + d, u1 - d, v1 - d), c2, TRAFFIC_SIGN, FLAT)
        elif self.plate == "triangle":
            cv.poly([view.uv(x - r * 1.1, y - r, z), view.uv(x + r * 1.1, y - r, z), view.uv(x, y + r, z)], c1, TRAFFIC_SIGN, FLAT)
            cv.poly([view.uv(x - r * 0.6, y - r * 0.7, z), view.uv(x + r * 0.6, y - r * 0.7, z), view.uv(x, y + r * 0.35, z)], c2, TRAFFIC_SIGN, FLAT)
        elif self.plate == "octagon":
            pts = [view.uv(x + r * math.cos(a), y + r * math.sin(a), z) for a in np.linspace(math.pi / 8, 2 * math.pi + math.pi / 8, 8, endpoint=False)]
            cv.poly(pts, c1, TRAFFIC_SIGN, FLAT)
            cv.poly(front_polygon(view, x - r * 0.6, x + r * 0.6, y - 0.08, y + 0.08, z), c2, TRAFFIC_SIGN, FLAT)
        else:  # rectangle with a band
            cv.poly(front_polygon(view, x - r * 1.2, x + r * 1.2, y - r, y + r, z), c1, TRAFFIC_SIGN, FLAT)
            cv.poly(front_polygon(view, x - r, x + r, y - 0.1, y + 0.1, z), c2, TRAFFIC_SIGN, FLAT)


@dataclass
class Static:
    """A bin or a billboard (CARLA's "Static")."""

    kind: str
    x: float
    z: float
    color: RGB
    color2: RGB

    def pieces(self, view: View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 250:
            return
        yield draw_key(self.x - 0.5, self.x + 0.5, z), partial(self._draw, view, z)

    def _draw(self, view: View, z: float, cv: Canvas) -> None:
        x = self.x
        c1, c2 = view.col(self.color, z), view.col(self.color2, z)
        if self.kind == "bin":
            cv.poly(front_polygon(view, x - 0.3, x + 0.3, 0.0, 0.95, z), c1, STATIC, METAL, 1.0)
            cv.poly(front_polygon(view, x - 0.33, x + 0.33, 0.95, 1.05, z), c2, STATIC, METAL, 1.0)
        else:
            for dx in (-1.2, 1.2):
                cv.poly(front_polygon(view, x + dx - 0.1, x + dx + 0.1, 0.0, 3.2, z), c2, STATIC, METAL, 0.9)
            cv.poly(front_polygon(view, x - 2.2, x + 2.2, 3.0, 5.2, z), c2, STATIC, METAL, 1.0)
            cv.poly(front_polygon(view, x - 2.0, x + 2.0, 3.2, 5.0, z), c1, STATIC, FLAT, 1.1)
            cv.poly(front_polygon(view, x - 1.6, x + 0.4, 3.7, 4.5, z), c2, STATIC, FLAT, 1.1)


def make_post(rng: np.random.Generator, kind: str, x: float, z: float, color: RGB, arm: float) -> _Post:
    height = {"lamp": rng.uniform(6, 9), "power": rng.uniform(7, 10), "sign": rng.uniform(2.2, 3.0), "light": rng.uniform(2.4, 3.2), "light_arm": rng.uniform(5.5, 7)}[kind]
    plate = str(rng.choice(["circle", "triangle", "octagon", "rect"]))
    c1, c2 = {
        "circle": ((200, 30, 30), (235, 235, 235)),
        "triangle": ((200, 30, 30), (235, 235, 225)),
        "octagon": ((190, 25, 25), (240, 240, 240)),
        "rect": (pick(rng, [(30, 70, 160), (30, 110, 60), (230, 230, 230), (230, 190, 40)]), (235, 235, 235)),
    }[plate]
    return _Post(
        kind, x, z, height, rng.uniform(0.12, 0.3) if kind != "sign" else rng.uniform(0.07, 0.12), jitter(rng, color, 0.1), arm,
        plate, jitter(rng, c1, 0.1), jitter(rng, c2, 0.08), height - 0.2, int(rng.integers(3)),
        pick(rng, [(40, 40, 42), (30, 30, 30), (190, 160, 40), (70, 80, 70)], 0.1),
    )
