"""Folder layouts and file lists: which files are pairs, which are unpaired.

Paired layouts (detected automatically, first match wins; ``N``/``K`` are numbers):

=================================  ==========================  ==========================
layout                             rainy file                  clean file
=================================  ==========================  ==========================
``rain/ + norain/``                ``rain/x.png``              ``norain/x.png`` (same stem)
``rain/X2/ + norain/`` (Rain200H)  ``rain/X2/norain-Nx2.png``  ``norain/norain-N.png``
``rainy/ + root``                  ``rainy/rain-N.png``        ``norain-N.png``
``input/ + target/``               ``input/x.png``             ``target/x.png``
``rainy_image/ + ground_truth/``   ``rainy_image/N_K.jpg``     ``ground_truth/N.jpg`` (DDN)
pair list (a text file)            first path on a line        second path on the line
=================================  ==========================  ==========================

Stems are compared without the file ending, so ``x.jpg`` pairs with ``x.png``.
An unpaired source is a folder of images or a text file with one path per
line. In list files, blank lines and lines starting with ``#`` are ignored,
relative paths are relative to the list file, and paths with spaces are
quoted (shell rules) in pair lists.

A shard folder (``python -m moss_tf.data.shards``) is read wherever a folder
is: its pairs or images come from its manifest, in the packed folder's order,
as :class:`~moss_tf.data.shard_files.ShardMember` objects in place of paths.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moss_tf.data.images import IMAGE_EXTENSIONS, list_images, natural_key
from moss_tf.data.shard_files import ShardMember, is_shard_folder, open_shards
from moss_tf.errors import DataError, ImageError

__all__ = [
    "PAIRED_LAYOUTS",
    "Pair",
    "PairedLayout",
    "detect_layout",
    "find_images",
    "find_pairs",
    "find_test_splits",
    "seeded_split",
    "split_pairs",
]

log = logging.getLogger("moss_tf.data")


@dataclass(frozen=True)
class Pair:
    """One rainy image and its clean target; ``name`` is the rainy file's stem."""

    rainy: Path | ShardMember
    clean: Path | ShardMember

    @property
    def name(self) -> str:
        return self.rainy.stem


@dataclass(frozen=True)
class PairedLayout:
    """A paired folder layout: where rainy and clean files are, and how names match."""

    name: str
    rainy_dir: str
    clean_dir: str  # "." = the root folder itself
    clean_stem: Callable[[str], str | None]  # rainy stem -> clean stem (None: no partner)


def _same(stem: str) -> str:
    return stem


def _strip_x2(stem: str) -> str | None:
    return stem[:-2] if stem.lower().endswith("x2") else None


def _rain_to_norain(stem: str) -> str | None:
    return f"no{stem}" if stem.startswith("rain-") else None


def _ddn_background(stem: str) -> str | None:
    match = re.fullmatch(r"(.+)_\d+", stem)
    return match.group(1) if match else None


PAIRED_LAYOUTS = (
    PairedLayout("rain/ + norain/", "rain", "norain", _same),
    PairedLayout("rain/X2/ + norain/ (Rain200H original)", "rain/X2", "norain", _strip_x2),
    PairedLayout("rainy/rain-N + norain-N", "rainy", ".", _rain_to_norain),
    PairedLayout("input/ + target/", "input", "target", _same),
    PairedLayout(
        "rainy_image/ + ground_truth/ (DDN)", "rainy_image", "ground_truth", _ddn_background
    ),
)


def _layout_help() -> str:
    names = "; ".join(layout.name for layout in PAIRED_LAYOUTS)
    return f"supported paired layouts: {names}; or a text file listing 'rainy clean' per line"


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        for p in folder.iterdir()
    )


def detect_layout(folder: Path) -> PairedLayout | None:
    """The paired layout of ``folder``, or None when none matches."""
    for layout in PAIRED_LAYOUTS:
        rainy = folder / layout.rainy_dir
        clean = folder / layout.clean_dir
        if _has_images(rainy) and _has_images(clean):
            return layout
    return None


def _read_list(path: Path, columns: int) -> list[list[Path]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = shlex.split(line) if columns > 1 else [line]
        if len(parts) != columns:
            raise DataError(
                f"{path}:{number}: expected {columns} path(s) per line, got {len(parts)}: {line!r}"
            )
        rows.append([p if p.is_absolute() else path.parent / p for p in map(Path, parts)])
    if not rows:
        raise DataError(f"{path}: the list names no images")
    return rows


def _report(problems: list[str], what: str, policy: str) -> None:
    """Raise on the first problem (policy error) or log every one (policy skip)."""
    if not problems:
        return
    if policy == "error":
        raise ImageError(problems[0] + " (set data.on_bad_image=skip to skip such files)")
    for problem in problems:
        log.warning("skipped: %s", problem)
    log.warning("skipped %d file(s) of %s (data.on_bad_image=skip)", len(problems), what)


def find_pairs(source: Path, on_bad_image: str = "error") -> tuple[list[Pair], str]:
    """Rainy/clean pairs of a folder (any paired layout) or a pair list file.

    Returns:
        (pairs in natural order of the rainy files, the layout's name).

    Raises:
        DataError: unknown layout (the message lists the supported ones), or
            no pairs at all.
        ImageError: a rainy file without a clean partner, when
            ``on_bad_image`` is ``error``; with ``skip`` it is logged and left out.
    """
    if source.is_file():
        rows = _read_list(source, columns=2)
        return [Pair(rainy, clean) for rainy, clean in rows], "pair list"
    if is_shard_folder(source):
        return _shard_pairs(source)
    if not source.is_dir():
        raise DataError(f"{source}: not found")
    layout = detect_layout(source)
    if layout is None:
        if not any(source.iterdir()):
            raise DataError(f"{source}: empty folder")
        for candidate in PAIRED_LAYOUTS:
            rainy, clean = source / candidate.rainy_dir, source / candidate.clean_dir
            if rainy.is_dir() and clean.is_dir() and candidate.clean_dir != ".":
                empty = rainy if not _has_images(rainy) else clean
                raise DataError(f"{empty}: no images ({candidate.name} layout)")
        raise DataError(f"{source}: no paired layout found; {_layout_help()}")
    rainy_dir = source / layout.rainy_dir
    clean_dir = source / layout.clean_dir
    clean_by_stem = {p.stem: p for p in list_images(clean_dir)}
    pairs, problems, used = [], [], set()
    for rainy in list_images(rainy_dir):
        stem = layout.clean_stem(rainy.stem)
        clean = clean_by_stem.get(stem) if stem is not None else None
        if clean is None:
            problems.append(f"{rainy}: no clean partner in {clean_dir} ({layout.name})")
            continue
        pairs.append(Pair(rainy, clean))
        used.add(clean)
    _report(problems, str(source), on_bad_image)
    if not pairs:
        raise DataError(f"{source}: no usable pairs ({layout.name})")
    unused = len(clean_by_stem) - len(used)
    if unused and layout.clean_dir != ".":
        log.warning("%s: %d clean image(s) in %s have no rainy partner", source, unused, clean_dir)
    return pairs, layout.name


def _shard_pairs(source: Path) -> tuple[list[Pair], str]:
    shards = open_shards(source)
    if shards.kind != "paired":
        raise DataError(f"{source}: shards of unpaired images, not pairs")
    return [Pair(rainy, clean) for rainy, clean in shards.pairs], f"shards of {shards.layout}"


def find_images(source: Path) -> list[Path | ShardMember]:
    """Image files of a folder (natural order), a list file (one path per line) or shards.

    Raises:
        DataError: missing source or no images in it.
    """
    if source.is_file():
        return [row[0] for row in _read_list(source, columns=1)]
    if is_shard_folder(source):
        shards = open_shards(source)
        if shards.kind != "unpaired":
            raise DataError(f"{source}: shards of pairs; name it as data.labeled.pairs")
        return shards.images
    images = list_images(source)
    if not images:
        raise DataError(
            f"{source}: no images (looked for {', '.join(IMAGE_EXTENSIONS)} files directly inside)"
        )
    return images


def seeded_split(items: list, count: int, seed: int) -> tuple[list, list]:
    """Choose ``count`` items by a seeded permutation: (chosen, rest), both in input order."""
    order = np.random.default_rng(seed).permutation(len(items))
    chosen = set(order[:count].tolist())
    return (
        [item for i, item in enumerate(items) if i in chosen],
        [item for i, item in enumerate(items) if i not in chosen],
    )


def split_pairs(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (labeled, rest) by a seeded permutation.

    ``round(fraction * len(pairs))`` pairs (at least one) keep their labels;
    both parts keep the input order. Same pairs and seed, same split.
    """
    return seeded_split(pairs, max(1, round(fraction * len(pairs))), seed)


def _ddn_sirr_split(pairs: list[Pair]) -> dict[str, list[Pair]] | None:
    """The DDN-SIRR test convention (docs/method.md §3): inputK, K <= 10 dense, K > 10 sparse."""
    numbers = [re.fullmatch(r"input(\d+)", p.name) for p in pairs]
    if not all(numbers) or max(int(m.group(1)) for m in numbers) > 20:
        return None
    dense = [p for p, m in zip(pairs, numbers, strict=True) if int(m.group(1)) <= 10]
    sparse = [p for p, m in zip(pairs, numbers, strict=True) if int(m.group(1)) > 10]
    return {name: part for name, part in (("dense", dense), ("sparse", sparse)) if part}


def find_test_splits(source: Path, on_bad_image: str = "error") -> dict[str, list[Pair]]:
    """Named test splits of a folder or pair list.

    * DDN-SIRR test (``rain/inputK.png`` + ``norain/inputK.png``): ``dense``
      (K <= 10) and ``sparse`` (K > 10).
    * Any other paired layout or a pair list: one split named after it.
    * A folder whose sub-folders are paired layouts: one split per sub-folder.
    """
    if source.is_dir() and detect_layout(source) is None and not is_shard_folder(source):
        subfolders = sorted(
            (p for p in source.iterdir() if p.is_dir() and detect_layout(p)), key=natural_key
        )
        if subfolders:
            return {p.name: find_pairs(p, on_bad_image)[0] for p in subfolders}
    pairs, _ = find_pairs(source, on_bad_image)
    return _ddn_sirr_split(pairs) or {source.stem if source.is_file() else source.name: pairs}
