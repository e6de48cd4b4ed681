"""Reading a shard folder written by ``python -m moss_tf.data.shards``.

A shard folder holds TFRecord files (``shard-00000.tfrecord``, ...) and
``manifest.json``. Every record is a ``tf.train.Example`` with the original
bytes of one image file (``image``), its path relative to the packed folder
(``name``) and, for the rainy image of a pair, its clean partner's name
(``clean_name``), so the shards also make sense without the manifest. The
manifest says where each file's bytes start in its shard and what its
header says (size, EXIF orientation, transparency), so opening a shard
folder reads one JSON file: no listing, no header reads, no shard scan.

A clean image shared by several pairs (DDN: 14 rainy images per clean one)
is stored once; the manifest pairs the records.

This module does not import TensorFlow (configs are checked before it starts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from moss_tf.errors import DataError

__all__ = ["MANIFEST", "ImageHeader", "ShardMember", "ShardSet", "is_shard_folder", "open_shards"]

#: The manifest's file name; a folder holding it is read as shards.
MANIFEST = "manifest.json"
FORMAT = "moss-tf image shards"
VERSION = 1


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: oriented full size, orientation, transparency.

    Attributes:
        height, width: oriented full size in pixels.
        orientation: EXIF orientation 1..8 (1 = upright).
        alpha: whether the image has transparency.
        problem: None when the tf.data graph decoders read the file as
            :func:`~moss_tf.data.images.read_image` does, else a sentence saying why not.
    """

    height: int = 0
    width: int = 0
    orientation: int = 1
    alpha: bool = False
    problem: str | None = None


@dataclass(frozen=True)
class ShardMember:
    """One image file stored in a shard: where its original bytes are, what its header says.

    Stands in for a file path wherever the data pipeline takes one (``str``
    names the shard and the file, for messages).

    Attributes:
        shard: the TFRecord file.
        offset: byte offset of the file's bytes inside ``shard``.
        length: number of bytes of the file.
        shard_bytes: size of ``shard`` in bytes.
        name: the file's path relative to the packed folder (``rain/12.png``).
        header: what the file's header said when it was packed.
    """

    shard: Path
    offset: int
    length: int
    shard_bytes: int
    name: str
    header: ImageHeader = field(default_factory=ImageHeader)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def read_bytes(self) -> bytes:
        """The file's original bytes, read from its shard."""
        try:
            with open(self.shard, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.length)
        except OSError as err:
            raise DataError(f"{self.shard}: cannot read the shard ({err})") from None
        if len(data) != self.length:
            raise DataError(f"{self.shard}: truncated; {self.name} is missing from it")
        return data

    def __str__(self) -> str:
        return f"{self.shard}[{self.name}]"


@dataclass(frozen=True)
class ShardSet:
    """What a shard folder holds: ``kind`` ``paired`` or ``unpaired``.

    ``pairs`` are (rainy, clean) members in the packed folder's order;
    ``images`` the members of an unpaired folder. ``layout`` is the packed
    folder's layout (paired) and ``source`` where it was packed from.
    """

    folder: Path
    kind: str
    layout: str
    source: str
    pairs: list[tuple[ShardMember, ShardMember]]
    images: list[ShardMember]


def is_shard_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a shard manifest."""
    return path.is_dir() and (path / MANIFEST).is_file()


def _load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable shard manifest ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(
            f"{path}: not a version-{VERSION} manifest of python -m moss_tf.data.shards"
        )
    return manifest


def _check_shards(folder: Path, shards: list[dict]) -> list[Path]:
    """The shard files, after checking each exists and has the size the manifest says."""
    paths = []
    for shard in shards:
        path = folder / shard["file"]
        if not path.is_file():
            raise DataError(f"{path}: shard missing (listed in {folder / MANIFEST}); re-pack")
        size = path.stat().st_size
        if size != shard["bytes"]:
            raise DataError(
                f"{path}: shard is {size} bytes but {folder / MANIFEST} says {shard['bytes']} "
                "(truncated or replaced); re-pack the folder"
            )
        paths.append(path)
    return paths


def _with_problem(member: ShardMember, problem: str | None) -> ShardMember:
    """``member`` with the manifest's problem sentence, prefixed by the member's name."""
    if problem is None:
        return member
    return replace(member, header=replace(member.header, problem=f"{member}: {problem}"))


def open_shards(folder: Path) -> ShardSet:
    """Read the manifest of a shard folder and check its shards (existence and size).

    Raises:
        DataError: naming the manifest or the shard at fault.
    """
    manifest = _load_manifest(folder)
    shard_paths = _check_shards(folder, manifest["shards"])
    members = [
        _with_problem(
            ShardMember(
                shard=shard_paths[entry["shard"]],
                offset=entry["offset"],
                length=entry["length"],
                shard_bytes=manifest["shards"][entry["shard"]]["bytes"],
                name=entry["name"],
                header=ImageHeader(
                    entry["height"], entry["width"], entry["orientation"], entry["alpha"]
                ),
            ),
            entry["problem"],
        )
        for entry in manifest["files"]
    ]
    pairs = [(members[rainy], members[clean]) for rainy, clean in manifest.get("pairs", [])]
    images = [members[index] for index in manifest.get("images", [])]
    return ShardSet(
        folder, manifest["kind"], manifest.get("layout", ""), manifest["source"], pairs, images
    )
