"""Pack an image folder into TFRecord shards, for slow or remote disks.

    python -m moss_tf.data.shards SOURCE --output DIR [--shard-mb 200] [--overwrite]
    python -m moss_tf.data.shards --verify DIR

``SOURCE`` is anything a data path accepts: a paired layout (``rain/`` +
``norain/``, Rain200H, DDN, ...), a pair list, a folder or list of unpaired
images. Each file's original bytes are stored unchanged (nothing is
re-encoded), with its relative name; ``DIR/manifest.json`` lists the shards,
where every file's bytes start and what its header says (see
:mod:`moss_tf.data.shard_files`). Use ``DIR`` wherever the folder was used
(``data.labeled.pairs=DIR``, ``data.unlabeled.rainy=DIR``, ``data.test=DIR``):
training reads the same images, and gives the same crops for the same seed.

How training reads shards, and how it shuffles: the stream keeps its
stateless permutation of the files per epoch (see
:mod:`moss_tf.data.pipeline`), and each element reads its file's byte range
from its shard (the manifest is the index) in the stream's parallel
``map``. So the order, the crops, ``--resume`` without replay and each
worker's share are those of the loose files, memory holds four numbers per
file, and there is no shuffle buffer (whose order would depend on the
shard layout and could not equal the loose files'). The price: reads are
random, one per image, as with loose files; what shards save is the
opening, listing and header reading of many small files.

``--verify`` reads every shard through TensorFlow's TFRecord reader, which
checks each record's checksum, and compares the records with the manifest,
naming the first shard and file at fault.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moss_tf.data.layouts import detect_layout, find_images, find_pairs
from moss_tf.data.shard_files import FORMAT, MANIFEST, VERSION, is_shard_folder, open_shards
from moss_tf.errors import DataError

__all__ = ["pack_folder", "verify_shards"]

_RECORD_HEADER = 12  # TFRecord framing before the data: uint64 length, uint32 checksum
_RECORD_FOOTER = 4  # uint32 checksum of the data


@dataclass
class _PackedFile:
    """A source file to pack: its path, name in the shards and clean partner's name."""

    path: Path
    name: str
    clean_name: str | None = None


@dataclass
class _ShardWriter:
    """Writes records into numbered shards of at most ``limit`` bytes, noting offsets."""

    folder: Path
    limit: int
    shards: list[dict] = field(default_factory=list)
    _writer: object = None
    _size: int = 0

    def add(self, payload: bytes) -> tuple[int, int]:
        """Write one record; returns (shard number, offset of ``payload`` in the shard)."""
        import tensorflow as tf

        record = _RECORD_HEADER + len(payload) + _RECORD_FOOTER
        if self._writer is None or (self._size and self._size + record > self.limit):
            self.close()
            name = f"shard-{len(self.shards):05d}.tfrecord"
            self._writer = tf.io.TFRecordWriter(str(self.folder / name))
            self.shards.append({"file": name, "bytes": 0, "records": 0})
            self._size = 0
        offset = self._size + _RECORD_HEADER
        self._writer.write(payload)
        self._size += record
        self.shards[-1]["bytes"] = self._size
        self.shards[-1]["records"] += 1
        return len(self.shards) - 1, offset

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            shard = self.shards[-1]
            actual = (self.folder / shard["file"]).stat().st_size
            if actual != shard["bytes"]:  # the offsets in the manifest would be wrong
                path = self.folder / shard["file"]
                raise DataError(f"{path}: wrote {actual} bytes, expected {shard['bytes']}")


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _listing(source: Path, on_bad_image: str) -> tuple[str, str, list[_PackedFile], list, list]:
    """(kind, layout, files to pack, pairs as file indices, unpaired images as file indices)."""
    root = source.parent if source.is_file() else source
    paired = (source.is_dir() and detect_layout(source) is not None) or (
        source.is_file() and _is_pair_list(source)
    )
    if not paired:
        paths = find_images(source)
        files = [_PackedFile(p, _relative(p, root)) for p in paths]
        return "unpaired", "", files, [], list(range(len(files)))
    pairs, layout = find_pairs(source, on_bad_image)
    files, index_of, pair_indices = [], {}, []
    for pair in pairs:
        for path, partner in ((pair.rainy, pair.clean), (pair.clean, None)):
            if path not in index_of:
                index_of[path] = len(files)
                partner_name = None if partner is None else _relative(partner, root)
                files.append(_PackedFile(path, _relative(path, root), partner_name))
        pair_indices.append([index_of[pair.rainy], index_of[pair.clean]])
    return "paired", layout, files, pair_indices, []


def _is_pair_list(path: Path) -> bool:
    try:
        find_pairs(path)
    except DataError:
        return False
    return True


def _example(file: _PackedFile, data: bytes) -> tuple[bytes, int]:
    """(serialized tf.train.Example of the file, offset of its bytes in it)."""
    import tensorflow as tf

    def feature(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {"name": feature(file.name.encode()), "image": feature(data)}
    if file.clean_name is not None:
        features["clean_name"] = feature(file.clean_name.encode())
    payload = tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
    # Protocol buffers store bytes verbatim, so the file is a substring of the record.
    start = payload.find(data)
    if start < 0 or payload.find(data, start + 1) >= 0:
        raise DataError(f"{file.path}: cannot locate its bytes in the record unambiguously")
    return payload, start


def _header(path: Path) -> dict:
    """What the stream reads from a file's header, with the problem text minus the path."""
    from moss_tf.data.stream import _probe

    header = asdict(_probe(path))
    del header["path"]
    if header["problem"] is not None:
        header["problem"] = header["problem"].removeprefix(f"{path}: ")
    return header


def _prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: exists and is not a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise DataError(f"{output}: not empty; choose an empty folder or pass --overwrite")
        if not is_shard_folder(output):
            raise DataError(
                f"{output}: not empty and not a shard folder; refusing to delete it "
                "even with --overwrite"
            )
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)


def _say_progress(done: int, total: int, nbytes: int, shards: int) -> None:
    print(
        f"packed {done:,} of {total:,} files ({nbytes / 2**20:,.1f} MiB) into {shards} shard(s)",
        file=sys.stderr,
        flush=True,
    )


def pack_folder(
    source: str | Path,
    output: str | Path,
    *,
    shard_mb: float = 200.0,
    overwrite: bool = False,
    on_bad_image: str = "error",
    progress: Callable[[int, int, int, int], None] | None = _say_progress,
) -> dict:
    """Pack the images of ``source`` into TFRecord shards in ``output``; returns the manifest.

    Args:
        source: a paired layout, pair list, or folder / list of unpaired images.
        output: the shard folder; must be empty or absent unless ``overwrite``
            (which replaces an earlier shard folder, never any other folder).
        shard_mb: largest shard size in MiB (default 200; a larger file gets
            a shard of its own).
        on_bad_image: ``error`` (a rainy file without a clean partner stops
            packing, naming it) or ``skip``. Files the training stream cannot
            read are packed anyway; their problem is in the manifest, and
            training applies ``data.on_bad_image`` as for loose files.
        progress: called as ``progress(done, total, bytes, shards)`` every
            few seconds and at the end (None: silent).

    Raises:
        DataError: naming the folder or file at fault.
    """
    source, output = Path(source), Path(output)
    if is_shard_folder(source):
        raise DataError(f"{source}: already a shard folder")
    kind, layout, files, pairs, images = _listing(source, on_bad_image)
    _prepare_output(output, overwrite)
    writer = _ShardWriter(output, int(shard_mb * 2**20))
    entries, nbytes, last_report = [], 0, time.monotonic()
    for done, file in enumerate(files, start=1):
        entries.append(_pack_one(writer, file))
        nbytes += entries[-1]["length"]
        if progress is not None and time.monotonic() - last_report > 5.0:
            progress(done, len(files), nbytes, len(writer.shards))
            last_report = time.monotonic()
    writer.close()
    if progress is not None:
        progress(len(files), len(files), nbytes, len(writer.shards))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "layout": layout,
        "source": str(source.resolve()),
        "counts": {"files": len(files), "pairs": len(pairs), "images": len(images)},
        "shards": writer.shards,
        "files": entries,
        "pairs": pairs,
        "images": images,
    }
    temporary = output / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest), encoding="utf-8")
    temporary.replace(output / MANIFEST)  # written last: a partial folder has no manifest
    return manifest


def _pack_one(writer: _ShardWriter, file: _PackedFile) -> dict:
    """Write one file's record; returns its manifest entry."""
    try:
        data = file.path.read_bytes()
    except OSError as err:
        raise DataError(f"{file.path}: cannot read ({err})") from None
    payload, start = _example(file, data)
    shard, offset = writer.add(payload)
    return {
        "name": file.name,
        "shard": shard,
        "offset": offset + start,
        "length": len(data),
        **_header(file.path),
    }


def verify_shards(folder: str | Path) -> int:
    """Read every record (checksums checked) and compare with the manifest; returns file count.

    Raises:
        DataError: naming the shard (and file) that is corrupt or disagrees.
    """
    import tensorflow as tf

    shard_set = open_shards(Path(folder))
    members = {m.name: m for pair in shard_set.pairs for m in pair} | {
        m.name: m for m in shard_set.images
    }
    by_shard: dict[Path, list] = {}
    for member in members.values():
        by_shard.setdefault(member.shard, []).append(member)
    for shard, expected in by_shard.items():
        names = {m.name for m in expected}
        try:
            for record in tf.data.TFRecordDataset(str(shard)):
                example = tf.train.Example.FromString(record.numpy())
                name = example.features.feature["name"].bytes_list.value[0].decode()
                image = example.features.feature["image"].bytes_list.value[0]
                if name in names and members[name].read_bytes() != image:
                    raise DataError(f"{shard}: {name} is not where the manifest says")
                names.discard(name)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DataError(f"{shard}: corrupt ({err.message.splitlines()[0]})") from None
        if names:
            missing = f"{len(names)} file(s) of the manifest, e.g. {min(names)}"
            raise DataError(f"{shard}: lacks {missing}")
    return len(members)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m moss_tf.data.shards",
        description="Pack an image folder (any layout the data pipeline reads) into TFRecord "
        "shards holding the original file bytes, or verify a shard folder.",
    )
    parser.add_argument("source", nargs="?", help="folder or list file to pack")
    parser.add_argument("--output", help="shard folder to write (empty or absent)")
    parser.add_argument("--shard-mb", type=float, default=200.0, help="largest shard in MiB (200)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier shard folder")
    parser.add_argument(
        "--on-bad-image", choices=("error", "skip"), default="error", help="unpaired rainy files"
    )
    parser.add_argument("--verify", metavar="DIR", help="check every record of a shard folder")
    args = parser.parse_args(argv)
    if args.verify is None and (args.source is None or args.output is None):
        parser.error("give SOURCE and --output DIR (or --verify DIR)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (1 with a one-line error)."""
    args = _parse(argv)
    try:
        if args.verify is not None:
            count = verify_shards(args.verify)
            print(f"{args.verify}: {count:,} files, every record intact")
            return 0
        manifest = pack_folder(
            args.source,
            args.output,
            shard_mb=args.shard_mb,
            overwrite=args.overwrite,
            on_bad_image=args.on_bad_image,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    what = f"{counts['pairs']:,} pairs" if manifest["kind"] == "paired" else "images"
    shards = len(manifest["shards"])
    print(f"{args.output}: {counts['files']:,} files ({what}) in {shards} shard(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
