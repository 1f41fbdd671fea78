"""Class names and colours: CARLA's 23 semantic tags by default, or a user's own list."""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CARLA = (
    ("Unlabeled", (0, 0, 0)),
    ("Building", (70, 70, 70)),
    ("Fence", (100, 40, 40)),
    ("Other", (55, 90, 80)),
    ("Pedestrian", (220, 20, 60)),
    ("Pole", (153, 153, 153)),
    ("RoadLine", (157, 234, 50)),
    ("Road", (128, 64, 128)),
    ("Sidewalk", (244, 35, 232)),
    ("Vegetation", (107, 142, 35)),
    ("Vehicles", (0, 0, 142)),
    ("Wall", (102, 102, 156)),
    ("TrafficSign", (220, 220, 0)),
    ("Sky", (70, 130, 180)),
    ("Ground", (81, 0, 81)),
    ("Bridge", (150, 100, 100)),
    ("RailTrack", (230, 150, 140)),
    ("GuardRail", (180, 165, 180)),
    ("TrafficLight", (250, 170, 30)),
    ("Static", (110, 190, 160)),
    ("Dynamic", (170, 120, 50)),
    ("Water", (45, 60, 150)),
    ("Terrain", (145, 170, 100)),
)


MAX_CLASSES = 256  # masks are 8-bit PNGs, and predicted masks are written as uint8


@dataclass(frozen=True)
class ClassSet:
    """Names and display colours of the classes, indexed by class id."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError(f"{len(self.names)} class names but {len(self.colors)} colours")
        if len(self.names) < 2:
            raise ValueError("a segmentation needs at least 2 classes")
        if len(self.names) > MAX_CLASSES:
            raise ValueError(f"{len(self.names)} classes, more than {MAX_CLASSES}: masks hold 8-bit class ids (0-255)")
        blank = [i for i, n in enumerate(self.names) if not isinstance(n, str) or not n.strip()]
        if blank:
            raise ValueError(f"class names must be non-blank text; class {blank[0]} is {self.names[blank[0]]!r}")
        repeated = sorted({n for n in self.names if self.names.count(n) > 1})
        if repeated:
            raise ValueError(f"class names must be unique; repeated: {', '.join(repeated)}")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def palette(self) -> np.ndarray:
        """(n_classes, 3) uint8 array: ``palette()[mask]`` colourises a class-id mask."""
        return np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> ClassSet:
        """Names only: colours are spread evenly around the hue circle so neighbours differ."""
        n = len(names)
        colors = []
        for i in range(n):
            r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3) / 2)
            colors.append((round(r * 255), round(g * 255), round(b * 255)))
        return cls(tuple(names), tuple(colors))

    @classmethod
    def load(cls, path: str | Path) -> ClassSet:
        """Read a class list: a JSON list of names, or a text file with one ``name [r g b]`` per line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read class list ({exc.strerror or exc})") from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: class list is not UTF-8 text (byte {exc.start})") from exc
        try:
            return cls._parse(path, text)
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from exc

    @classmethod
    def _parse(cls, path: Path, text: str) -> ClassSet:
        if path.suffix.lower() == ".json":
            try:
                names = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{path}: expected a JSON list of class names")
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise ValueError(f"{path}: class name {name!r} (entry {i + 1}) repeats entry {names.index(name) + 1}")
            return cls.from_names(names)
        names, colors, lines = [], [], {}
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if parts[0] in lines:
                raise ValueError(f"{path}:{lineno}: class name {parts[0]!r} repeats line {lines[parts[0]]}")
            lines[parts[0]] = lineno
            if len(parts) == 1:
                names.append(parts[0])
                colors.append(None)
            elif len(parts) == 4 and all(p.isascii() and p.isdigit() and int(p) < 256 for p in parts[1:]):
                names.append(parts[0])
                colors.append(tuple(int(p) for p in parts[1:]))
            else:
                raise ValueError(f"{path}:{lineno}: expected 'name' or 'name r g b' (0-255), got {line.strip()!r}")
        generated = cls.from_names(names).colors if names else ()
        return cls(tuple(names), tuple(c if c is not None else g for c, g in zip(colors, generated)))


CARLA = ClassSet(tuple(n for n, _ in _CARLA), tuple(c for _, c in _CARLA))


def class_set(spec: str | int | ClassSet) -> ClassSet:
    """The classes ``spec`` names: a number of classes (CARLA's names when it is 23, else ``class_0``,
    ``class_1`` …), a class file (see :meth:`ClassSet.load`) or a ClassSet, returned as it is (classes
    read from a labelling tool's export, whose names may hold spaces that a class file cannot).

    Raises:
        ValueError: a number outside 2-256, or a file that cannot be read or holds no valid class list,
            naming the file (and the line).
    """
    if isinstance(spec, ClassSet):
        return spec
    text = str(spec)
    if not text.isdigit():
        return ClassSet.load(text)
    n = int(text)
    if n == len(CARLA):
        return CARLA
    if not 2 <= n <= MAX_CLASSES:
        raise ValueError(f"number of classes must be in 2-{MAX_CLASSES}, got {n}")
    return ClassSet.from_names([f"class_{i}" for i in range(n)])
