"""What things are made of: class ids, surface materials and their texture, colour families.

Kept apart from the drawing so that every object module picks from the same families, which overlap
across classes on purpose.
"""

from __future__ import annotations

import numpy as np

from ..classes import CARLA

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

# Surface materials, drawn into a label layer next to the class id (label = class * 8 + material) and
# turned into texture after drawing: amplitude of fine grain, of ~3 px blotches, of large patches.
FLAT, ASPHALT, FOLIAGE, GRASS, CONCRETE, METAL, GLASS, TILES = range(8)
TEXTURE = np.array(
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

RGB = tuple[float, float, float]


def jitter(rng: np.random.Generator, rgb: RGB, amount: float) -> RGB:
    """Colour jittered in brightness and a little in hue."""
    g = 1.0 + rng.uniform(-amount, amount)
    c = [min(255.0, max(0.0, v * g + rng.uniform(-amount, amount) * 40)) for v in rgb]
    return (c[0], c[1], c[2])


def pick(rng: np.random.Generator, colours: list[RGB], amount: float = 0.12) -> RGB:
    return jitter(rng, colours[int(rng.integers(len(colours)))], amount)


# Colour families; they overlap across classes on purpose (grey cars, grey walls, grey roads...).
GREYS = [(95, 95, 98), (130, 130, 132), (165, 164, 160), (200, 198, 192), (60, 60, 64)]
FACADES = GREYS + [(205, 190, 160), (150, 80, 60), (225, 220, 210), (120, 110, 100), (180, 150, 120), (90, 100, 115)]
PAINTS = GREYS + [(230, 230, 232), (28, 28, 32), (150, 25, 30), (35, 55, 125), (30, 75, 50), (200, 185, 140), (215, 175, 40), (90, 30, 35)]
ROADS = [(85, 85, 88), (105, 104, 104), (125, 123, 120), (145, 142, 136), (70, 72, 78), (160, 150, 135)]
WALKS = [(150, 148, 144), (180, 176, 170), (200, 195, 185), (140, 120, 110), (165, 160, 150)]
GRASSES = [(85, 120, 50), (110, 135, 60), (140, 140, 85), (120, 105, 75), (95, 115, 70), (150, 155, 95)]
LEAVES = [(45, 80, 35), (60, 100, 40), (35, 65, 40), (85, 110, 45), (150, 155, 50), (70, 90, 55)]
CLOTHES = [(30, 30, 35), (200, 200, 200), (40, 60, 120), (150, 30, 35), (90, 80, 60), (60, 90, 60), (180, 150, 110)]
SKIN = [(220, 180, 150), (180, 130, 100), (120, 85, 60), (90, 60, 45)]
