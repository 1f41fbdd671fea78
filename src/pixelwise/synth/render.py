"""Drawing frames: the ground, shadows, the scene's things far to near, then texture, light and noise;
a drive is one scene seen from a camera a little further along each frame.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from .buildings import Building
from .canvas import FAR, LIT, NEAR, Canvas, View, depth_steps, ground_polygon
from .palette import ASPHALT, CONCRETE, GRASS, ROAD, ROADLINE, SIDEWALK, TERRAIN, TILES
from .road_users import Vehicle
from .scene import Scene, make_scene
from .trees import Tree

MIN_SIZE = 32


def _draw_ground(scene: Scene, view: View, cv: Canvas) -> None:
    w, h = scene.width, scene.height
    far_rgb = scene.sides[1].ground_rgb
    cv.poly([(-1, view.cy), (w + 1, view.cy), (w + 1, h + 1), (-1, h + 1)], view.col(far_rgb, FAR), TERRAIN, GRASS)
    for pts, rgb, cls, mat in scene.background:
        cv.poly(pts, rgb, cls, mat)
    left, right = scene.road
    for side in scene.sides:
        s, e = side.sign, side.edge
        x_out = s * 150.0
        cv.poly(ground_polygon(view, s * (e + side.walk), x_out, NEAR, FAR), view.col(side.ground_rgb, 25), TERRAIN, GRASS)
        if side.walk > 0:
            cv.poly(ground_polygon(view, s * e, s * (e + side.walk), NEAR, FAR), view.col(side.walk_rgb, 15), SIDEWALK, TILES)
            zs = depth_steps(NEAR, FAR, 2 if view.curve == 0 else 14)
            curb = [view.uv(s * e, 0.0, z) for z in zs] + [view.uv(s * e, 0.15, z) for z in reversed(zs)]
            cv.poly(curb, view.col(side.curb_rgb, 15), SIDEWALK, CONCRETE, 1.1)
        for a, b in scene.crossings:
            za, zb = a - view.zc, b - view.zc
            if zb > NEAR and za < FAR:
                cv.poly(ground_polygon(view, s * e, x_out, max(za, NEAR), zb), view.col(scene.road_rgb, za), ROAD, ASPHALT)
    cv.poly(ground_polygon(view, left, right, NEAR, FAR), view.col(scene.road_rgb, 20), ROAD, ASPHALT)
    for xa, xb, z0, z1, rgb in scene.patches:
        za, zb = z0 - view.zc, z1 - view.zc
        if zb > NEAR:
            cv.poly(ground_polygon(view, xa, xb, max(za, NEAR), zb), view.col(rgb, za), ROAD, ASPHALT)
    period, length, phase = scene.dash
    for x, kind, rgb, lw in scene.lines:
        col = view.col(rgb, 30)
        if kind == "solid":
            cv.poly(ground_polygon(view, x - lw / 2, x + lw / 2, NEAR, 400.0), col, ROADLINE, CONCRETE)
            continue
        k = math.ceil((view.zc - length - phase) / period)
        while True:
            za = k * period + phase - view.zc
            if za > 200:
                break
            if za + length > NEAR:
                cv.poly(ground_polygon(view, x - lw / 2, x + lw / 2, max(za, NEAR), za + length), view.col(rgb, za), ROADLINE, CONCRETE)
            k += 1
    for a, _ in scene.crossings:  # a zebra crossing before each cross street
        za = a - view.zc - 4.0
        if za < NEAR + 3 or za > 250:
            continue
        x = left + 0.5
        while x < right - 0.5:
            cv.poly(ground_polygon(view, x, x + 0.5, za, za + 3.0), view.col(scene.lines[0][2], za), ROADLINE, CONCRETE)
            x += 1.0


def _draw_frame(scene: Scene, view: View, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cv = Canvas(scene.sky)
    _draw_ground(scene, view, cv)
    for t in scene.things:  # shadows fall on the ground only: things drawn later repaint their shade
        if isinstance(t, Building) and t.side == scene.sun:
            t.cast_shadow(view, cv, scene.shadow_len, scene.shadow_factor)
        elif isinstance(t, Tree):
            t.cast_shadow(view, cv, scene.shadow_len * 0.5, min(1.0, scene.shadow_factor + 0.15), scene.sun)
        elif isinstance(t, Vehicle):
            t.cast_shadow(view, cv, scene.shadow_factor * 0.8)
    pieces = [p for t in scene.things for p in t.pieces(view)]
    pieces.sort(key=lambda p: -p[0])
    for _, draw in pieces:
        draw(cv)
    return _finish(scene, cv, rng)


def _finish(scene: Scene, cv: Canvas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
    gain *= np.asarray(cv.shade, dtype=np.float32) * np.float32(scene.contrast * (1.0 + rng.uniform(-0.03, 0.03)) / LIT)
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


def check_size(height: int, width: int) -> None:
    if int(height) < MIN_SIZE or int(width) < MIN_SIZE:
        raise ValueError(f"frame size {height}x{width} is too small: height and width must be at least {MIN_SIZE} pixels")


def render_drive(rng: np.random.Generator, n_frames: int, height: int = 480, width: int = 640) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive frames of one drive: one layout, the camera a little further along each frame.

    Neighbouring frames are near duplicates, as in real CARLA recordings, which is what makes a random
    train/validation split leak. Each frame is (image uint8 HxWx3, mask uint8 HxW of CARLA class ids).
    """
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    check_size(height, width)
    scene = make_scene(rng, int(height), int(width))
    frames = []
    for i in range(int(n_frames)):
        v = scene.view
        view = View(v.f, v.cx, v.cy, v.cam_h, v.curve, v.haze, v.fog, zc=i * scene.speed, t=float(i))
        frames.append(_draw_frame(scene, view, rng))
    return frames


def render_scene(rng: np.random.Generator, height: int = 480, width: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """One random street scene: (image uint8 HxWx3, mask uint8 HxW of CARLA class ids).

    The mask is exact: every shape is painted into both with the same call, nearest last.
    """
    return render_drive(rng, 1, height, width)[0]
