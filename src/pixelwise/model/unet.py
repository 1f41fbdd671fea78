"""The U-Net: its configuration and presets (``assignment``, ``original``), conv and up blocks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a UNet; saved in a run's config.json."""

    in_channels: int = 3
    n_classes: int = 23
    n_filters: int = 32
    depth: int = 5
    padding: str = "same"
    up_kernel: int = 3
    dropout: tuple[float, ...] = (0.0, 0.0, 0.0, 0.3, 0.3)
    head_conv: bool = True
    batch_norm: bool = False  # BatchNorm after each 3x3 conv (before its ReLU); not in the assignment
    # "unet": the assignment's own encoder (every field above applies); "efficientnet-lite0/1/2": that
    # backbone under a light U-Net decoder (model/encoder_unet.py; the fields above other than
    # in_channels and n_classes are then unused). Left out of config.json when "unet", as before.
    encoder: str = "unet"
    encoder_weights: str = "none"  # what initialised the encoder: "imagenet", "none" or a state-dict file
    # The pretrained encoders' decoder widths at strides 16, 8, 4 and 2. 16 channels at stride 2 (the
    # first design, still what config.json files without this field mean) never learnt Pedestrian,
    # TrafficSign or TrafficLight, not even on the training frames; 48 and 32 at the two finest
    # strides did, and 96/64/48 at strides 8/4/2 doubled Pedestrian's and nearly tripled TrafficSign's
    # held-out IoU again over three seeds (docs/quality.md).
    decoder_channels: tuple[int, ...] = (128, 96, 64, 48)
    # Above 1: that many networks of this description, their probabilities averaged (model/ensemble.py):
    # an ensemble run's config, assembled from trained runs and never trained itself. Left out of
    # config.json when 1.
    members: int = 1

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of: {', '.join(ENCODERS)}")
        if self.encoder != "unet" and (self.in_channels != 3 or self.padding != "same"):
            raise ValueError(f"the {self.encoder} encoder takes RGB input (in_channels 3) and pads ('same')")
        if self.encoder == "unet" and self.encoder_weights != "none":
            raise ValueError("the assignment's U-Net encoder has no pretrained weights; "
                             "set model.encoder_weights to none")
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', not {self.padding!r}")
        if self.depth < 2:
            raise ValueError(f"depth must be at least 2, not {self.depth}")
        if len(self.dropout) != self.depth:
            raise ValueError(f"dropout needs one rate per encoder block ({self.depth}), got {len(self.dropout)}")
        if not 2 <= self.n_classes <= 256 or self.in_channels < 1 or self.n_filters < 1:
            raise ValueError("n_classes must be in 2-256 (masks are 8-bit), in_channels and n_filters ≥ 1")
        if self.members < 1:
            raise ValueError(f"members must be at least 1, not {self.members}")
        if len(self.decoder_channels) != 4 or min(self.decoder_channels) < 1:
            raise ValueError(f"decoder_channels needs 4 widths ≥ 1 (strides 16, 8, 4, 2), got {self.decoder_channels}")
        object.__setattr__(self, "dropout", tuple(float(d) for d in self.dropout))
        object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.encoder == "unet":  # config.json of U-Net runs stays as it was before encoders existed
            del data["encoder"], data["encoder_weights"], data["decoder_channels"]
        if self.members == 1:
            del data["members"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model settings: {', '.join(sorted(unknown))}")
        if data.get("encoder", "unet") != "unet":
            data = {"decoder_channels": LEGACY_DECODER_CHANNELS, **data}  # runs saved before the field existed
        return cls(**{**data, "dropout": tuple(data.get("dropout", cls.dropout))})

    # --- sizes -------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """A padded U-Net takes sides that are multiples of this (one halving per pooling)."""
        return 2 ** (self.depth - 1) if self.encoder == "unet" else ENCODER_STEP

    def output_size(self, size: int) -> int | None:
        """Output length for one spatial input length, or None if the network cannot take it."""
        if self.encoder != "unet":
            return size if size > 0 and size % ENCODER_STEP == 0 else None
        shrink = 4 if self.padding == "valid" else 0
        for _ in range(self.depth - 1):
            size -= shrink
            if size <= 0 or size % 2:
                return None
            size //= 2
        size -= shrink
        if size <= 0:
            return None
        for _ in range(self.depth - 1):
            size = size * 2 - shrink
            if size <= 0:
                return None
        return size

    def input_size_for(self, size: int) -> int:
        """Smallest input length whose output covers ``size`` pixels."""
        n = max(size, 1)
        while (out := self.output_size(n)) is None or out < size:
            n += 1
        return n

    def size_hints(self, height: int, width: int) -> list[str]:
        """For each side the network cannot take, e.g. ``"height 100 → try 96 or 112"``."""
        return [f"{name} {n} → try {' or '.join(map(str, sorted(set(self.valid_sizes_near(n)))))}"
                for name, n in (("height", height), ("width", width)) if self.output_size(n) is None]

    def valid_sizes_near(self, size: int) -> tuple[int, int]:
        """The nearest input lengths at or below and above ``size`` that the network accepts."""
        below = next((n for n in range(size, 0, -1) if self.output_size(n) is not None), None)
        above = next(n for n in range(max(size, 1), size + 4 * 2**self.depth + 200) if self.output_size(n) is not None)
        return (below or above), above


ENCODERS = ("unet", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
LEGACY_DECODER_CHANNELS = (128, 64, 32, 16)
ENCODER_STEP = 32  # a pretrained encoder halves five times: sides that are multiples of 32 give whole maps


PRESETS: dict[str, ModelConfig] = {
    # The Coursera/DeepLearning.AI assignment: 'same' convs, 3x3 up-convs, 3x3 head conv, dropout 0.3 deep.
    "assignment": ModelConfig(),
    # Ronneberger et al. 2015: unpadded convs, 2x2 up-convs, cropped skips, no extra head conv.
    "original": ModelConfig(in_channels=1, n_classes=2, n_filters=64, padding="valid", up_kernel=2,
                            dropout=(0.0, 0.0, 0.0, 0.5, 0.5), head_conv=False),
    # ImageNet-trained EfficientNet-Lite under a light U-Net decoder (model/encoder_unet.py).
    **{name: ModelConfig(encoder=name, encoder_weights="imagenet") for name in ENCODERS[1:]},
}


def preset(name: str, **overrides) -> ModelConfig:
    """A preset's config with some fields replaced (e.g. ``n_classes``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name].to_dict(), **overrides})


def _he_normal_(weight: torch.Tensor) -> None:
    """Keras' HeNormal: truncated normal at 2 std, std = sqrt(2 / fan_in) corrected for truncation."""
    fan_in = weight.shape[1] * weight[0, 0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class Conv(nn.Conv2d):
    """A Conv2D in the Keras sense: conv + optional ReLU, He-normal or Glorot-uniform kernel, zero bias.
    With ``batch_norm`` the conv has no bias (BatchNorm's shift replaces it) and BN sits before the ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: str, relu: bool = True, batch_norm: bool = False):
        super().__init__(cin, cout, kernel, padding=kernel // 2 if padding == "same" else 0, bias=not batch_norm)
        self.padding_mode_name = padding
        self.relu = relu
        self.norm = nn.BatchNorm2d(cout) if batch_norm else None
        if relu:
            _he_normal_(self.weight)
        else:
            nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return torch.relu_(x) if self.relu else x


class UpConv(nn.ConvTranspose2d):
    """Transposed conv with stride 2 that exactly doubles H and W (Keras ``padding='same'``)."""

    def __init__(self, cin: int, cout: int, kernel: int):
        pad = (kernel - 1) // 2
        super().__init__(cin, cout, kernel, stride=2, padding=pad, output_padding=2 - kernel + 2 * pad)
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)


class SubPixelUpConv(nn.Module):
    """The same map as an UpConv, as a small stride-1 conv to 4x the channels then a 2x pixel shuffle.

    Each output pixel of a stride-2 transposed conv depends on its parity (row and column even or odd)
    and on a few input pixels around it; one conv computes all four parities at the input's size.
    ONNX Runtime quantises a Conv + DepthToSpace to int8 but runs ConvTranspose in fp32 only (a large
    share of an int8 model's time, docs/benchmarks.md), so export uses this form.
    """

    def __init__(self, up: UpConv):
        super().__init__()
        (k,), (p,) = set(up.kernel_size), set(up.padding)
        cin, cout = up.in_channels, up.out_channels
        # Output row 2m + a reads input row m + d through kernel tap t where 2(m + d) - p + t = 2m + a.
        taps = [[(d, a + p - 2 * d) for d in range(-k, k + 1) if 0 <= a + p - 2 * d < k] for a in (0, 1)]
        offsets = [d for parity in taps for d, _ in parity]
        low, high = min(offsets), max(offsets)
        weight = torch.zeros(cout, 2, 2, cin, high - low + 1, high - low + 1)
        w = up.weight.detach()  # (cin, cout, k, k)
        for a in (0, 1):
            for di, ti in taps[a]:
                for b in (0, 1):
                    for dj, tj in taps[b]:
                        weight[:, a, b, :, di - low, dj - low] = w[:, :, ti, tj].T
        self.pad = (-low, high, -low, high)  # left, right, top, bottom
        self.conv = nn.Conv2d(cin, 4 * cout, high - low + 1)
        self.conv.weight.data = weight.reshape(4 * cout, cin, high - low + 1, high - low + 1)
        self.conv.bias.data = up.bias.detach().repeat_interleave(4)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(nn.functional.pad(x, self.pad) if any(self.pad) else x))


def subpixel_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every UpConv replaced by its SubPixelUpConv (same outputs)."""
    import copy

    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, UpConv):
                setattr(module, name, SubPixelUpConv(child))
    return model


class Concat(nn.Module):
    """Concatenate on the channel axis; a module so the summary shows it as a layer."""

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([up, skip], dim=1)


def center_crop(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` (H, W) of a tensor's last two dimensions: what an unpadded network keeps."""
    dh, dw = (t.shape[-2] - size[0]) // 2, (t.shape[-1] - size[1]) // 2
    return t[..., dh : dh + size[0], dw : dw + size[1]]


class CenterCrop(nn.Module):
    """Crop a skip connection to the decoder's size (only needed with unpadded convs)."""

    def forward(self, skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return center_crop(skip, like.shape[-2:])


class ConvBlock(nn.Module):
    """Two convs + ReLU, optional dropout, optional 2x2 max-pool; returns ``(next, skip)``."""

    def __init__(self, cin: int, n_filters: int, dropout: float = 0.0, max_pooling: bool = True,
                 padding: str = "same", batch_norm: bool = False):
        super().__init__()
        self.conv1 = Conv(cin, n_filters, 3, padding, batch_norm=batch_norm)
        self.conv2 = Conv(n_filters, n_filters, 3, padding, batch_norm=batch_norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.pool = nn.MaxPool2d(2, 2) if max_pooling else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv2(self.conv1(x))
        if self.dropout is not None:
            x = self.dropout(x)
        skip = x
        return (self.pool(x) if self.pool is not None else x), skip


class UpBlock(nn.Module):
    """Up-conv of the deeper features, concatenate ``[up, skip]``, then two convs + ReLU."""

    def __init__(self, cin: int, skip_channels: int, n_filters: int, padding: str = "same", up_kernel: int = 3,
                 batch_norm: bool = False):
        super().__init__()
        self.up = UpConv(cin, n_filters, up_kernel)
        self.crop = CenterCrop() if padding == "valid" else None
        self.concat = Concat()
        self.conv1 = Conv(n_filters + skip_channels, n_filters, 3, padding, batch_norm=batch_norm)
        self.conv2 = Conv(n_filters, n_filters, 3, padding, batch_norm=batch_norm)

    def forward(self, expansive: torch.Tensor, contractive: torch.Tensor) -> torch.Tensor:
        up = self.up(expansive)
        if self.crop is not None:
            contractive = self.crop(contractive, up)
        return self.conv2(self.conv1(self.concat(up, contractive)))


class UNet(nn.Module):
    """U-Net returning per-pixel class logits (no softmax), NCHW float input scaled to [0, 1]."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        if config.encoder != "unet":
            raise ValueError(f"this config describes an {config.encoder} encoder: build it with "
                             "pixelwise.model.build.build_model")
        c = config
        widths = [c.n_filters * 2**i for i in range(c.depth)]
        self.encoder = nn.ModuleList()
        cin = c.in_channels
        for i, w in enumerate(widths):
            self.encoder.append(ConvBlock(cin, w, c.dropout[i], max_pooling=i < c.depth - 1, padding=c.padding,
                                          batch_norm=c.batch_norm))
            cin = w
        self.decoder = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.decoder.append(UpBlock(cin, w, w, c.padding, c.up_kernel, c.batch_norm))
            cin = w
        self.head = Conv(cin, c.n_filters, 3, c.padding, batch_norm=c.batch_norm) if c.head_conv else None
        self.classifier = Conv(c.n_filters if c.head_conv else cin, c.n_classes, 1, c.padding, relu=False)

    def check_input(self, height: int, width: int) -> None:
        """Raise a ValueError naming the nearest sizes that work if ``height``/``width`` do not."""
        hints = "; ".join(self.config.size_hints(height, width))
        if hints:
            rule = (f"a multiple of {self.config.step}" if self.config.padding == "same"
                    else "a size whose feature maps stay even at every pooling")
            raise ValueError(f"input {height}x{width} does not fit this U-Net (each side must be {rule}): {hints}. "
                             "pixelwise predict pads and crops images of any size for you.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input of shape (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if not torch.compiler.is_compiling():  # traced for export/compile with symbolic sizes: no Python check
            self.check_input(x.shape[2], x.shape[3])
        skips = []
        for block in self.encoder:
            x, skip = block(x)
            skips.append(skip)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(x, skip)
        if self.head is not None:
            x = self.head(x)
        return self.classifier(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
