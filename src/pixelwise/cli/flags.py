"""The run settings as command-line flags: each flag, its help and the settings given on a command line
come from the settings' declarations (config.py), and the library's words for settings and
parameters (``train.lr``, ``resume=True``) become the command line's (``--lr``, ``--resume``)."""

from __future__ import annotations

import argparse
import re

from ..config import SETTINGS
from ..recipes import RECIPES
from ..settings import Setting, shown

# The Python parameters that library messages name, as the commands spell them.
PARAMETERS = {
    "resume=True": "--resume", "skip_invalid=True": "--skip-invalid", "run_dir": "--out", "out=FOLDER": "--out FOLDER",
    "images=FOLDER": "--images FOLDER", "masks=FOLDER": "--masks FOLDER", "weights='last'": "--weights last",
    "val_images": "--val-images", "val_masks": "--val-masks", "train_list": "--train-list", "val_list": "--val-list",
    "nproc": "--nproc", "scales": "--scales", "batch_size": "--batch-size",
}
# A name stands alone: not part of a longer word, a path (/runs/run_dir/…) or a flag already.
_NAMES = re.compile(r"(?<![\w/\\.-])(?:(?:model|data|train)\.[a-z_]+|"
                    + "|".join(re.escape(p) for p in PARAMETERS) + r")(?![\w/\\-])")


def as_flags(text: str) -> str:
    """``text`` with the settings and parameters it names worded as the flags that set them."""
    def flag(match: re.Match) -> str:
        name = match.group(0)
        if name in PARAMETERS:
            return PARAMETERS[name]
        setting = SETTINGS.get(name)
        return setting.flag if setting is not None and setting.flag else name

    return _NAMES.sub(flag, text)


def recipe_values(setting: Setting) -> str:
    """"default 60, scratch 120, seed 40", or "every recipe: 0" where they agree: the recipes' values."""
    values = {name: shown(getattr(getattr(config, setting.section), setting.field)) for name, config in RECIPES.items()}
    if len(set(values.values())) == 1:
        return f"every recipe: {next(iter(values.values()))}"
    return "recipes: " + ", ".join(f"{name} {value}" for name, value in values.items())


def add_setting(p: argparse.ArgumentParser, setting: Setting, default_note: str) -> None:
    """The flag of ``setting``; its help ends with ``default_note`` (such as the recipes' values)."""
    notes = "; ".join(n for n in (str(setting.range) if setting.range else "", default_note) if n)
    help_text = as_flags(setting.help).replace("%", "%%") + (f" ({notes})" if notes else "")
    if setting.type is bool:
        p.add_argument(setting.flag, dest=setting.dest, action=argparse.BooleanOptionalAction, default=None,
                       help=help_text)
        return
    p.add_argument(setting.flag, dest=setting.dest, type=_argument_type(setting), default=None,
                   choices=setting.choices or None, metavar=setting.metavar, help=help_text)


def _argument_type(setting: Setting):
    parse = setting.parse or setting.type

    def argument(text: str):
        try:
            return parse(text)
        except ValueError as exc:  # argparse words a ValueError as "invalid value": keep the reason
            raise argparse.ArgumentTypeError(str(exc) if setting.parse else f"expected {setting.type.__name__}, "
                                             f"got {text!r}") from None

    argument.__name__ = getattr(parse, "__name__", "value")
    return argument


def given(args: argparse.Namespace, settings) -> dict[str, dict]:
    """The settings whose flags ``args`` holds, as ``{section: {field: value}}``."""
    changes: dict[str, dict] = {"model": {}, "data": {}, "train": {}}
    for s in settings:
        value = getattr(args, s.dest, None)
        if value is not None:
            changes[s.section][s.field] = value
    return changes


def train_settings() -> list[Setting]:
    """The settings ``train`` has flags for, in the order --help lists them."""
    return [s for s in SETTINGS.values() if s.flag is not None]
