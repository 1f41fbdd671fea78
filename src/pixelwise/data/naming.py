"""How an image and its mask are recognised as a pair when their names differ: an optional suffix on
either side (CamVid's ``0001TP_006690_L.png``, Cityscapes' ``_leftImg8bit``/``_gtFine_labelIds``) and,
with ``recursive``, sub-folders (the pair name is then the relative path, suffix removed:
``aachen/aachen_000000_000019``). Files without the suffix are not part of the dataset (Cityscapes
keeps ``_color`` and ``_instanceIds`` masks beside ``_labelIds``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Naming:
    """Pairing rule: file stems equal after removing ``image_suffix``/``mask_suffix``, and with
    ``recursive`` also their folders below the images and masks folders."""

    image_suffix: str = ""
    mask_suffix: str = ""
    recursive: bool = False

    def __post_init__(self) -> None:
        for what, suffix in (("image", self.image_suffix), ("mask", self.mask_suffix)):
            if not isinstance(suffix, str) or "/" in suffix or os.sep in suffix or suffix in (".", ".."):
                raise ValueError(f"{what} suffix must be the end of a file name without its extension (such as "
                                 f"_L or _gtFine_labelIds), not {suffix!r}")

    @classmethod
    def for_run(cls, config) -> Naming:
        """The pairing rule of a :class:`~pixelwise.config.RunConfig` (its data settings)."""
        data = config.data
        return cls(getattr(data, "image_suffix", ""), getattr(data, "mask_suffix", ""), getattr(data, "recursive", False))

    @property
    def is_default(self) -> bool:
        return not (self.image_suffix or self.mask_suffix or self.recursive)

    def key(self) -> list:
        """What a decode cache must tell apart (empty for the default, so those caches stay as they were)."""
        return [] if self.is_default else ["naming", self.image_suffix, self.mask_suffix, self.recursive]

    def describe(self, role: str) -> str:
        """"NAME_L.*" style: how a file of ``role`` ("image" or "mask") for pair NAME is named."""
        return "{name}" + (self.image_suffix if role == "image" else self.mask_suffix) + ".*"

    def pair_name(self, folder: Path, path: Path, role: str) -> str | None:
        """The name ``path`` (an image or mask file in or below ``folder``) pairs under, or None if it
        lacks the suffix (it is then not part of the dataset)."""
        suffix = self.image_suffix if role == "image" else self.mask_suffix
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix) or stem == suffix:
                return None
            stem = stem[: -len(suffix)]
        if self.recursive:
            try:
                below = path.parent.relative_to(folder)
            except ValueError:
                below = Path()
            if below.parts:
                return f"{below.as_posix()}/{stem}"
        return stem

    def name_of(self, path: Path, images_dir: Path, masks_dir: Path) -> str:
        """The pair name of a file from either folder (for problems that only carry the path)."""
        for folder, role in ((images_dir, "image"), (masks_dir, "mask")):
            try:
                path.relative_to(folder)
            except ValueError:
                continue
            name = self.pair_name(folder, path, role)
            if name is not None:
                return name
        return path.stem

    def entries(self, folder: Path) -> Iterator[os.DirEntry]:
        """The folder's entries, and with ``recursive`` those of its sub-folders (hidden ones and
        symbolic links to folders left out, so a link loop cannot run forever). Raises OSError if
        ``folder`` cannot be listed."""
        if not self.recursive:
            yield from os.scandir(folder)
            return
        todo = [folder]
        while todo:
            current = todo.pop()
            with os.scandir(current) as listing:
                found = list(listing)
            for entry in found:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if is_dir:
                    if not entry.name.startswith("."):
                        todo.append(Path(entry.path))
                else:
                    yield entry
