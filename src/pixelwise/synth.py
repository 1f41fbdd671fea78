"""Procedural CARLA-like street scenes, so the demo and the tests need no downloaded data.

A scene is a small 3-D world (a straight or gently curving road, what lies beside it, what stands on
it) seen by a pinhole camera at driver height. Every shape is drawn into the image and into the mask
by the same call, far to near, so the mask is exact wherever the image shows the shape. Colour,
texture, light, haze, shadows, blur and noise vary from drive to drive, and the colours of different
classes overlap on purpose, so that segmenting a frame needs shape and texture, not a colour lookup.

Class ids are CARLA's semantic tags (``classes.CARLA``); files are written in CARLA's format: RGBA
PNGs, the class id in the mask's red channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from .classes import CARLA
from .files import atomic_write

__all__ = ["render_scene", "render_drive", "write_dataset"]

BUILDING = CARLA.index("Building")
FENCE = CARLA.index("Fence")
PEDESTRIAN = CARLA.index("Pedestrian")
POLE = CARLA.index("Pole")
ROADLINE = CARLA.index("RoadLine")
ROAD = CARLA.index("Road")
SIDEWALK = CARLA.index("Sidewalk")
VEGETATION = CARLA.index("Vegetation")
VEHICLES = CARLA.index("Vehicles")
WALL = CARLA.index("Wall")
TRAFFIC_SIGN = CARLA.index("TrafficSign")
SKY = CARLA.index("Sky")
GUARD_RAIL = CARLA.index("GuardRail")
TRAFFIC_LIGHT = CARLA.index("TrafficLight")
STATIC = CARLA.index("Static")
TERRAIN = CARLA.index("Terrain")

MIN_SIZE = 32

# Surface materials, drawn into a label layer next to the class id (label = class * 8 + material) and
# turned into texture after drawing: amplitude of fine grain, of ~3 px blotches, of large patches.
_FLAT, _ASPHALT, _FOLIAGE, _GRASS, _CONCRETE, _METAL, _GLASS, _TILES = range(8)
_TEXTURE = np.array(
    [
        [0.010, 0.000, 0.015],  # flat: sky, paint on signs
        [0.060, 0.020, 0.035],  # asphalt
        [0.100, 0.240, 0.120],  # foliage
        [0.070, 0.090, 0.070],  # grass, dirt
        [0.030, 0.030, 0.050],  # concrete, plaster, brick
        [0.012, 0.012, 0.040],  # painted metal
        [0.020, 0.030, 0.090],  # glass
        [0.055, 0.035, 0.050],  # paving
    ],
    dtype=np.float32,
)
_LIT = 160  # shade-layer value of an unshaded surface (factor 1.0); 255 means 1.6
_NEAR = 0.5  # metres: nothing nearer than this to the camera is drawn
_FAR = 600.0  # metres: nothing farther than this is drawn
_BINS = tuple(_NEAR * 1.2**k for k in range(40))  # depth slices: long things are drawn slice by slice

RGB = tuple[float, float, float]


# --------------------------------------------------------------------------------------------------
# Camera, canvas
# --------------------------------------------------------------------------------------------------


@dataclass
class _View:
    """Pinhole camera at one moment of a drive; z below is depth relative to the camera."""

    f: float  # focal length in pixels
    cx: float  # vanishing point column
    cy: float  # horizon row
    cam_h: float  # camera height above the road, metres
    curve: float  # the road bends by curve * z**2 metres at depth z
    haze: RGB  # colour far things fade to
    fog: float  # metres over which they fade by 1/e
    zc: float = 0.0  # camera position along the road (world z)
    t: float = 0.0  # frame index in the drive (for things that move on their own)

    def uv(self, x: float, y: float, z: float) -> tuple[float, float]:
        return self.cx + self.f * (x / z + self.curve * z), self.cy + self.f * (self.cam_h - y) / z

    def col(self, rgb: RGB, z: float) -> tuple[int, int, int]:
        a = 1.0 - math.exp(-max(z, 0.0) / self.fog)
        h = self.haze
        return (
            int(rgb[0] + (h[0] - rgb[0]) * a),
            int(rgb[1] + (h[1] - rgb[1]) * a),
            int(rgb[2] + (h[2] - rgb[2]) * a),
        )

    def px(self, metres: float, z: float) -> float:
        """Size in pixels of a length at depth z."""
        return self.f * metres / z


class _Canvas:
    """The image, a label layer (class * 8 + material) and a shade layer, painted together."""

    def __init__(self, sky: np.ndarray) -> None:
        h, w = sky.shape[:2]
        self.image = Image.fromarray(sky)
        self.label = Image.new("L", (w, h), SKY * 8 + _FLAT)
        self.shade = Image.new("L", (w, h), _LIT)
        self._img = ImageDraw.Draw(self.image)
        self._lab = ImageDraw.Draw(self.label)
        self._shd = ImageDraw.Draw(self.shade)

    def poly(self, pts: list[tuple[float, float]], rgb: tuple[int, int, int], cls: int, mat: int, shade: float = 1.0) -> None:
        self._img.polygon(pts, fill=rgb)
        self._lab.polygon(pts, fill=cls * 8 + mat)
        self._shd.polygon(pts, fill=min(255, int(_LIT * shade)))

    def ellipse(self, box: tuple[float, float, float, float], rgb: tuple[int, int, int], cls: int, mat: int, shade: float = 1.0) -> None:
        x0, y0, x1, y1 = box
        if x1 < x0 + 0.5 or y1 < y0 + 0.5:  # Pillow refuses inverted boxes; a dot is a tiny square
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = (cx - 0.25, cy - 0.25, cx + 0.25, cy + 0.25)
        self._img.ellipse(box, fill=rgb)
        self._lab.ellipse(box, fill=cls * 8 + mat)
        self._shd.ellipse(box, fill=min(255, int(_LIT * shade)))

    def shadow(self, pts: list[tuple[float, float]], factor: float) -> None:
        """Darken what is already drawn there, without touching image colours or classes."""
        self._shd.polygon(pts, fill=int(_LIT * factor))


def _depths(za: float, zb: float, n: int) -> list[float]:
    if n <= 2:
        return [za, zb]
    r = (zb / za) ** (1.0 / (n - 1))
    return [za * r**i for i in range(n)]


def _slices(za: float, zb: float) -> Iterator[tuple[float, float]]:
    """Cut the depth range [za, zb] at fixed ratios, so long things sort well against small ones."""
    a = za
    for edge in _BINS:
        if edge <= a:
            continue
        if edge >= zb:
            break
        yield a, edge
        a = edge
    yield a, zb


def _ground(view: _View, xa: float, xb: float, za: float, zb: float) -> list[tuple[float, float]]:
    """Outline of the road-level rectangle xa..xb (lateral) by za..zb (depth)."""
    zs = _depths(za, zb, 2 if view.curve == 0 else 14)
    return [view.uv(xa, 0.0, z) for z in zs] + [view.uv(xb, 0.0, z) for z in reversed(zs)]


def _side(view: _View, x: float, za: float, zb: float, y0: float, y1: float) -> list[tuple[float, float]]:
    """Outline of an upright rectangle parallel to the road at lateral position x."""
    zs = _depths(za, zb, 2 if view.curve == 0 else 4)
    return [view.uv(x, y0, z) for z in zs] + [view.uv(x, y1, z) for z in reversed(zs)]


def _front(view: _View, x0: float, x1: float, y0: float, y1: float, z: float) -> list[tuple[float, float]]:
    """Outline of an upright rectangle facing the camera at depth z."""
    return [view.uv(x0, y0, z), view.uv(x1, y0, z), view.uv(x1, y1, z), view.uv(x0, y1, z)]


def _jit(rng: np.random.Generator, rgb: RGB, amount: float) -> RGB:
    """Colour jittered in brightness and a little in hue."""
    g = 1.0 + rng.uniform(-amount, amount)
    c = [min(255.0, max(0.0, v * g + rng.uniform(-amount, amount) * 40)) for v in rgb]
    return (c[0], c[1], c[2])


def _pick(rng: np.random.Generator, colours: list[RGB], amount: float = 0.12) -> RGB:
    return _jit(rng, colours[int(rng.integers(len(colours)))], amount)


# Colour families; they overlap across classes on purpose (grey cars, grey walls, grey roads...).
_GREYS = [(95, 95, 98), (130, 130, 132), (165, 164, 160), (200, 198, 192), (60, 60, 64)]
_FACADES = _GREYS + [(205, 190, 160), (150, 80, 60), (225, 220, 210), (120, 110, 100), (180, 150, 120), (90, 100, 115)]
_PAINTS = _GREYS + [(230, 230, 232), (28, 28, 32), (150, 25, 30), (35, 55, 125), (30, 75, 50), (200, 185, 140), (215, 175, 40), (90, 30, 35)]
_ROADS = [(85, 85, 88), (105, 104, 104), (125, 123, 120), (145, 142, 136), (70, 72, 78), (160, 150, 135)]
_WALKS = [(150, 148, 144), (180, 176, 170), (200, 195, 185), (140, 120, 110), (165, 160, 150)]
_GRASSES = [(85, 120, 50), (110, 135, 60), (140, 140, 85), (120, 105, 75), (95, 115, 70), (150, 155, 95)]
_LEAVES = [(45, 80, 35), (60, 100, 40), (35, 65, 40), (85, 110, 45), (150, 155, 50), (70, 90, 55)]
_CLOTHES = [(30, 30, 35), (200, 200, 200), (40, 60, 120), (150, 30, 35), (90, 80, 60), (60, 90, 60), (180, 150, 110)]
_SKIN = [(220, 180, 150), (180, 130, 100), (120, 85, 60), (90, 60, 45)]


# --------------------------------------------------------------------------------------------------
# Things in the world. Each yields (sort key, draw call) pieces for a view; pieces are drawn from the
# largest key (farthest) to the smallest. Positions: x lateral (right +), y up, z along the road.
# --------------------------------------------------------------------------------------------------

Piece = tuple[float, Callable[[_Canvas], None]]


def _key(x0: float, x1: float, z0: float) -> float:
    """Distance from the camera to the nearest point of a footprint x0..x1 by z0.. (relative z).

    Drawing the largest keys first is the painter's algorithm; it is right for the disjoint boxes of a
    street as long as long things are cut in depth slices (see `_slices`)."""
    x = 0.0 if x0 <= 0.0 <= x1 else min(abs(x0), abs(x1))
    return math.hypot(x, max(z0, 0.0))


@dataclass
class _Building:
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

    def pieces(self, view: _View) -> Iterator[Piece]:
        za, zb = self.z0 - view.zc, min(self.z1 - view.zc, _FAR)
        if zb <= _NEAR or za >= _FAR:
            return
        for a, b in _slices(max(za, _NEAR), zb):
            yield math.hypot(self.x0, a), partial(self._facade, view, a, b)
        if za > _NEAR:
            yield math.hypot(self.x0, za) + 0.01, partial(self._end, view, za)

    def _window_ok(self, view: _View, z: float) -> bool:
        return view.px(self.win_h, z) >= 3.0 and view.px(self.win_w, z) >= 1.5

    def _facade(self, view: _View, a: float, b: float, cv: _Canvas) -> None:
        x = self.side * self.x0
        cv.poly(_side(view, x, a, b, 0.0, self.height), view.col(self.color, a), BUILDING, _CONCRETE, self.shade_front)
        cv.poly(_side(view, x, a, b, self.height - 0.6, self.height), view.col(self.trim, a), BUILDING, _CONCRETE, self.shade_front)
        if self.style == "plain" or not self._window_ok(view, b):
            return
        glass = view.col(self.glass, a)
        n_floors = self.lit_mask.shape[1]
        if self.style == "bands":
            for j in range(n_floors):
                y0 = j * self.floor_h + 0.9
                cv.poly(_side(view, x, a, b, y0, y0 + self.win_h), glass, BUILDING, _GLASS, self.shade_front)
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
            if za <= _NEAR:
                continue
            for j in range(n_floors):
                y0 = j * self.floor_h + (self.floor_h - self.win_h) * 0.6
                pts = [view.uv(x, y0, za), view.uv(x, y0, zb), view.uv(x, y0 + self.win_h, zb), view.uv(x, y0 + self.win_h, za)]
                cv.poly(pts, lit if self.lit_mask[k, j] else glass, BUILDING, _GLASS, self.shade_front)

    def _end(self, view: _View, z: float, cv: _Canvas) -> None:
        s, x0, x1 = self.side, self.side * self.x0, self.side * (self.x0 + self.depth)
        cv.poly(_front(view, x0, x1, 0.0, self.height, z), view.col(self.color, z), BUILDING, _CONCRETE, self.shade_end)
        cv.poly(_front(view, x0, x1, self.height - 0.6, self.height, z), view.col(self.trim, z), BUILDING, _CONCRETE, self.shade_end)
        if self.style == "plain" or not self._window_ok(view, z):
            return
        glass = view.col(self.glass, z)
        n_floors = self.lit_mask.shape[1]
        if self.style == "bands":
            for j in range(n_floors):
                y0 = j * self.floor_h + 0.9
                cv.poly(_front(view, x0, x1, y0, y0 + self.win_h, z), glass, BUILDING, _GLASS, self.shade_end)
            return
        n = int(self.depth / self.col_sp)
        for k in range(n):
            xc = s * (self.x0 + (k + 0.5) * self.depth / n)
            for j in range(n_floors):
                y0 = j * self.floor_h + (self.floor_h - self.win_h) * 0.6
                pts = _front(view, xc - self.win_w / 2, xc + self.win_w / 2, y0, y0 + self.win_h, z)
                cv.poly(pts, glass, BUILDING, _GLASS, self.shade_end)

    def cast_shadow(self, view: _View, cv: _Canvas, length: float, factor: float) -> None:
        za, zb = max(self.z0 - view.zc + 2.0, _NEAR), min(self.z1 - view.zc + 2.0, _FAR)
        if zb <= za:
            return
        xa = self.side * self.x0
        xb = self.side * max(self.x0 - self.height * length, -30.0)
        cv.shadow(_ground(view, min(xa, xb), max(xa, xb), za, zb), factor)


@dataclass
class _Barrier:
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

    def pieces(self, view: _View) -> Iterator[Piece]:
        za, zb = self.z0 - view.zc, min(self.z1 - view.zc, _FAR)
        if zb <= _NEAR or za >= _FAR:
            return
        for a, b in _slices(max(za, _NEAR), zb):
            yield math.hypot(self.x, a), partial(self._draw, view, a, b)

    def _draw(self, view: _View, a: float, b: float, cv: _Canvas) -> None:
        x, h = self.side * self.x, self.height
        c1, c2 = view.col(self.color, a), view.col(self.color2, a)
        if self.kind == "wall":
            cv.poly(_side(view, x, a, b, 0.0, h), c1, WALL, _CONCRETE, self.shade)
            cv.poly(_side(view, x, a, b, h - 0.15, h), c2, WALL, _CONCRETE, self.shade)
            if view.px(0.1, b) >= 1.0:  # joints between panels
                for zj in _posts(a + view.zc, b + view.zc, 4.0):
                    cv.poly(_side(view, x, zj - view.zc, zj - view.zc + 0.06, 0.0, h), c2, WALL, _CONCRETE, self.shade * 0.8)
        elif self.kind == "hedge":
            zs = _depths(a, b, 5)
            top = [view.uv(x, h + 0.15 * math.sin(1.7 * (z + view.zc)) + 0.1 * math.sin(4.1 * (z + view.zc)), z) for z in zs]
            cv.poly([view.uv(x, 0.0, z) for z in zs] + top[::-1], c1, VEGETATION, _FOLIAGE, self.shade)
        elif self.kind == "guardrail":
            cv.poly(_side(view, x, a, b, h - 0.35, h), c1, GUARD_RAIL, _METAL, self.shade)
            cv.poly(_side(view, x, a, b, h - 0.22, h - 0.13), c2, GUARD_RAIL, _METAL, self.shade * 0.8)
            if view.px(0.12, b) >= 0.7:
                for zp in _posts(a + view.zc, b + view.zc, 2.0):
                    z = zp - view.zc
                    cv.poly(_side(view, x + self.side * 0.05, z, z + 0.12, 0.0, h - 0.3), c2, GUARD_RAIL, _METAL, self.shade * 0.7)
        else:  # fence: posts, rails and close bars where they can be told apart
            if view.px(0.25, b) < 3.0:
                cv.poly(_side(view, x, a, b, 0.0, h), c1, FENCE, _METAL, self.shade)
            else:
                for zp in _posts(a + view.zc, b + view.zc, 0.25):
                    z = zp - view.zc
                    cv.poly(_side(view, x, z, z + 0.05, 0.05, h - 0.1), c1, FENCE, _METAL, self.shade)
            for y in (0.1, h - 0.15):
                cv.poly(_side(view, x, a, b, y, y + 0.07), c2, FENCE, _METAL, self.shade)
            for zp in _posts(a + view.zc, b + view.zc, 2.5):
                z = zp - view.zc
                cv.poly(_side(view, x, z, z + 0.1, 0.0, h + 0.05), c2, FENCE, _METAL, self.shade)


def _posts(wz0: float, wz1: float, spacing: float) -> list[float]:
    """World positions of regularly spaced things within [wz0, wz1)."""
    k0 = math.ceil(wz0 / spacing)
    k1 = math.ceil(wz1 / spacing)
    return [k * spacing for k in range(k0, k1)][:400]


@dataclass
class _Tree:
    x: float
    z: float
    trunk_h: float
    trunk_w: float
    trunk: RGB
    leaves: RGB
    conifer: bool
    blobs: list[tuple[float, float, float, float]]  # dx, dy, r, shade for broadleaf; layers for conifers

    def pieces(self, view: _View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 300:
            return
        r = max(b[2] for b in self.blobs)
        yield _key(self.x - r, self.x + r, z - r), partial(self._draw, view, z)

    def _draw(self, view: _View, z: float, cv: _Canvas) -> None:
        w = self.trunk_w / 2
        cv.poly(_front(view, self.x - w, self.x + w, 0.0, self.trunk_h + 0.5, z), view.col(self.trunk, z), VEGETATION, _CONCRETE, 0.9)
        big = view.px(1.0, z) > 6.0
        for dx, dy, r, shade in self.blobs if big else self.blobs[:2]:
            col = view.col(tuple(c * shade for c in self.leaves), z)  # type: ignore[arg-type]
            if self.conifer:  # dy is the layer's base height, r its half width, height 1.6 r
                pts = [view.uv(self.x - r, dy, z), view.uv(self.x + r, dy, z), view.uv(self.x + dx, dy + 2.2 * r, z)]
                cv.poly(pts, col, VEGETATION, _FOLIAGE, shade)
            else:
                u0, v0 = view.uv(self.x + dx - r, dy + r * 0.85, z)
                u1, v1 = view.uv(self.x + dx + r, dy - r * 0.85, z)
                cv.ellipse((u0, v0, u1, v1), col, VEGETATION, _FOLIAGE, shade)

    def cast_shadow(self, view: _View, cv: _Canvas, length: float, factor: float, sun: int) -> None:
        z = self.z - view.zc
        if z < 1.5 or z > 150:
            return
        r = max(b[2] for b in self.blobs)
        off = -sun * (self.trunk_h + r) * length
        cv.shadow(_ground(view, self.x + off - r, self.x + off + r, max(z - r * 0.6, _NEAR), z + r * 0.6), factor)


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

    def pieces(self, view: _View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 300:
            return
        yield _key(self.x - self.width, self.x + self.width, z), partial(self._draw, view, z)

    def _draw(self, view: _View, z: float, cv: _Canvas) -> None:
        w, x, h = self.width / 2, self.x, self.height
        pole = view.col(self.color, z)
        cv.poly(_front(view, x - w, x + w, 0.0, h, z), pole, POLE, _METAL, 0.95)
        if self.kind == "lamp":
            cv.poly(_front(view, min(x, x + self.arm), max(x, x + self.arm), h - 0.12, h, z), pole, POLE, _METAL, 0.95)
            e = x + self.arm
            cv.poly(_front(view, e - 0.35, e + 0.35, h - 0.25, h - 0.05, z), view.col((220, 220, 200), z), POLE, _METAL, 1.1)
        elif self.kind == "power":
            cv.poly(_front(view, x - 1.0, x + 1.0, h - 0.7, h - 0.55, z), pole, POLE, _METAL, 0.95)
        elif self.kind == "sign":
            self._sign(view, z, cv)
        else:
            if self.kind == "light_arm":
                cv.poly(_front(view, min(x, x + self.arm), max(x, x + self.arm), h - 0.3, h - 0.15, z), pole, POLE, _METAL, 0.95)
                self._light(view, x + self.arm * 0.85, h - 0.3, z, cv)
                self._light(view, x + self.arm * 0.45, h - 0.3, z, cv)
            else:
                self._light(view, x, h + 1.05, z, cv)

    def _light(self, view: _View, x: float, top: float, z: float, cv: _Canvas) -> None:
        cv.poly(_front(view, x - 0.2, x + 0.2, top - 1.05, top, z), view.col(self.housing, z), TRAFFIC_LIGHT, _METAL, 1.0)
        if view.px(0.2, z) < 2.0:
            return
        lamps = ((220, 40, 30), (235, 170, 30), (60, 220, 120))
        for i, rgb in enumerate(lamps):
            yc = top - 0.2 - 0.32 * i
            on = i == self.lamp_on
            c = rgb if on else (rgb[0] * 0.25 + 20, rgb[1] * 0.25 + 20, rgb[2] * 0.25 + 20)
            u0, v0 = view.uv(x - 0.12, yc + 0.12, z)
            u1, v1 = view.uv(x + 0.12, yc - 0.12, z)
            cv.ellipse((u0, v0, u1, v1), view.col(c, z), TRAFFIC_LIGHT, _FLAT, 1.4 if on else 1.0)

    def _sign(self, view: _View, z: float, cv: _Canvas) -> None:
        x, y = self.x, self.plate_y
        c1, c2 = view.col(self.plate_rgb, z), view.col(self.plate_rgb2, z)
        r = 0.38
        if self.plate == "circle":
            u0, v0 = view.uv(x - r, y + r, z)
            u1, v1 = view.uv(x + r, y - r, z)
            cv.ellipse((u0, v0, u1, v1), c1, TRAFFIC_SIGN, _FLAT)
            d = (u1 - u0) * 0.18
            cv.ellipse((u0 + d, v0 + d, u1 - d, v1 - d), c2, TRAFFIC_SIGN, _FLAT)
        elif self.plate == "triangle":
            cv.poly([view.uv(x - r * 1.1, y - r, z), view.uv(x + r * 1.1, y - r, z), view.uv(x, y + r, z)], c1, TRAFFIC_SIGN, _FLAT)
            cv.poly([view.uv(x - r * 0.6, y - r * 0.7, z), view.uv(x + r * 0.6, y - r * 0.7, z), view.uv(x, y + r * 0.35, z)], c2, TRAFFIC_SIGN, _FLAT)
        elif self.plate == "octagon":
            pts = [view.uv(x + r * math.cos(a), y + r * math.sin(a), z) for a in np.linspace(math.pi / 8, 2 * math.pi + math.pi / 8, 8, endpoint=False)]
            cv.poly(pts, c1, TRAFFIC_SIGN, _FLAT)
            cv.poly(_front(view, x - r * 0.6, x + r * 0.6, y - 0.08, y + 0.08, z), c2, TRAFFIC_SIGN, _FLAT)
        else:  # rectangle with a band
            cv.poly(_front(view, x - r * 1.2, x + r * 1.2, y - r, y + r, z), c1, TRAFFIC_SIGN, _FLAT)
            cv.poly(_front(view, x - r, x + r, y - 0.1, y + 0.1, z), c2, TRAFFIC_SIGN, _FLAT)


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

    def pieces(self, view: _View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 150:
            return
        x = self.x + self.speed * view.t
        yield _key(x - 0.3, x + 0.3, z - 0.2), partial(self._draw, view, x, z)

    def _draw(self, view: _View, x: float, z: float, cv: _Canvas) -> None:
        h = self.height
        leg, hip, shoulder = 0.47 * h, 0.5 * h, 0.82 * h
        pants, shirt, skin = view.col(self.pants, z), view.col(self.shirt, z), view.col(self.skin, z)
        for sgn in (-1, 1):
            foot = x + sgn * (0.06 + self.stride)
            cv.poly([view.uv(foot - 0.07, 0.0, z), view.uv(foot + 0.07, 0.0, z), view.uv(x + sgn * 0.13, hip, z), view.uv(x + sgn * 0.01, hip, z)], pants, PEDESTRIAN, _CONCRETE, 0.9)
            cv.poly([view.uv(x + sgn * 0.2, shoulder, z), view.uv(x + sgn * 0.27, shoulder - 0.05, z), view.uv(x + sgn * (0.28 + self.stride * 0.5), leg + 0.05, z), view.uv(x + sgn * (0.21 + self.stride * 0.5), leg + 0.05, z)], shirt, PEDESTRIAN, _CONCRETE, 0.85)
        cv.poly(_front(view, x - 0.2, x + 0.2, hip - 0.05, shoulder, z), shirt, PEDESTRIAN, _CONCRETE, 1.0)
        u0, v0 = view.uv(x - 0.1, h, z)
        u1, v1 = view.uv(x + 0.1, shoulder + 0.02, z)
        cv.ellipse((u0, v0, u1, v1), skin, PEDESTRIAN, _CONCRETE, 1.0)
        u0, v0 = view.uv(x - 0.1, h + 0.02, z)
        u1, v1 = view.uv(x + 0.1, h - 0.07, z)
        cv.ellipse((u0, v0, u1, v1), view.col(self.hair, z), PEDESTRIAN, _CONCRETE, 1.0)


@dataclass
class _Vehicle:
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

    def _z(self, view: _View) -> float:
        return self.z + self.speed * view.t - view.zc

    def pieces(self, view: _View) -> Iterator[Piece]:
        z = self._z(view)
        if z + self.length < 2.0 or z > 300:
            return
        w = self.width / 2
        yield _key(self.x - w, self.x + w, z), partial(self._draw, view, z)

    def _draw(self, view: _View, z: float, cv: _Canvas) -> None:
        w, x, L, h = self.width / 2, self.x, self.length, self.height
        paint, glass, dark = view.col(self.paint, z), view.col(self.glass, z), view.col((25, 25, 28), z)
        body_top = h if self.kind != "car" else h * 0.58
        za, zb = max(z, _NEAR), z + L
        # the side facing the camera, if any
        if x - w > 0.3 or x + w < -0.3:
            xs = x - w if x > 0 else x + w
            cv.poly(_side(view, xs, za, zb, 0.3, body_top), paint, VEHICLES, _METAL, self.shade_side)
            if self.kind == "car":
                ca, cb = z + 0.3 * L, z + 0.85 * L
                if ca > _NEAR:
                    pts = [view.uv(xs, body_top, ca - 0.4), view.uv(xs, body_top, cb + 0.3), view.uv(xs, h, cb - 0.3), view.uv(xs, h, ca + 0.3)]
                    cv.poly(pts, paint, VEHICLES, _METAL, self.shade_side)
                    pts = [view.uv(xs, body_top + 0.06, ca - 0.2), view.uv(xs, body_top + 0.06, cb + 0.15), view.uv(xs, h - 0.07, cb - 0.25), view.uv(xs, h - 0.07, ca + 0.3)]
                    cv.poly(pts, glass, VEHICLES, _GLASS, self.shade_side)
            else:
                cv.poly(_side(view, xs, max(z + 0.2 * L, _NEAR), zb - 0.2, h * 0.62, h * 0.85), glass, VEHICLES, _GLASS, self.shade_side)
            for zw in (z + 0.18 * L, z + 0.82 * L):
                if zw - 0.38 > _NEAR:
                    u0, v0 = view.uv(xs, 0.76, zw - 0.38)
                    u1, v1 = view.uv(xs, 0.0, zw + 0.38)
                    cv.ellipse((min(u0, u1), v0, max(u0, u1), v1), dark, VEHICLES, _METAL, 0.8)
        if z <= _NEAR:
            return
        # the rear (or front) face
        for sgn in (-1, 1):
            cv.poly(_front(view, x + sgn * (w - 0.05), x + sgn * (w - 0.4), 0.0, 0.5, z), dark, VEHICLES, _METAL, 0.8)
        cv.poly(_front(view, x - w, x + w, 0.3, body_top, z), paint, VEHICLES, _METAL, 1.0)
        cv.poly(_front(view, x - w, x + w, 0.3, 0.5, z), dark, VEHICLES, _METAL, 1.0)
        if self.kind == "car":
            zz = z + 0.12 * L
            cv.poly([view.uv(x - w + 0.05, body_top, z), view.uv(x + w - 0.05, body_top, z), view.uv(x + w - 0.2, h, zz), view.uv(x - w + 0.2, h, zz)], paint, VEHICLES, _METAL, 1.0)
            cv.poly([view.uv(x - w + 0.15, body_top + 0.05, z), view.uv(x + w - 0.15, body_top + 0.05, z), view.uv(x + w - 0.25, h - 0.06, zz), view.uv(x - w + 0.25, h - 0.06, zz)], glass, VEHICLES, _GLASS, 1.0)
        else:
            cv.poly(_front(view, x - w + 0.15, x + w - 0.15, h * 0.62, h * 0.85, z), glass, VEHICLES, _GLASS, 1.0)
        lamp = (235, 235, 210) if self.oncoming else (200, 30, 25)
        ly = min(body_top - 0.1, 0.95)
        for sgn in (-1, 1):
            cv.poly(_front(view, x + sgn * (w - 0.05), x + sgn * (w - 0.35), ly - 0.15, ly, z), view.col(lamp, z), VEHICLES, _FLAT, 1.1)
        cv.poly(_front(view, x - 0.26, x + 0.26, 0.55, 0.67, z), view.col((215, 215, 205), z), VEHICLES, _FLAT, 1.0)

    def cast_shadow(self, view: _View, cv: _Canvas, factor: float) -> None:
        z = self._z(view)
        if z + self.length < 1.0 or z > 200:
            return
        w = self.width / 2 + 0.1
        cv.shadow(_ground(view, self.x - w, self.x + w, max(z - 0.3, _NEAR), z + self.length), factor)


@dataclass
class _Static:
    """A bin or a billboard (CARLA's "Static")."""

    kind: str
    x: float
    z: float
    color: RGB
    color2: RGB

    def pieces(self, view: _View) -> Iterator[Piece]:
        z = self.z - view.zc
        if z < 1.5 or z > 250:
            return
        yield _key(self.x - 0.5, self.x + 0.5, z), partial(self._draw, view, z)

    def _draw(self, view: _View, z: float, cv: _Canvas) -> None:
        x = self.x
        c1, c2 = view.col(self.color, z), view.col(self.color2, z)
        if self.kind == "bin":
            cv.poly(_front(view, x - 0.3, x + 0.3, 0.0, 0.95, z), c1, STATIC, _METAL, 1.0)
            cv.poly(_front(view, x - 0.33, x + 0.33, 0.95, 1.05, z), c2, STATIC, _METAL, 1.0)
        else:
            for dx in (-1.2, 1.2):
                cv.poly(_front(view, x + dx - 0.1, x + dx + 0.1, 0.0, 3.2, z), c2, STATIC, _METAL, 0.9)
            cv.poly(_front(view, x - 2.2, x + 2.2, 3.0, 5.2, z), c2, STATIC, _METAL, 1.0)
            cv.poly(_front(view, x - 2.0, x + 2.0, 3.2, 5.0, z), c1, STATIC, _FLAT, 1.1)
            cv.poly(_front(view, x - 1.6, x + 0.4, 3.7, 4.5, z), c2, STATIC, _FLAT, 1.1)


# --------------------------------------------------------------------------------------------------
# A drive: the layout, sky and look that stay fixed while the camera moves
# --------------------------------------------------------------------------------------------------


@dataclass
class _Side:
    sign: int
    edge: float  # distance of the road edge from the centre line
    walk: float  # sidewalk width (0: none)
    walk_rgb: RGB
    curb_rgb: RGB
    ground_rgb: RGB


@dataclass
class _Scene:
    height: int
    width: int
    view: _View
    speed: float
    sky: np.ndarray  # (H, W, 3) uint8
    background: list[tuple[list[tuple[float, float]], tuple[int, int, int], int, int]]
    road: tuple[float, float]  # left and right edge (signed lateral positions)
    road_rgb: RGB
    patches: list[tuple[float, float, float, float, RGB]]
    lines: list[tuple[float, str, RGB, float]]  # lateral position, "solid"/"dashed", colour, width
    dash: tuple[float, float, float]  # period, length, phase
    sides: list[_Side]
    crossings: list[tuple[float, float]]  # world z ranges of cross streets
    things: list = field(default_factory=list)
    sun: int = 1
    shadow_len: float = 0.5
    shadow_factor: float = 0.6
    texture: np.ndarray = field(default_factory=lambda: _TEXTURE.copy())
    mid: np.ndarray | None = None  # texture noise fixed per drive (about 3 px)
    patch: np.ndarray | None = None  # texture noise fixed per drive (about 20 px)
    contrast: float = 1.0
    brightness: float = 0.0
    cast: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    blur: float = 0.5
    noise: float = 2.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Gaussian noise blurred to features of about `cell` pixels, unit standard deviation."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return big / max(float(big.std()), 1e-3)


def _make_sky(rng: np.random.Generator, height: int, w: int, horizon: float) -> tuple[np.ndarray, RGB]:
    """Gradient, sun glow and clouds; also the horizon colour, which far things fade to."""
    h = min(height, int(horizon) + 3)  # the ground covers everything below the horizon
    kind = rng.choice(["clear", "hazy", "overcast", "dusk"], p=[0.45, 0.25, 0.2, 0.1])
    if kind == "clear":
        top, low = (rng.uniform(40, 90), rng.uniform(100, 150), rng.uniform(190, 235)), (rng.uniform(170, 215), rng.uniform(195, 225), rng.uniform(220, 245))
    elif kind == "hazy":
        top, low = (rng.uniform(110, 150), rng.uniform(150, 180), rng.uniform(190, 220)), (rng.uniform(200, 230), rng.uniform(205, 230), rng.uniform(210, 235))
    elif kind == "overcast":
        g = rng.uniform(120, 200)
        top, low = (g * 0.9, g * 0.92, g), (g * 1.1 + 10, g * 1.1 + 10, g * 1.1 + 12)
    else:
        top, low = (rng.uniform(50, 90), rng.uniform(70, 110), rng.uniform(140, 180)), (rng.uniform(220, 250), rng.uniform(160, 200), rng.uniform(110, 160))
    top_a, low_a = np.array(top, np.float32), np.minimum(np.array(low, np.float32), 255)
    rows = np.clip(np.arange(h, dtype=np.float32) / max(horizon, 1.0), 0.0, 1.0) ** rng.uniform(0.6, 1.6)
    sky = top_a + (low_a - top_a) * rows[:, None, None]  # (h, 1, 3)
    sun_col = rng.uniform(0, w)
    glow = np.exp(-((np.arange(w, dtype=np.float32) - sun_col) / (0.5 * w)) ** 2)[None, :, None] * rng.uniform(0, 25)
    sky = np.broadcast_to(sky + glow, (h, w, 3)).copy()
    cover = rng.uniform(0.0, 0.9) if kind != "overcast" else rng.uniform(0.5, 1.0)
    if cover > 0.05:
        clouds = _smooth_noise(rng, h, w, rng.uniform(0.12, 0.25) * w) + 0.35 * _smooth_noise(rng, h, w, 0.05 * w)
        amount = np.clip((clouds - (1.5 - 2.5 * cover)) * rng.uniform(0.3, 0.7), 0.0, 1.0)
        amount *= np.clip(1.15 - rows[:, None] ** 3, 0.0, 1.0)
        cloud_rgb = np.array(_jit(rng, (235, 235, 238) if kind != "overcast" else (190, 190, 195), 0.08), np.float32)
        sky += (cloud_rgb - sky) * amount[..., None] * rng.uniform(0.5, 0.95)
    full = np.empty((height, w, 3), np.uint8)
    full[:h] = np.clip(sky, 0, 255)
    full[h:] = full[h - 1 : h].mean(axis=1, keepdims=True).astype(np.uint8)
    return full, (float(low_a[0]), float(low_a[1]), float(low_a[2]))


def _make_background(rng: np.random.Generator, view: _View, h: int, w: int, env: str) -> list:
    """Hills, a far tree line and a far skyline at the horizon (fixed on screen during a drive)."""
    items = []
    us = np.linspace(-10, w + 10, 60)
    cy = view.cy
    if rng.random() < (0.75 if env != "city" else 0.35):
        base = rng.uniform(0.01, 0.12) * h
        prof = base + sum(rng.uniform(0.0, 0.05) * h * np.sin(us / w * rng.uniform(2, 12) + rng.uniform(0, 6)) for _ in range(3))
        pts = [(float(u), float(cy - max(p, 0.0))) for u, p in zip(us, prof)] + [(w + 10, cy + 2), (-10, cy + 2)]
        col = _jit(rng, _pick(rng, _GRASSES), 0.1)
        items.append((pts, view.col(col, view.fog * rng.uniform(0.6, 1.6)), TERRAIN, _CONCRETE))
    if rng.random() < (0.7 if env != "city" else 0.5):
        us2 = np.linspace(-10, w + 10, 120)
        prof = rng.uniform(0.005, 0.03) * h * (1.2 + 0.5 * np.sin(us2 * rng.uniform(0.2, 0.6)) + 0.4 * np.sin(us2 * rng.uniform(0.05, 0.1)))
        pts = [(float(u), float(cy - p)) for u, p in zip(us2, prof)] + [(w + 10, cy + 2), (-10, cy + 2)]
        items.append((pts, view.col(_pick(rng, _LEAVES), view.fog * rng.uniform(0.5, 1.2)), VEGETATION, _FOLIAGE))
    if rng.random() < (0.8 if env == "city" else 0.3):
        col = _pick(rng, _FACADES)
        u = rng.uniform(-20, 0)
        while u < w:
            bw = rng.uniform(0.015, 0.06) * w
            bh = rng.uniform(0.01, 0.12) * h
            if rng.random() < 0.6:
                pts = [(u, cy + 1), (u + bw, cy + 1), (u + bw, cy - bh), (u, cy - bh)]
                items.append((pts, view.col(_jit(rng, col, 0.15), view.fog * rng.uniform(0.7, 1.5)), BUILDING, _CONCRETE))
            u += bw * rng.uniform(0.8, 2.5)
    return items


def _make_scene(rng: np.random.Generator, height: int, width: int) -> _Scene:
    """Everything that stays fixed during one drive."""
    env = str(rng.choice(["city", "suburb", "highway"], p=[0.5, 0.3, 0.2]))
    fov = math.radians(rng.uniform(75, 95))
    f = width / 2 / math.tan(fov / 2)
    cy = height * rng.uniform(0.40, 0.54)
    cx = width * rng.uniform(0.38, 0.62)
    curve = 0.0 if rng.random() < 0.55 else float(rng.uniform(-4e-4, 4e-4))
    sky, haze = _make_sky(rng, height, width, cy)
    view = _View(f=f, cx=cx, cy=cy, cam_h=float(rng.uniform(1.3, 2.0)), curve=curve, haze=haze, fog=float(rng.uniform(150, 700)))

    n_lanes = int(rng.choice([2, 3, 4, 5, 6], p=[0.35, 0.15, 0.3, 0.1, 0.1]))
    lane_w = float(rng.uniform(3.0, 3.8))
    two_way = env == "city" and rng.random() < 0.8 or env == "suburb" or (env == "highway" and rng.random() < 0.2)
    oncoming = n_lanes // 2 if two_way else 0
    own = int(rng.integers(oncoming, n_lanes))
    left = -(own + 0.5) * lane_w - rng.uniform(-0.4, 0.4)
    right = left + n_lanes * lane_w

    white = _jit(rng, (225, 225, 220), 0.1)
    yellow = _jit(rng, (220, 185, 60), 0.1)
    lw = float(rng.uniform(0.1, 0.22))
    lines: list[tuple[float, str, RGB, float]] = []
    for k in range(1, n_lanes):
        xb = left + k * lane_w
        if k == oncoming:
            col = yellow if rng.random() < 0.6 else white
            lines += [(xb - lw, "solid", col, lw), (xb + lw, "solid", col, lw)]
        else:
            lines.append((xb, "dashed", white, lw))
    if rng.random() < 0.7:
        inset = rng.uniform(0.2, 0.5)
        lines += [(left + inset, "solid", white, lw), (right - inset, "solid", white, lw)]
    dash = (float(rng.uniform(8, 13)), float(rng.uniform(2.5, 4.5)), float(rng.uniform(0, 13)))

    road_rgb = _pick(rng, _ROADS, 0.1)
    patches = []
    for _ in range(int(rng.integers(0, 8))):
        z0 = rng.uniform(-10, 200)
        xa = rng.uniform(left, right - 1)
        patches.append((xa, xa + rng.uniform(0.8, 5), z0, z0 + rng.uniform(1, 12), _jit(rng, road_rgb, 0.2)))

    crossings = []
    if env != "highway":
        zz = rng.uniform(20, 90)
        while zz < 260:
            crossings.append((zz, zz + n_lanes * lane_w * rng.uniform(0.6, 1.1)))
            zz += rng.uniform(80, 200)

    sides = []
    walk_p = {"city": 0.9, "suburb": 0.75, "highway": 0.1}[env]
    for sign, edge in ((-1, -left), (1, right)):
        walk = float(rng.uniform(1.8, 5.0)) if rng.random() < walk_p else 0.0
        walk_rgb = _pick(rng, _WALKS + _ROADS[2:4])
        sides.append(_Side(sign, float(edge), walk, walk_rgb, _jit(rng, walk_rgb, 0.15), _pick(rng, _GRASSES)))
    if all(s.walk == 0 for s in sides) and env != "highway":
        sides[int(rng.integers(2))].walk = float(rng.uniform(1.8, 4.0))

    sun = int(rng.choice([-1, 1]))
    scene = _Scene(
        height=height, width=width, view=view, speed=float(rng.uniform(0.5, 2.2)), sky=sky,
        background=_make_background(rng, view, height, width, env), road=(left, right), road_rgb=road_rgb,
        patches=patches, lines=lines, dash=dash, sides=sides, crossings=crossings, sun=sun,
        shadow_len=float(rng.uniform(0.2, 1.2)), shadow_factor=float(rng.uniform(0.45, 0.8)),
    )
    _populate(rng, scene, env, n_lanes, lane_w, oncoming, own)

    scene.texture = _TEXTURE * np.float32(rng.uniform(0.6, 1.4))
    scene.mid = _smooth_noise(rng, height, width, max(1.5, 3.0 * width / 640))
    scene.patch = _smooth_noise(rng, height, width, max(4.0, 40.0 * width / 640))
    scene.contrast = float(rng.uniform(0.75, 1.2))
    scene.brightness = float(rng.uniform(-30, 25))
    scene.cast = np.array([rng.uniform(0.9, 1.1) for _ in range(3)], np.float32)
    scene.blur = float(rng.uniform(0.3, 1.0) * width / 640)
    scene.noise = float(rng.uniform(1.0, 6.0))
    return scene


def _free(scene: _Scene, z0: float, z1: float) -> bool:
    """True if [z0, z1] does not cut a cross street."""
    return all(z1 < a - 3 or z0 > b + 3 for a, b in scene.crossings)


def _populate(rng: np.random.Generator, scene: _Scene, env: str, n_lanes: int, lane_w: float, oncoming: int, own: int) -> None:
    """Place buildings, barriers, trees, poles, signs, lights, people and vehicles."""
    things = scene.things
    left = scene.road[0]
    sun = scene.sun

    for side in scene.sides:
        s, edge = side.sign, side.edge
        lot = edge + side.walk + (0.0 if env == "city" else rng.uniform(0.0, 8.0))
        weights = {
            "city": {"building": 0.55, "wall": 0.1, "trees": 0.17, "fence": 0.05, "empty": 0.13},
            "suburb": {"building": 0.42, "hedge": 0.12, "fence": 0.12, "wall": 0.04, "trees": 0.2, "empty": 0.1},
            "highway": {"trees": 0.45, "empty": 0.3, "building": 0.08, "wall": 0.17},
        }[env]
        kinds, p = list(weights), np.array(list(weights.values()))
        z = rng.uniform(-40, -5)
        shade_front = 0.7 if s == sun else 1.1
        while z < 500:
            kind = str(rng.choice(kinds, p=p / p.sum()))
            length = rng.uniform(10, 45) if kind == "building" else rng.uniform(15, 70)
            z0, z1 = z, z + length
            for a, b in scene.crossings:  # keep cross streets clear
                if z0 < b + 3 and z1 > a - 3:
                    if z0 < a - 8:
                        z1 = a - 3
                    else:
                        z0, z1 = b + 3, max(z1, b + 10)
            if kind == "building":
                x0 = lot + rng.uniform(0, 3 if env == "city" else 8)
                tall = rng.random() < (0.2 if env == "city" else 0.03)
                floor_h = rng.uniform(2.9, 3.8)
                n_floors = int(rng.integers(5, 15) if tall else rng.integers(1, 5))
                col_sp = rng.uniform(2.2, 4.0)
                things.append(_Building(
                    s, x0, rng.uniform(8, 30), z0, z1, n_floors * floor_h + rng.uniform(0.5, 2.5),
                    _pick(rng, _FACADES, 0.15), _pick(rng, _FACADES + _GREYS, 0.1),
                    str(rng.choice(["grid", "bands", "plain"], p=[0.65, 0.2, 0.15])),
                    _pick(rng, [(40, 50, 60), (70, 85, 100), (30, 30, 35), (110, 125, 140), (150, 160, 165)], 0.15),
                    _jit(rng, (220, 200, 150), 0.1), col_sp, floor_h, col_sp * rng.uniform(0.35, 0.7), floor_h * rng.uniform(0.35, 0.6),
                    rng.random((int(length / col_sp) + 2, n_floors)) < rng.uniform(0.0, 0.25),
                    shade_front, rng.uniform(0.8, 1.0),
                ))
                z = z1 + rng.uniform(0.0, 4.0 if env == "city" else 15.0)
                continue
            if kind in ("wall", "fence", "hedge"):
                x = lot - 0.3 if env != "highway" else edge + rng.uniform(0.5, 3)
                h = {"wall": rng.uniform(0.8, 3.5), "fence": rng.uniform(1.0, 2.2), "hedge": rng.uniform(0.8, 2.0)}[kind]
                col = {"wall": _FACADES, "fence": [(40, 40, 45), (110, 80, 50), (50, 80, 55), (150, 150, 150)], "hedge": _LEAVES}[kind]
                c = _pick(rng, col, 0.12)
                things.append(_Barrier(kind, s, x, z0, z1, h, c, _jit(rng, c, 0.25), shade_front))
            if kind in ("trees", "hedge", "fence") or rng.random() < 0.3:
                zt = z0 + rng.uniform(0, 5)
                while zt < z1 and zt < 260:
                    things.append(_tree(rng, s * (lot + rng.uniform(1, 15)), zt))
                    zt += rng.uniform(4, 14)
            z = z1 + rng.uniform(0.0, 10.0)

        if side.walk == 0:
            if rng.random() < (0.75 if env == "highway" else 0.4):
                things.append(_Barrier("guardrail", s, edge + rng.uniform(0.3, 1.0), -30, 520, rng.uniform(0.75, 0.9),
                                       _pick(rng, [(190, 190, 185), (160, 160, 165), (215, 210, 200)]), _pick(rng, _GREYS), 1.0))
        else:
            walk_x = edge + rng.uniform(0.3, 0.6)
            if env == "city" and rng.random() < 0.4:  # street trees
                zt = rng.uniform(0, 10)
                while zt < 220:
                    if _free(scene, zt - 2, zt + 2):
                        things.append(_tree(rng, s * (edge + side.walk * 0.5), zt))
                    zt += rng.uniform(8, 16)
            for _ in range(int(rng.poisson(6 if env == "city" else 3))):
                zp = rng.uniform(3, 120)
                things.append(_person(rng, s * (edge + rng.uniform(0.4, max(0.5, side.walk - 0.3))), zp))
            for _ in range(int(rng.poisson(1.0))):
                things.append(_Static("bin", s * (edge + side.walk - 0.5), rng.uniform(3, 120), _pick(rng, _PAINTS), _pick(rng, _GREYS)))
            pole_c = _pick(rng, [(110, 110, 115), (60, 60, 65), (150, 150, 150), (40, 60, 45)])
            zl, spacing = rng.uniform(0, 25), rng.uniform(18, 40)
            while zl < 300 and rng.random() < 0.85:
                things.append(_post(rng, "lamp", s * walk_x, zl, pole_c, arm=-s * rng.uniform(0.8, 2.5)))
                zl += spacing
        if env != "city" and rng.random() < 0.4:  # power line poles
            zl, spacing = rng.uniform(0, 30), rng.uniform(30, 50)
            xp = s * (edge + side.walk + rng.uniform(1.0, 4.0))
            while zl < 300:
                things.append(_post(rng, "power", xp, zl, _pick(rng, [(100, 75, 50), (120, 100, 80), (140, 140, 140)]), arm=0.0))
                zl += spacing
        if rng.random() < 0.05:
            things.append(_Static("billboard", s * (edge + side.walk + rng.uniform(3, 8)), rng.uniform(20, 120), _pick(rng, _PAINTS), _pick(rng, _GREYS)))

    # traffic lights at cross streets, signs anywhere, and at least one of each near the start
    for a, b in scene.crossings:
        for side in scene.sides:
            if side.sign == 1 or rng.random() < 0.5:
                xl = side.sign * (side.edge + rng.uniform(0.3, 1.0))
                arm = -side.sign * rng.uniform(3.0, 7.0) if rng.random() < 0.7 else 0.0
                things.append(_post(rng, "light_arm" if arm else "light", xl, a - rng.uniform(1, 4), (60, 60, 62), arm=arm))
    walk_sides = [sd for sd in scene.sides if sd.walk > 0] or scene.sides
    near_light = rng.uniform(14, 45)
    sd = scene.sides[1] if rng.random() < 0.75 else scene.sides[0]
    arm = -sd.sign * rng.uniform(3.0, 7.0) if rng.random() < 0.5 else 0.0
    things.append(_post(rng, "light_arm" if arm else "light", sd.sign * (sd.edge + rng.uniform(0.3, 1.0)), near_light, (60, 60, 62), arm=arm))
    for zs in [rng.uniform(10, 40)] + list(rng.uniform(40, 250, int(rng.poisson(4)))):
        sd = scene.sides[int(rng.integers(2))]
        things.append(_post(rng, "sign", sd.sign * (sd.edge + rng.uniform(0.3, 1.5)), zs, _pick(rng, _GREYS), arm=0.0))
    sd = walk_sides[int(rng.integers(len(walk_sides)))]
    things.append(_person(rng, sd.sign * (sd.edge + rng.uniform(0.3, max(0.4, sd.walk - 0.3))), rng.uniform(8, 30)))
    if not any(isinstance(t, _Building) and t.z0 < 80 for t in things):
        sd = scene.sides[int(rng.integers(2))]
        n_floors, z0 = int(rng.integers(1, 4)), rng.uniform(15, 60)
        things.append(_Building(
            sd.sign, sd.edge + sd.walk + rng.uniform(3, 12), rng.uniform(8, 15), z0, z0 + rng.uniform(10, 25), n_floors * 3.2 + 1.5,
            _pick(rng, _FACADES), _pick(rng, _FACADES), "grid", (60, 70, 80), (220, 200, 150), 3.0, 3.2, 1.2, 1.4,
            np.zeros((10, n_floors), bool), 0.7 if sd.sign == sun else 1.1, 0.9,
        ))
    if not any(isinstance(t, _Tree) and t.z < 60 for t in things):
        sd = scene.sides[int(rng.integers(2))]
        things.append(_tree(rng, sd.sign * (sd.edge + sd.walk + rng.uniform(1, 6)), rng.uniform(15, 50)))

    # vehicles, lane by lane; same-direction traffic keeps roughly our speed
    for lane in range(n_lanes):
        xl = left + (lane + 0.5) * lane_w
        opposite = lane < oncoming
        z = rng.uniform(9 if lane == own else 2, 60)
        while z < 280:
            if rng.random() < 0.75:
                things.append(_vehicle(rng, xl + rng.uniform(-0.3, 0.3), z, -rng.uniform(0.3, 2.0) if opposite else scene.speed * rng.uniform(0.7, 1.3), opposite, sun))
            z += rng.uniform(12, 70)
    if not any(isinstance(t, _Vehicle) and t.z < 50 for t in things):
        lane = int(rng.integers(oncoming, n_lanes))
        things.append(_vehicle(rng, left + (lane + 0.5) * lane_w, rng.uniform(12, 45), scene.speed, False, sun))


def _tree(rng: np.random.Generator, x: float, z: float) -> _Tree:
    conifer = rng.random() < 0.4
    leaves = _pick(rng, _LEAVES, 0.15)
    if conifer:
        h = rng.uniform(5, 14)
        n = int(rng.integers(3, 6))
        blobs = []
        for i in range(n):
            frac = i / n
            r = h * 0.28 * (1 - frac * 0.75)
            blobs.append((rng.uniform(-0.2, 0.2), 1.0 + frac * h * 0.75, r, rng.uniform(0.8, 1.15)))
        return _Tree(x, z, 1.2, rng.uniform(0.25, 0.5), _pick(rng, [(70, 50, 35), (90, 70, 50)]), leaves, True, blobs)
    trunk_h = rng.uniform(1.5, 4)
    r = rng.uniform(1.5, 4)
    blobs = [(0.0, trunk_h + r, r, 1.0)]
    for _ in range(int(rng.integers(4, 9))):
        blobs.append((rng.uniform(-r, r) * 0.8, trunk_h + r + rng.uniform(-0.6, 0.8) * r, r * rng.uniform(0.35, 0.7), rng.uniform(0.7, 1.25)))
    return _Tree(x, z, trunk_h, rng.uniform(0.2, 0.5), _pick(rng, [(70, 50, 35), (90, 75, 60), (60, 55, 50)]), leaves, False, blobs)


def _post(rng: np.random.Generator, kind: str, x: float, z: float, color: RGB, arm: float) -> _Post:
    height = {"lamp": rng.uniform(6, 9), "power": rng.uniform(7, 10), "sign": rng.uniform(2.2, 3.0), "light": rng.uniform(2.4, 3.2), "light_arm": rng.uniform(5.5, 7)}[kind]
    plate = str(rng.choice(["circle", "triangle", "octagon", "rect"]))
    c1, c2 = {
        "circle": ((200, 30, 30), (235, 235, 235)),
        "triangle": ((200, 30, 30), (235, 235, 225)),
        "octagon": ((190, 25, 25), (240, 240, 240)),
        "rect": (_pick(rng, [(30, 70, 160), (30, 110, 60), (230, 230, 230), (230, 190, 40)]), (235, 235, 235)),
    }[plate]
    return _Post(
        kind, x, z, height, rng.uniform(0.12, 0.3) if kind != "sign" else rng.uniform(0.07, 0.12), _jit(rng, color, 0.1), arm,
        plate, _jit(rng, c1, 0.1), _jit(rng, c2, 0.08), height - 0.2, int(rng.integers(3)),
        _pick(rng, [(40, 40, 42), (30, 30, 30), (190, 160, 40), (70, 80, 70)], 0.1),
    )


def _person(rng: np.random.Generator, x: float, z: float) -> _Pedestrian:
    walking = rng.random() < 0.6
    return _Pedestrian(
        x, z, rng.uniform(1.55, 1.9), _pick(rng, _CLOTHES + _PAINTS, 0.15), _pick(rng, _CLOTHES, 0.15), _pick(rng, _SKIN, 0.08),
        _pick(rng, [(30, 25, 20), (90, 60, 30), (180, 150, 90), (120, 120, 120)], 0.1),
        rng.uniform(0.08, 0.22) if walking else 0.02, rng.uniform(-0.05, 0.05) if walking else 0.0,
    )


def _vehicle(rng: np.random.Generator, x: float, z: float, speed: float, oncoming: bool, sun: int) -> _Vehicle:
    kind = str(rng.choice(["car", "van", "truck"], p=[0.72, 0.18, 0.1]))
    w, L, h = {
        "car": (rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9), rng.uniform(1.35, 1.6)),
        "van": (rng.uniform(1.9, 2.1), rng.uniform(4.5, 5.5), rng.uniform(1.8, 2.3)),
        "truck": (rng.uniform(2.4, 2.55), rng.uniform(7, 12), rng.uniform(2.9, 3.8)),
    }[kind]
    glass = _pick(rng, [(30, 35, 45), (60, 70, 80), (20, 20, 25), (90, 100, 110)], 0.1)
    return _Vehicle(x, z, w, L, h, kind, _pick(rng, _PAINTS, 0.1), glass, speed, oncoming, 0.7 if (x > 0) == (sun > 0) else 1.05)


# --------------------------------------------------------------------------------------------------
# Drawing one frame
# --------------------------------------------------------------------------------------------------


def _draw_ground(scene: _Scene, view: _View, cv: _Canvas) -> None:
    w, h = scene.width, scene.height
    far_rgb = scene.sides[1].ground_rgb
    cv.poly([(-1, view.cy), (w + 1, view.cy), (w + 1, h + 1), (-1, h + 1)], view.col(far_rgb, _FAR), TERRAIN, _GRASS)
    for pts, rgb, cls, mat in scene.background:
        cv.poly(pts, rgb, cls, mat)
    left, right = scene.road
    for side in scene.sides:
        s, e = side.sign, side.edge
        x_out = s * 150.0
        cv.poly(_ground(view, s * (e + side.walk), x_out, _NEAR, _FAR), view.col(side.ground_rgb, 25), TERRAIN, _GRASS)
        if side.walk > 0:
            cv.poly(_ground(view, s * e, s * (e + side.walk), _NEAR, _FAR), view.col(side.walk_rgb, 15), SIDEWALK, _TILES)
            zs = _depths(_NEAR, _FAR, 2 if view.curve == 0 else 14)
            curb = [view.uv(s * e, 0.0, z) for z in zs] + [view.uv(s * e, 0.15, z) for z in reversed(zs)]
            cv.poly(curb, view.col(side.curb_rgb, 15), SIDEWALK, _CONCRETE, 1.1)
        for a, b in scene.crossings:
            za, zb = a - view.zc, b - view.zc
            if zb > _NEAR and za < _FAR:
                cv.poly(_ground(view, s * e, x_out, max(za, _NEAR), zb), view.col(scene.road_rgb, za), ROAD, _ASPHALT)
    cv.poly(_ground(view, left, right, _NEAR, _FAR), view.col(scene.road_rgb, 20), ROAD, _ASPHALT)
    for xa, xb, z0, z1, rgb in scene.patches:
        za, zb = z0 - view.zc, z1 - view.zc
        if zb > _NEAR:
            cv.poly(_ground(view, xa, xb, max(za, _NEAR), zb), view.col(rgb, za), ROAD, _ASPHALT)
    period, length, phase = scene.dash
    for x, kind, rgb, lw in scene.lines:
        col = view.col(rgb, 30)
        if kind == "solid":
            cv.poly(_ground(view, x - lw / 2, x + lw / 2, _NEAR, 400.0), col, ROADLINE, _CONCRETE)
            continue
        k = math.ceil((view.zc - length - phase) / period)
        while True:
            za = k * period + phase - view.zc
            if za > 200:
                break
            if za + length > _NEAR:
                cv.poly(_ground(view, x - lw / 2, x + lw / 2, max(za, _NEAR), za + length), view.col(rgb, za), ROADLINE, _CONCRETE)
            k += 1
    for a, _ in scene.crossings:  # a zebra crossing before each cross street
        za = a - view.zc - 4.0
        if za < _NEAR + 3 or za > 250:
            continue
        x = left + 0.5
        while x < right - 0.5:
            cv.poly(_ground(view, x, x + 0.5, za, za + 3.0), view.col(scene.lines[0][2], za), ROADLINE, _CONCRETE)
            x += 1.0


def _draw_frame(scene: _Scene, view: _View, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cv = _Canvas(scene.sky)
    _draw_ground(scene, view, cv)
    for t in scene.things:  # shadows fall on the ground only: things drawn later repaint their shade
        if isinstance(t, _Building) and t.side == scene.sun:
            t.cast_shadow(view, cv, scene.shadow_len, scene.shadow_factor)
        elif isinstance(t, _Tree):
            t.cast_shadow(view, cv, scene.shadow_len * 0.5, min(1.0, scene.shadow_factor + 0.15), scene.sun)
        elif isinstance(t, _Vehicle):
            t.cast_shadow(view, cv, scene.shadow_factor * 0.8)
    pieces = [p for t in scene.things for p in t.pieces(view)]
    pieces.sort(key=lambda p: -p[0])
    for _, draw in pieces:
        draw(cv)
    return _finish(scene, cv, rng)


def _finish(scene: _Scene, cv: _Canvas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Texture, light, colour cast, blur and sensor noise: image only, the mask stays exact."""
    h, w = scene.height, scene.width
    label = np.asarray(cv.label)
    mask = label >> 3
    mat = label & 7
    tex = scene.texture
    gain = np.take(tex[:, 0], mat) * _grain(rng, (h, w))
    gain += np.take(tex[:, 1], mat) * scene.mid
    gain += np.take(tex[:, 2], mat) * scene.patch
    gain += 1.0
    gain *= np.asarray(cv.shade, dtype=np.float32) * np.float32(scene.contrast * (1.0 + rng.uniform(-0.03, 0.03)) / _LIT)
    img = np.asarray(cv.image, dtype=np.float32) * gain[..., None]
    img += np.float32((1.0 - scene.contrast) * 128.0 + scene.brightness)
    img *= scene.cast
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if scene.blur >= 0.1:  # box blur of radius 0.5 is the 1-2-1 binomial; Pillow's is the fastest here
        out = out.filter(ImageFilter.BoxBlur(scene.blur))
    img = np.asarray(out, dtype=np.float32)
    img += _grain(rng, (h, w, 3)) * np.float32(scene.noise)
    return np.clip(img, 0, 255).astype(np.uint8), np.ascontiguousarray(mask, dtype=np.uint8)


def _grain(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Cheap zero-mean noise of unit standard deviation (uniform; a normal costs 10x more)."""
    n = int(np.prod(shape))
    return np.frombuffer(rng.bytes(n), dtype=np.int8).reshape(shape).astype(np.float32) * np.float32(1 / 73.9)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _check_size(height: int, width: int) -> None:
    if int(height) < MIN_SIZE or int(width) < MIN_SIZE:
        raise ValueError(f"frame size {height}x{width} is too small: height and width must be at least {MIN_SIZE} pixels")


def render_drive(rng: np.random.Generator, n_frames: int, height: int = 480, width: int = 640) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive frames of one drive: one layout, the camera a little further along each frame.

    Neighbouring frames are near duplicates, as in real CARLA recordings, which is what makes a random
    train/validation split leak. Each frame is (image uint8 HxWx3, mask uint8 HxW of CARLA class ids).
    """
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    _check_size(height, width)
    scene = _make_scene(rng, int(height), int(width))
    frames = []
    for i in range(int(n_frames)):
        v = scene.view
        view = _View(v.f, v.cx, v.cy, v.cam_h, v.curve, v.haze, v.fog, zc=i * scene.speed, t=float(i))
        frames.append(_draw_frame(scene, view, rng))
    return frames


def render_scene(rng: np.random.Generator, height: int = 480, width: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """One random street scene: (image uint8 HxWx3, mask uint8 HxW of CARLA class ids).

    The mask is exact: every shape is painted into both with the same call, nearest last.
    """
    return render_drive(rng, 1, height, width)[0]


def _save_png(array: np.ndarray, path: Path, noisy: bool) -> None:
    """Write atomically: a reader never sees half a file, even if this process dies mid-way.

    Noisy photos compress best and fastest with Huffman coding only (zlib strategy 2); masks, made of
    long runs, with ordinary deflate.
    """
    options = {"compress_type": 2} if noisy else {"compress_level": 3}
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", **options), durable=False)


def _plan(rng: np.random.Generator, count: int) -> list[list[int]]:
    """Frame numbers, drive by drive: 3-8 consecutive numbers each, gaps of 50 or more between."""
    drives, n, total = [], int(rng.integers(0, 50)), 0
    while total < count:
        k = min(int(rng.integers(3, 9)), count - total)
        drives.append(list(range(n, n + k)))
        total += k
        n += k + int(rng.integers(50, 150))
    return drives


def write_dataset(
    out: str | Path, count: int, seed: int = 0, height: int = 480, width: int = 640, progress: bool = True
) -> Path:
    """Write `count` synthetic frames in CARLA's layout and format; returns the dataset folder.

    ``out/CameraRGB/NNNNNN.png`` holds the image and ``out/CameraMask/NNNNNN.png`` the mask (class id
    in red, green = blue = 0), both RGBA with alpha 255. Frames come in drives of consecutive numbers
    separated by gaps, like the real data, so splits by run can be tested. Same seed, same bytes.
    """
    if int(count) < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    _check_size(height, width)
    out = Path(out)
    root = np.random.SeedSequence(int(seed))
    drives = _plan(np.random.default_rng(root), int(count))
    names = {f"{n:06d}.png" for run in drives for n in run}
    rgb_dir, mask_dir = out / "CameraRGB", out / "CameraMask"
    for d in (rgb_dir, mask_dir):
        d.mkdir(parents=True, exist_ok=True)
        stray = sorted(p.name for p in d.glob("*.png") if p.name not in names)
        if stray:
            raise ValueError(
                f"{d} already holds {len(stray)} frame(s) this dataset would not overwrite (e.g. {stray[0]}); "
                "use an empty folder or delete the old one, so the two datasets do not mix"
            )
    alpha = np.full((int(height), int(width), 1), 255, np.uint8)
    zeros = np.zeros((int(height), int(width), 2), np.uint8)
    with tqdm(total=int(count), desc="synth", unit="frame", disable=None if progress else True) as bar:
        for run, child in zip(drives, root.spawn(len(drives))):
            frames = render_drive(np.random.default_rng(child), len(run), height, width)
            for n, (image, mask) in zip(run, frames):
                name = f"{n:06d}.png"
                _save_png(np.concatenate([image, alpha], axis=2), rgb_dir / name, noisy=True)
                _save_png(np.concatenate([mask[..., None], zeros, alpha], axis=2), mask_dir / name, noisy=False)
                bar.update(1)
    return out
