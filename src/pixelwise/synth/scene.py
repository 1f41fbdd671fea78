"""A drive: the layout, sky and look that stay fixed while the camera moves, and what stands in it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .barriers import Barrier
from .buildings import Building
from .canvas import View
from .furniture import Static, make_post
from .palette import FACADES, GRASSES, GREYS, LEAVES, PAINTS, RGB, ROADS, TEXTURE, WALKS, jitter, pick
from .road_users import Vehicle, make_person, make_vehicle
from .sky import make_background, make_sky, smooth_noise
from .trees import Tree, make_tree


@dataclass
class _Side:
    sign: int
    edge: float  # distance of the road edge from the centre line
    walk: float  # sidewalk width (0: none)
    walk_rgb: RGB
    curb_rgb: RGB
    ground_rgb: RGB


@dataclass
class Scene:
    height: int
    width: int
    view: View
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
    texture: np.ndarray = field(default_factory=lambda: TEXTURE.copy())
    mid: np.ndarray | None = None  # texture noise fixed per drive (about 3 px)
    patch: np.ndarray | None = None  # texture noise fixed per drive (about 20 px)
    contrast: float = 1.0
    brightness: float = 0.0
    cast: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    blur: float = 0.5
    noise: float = 2.0


def make_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Everything that stays fixed during one drive."""
    env = str(rng.choice(["city", "suburb", "highway"], p=[0.5, 0.3, 0.2]))
    fov = math.radians(rng.uniform(75, 95))
    f = width / 2 / math.tan(fov / 2)
    cy = height * rng.uniform(0.40, 0.54)
    cx = width * rng.uniform(0.38, 0.62)
    curve = 0.0 if rng.random() < 0.55 else float(rng.uniform(-4e-4, 4e-4))
    sky, haze = make_sky(rng, height, width, cy)
    view = View(f=f, cx=cx, cy=cy, cam_h=float(rng.uniform(1.3, 2.0)), curve=curve, haze=haze, fog=float(rng.uniform(150, 700)))

    n_lanes = int(rng.choice([2, 3, 4, 5, 6], p=[0.35, 0.15, 0.3, 0.1, 0.1]))
    lane_w = float(rng.uniform(3.0, 3.8))
    two_way = env == "city" and rng.random() < 0.8 or env == "suburb" or (env == "highway" and rng.random() < 0.2)
    oncoming = n_lanes // 2 if two_way else 0
    own = int(rng.integers(oncoming, n_lanes))
    left = -(own + 0.5) * lane_w - rng.uniform(-0.4, 0.4)
    right = left + n_lanes * lane_w

    white = jitter(rng, (225, 225, 220), 0.1)
    yellow = jitter(rng, (220, 185, 60), 0.1)
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

    road_rgb = pick(rng, ROADS, 0.1)
    patches = []
    for _ in range(int(rng.integers(0, 8))):
        z0 = rng.uniform(-10, 200)
        xa = rng.uniform(left, right - 1)
        patches.append((xa, xa + rng.uniform(0.8, 5), z0, z0 + rng.uniform(1, 12), jitter(rng, road_rgb, 0.2)))

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
        walk_rgb = pick(rng, WALKS + ROADS[2:4])
        sides.append(_Side(sign, float(edge), walk, walk_rgb, jitter(rng, walk_rgb, 0.15), pick(rng, GRASSES)))
    if all(s.walk == 0 for s in sides) and env != "highway":
        sides[int(rng.integers(2))].walk = float(rng.uniform(1.8, 4.0))

    sun = int(rng.choice([-1, 1]))
    scene = Scene(
        height=height, width=width, view=view, speed=float(rng.uniform(0.5, 2.2)), sky=sky,
        background=make_background(rng, view, height, width, env), road=(left, right), road_rgb=road_rgb,
        patches=patches, lines=lines, dash=dash, sides=sides, crossings=crossings, sun=sun,
        shadow_len=float(rng.uniform(0.2, 1.2)), shadow_factor=float(rng.uniform(0.45, 0.8)),
    )
    _populate(rng, scene, env, n_lanes, lane_w, oncoming, own)

    scene.texture = TEXTURE * np.float32(rng.uniform(0.6, 1.4))
    scene.mid = smooth_noise(rng, height, width, max(1.5, 3.0 * width / 640))
    scene.patch = smooth_noise(rng, height, width, max(4.0, 40.0 * width / 640))
    scene.contrast = float(rng.uniform(0.75, 1.2))
    scene.brightness = float(rng.uniform(-30, 25))
    scene.cast = np.array([rng.uniform(0.9, 1.1) for _ in range(3)], np.float32)
    scene.blur = float(rng.uniform(0.3, 1.0) * width / 640)
    scene.noise = float(rng.uniform(1.0, 6.0))
    return scene


def _free(scene: Scene, z0: float, z1: float) -> bool:
    """True if [z0, z1] does not cut a cross street."""
    return all(z1 < a - 3 or z0 > b + 3 for a, b in scene.crossings)


def _populate(rng: np.random.Generator, scene: Scene, env: str, n_lanes: int, lane_w: float, oncoming: int, own: int) -> None:
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
                things.append(Building(
                    s, x0, rng.uniform(8, 30), z0, z1, n_floors * floor_h + rng.uniform(0.5, 2.5),
                    pick(rng, FACADES, 0.15), pick(rng, FACADES + GREYS, 0.1),
                    str(rng.choice(["grid", "bands", "plain"], p=[0.65, 0.2, 0.15])),
                    pick(rng, [(40, 50, 60), (70, 85, 100), (30, 30, 35), (110, 125, 140), (150, 160, 165)], 0.15),
                    jitter(rng, (220, 200, 150), 0.1), col_sp, floor_h, col_sp * rng.uniform(0.35, 0.7), floor_h * rng.uniform(0.35, 0.6),
                    rng.random((int(length / col_sp) + 2, n_floors)) < rng.uniform(0.0, 0.25),
                    shade_front, rng.uniform(0.8, 1.0),
                ))
                z = z1 + rng.uniform(0.0, 4.0 if env == "city" else 15.0)
                continue
            if kind in ("wall", "fence", "hedge"):
                x = lot - 0.3 if env != "highway" else edge + rng.uniform(0.5, 3)
                h = {"wall": rng.uniform(0.8, 3.5), "fence": rng.uniform(1.0, 2.2), "hedge": rng.uniform(0.8, 2.0)}[kind]
                col = {"wall": FACADES, "fence": [(40, 40, 45), (110, 80, 50), (50, 80, 55), (150, 150, 150)], "hedge": LEAVES}[kind]
                c = pick(rng, col, 0.12)
                things.append(Barrier(kind, s, x, z0, z1, h, c, jitter(rng, c, 0.25), shade_front))
            if kind in ("trees", "hedge", "fence") or rng.random() < 0.3:
                zt = z0 + rng.uniform(0, 5)
                while zt < z1 and zt < 260:
                    things.append(make_tree(rng, s * (lot + rng.uniform(1, 15)), zt))
                    zt += rng.uniform(4, 14)
            z = z1 + rng.uniform(0.0, 10.0)

        if side.walk == 0:
            if rng.random() < (0.75 if env == "highway" else 0.4):
                things.append(Barrier("guardrail", s, edge + rng.uniform(0.3, 1.0), -30, 520, rng.uniform(0.75, 0.9),
                                       pick(rng, [(190, 190, 185), (160, 160, 165), (215, 210, 200)]), pick(rng, GREYS), 1.0))
        else:
            walk_x = edge + rng.uniform(0.3, 0.6)
            if env == "city" and rng.random() < 0.4:  # street trees
                zt = rng.uniform(0, 10)
                while zt < 220:
                    if _free(scene, zt - 2, zt + 2):
                        things.append(make_tree(rng, s * (edge + side.walk * 0.5), zt))
                    zt += rng.uniform(8, 16)
            for _ in range(int(rng.poisson(6 if env == "city" else 3))):
                zp = rng.uniform(3, 120)
                things.append(make_person(rng, s * (edge + rng.uniform(0.4, max(0.5, side.walk - 0.3))), zp))
            for _ in range(int(rng.poisson(1.0))):
                things.append(Static("bin", s * (edge + side.walk - 0.5), rng.uniform(3, 120), pick(rng, PAINTS), pick(rng, GREYS)))
            pole_c = pick(rng, [(110, 110, 115), (60, 60, 65), (150, 150, 150), (40, 60, 45)])
            zl, spacing = rng.uniform(0, 25), rng.uniform(18, 40)
            while zl < 300 and rng.random() < 0.85:
                things.append(make_post(rng, "lamp", s * walk_x, zl, pole_c, arm=-s * rng.uniform(0.8, 2.5)))
                zl += spacing
        if env != "city" and rng.random() < 0.4:  # power line poles
            zl, spacing = rng.uniform(0, 30), rng.uniform(30, 50)
            xp = s * (edge + side.walk + rng.uniform(1.0, 4.0))
            while zl < 300:
                things.append(make_post(rng, "power", xp, zl, pick(rng, [(100, 75, 50), (120, 100, 80), (140, 140, 140)]), arm=0.0))
                zl += spacing
        if rng.random() < 0.05:
            things.append(Static("billboard", s * (edge + side.walk + rng.uniform(3, 8)), rng.uniform(20, 120), pick(rng, PAINTS), pick(rng, GREYS)))

    # traffic lights at cross streets, signs anywhere, and at least one of each near the start
    for a, b in scene.crossings:
        for side in scene.sides:
            if side.sign == 1 or rng.random() < 0.5:
                xl = side.sign * (side.edge + rng.uniform(0.3, 1.0))
                arm = -side.sign * rng.uniform(3.0, 7.0) if rng.random() < 0.7 else 0.0
                things.append(make_post(rng, "light_arm" if arm else "light", xl, a - rng.uniform(1, 4), (60, 60, 62), arm=arm))
    walk_sides = [sd for sd in scene.sides if sd.walk > 0] or scene.sides
    near_light = rng.uniform(14, 45)
    sd = scene.sides[1] if rng.random() < 0.75 else scene.sides[0]
    arm = -sd.sign * rng.uniform(3.0, 7.0) if rng.random() < 0.5 else 0.0
    things.append(make_post(rng, "light_arm" if arm else "light", sd.sign * (sd.edge + rng.uniform(0.3, 1.0)), near_light, (60, 60, 62), arm=arm))
    for zs in [rng.uniform(10, 40)] + list(rng.uniform(40, 250, int(rng.poisson(4)))):
        sd = scene.sides[int(rng.integers(2))]
        things.append(make_post(rng, "sign", sd.sign * (sd.edge + rng.uniform(0.3, 1.5)), zs, pick(rng, GREYS), arm=0.0))
    sd = walk_sides[int(rng.integers(len(walk_sides)))]
    things.append(make_person(rng, sd.sign * (sd.edge + rng.uniform(0.3, max(0.4, sd.walk - 0.3))), rng.uniform(8, 30)))
    if not any(isinstance(t, Building) and t.z0 < 80 for t in things):
        sd = scene.sides[int(rng.integers(2))]
        n_floors, z0 = int(rng.integers(1, 4)), rng.uniform(15, 60)
        things.append(Building(
            sd.sign, sd.edge + sd.walk + rng.uniform(3, 12), rng.uniform(8, 15), z0, z0 + rng.uniform(10, 25), n_floors * 3.2 + 1.5,
            pick(rng, FACADES), pick(rng, FACADES), "grid", (60, 70, 80), (220, 200, 150), 3.0, 3.2, 1.2, 1.4,
            np.zeros((10, n_floors), bool), 0.7 if sd.sign == sun else 1.1, 0.9,
        ))
    if not any(isinstance(t, Tree) and t.z < 60 for t in things):
        sd = scene.sides[int(rng.integers(2))]
        things.append(make_tree(rng, sd.sign * (sd.edge + sd.walk + rng.uniform(1, 6)), rng.uniform(15, 50)))

    # vehicles, lane by lane; same-direction traffic keeps roughly our speed
    for lane in range(n_lanes):
        xl = left + (lane + 0.5) * lane_w
        opposite = lane < oncoming
        z = rng.uniform(9 if lane == own else 2, 60)
        while z < 280:
            if rng.random() < 0.75:
                things.append(make_vehicle(rng, xl + rng.uniform(-0.3, 0.3), z, -rng.uniform(0.3, 2.0) if opposite else scene.speed * rng.uniform(0.7, 1.3), opposite, sun))
            z += rng.uniform(12, 70)
    if not any(isinstance(t, Vehicle) and t.z < 50 for t in things):
        lane = int(rng.integers(oncoming, n_lanes))
        things.append(make_vehicle(rng, left + (lane + 0.5) * lane_w, rng.uniform(12, 45), scene.speed, False, sun))
