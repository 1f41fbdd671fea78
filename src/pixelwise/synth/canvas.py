"""The camera and the canvas: projecting road coordinates to pixels and painting image, class and
shade together, so the mask is exact wherever the image shows a shape.

Positions: x lateral (right +), y up, z along the road. Things in the world yield (sort key, draw call)
pieces for a view; pieces are drawn from the largest key (farthest) to the smallest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .palette import FLAT, RGB, SKY

LIT = 160  # shade-layer value of an unshaded surface (factor 1.0); 255 means 1.6
NEAR = 0.5  # metres: nothing nearer than this to the camera is drawn
FAR = 600.0  # metres: nothing farther than this is drawn
_BINS = tuple(NEAR * 1.2**k for k in range(40))  # depth slices: long things are drawn slice by slice


@dataclass
class View:
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


class Canvas:
    """The image, a label layer (class * 8 + material) and a shade layer, painted together."""

    def __init__(self, sky: np.ndarray) -> None:
        h, w = sky.shape[:2]
        self.image = Image.fromarray(sky)
        self.label = Image.new("L", (w, h), SKY * 8 + FLAT)
        self.shade = Image.new("L", (w, h), LIT)
        self._img = ImageDraw.Draw(self.image)
        self._lab = ImageDraw.Draw(self.label)
        self._shd = ImageDraw.Draw(self.shade)

    def poly(self, pts: list[tuple[float, float]], rgb: tuple[int, int, int], cls: int, mat: int, shade: float = 1.0) -> None:
        self._img.polygon(pts, fill=rgb)
        self._lab.polygon(pts, fill=cls * 8 + mat)
        self._shd.polygon(pts, fill=min(255, int(LIT * shade)))

    def ellipse(self, box: tuple[float, float, float, float], rgb: tuple[int, int, int], cls: int, mat: int, shade: float = 1.0) -> None:
        x0, y0, x1, y1 = box
        if x1 < x0 + 0.5 or y1 < y0 + 0.5:  # Pillow refuses inverted boxes; a dot is a tiny square
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = (cx - 0.25, cy - 0.25, cx + 0.25, cy + 0.25)
        self._img.ellipse(box, fill=rgb)
        self._lab.ellipse(box, fill=cls * 8 + mat)
        self._shd.ellipse(box, fill=min(255, int(LIT * shade)))

    def shadow(self, pts: list[tuple[float, float]], factor: float) -> None:
        """Darken what is already drawn there, without touching image colours or classes."""
        self._shd.polygon(pts, fill=int(LIT * factor))


def depth_steps(za: float, zb: float, n: int) -> list[float]:
    if n <= 2:
        return [za, zb]
    r = (zb / za) ** (1.0 / (n - 1))
    return [za * r**i for i in range(n)]


def depth_slices(za: float, zb: float) -> Iterator[tuple[float, float]]:
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


def ground_polygon(view: View, xa: float, xb: float, za: float, zb: float) -> list[tuple[float, float]]:
    """Outline of the road-level rectangle xa..xb (lateral) by za..zb (depth)."""
    zs = depth_steps(za, zb, 2 if view.curve == 0 else 14)
    return [view.uv(xa, 0.0, z) for z in zs] + [view.uv(xb, 0.0, z) for z in reversed(zs)]


def side_polygon(view: View, x: float, za: float, zb: float, y0: float, y1: float) -> list[tuple[float, float]]:
    """Outline of an upright rectangle parallel to the road at lateral position x."""
    zs = depth_steps(za, zb, 2 if view.curve == 0 else 4)
    return [view.uv(x, y0, z) for z in zs] + [view.uv(x, y1, z) for z in reversed(zs)]


def front_polygon(view: View, x0: float, x1: float, y0: float, y1: float, z: float) -> list[tuple[float, float]]:
    """Outline of an upright rectangle facing the camera at depth z."""
    return [view.uv(x0, y0, z), view.uv(x1, y0, z), view.uv(x1, y1, z), view.uv(x0, y1, z)]


Piece = tuple[float, Callable[[Canvas], None]]


def draw_key(x0: float, x1: float, z0: float) -> float:
    """Distance from the camera to the nearest point of a footprint x0..x1 by z0.. (relative z).

    Drawing the largest keys first is the painter's algorithm; it is right for the disjoint boxes of a
    street as long as long things are cut in depth slices (see `depth_slices`)."""
    x = 0.0 if x0 <= 0.0 <= x1 else min(abs(x0), abs(x1))
    return math.hypot(x, max(z0, 0.0))
