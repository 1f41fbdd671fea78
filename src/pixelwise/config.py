"""The run configuration: one frozen, plain-data description saved as a run's ``config.json``.

Like nnU-Net's plans file, it alone is enough to rebuild the model and the preprocessing, so
``evaluate`` and ``predict`` need nothing but the run directory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from .classes import CARLA, ClassSet
from .data.colors import MaskFormat, check_mask_format
from .data.naming import Naming
from .data.resize import check_resize_mode
from .model.unet import ModelConfig

AUGMENTATIONS = ("none", "flip", "zoom", "full")
ZOOMING = ("zoom", "full")  # the augmentations that resample a zoomed crop (training/augment.py)
LOSSES = ("ce", "ce+dice")
CLASS_WEIGHTS = ("none", "inverse-sqrt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
MAX_SIDE = 8192  # a training size beyond this is a typo or a damaged config.json, not a plan


@dataclass(frozen=True)
class DataConfig:
    """How images and masks become model input; everything predict must repeat."""

    size: tuple[int, int] = (96, 128)  # (H, W) the model trains at
    image_resize: str = "nearest"  # the assignment resizes images with nearest-neighbour too
    val_fraction: float = 0.2
    split_seed: int = 0  # picks the held-out drives; apart from the training seed, so seeds compare on one split
    augment: str = "none"  # one of AUGMENTATIONS: "flip" mirrors; "zoom" also zooms and shifts; "full" also jitters colour
    crop: float = 1.0  # training crops cover this fraction of each side of ``size``; inference sees it all
    class_crops: float = 0.0  # share of training crops placed to hold a class picked evenly among those in the mask
    paste: float = 0.0  # share of training frames given another frame's small classes (training/augment.py)
    mask_format: str = "auto"  # ids | colors | auto: how a mask becomes ids (colours: the classes' colours), data/colors.py
    unknown_color: str = "error"  # or "ignore": colours no class has become the ignored class (train.ignore_index)
    image_suffix: str = ""  # pairing (data/naming.py): image NAME{image_suffix}.* with mask NAME{mask_suffix}.*
    mask_suffix: str = ""
    recursive: bool = False  # pair by relative path below the images and masks folders
    id_map: tuple[int, ...] = ()  # 256 entries: a mask file's value → class id (Cityscapes' labelIds → train ids)

    def __post_init__(self) -> None:
        check_resize_mode(self.image_resize)
        check_mask_format(self.mask_format, self.unknown_color)
        Naming(self.image_suffix, self.mask_suffix, self.recursive)  # refuses a suffix with a folder in it
        object.__setattr__(self, "id_map", MaskFormat(id_map=self.id_map).id_map)  # a tuple of 256 ids, or ()
        if isinstance(self.augment, bool):  # config.json of runs made before flip-only augmentation existed
            object.__setattr__(self, "augment", "full" if self.augment else "none")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not {self.augment!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"validation fraction must be in [0, 1), not {self.val_fraction}")
        if not 0 < self.crop <= 1:
            raise ValueError(f"crop must be a fraction in (0, 1], not {self.crop}")
        if not 0 <= self.class_crops <= 1:
            raise ValueError(f"class crops must be a fraction in [0, 1], not {self.class_crops}")
        if not 0 <= self.paste <= 1:
            raise ValueError(f"paste must be a fraction in [0, 1], not {self.paste}")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if len(self.size) != 2 or min(self.size) < 1 or max(self.size) > MAX_SIDE:
            raise ValueError(f"size must be (height, width) with both in 1-{MAX_SIDE}, not {self.size}")

    def crop_size(self, step: int) -> tuple[int, int]:
        """The training crop: ``crop`` of each side, rounded to a multiple of the network's ``step``."""
        return tuple(min(side, max(step, round(side * self.crop / step) * step)) for side in self.size)


@dataclass(frozen=True)
class TrainConfig:
    """The assignment's recipe by default: Adam 1e-3, batch 32, 40 epochs, plain cross-entropy."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3  # the peak learning rate with a schedule
    seed: int = 0
    precision: str = "auto"
    optimizer: str = "adam"
    weight_decay: float = 0.0  # decoupled (AdamW) or L2 (Adam)
    schedule: str = "constant"  # or "cosine": decay to 0 over the run, after ``warmup``
    warmup: float = 0.0  # fraction of all steps over which the learning rate rises linearly from 0
    loss: str = "ce"
    class_weights: str = "none"  # "inverse-sqrt": weight classes by 1/sqrt(their training pixel share)
    ignore_index: int | None = None  # a class id, or another mask value (VOC's 255), whose pixels are unlabelled: no loss, not scored
    encoder_lr: float = 1.0  # a pretrained encoder's learning rate as a fraction of ``lr`` (the decoder's)
    time_limit: float = 0.0  # minutes the epochs may take; 0: none. The schedule spans the epochs that fit (training/step.py)
    val_every: int = 1  # validate after every Nth epoch and after the last one
    ema: float = 0.0  # decay of the weights' moving average that is validated and saved (training/averaging.py); 0: none

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not (0 < self.lr < math.inf) or not 0 < self.encoder_lr <= 1:
            raise ValueError("epochs and batch size must be ≥ 1, the learning rate a finite number > 0 and the "
                             "encoder's fraction of it in (0, 1]")
        for name, value, choices in (("precision", self.precision, PRECISIONS), ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES), ("loss", self.loss, LOSSES),
                                     ("class weights", self.class_weights, CLASS_WEIGHTS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        if not 0 <= self.warmup < 1 or not 0 <= self.weight_decay < math.inf:
            raise ValueError("warmup must be a fraction in [0, 1) and weight decay a finite number ≥ 0")
        if not 0 <= self.time_limit < math.inf:
            raise ValueError(f"time limit must be a number of minutes ≥ 0 (0: none), not {self.time_limit}")
        if self.val_every < 1:
            raise ValueError(f"validation interval must be a number of epochs ≥ 1, not {self.val_every}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"the weight average's decay must be in [0, 1) (0: no average), not {self.ema}")


RESUMABLE = ("epochs", "time_limit")  # the train settings a resumed run may change: how long it trains


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: ClassSet = CARLA

    def __post_init__(self) -> None:
        if len(self.classes) != self.model.n_classes:
            raise ValueError(f"{len(self.classes)} class names but the model has {self.model.n_classes} outputs")
        ignore = self.train.ignore_index
        if ignore is not None and not 0 <= ignore <= 255:
            raise ValueError(f"ignore index {ignore} is neither a class id (0-{self.model.n_classes - 1}) nor another "
                             "mask value (up to 255)")
        MaskFormat.for_run(self)  # refuses colour-coded masks without one colour per class, or ignoring without a class

    def changes(self, other: RunConfig) -> list[str]:
        """The settings (``train.lr``, ``model.n_filters``, ``classes`` …) in which ``other`` differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        changed = ["classes"] if mine.pop("classes") != theirs.pop("classes") else []
        return changed + [f"{section}.{key}" for section, values in mine.items() for key in values
                          if values[key] != theirs[section].get(key)]

    def with_train(self, **changes) -> RunConfig:
        return replace(self, train=replace(self.train, **changes))

    def resumed_with(self, other: RunConfig) -> RunConfig:
        """This run's settings with ``other``'s RESUMABLE ones: what a resumed run trains with."""
        return self.with_train(**{name: getattr(other.train, name) for name in RESUMABLE})

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": asdict(self.data), "train": asdict(self.train),
                "classes": {"names": list(self.classes.names), "colors": [list(c) for c in self.classes.colors]}}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        classes = ClassSet(tuple(d["classes"]["names"]), tuple(tuple(c) for c in d["classes"]["colors"]))
        # Runs made before the split had its own seed split with the training seed: resume them on that split.
        # Runs made before colour-coded masks read every mask by the ids rule.
        data = {"split_seed": d["train"].get("seed", 0), "mask_format": "ids", **d["data"]}
        return cls(ModelConfig.from_dict(d["model"]), DataConfig(**data), TrainConfig(**d["train"]), classes)
