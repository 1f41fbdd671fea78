"""The run configuration: one frozen, plain-data description saved as a run's ``config.json``.

Like nnU-Net's plans file, it alone is enough to rebuild the model and the preprocessing, so
``evaluate`` and ``predict`` need nothing but the run directory.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .classes import CARLA, ClassSet
from .data import check_resize_mode
from .files import atomic_write_text
from .model import ModelConfig

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAX_SIDE = 8192  # a training size beyond this is a typo or a damaged config.json, not a plan
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class DataConfig:
    """How images and masks become model input; everything predict must repeat."""

    size: tuple[int, int] = (96, 128)  # (H, W) the model trains at
    image_resize: str = "nearest"  # the assignment resizes images with nearest-neighbour too
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        check_resize_mode(self.image_resize)
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"validation fraction must be in [0, 1), not {self.val_fraction}")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if len(self.size) != 2 or min(self.size) < 1 or max(self.size) > MAX_SIDE:
            raise ValueError(f"size must be (height, width) with both in 1-{MAX_SIDE}, not {self.size}")


@dataclass(frozen=True)
class TrainConfig:
    """The assignment's recipe by default: Adam 1e-3, batch 32, 40 epochs."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not (0 < self.lr < math.inf):
            raise ValueError("epochs and batch size must be ≥ 1 and the learning rate a finite number > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: ClassSet = CARLA

    def __post_init__(self) -> None:
        if len(self.classes) != self.model.n_classes:
            raise ValueError(f"{len(self.classes)} class names but the model has {self.model.n_classes} outputs")

    def with_train(self, **changes) -> RunConfig:
        return replace(self, train=replace(self.train, **changes))

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": asdict(self.data), "train": asdict(self.train),
                "classes": {"names": list(self.classes.names), "colors": [list(c) for c in self.classes.colors]}}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        classes = ClassSet(tuple(d["classes"]["names"]), tuple(tuple(c) for c in d["classes"]["colors"]))
        return cls(ModelConfig.from_dict(d["model"]), DataConfig(**d["data"]), TrainConfig(**d["train"]), classes)

    def save(self, run_dir: Path) -> None:
        atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> RunConfig:
        path = Path(run_dir) / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: not a pixelwise run directory (no {CONFIG_FILE})")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable run configuration ({exc})") from exc
