"""What lies at and above the horizon: the sky, and hills, tree lines and skylines too far away to move
during a drive.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .canvas import View
from .palette import BUILDING, CONCRETE, FACADES, FOLIAGE, GRASSES, LEAVES, RGB, TERRAIN, VEGETATION, jitter, pick


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Gaussian noise blurred to features of about `cell` pixels, unit standard deviation."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
    return big / max(float(big.std()), 1e-3)


def make_sky(rng: np.random.Generator, height: int, w: int, horizon: float) -> tuple[np.ndarray, RGB]:
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
        clouds = smooth_noise(rng, h, w, rng.uniform(0.12, 0.25) * w) + 0.35 * smooth_noise(rng, h, w, 0.05 * w)
        amount = np.clip((clouds - (1.5 - 2.5 * cover)) * rng.uniform(0.3, 0.7), 0.0, 1.0)
        amount *= np.clip(1.15 - rows[:, None] ** 3, 0.0, 1.0)
        cloud_rgb = np.array(jitter(rng, (235, 235, 238) if kind != "overcast" else (190, 190, 195), 0.08), np.float32)
        sky += (cloud_rgb - sky) * amount[..., None] * rng.uniform(0.5, 0.95)
    full = np.empty((height, w, 3), np.uint8)
    full[:h] = np.clip(sky, 0, 255)
    full[h:] = full[h - 1 : h].mean(axis=1, keepdims=True).astype(np.uint8)
    return full, (float(low_a[0]), float(low_a[1]), float(low_a[2]))


def make_background(rng: np.random.Generator, view: View, h: int, w: int, env: str) -> list:
    """Hills, a far tree line and a far skyline at the horizon (fixed on screen during a drive)."""
    items = []
    us = np.linspace(-10, w + 10, 60)
    cy = view.cy
    if rng.random() < (0.75 if env != "city" else 0.35):
        base = rng.uniform(0.01, 0.12) * h
        prof = base + sum(rng.uniform(0.0, 0.05) * h * np.sin(us / w * rng.uniform(2, 12) + rng.uniform(0, 6)) for _ in range(3))
        pts = [(float(u), float(cy - max(p, 0.0))) for u, p in zip(us, prof)] + [(w + 10, cy + 2), (-10, cy + 2)]
        col = jitter(rng, pick(rng, GRASSES), 0.1)
        items.append((pts, view.col(col, view.fog * rng.uniform(0.6, 1.6)), TERRAIN, CONCRETE))
    if rng.random() < (0.7 if env != "city" else 0.5):
        us2 = np.linspace(-10, w + 10, 120)
        prof = rng.uniform(0.005, 0.03) * h * (1.2 + 0.5 * np.sin(us2 * rng.uniform(0.2, 0.6)) + 0.4 * np.sin(us2 * rng.uniform(0.05, 0.1)))
        pts = [(float(u), float(cy - p)) for u, p in zip(us2, prof)] + [(w + 10, cy + 2), (-10, cy + 2)]
        items.append((pts, view.col(pick(rng, LEAVES), view.fog * rng.uniform(0.5, 1.2)), VEGETATION, FOLIAGE))
    if rng.random() < (0.8 if env == "city" else 0.3):
        col = pick(rng, FACADES)
        u = rng.uniform(-20, 0)
        while u < w:
            bw = rng.uniform(0.015, 0.06) * w
            bh = rng.uniform(0.01, 0.12) * h
            if rng.random() < 0.6:
                pts = [(u, cy + 1), (u + bw, cy + 1), (u + bw, cy - bh), (u, cy - bh)]
                items.append((pts, view.col(jitter(rng, col, 0.15), view.fog * rng.uniform(0.7, 1.5)), BUILDING, CONCRETE))
            u += bw * rng.uniform(0.8, 2.5)
    return items
