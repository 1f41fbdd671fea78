"""Config files: a run's settings as YAML or JSON, with the keys of ``config.json`` (``train.lr`` is
``lr`` under ``train``). A file may hold some settings or all of them; :func:`config_text` writes
the complete settings of a run in the form :func:`apply_config_file` reads back. As in
``config.json``, a whole model section without ``encoder`` is the assignment's U-Net; a partial one
changes the network it is applied to."""

from __future__ import annotations

import difflib
import json
from dataclasses import fields, replace
from pathlib import Path

import yaml

from .classes import ClassSet
from .config import SETTINGS, RunConfig
from .model.unet import ModelConfig
from .settings import SettingError

SECTIONS = ("model", "data", "train", "classes")


class ConfigFileError(ValueError):
    """A config file that cannot be read, or a key in it that is unknown or has a bad value.

    Attributes:
        path: the file.
        key: the key at fault (``train.lr``), or None where the file as a whole is.
    """

    def __init__(self, path: Path, message: str, key: str | None = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.key = path, key


def config_text(config: RunConfig) -> str:
    """The complete settings of ``config`` as a config file: the text of a run's ``config.json``."""
    return json.dumps(config.to_dict(), indent=2) + "\n"


def read_config_file(path: str | Path) -> dict:
    """The settings in a YAML or JSON file, as ``{section: {key: value}}``.

    Raises:
        ConfigFileError: a file that cannot be read or parsed, or that is not a mapping of sections.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(path, f"cannot read config file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigFileError(path, f"not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} "
                                    f"({' '.join(str(exc).split())})") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigFileError(path, f"expected sections ({', '.join(SECTIONS)}) of settings, not a "
                                    f"{type(values).__name__}")
    for section, body in values.items():
        if section not in SECTIONS:
            raise ConfigFileError(path, f"unknown section {section!r}{_close(section, SECTIONS)}; a config file has "
                                        f"{', '.join(SECTIONS)}", key=str(section))
        if not isinstance(body, dict):
            raise ConfigFileError(path, f"{section} must hold settings (key: value lines), not "
                                        f"{type(body).__name__}", key=section)
    return values


def apply_config_file(config: RunConfig, path: str | Path) -> RunConfig:
    """``config`` with the settings in the file at ``path`` (YAML, or JSON) replaced.

    Raises:
        ConfigFileError: an unreadable file, an unknown key, or a value of the wrong type or range,
            naming the file and the key.
    """
    path = Path(path)
    values = read_config_file(path)
    changes: dict[str, dict] = {"model": {}, "data": {}, "train": {}}
    for section in ("data", "train"):
        for key, value in values.get(section, {}).items():
            changes[section][key] = _checked(path, f"{section}.{key}", value)
    known_model = {f.name for f in fields(ModelConfig)}
    model = values.get("model", {})
    if "encoder" not in model and set(ModelConfig().to_dict()) <= set(model):
        model = {"encoder": "unet", "encoder_weights": "none", **model}  # a whole U-Net section, as config.json's
    for key, value in model.items():
        if key not in known_model:
            raise ConfigFileError(path, f"unknown setting model.{key}{_close(key, known_model)}", key=f"model.{key}")
        name = f"model.{key}"
        changes["model"][key] = _checked(path, name, value) if name in SETTINGS else value
    try:
        sections = {name: replace(getattr(config, name), **changes[name]) for name in changes}
        classes = config.classes
        if "classes" in values:
            body = values["classes"]
            classes = ClassSet(tuple(body["names"]), tuple(tuple(c) for c in body["colors"])) if "colors" in body \
                else ClassSet.from_names(body["names"])
            if "n_classes" not in changes["model"]:
                sections["model"] = replace(sections["model"], n_classes=len(classes))
        return RunConfig(classes=classes, **sections)
    except (KeyError, TypeError, ValueError) as exc:
        message = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigFileError(path, message.splitlines()[0] if message else type(exc).__name__) from None


def _checked(path: Path, name: str, value: object) -> object:
    setting = SETTINGS.get(name)
    if setting is None:
        section = name.partition(".")[0]
        names = [s.field for s in SETTINGS.values() if s.section == section]
        raise ConfigFileError(path, f"unknown setting {name}{_close(name.partition('.')[2], names)}", key=name)
    if setting.type is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    try:
        return setting.check(value)
    except SettingError as exc:
        raise ConfigFileError(path, str(exc), key=name) from None


def _close(word: str, choices) -> str:
    match = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {match[0]}?)" if match else ""
