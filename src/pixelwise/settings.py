"""What a run setting is: its name (the ``config.json`` key, such as ``train.lr``), type, allowed
range or choices, help, and whether a resumed run may change it.

The settings themselves are declared once, as the fields of the config dataclasses
(:mod:`pixelwise.config`) made with :func:`setting`; their checks, the ``train`` command's flags and
help, the config file (``--config``) and the resume rule all come from those declarations. A new
setting is one :func:`setting` field plus the code that uses it.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields


class SettingError(ValueError):
    """A setting with a value of the wrong type or outside its range or choices.

    Attributes:
        setting: the setting's name, such as ``train.lr``.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting} {message}")
        self.setting = setting


@dataclass(frozen=True)
class Range:
    """A closed, open or half-open interval of numbers; ``math.inf`` bounds are always open, so a
    setting with a range is finite."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and math.isfinite(value)

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class Setting:
    """One run setting, as :func:`setting` declares it and :func:`settings_of` reads it back.

    ``flag`` is the command-line flag (None: set only by a config file or the Python API), ``parse``
    turns the flag's text into a value (default: the type), ``resumable`` says whether a resumed run
    may change it, ``reading`` marks the settings that say how a dataset's files are read (every
    command that reads a dataset takes their flags)."""

    name: str
    type: object
    default: object
    help: str
    choices: tuple = ()
    range: Range | None = None
    flag: str | None = None
    metavar: str | None = None
    parse: Callable[[str], object] | None = None
    resumable: bool = False
    reading: bool = False

    @property
    def section(self) -> str:
        return self.name.partition(".")[0]

    @property
    def field(self) -> str:
        return self.name.partition(".")[2]

    @property
    def dest(self) -> str | None:
        """The argparse destination of the flag."""
        return None if self.flag is None else self.flag[2:].replace("-", "_")

    def check(self, value: object) -> object:
        """``value`` if this setting can hold it (ints widened to float where a float is asked for,
        lists to tuples).

        Raises:
            SettingError: a value of another type, or outside the range or choices.
        """
        conformed = _conform(value, self.type)
        if conformed is _WRONG:
            raise SettingError(self.name, f"must be {_describe(self.type)}, not {value!r}")
        value = conformed
        if value is None:
            return None
        if self.choices and value not in self.choices:
            raise SettingError(self.name, f"must be one of {', '.join(map(str, self.choices))}, not {value!r}")
        numbers = value if isinstance(value, tuple) else (value,)
        if self.range is not None and not all(math.isfinite(v) for v in numbers):
            raise SettingError(self.name, f"must be a finite number {self.range}, not {value!r}")
        if self.range is not None and not all(v in self.range for v in numbers):
            each = "each " if isinstance(value, tuple) else ""
            raise SettingError(self.name, f"must be {each}{self.range}, not {value!r}")
        return value


_WRONG = object()  # what _conform returns for a value of another type


def _conform(value: object, kind: object) -> object:
    """``value`` as ``kind`` (bool, int, float, str, ``X | None``, ``tuple[int, ...]``), or _WRONG."""
    if isinstance(kind, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(k for k in options if k is not type(None))
    origin = typing.get_origin(kind)
    if origin is tuple:
        items = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            return _WRONG
        if not (items[-1] is Ellipsis or len(value) == len(items)):
            return _WRONG
        value = tuple(_conform(v, items[0]) for v in value)
        return _WRONG if _WRONG in value else value
    if isinstance(value, bool) and kind is not bool:
        return _WRONG
    if kind is float:  # an int (or NumPy number) where a float is asked for is that float
        return float(value) if isinstance(value, numbers.Real) else _WRONG
    if kind is int:
        return int(value) if isinstance(value, numbers.Integral) else _WRONG
    return value if isinstance(value, kind) else _WRONG


def _describe(kind: object) -> str:
    if isinstance(kind, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        count = "" if items[-1] is Ellipsis else f"{len(items)} "
        return f"a list of {count}{_describe(items[0])}s"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text",
            type(None): "null"}.get(kind, str(kind))


def setting(default: object, help: str, *, choices: tuple = (), low: float = -math.inf, high: float = math.inf,
            low_open: bool = False, high_open: bool = False, flag: str | None = "", metavar: str | None = None,
            parse: Callable[[str], object] | None = None, resumable: bool = False, reading: bool = False) -> Field:
    """A dataclass field that declares a run setting (see :class:`Setting`).

    Args:
        default: the value of a config that does not set it.
        help: one sentence for ``--help`` and the docs; it may name other settings (``train.ignore_index``),
            which the command line words as their flags.
        choices: the allowed values, where there is a list.
        low, high, low_open, high_open: the allowed interval, for numbers.
        flag: the command-line flag; "" derives ``--field-name``, None means no flag.
        metavar, parse: the flag's placeholder and text → value function (default: the type).
        resumable: whether ``resume=True`` may change it.
        reading: whether it says how a dataset's files are read.

    Returns:
        a ``dataclasses.field`` carrying the declaration in its metadata.
    """
    bounded = low != -math.inf or high != math.inf
    spec = {"help": help, "choices": tuple(choices), "range": Range(low, high, low_open, high_open) if bounded else None,
            "flag": flag, "metavar": metavar, "parse": parse, "resumable": resumable, "reading": reading}
    return field(default=default, metadata={"setting": spec})


def settings_of(cls: type, section: str) -> tuple[Setting, ...]:
    """The settings a config dataclass declares, named ``section.field``."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        flag = "--" + f.name.replace("_", "-") if spec["flag"] == "" else spec["flag"]
        found.append(Setting(f"{section}.{f.name}", hints[f.name], f.default, **{**spec, "flag": flag}))
    return tuple(found)


def check_fields(config: object, table: tuple[Setting, ...]) -> None:
    """Check every declared setting of the frozen dataclass ``config`` and store its conformed value.

    Raises:
        SettingError: the first setting whose value does not fit its declaration.
    """
    for s in table:
        object.__setattr__(config, s.field, s.check(getattr(config, s.field)))


def parse_size(text: str) -> tuple[int, int]:
    """'96x128' → (96, 128): height x width, as the assignment writes its input size.

    Raises:
        ValueError: text that is not two positive whole numbers joined by x.
    """
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"expected HEIGHTxWIDTH of positive numbers such as 96x128, got {text!r}")
    return dims


def shown(value: object) -> str:
    """A setting's value as a flag takes it: sizes as 96x128, the rest as Python prints them."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "":
        return "none" if value is None else "''"
    return f"{value:g}" if isinstance(value, float) else str(value)
