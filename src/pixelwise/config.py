"""The run configuration: one frozen, plain-data description saved as a run's ``config.json``.

Like nnU-Net's plans file, it alone is enough to rebuild the model and the preprocessing, so
``evaluate`` and ``predict`` need nothing but the run directory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .classes import CARLA, ClassSet
from .data.colors import MASK_FORMATS, UNKNOWN_COLORS, MaskFormat
from .data.naming import Naming
from .data.resize import RESIZE_MODES
from .model.build import WEIGHTS_HELP
from .model.unet import ENCODERS, PRESETS, ModelConfig
from .settings import Range, Setting, SettingError, check_fields, parse_size, setting, settings_of

AUGMENTATIONS = ("none", "flip", "zoom", "full")
ZOOMING = ("zoom", "full")  # the augmentations that resample a zoomed crop (training/augment.py)
LOSSES = ("ce", "ce+dice")
CLASS_WEIGHTS = ("none", "inverse-sqrt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
MAX_SIDE = 8192  # a training size beyond this is a typo or a damaged config.json, not a plan
FRACTION = {"low": 0.0, "high": 1.0}


# The fields declared with ``setting`` are the run settings (settings.py): each line is the setting's
# whole declaration, from which its check, its flag and help, the config file and the resume rule come.
@dataclass(frozen=True)
class DataConfig:
    """How images and masks become model input; everything predict must repeat."""

    size: tuple[int, int] = setting(
        (96, 128), "training HEIGHTxWIDTH (the images are resized to it)", low=1, high=MAX_SIDE, parse=parse_size,
        metavar="HxW")
    image_resize: str = setting("nearest", "how images are resized (masks always nearest)", choices=RESIZE_MODES)
    val_fraction: float = setting(
        0.2, "share of frames held out, whole runs of consecutive frames at a time", **FRACTION, high_open=True)
    split_seed: int = setting(0, "which runs of frames are held out; train.seed leaves the split alone")
    folds: int = setting(
        1, "cross-validation: deal the runs of frames into this many groups and validate on group data.fold instead "
        "of the data.val_fraction split; without data.fold, train trains every fold, then their ensemble",
        low=1, high=100)
    fold: int = setting(0, "which of the data.folds groups validates (0 = the first)", low=0, high=99)
    augment: str = setting(
        "none", "flip = random horizontal mirror (image and mask alike); zoom = also random zoom 0.75-1.5x and "
        "shift; full = also colour jitter", choices=AUGMENTATIONS)
    crop: float = setting(1.0, "train on random crops covering this fraction of each side of data.size; "
                          "inference sees it all", **FRACTION, low_open=True, metavar="F")
    class_crops: float = setting(
        0.0, "place this share of the training crops (data.crop below 1, or data.augment zoom/full's zoom) to hold "
        "a class picked evenly among those in the mask, so rare classes are seen often", **FRACTION, metavar="F")
    paste: float = setting(
        0.0, "give this share of the training frames the small classes (each under 5% of a frame, each with "
        "probability 1/2) of another frame of the batch, copied at the same place", **FRACTION, metavar="F")
    mask_format: str = setting(
        "auto", "ids: grey value, palette index or max(R, G, B) (CARLA's id in R); colors: exact match with the "
        "class file's colours ('name r g b' lines); auto: colours when every pixel is a class colour, else ids "
        "when every pixel has G = B = 0 or R = G = B, else refused", choices=MASK_FORMATS, reading=True)
    unknown_color: str = setting(
        "error", "error: a mask colour no class has is a problem; ignore: such pixels become the "
        "train.ignore_index class (unlabelled)", choices=UNKNOWN_COLORS, reading=True)
    image_suffix: str = setting(
        "", "image file names end in this before the extension (e.g. _leftImg8bit); pairs are matched on the "
        "name without it", metavar="SUFFIX", reading=True)
    mask_suffix: str = setting(
        "", "mask file names end in this (e.g. _L for CamVid, _gtFine_labelIds for Cityscapes); masks without it "
        "are not read", metavar="SUFFIX", reading=True)
    recursive: bool = setting(
        False, "also pair the files in sub-folders, by their path below the images and masks folders", reading=True)
    id_map: tuple[int, ...] = setting(
        (), "256 entries: a mask file's value → class id (Cityscapes' labelIds → train ids); set by a layout",
        low=0, high=255, flag=None)

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):  # config.json of runs made before flip-only augmentation existed
            object.__setattr__(self, "augment", "full" if self.augment else "none")
        check_fields(self, DATA_SETTINGS)
        if self.fold >= self.folds:
            raise SettingError("data.fold", f"must be below data.folds ({self.folds}), not {self.fold}")
        Naming(self.image_suffix, self.mask_suffix, self.recursive)  # refuses a suffix with a folder in it
        object.__setattr__(self, "id_map", MaskFormat(id_map=self.id_map).id_map)  # a tuple of 256 ids, or ()

    def crop_size(self, step: int) -> tuple[int, int]:
        """The training crop: ``crop`` of each side, rounded to a multiple of the network's ``step``."""
        return tuple(min(side, max(step, round(side * self.crop / step) * step)) for side in self.size)


@dataclass(frozen=True)
class TrainConfig:
    """The assignment's recipe by default: Adam 1e-3, batch 32, 40 epochs, plain cross-entropy."""

    epochs: int = setting(40, "epochs to train (a resumed run may raise it)", low=1, resumable=True)
    batch_size: int = setting(32, "frames per training step", low=1)
    lr: float = setting(1e-3, "(peak) learning rate", low=0, low_open=True)
    seed: int = setting(0, "initial weights, batch order and augmentation draws")
    init: str = setting(
        "", "start from the trained weights of this run (its best, else last) instead of ImageNet's or fresh ones: "
        "to fine-tune it, or to train on after pretraining on other data; its network must be this one, and where "
        "its classes differ its classifier starts fresh", metavar="RUN")
    precision: str = setting(
        "auto", "auto: on a GPU bf16 where it computes it natively, else fp16; on a CPU with native bf16 "
        "(AVX512-BF16, AMX) the faster of fp32 and bf16, timed on the first run of this network on the machine "
        "and kept in the cache folder for every later run (a resumed run keeps its own); fp32 on other CPUs",
        choices=PRECISIONS)
    optimizer: str = setting("adam", "adam or adamw (decoupled weight decay)", choices=OPTIMIZERS)
    weight_decay: float = setting(0.0, "decoupled (adamw) or L2 (adam) weight decay", low=0)
    schedule: str = setting("constant", "learning rate over the run: constant, or cosine decay to 0 after the "
                            "warm-up", choices=SCHEDULES)
    warmup: float = setting(0.0, "fraction of the steps over which the learning rate rises linearly from 0",
                            **FRACTION, high_open=True)
    loss: str = setting("ce", "ce: cross-entropy; ce+dice: plus soft Dice", choices=LOSSES)
    class_weights: str = setting("none", "inverse-sqrt: weight classes by 1/sqrt(their training pixel share)",
                                 choices=CLASS_WEIGHTS)
    ignore_index: int | None = setting(
        None, "a class id, or another mask value such as 255, whose pixels are unlabelled: no loss, not scored; "
        "also the id that unknown colours become with data.unknown_color ignore", low=0, high=255, metavar="ID",
        parse=int)
    encoder_lr: float = setting(
        1.0, "a pretrained encoder's learning rate as a fraction of train.lr (the decoder's)", **FRACTION,
        low_open=True, metavar="F")
    time_limit: float = setting(
        0.0, "stop after the epochs that fit in this many minutes of training and validation, with the "
        "learning-rate schedule fitted to them (0: no limit)", low=0, metavar="MINUTES", resumable=True)
    val_every: int = setting(1, "validate after every Nth epoch and after the last (best.safetensors is the best "
                             "of those)", low=1, metavar="N")
    patience: int = setting(
        0, "stop after this many validations in a row without a better validation mIoU (without a validation "
        "split: epochs without a lower training loss); best.safetensors stays the best (0: never stop early)",
        low=0, metavar="N", resumable=True)
    ema: float = setting(
        0.0, "validate and save an exponential moving average of the weights that keeps this share of itself at "
        "each step, such as 0.998 (0: none)", **FRACTION, high_open=True, metavar="DECAY")
    label_smoothing: float = setting(
        0.0, "cross-entropy against targets that give this share of each pixel's weight to all classes evenly "
        "(0: none)", **FRACTION, high_open=True, metavar="F")

    def __post_init__(self) -> None:
        check_fields(self, TRAIN_SETTINGS)


DATA_SETTINGS = settings_of(DataConfig, "data")
TRAIN_SETTINGS = settings_of(TrainConfig, "train")
# The model's settings a command line may change (the rest of ModelConfig comes whole from a preset).
MODEL_SETTINGS = (
    Setting("model.batch_norm", bool, False, "BatchNorm after each 3x3 conv of the U-Net encoder (before its ReLU)",
            flag="--batch-norm"),
    Setting("model.n_filters", int, 32, "base filters of the unet encoder (the preset's by default: "
            f"{PRESETS['assignment'].n_filters} for assignment, {PRESETS['original'].n_filters} for original); refused "
            "with an efficientnet encoder, as is model.batch_norm", range=Range(1), flag="--filters"),
    Setting("model.encoder", str, "unet", "unet = the assignment's own encoder; efficientnet-lite0/1/2 = that "
            "ImageNet backbone under a light U-Net decoder", choices=ENCODERS, flag="--encoder"),
    Setting("model.encoder_weights", str, "none", f"what the encoder starts from: {WEIGHTS_HELP} (default: "
            "imagenet for an efficientnet encoder, none for unet)", flag="--encoder-weights",
            metavar="imagenet|none|FILE"),
)
SETTINGS: dict[str, Setting] = {s.name: s for s in (*MODEL_SETTINGS, *DATA_SETTINGS, *TRAIN_SETTINGS)}
RESUMABLE = tuple(s.field for s in TRAIN_SETTINGS if s.resumable)  # how long a resumed run trains, nothing else


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: ClassSet = CARLA

    def __post_init__(self) -> None:
        if len(self.classes) != self.model.n_classes:
            raise ValueError(f"{len(self.classes)} class names but the model has {self.model.n_classes} outputs")
        for s in MODEL_SETTINGS:
            s.check(getattr(self.model, s.field))
        MaskFormat.for_run(self)  # refuses colour-coded masks without one colour per class, or ignoring without a class

    def changes(self, other: RunConfig) -> list[str]:
        """The settings (``train.lr``, ``model.n_filters``, ``classes`` …) in which ``other`` differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        changed = ["classes"] if mine.pop("classes") != theirs.pop("classes") else []
        return changed + [f"{section}.{key}" for section, values in mine.items() for key in values
                          if values[key] != theirs[section].get(key)]

    def with_train(self, **changes) -> RunConfig:
        return replace(self, train=replace(self.train, **changes))

    def with_data(self, **changes) -> RunConfig:
        """These settings with some data settings (``mask_suffix="_L"`` …) replaced."""
        return replace(self, data=replace(self.data, **changes))

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
