"""A user study built from folders: the rainy originals and one result folder per method.

Layout (docs/method.md §5)::

    originals/   rain_01.jpg  rain_02.jpg ...   the real rainy photos
    moss/        rain_01.png  rain_02.png ...   one folder per method,
    jorder/      rain_01.png  rain_02.png ...   same file stems as the originals

Files are matched by stem, so a method may save PNG results for JPEG
originals. Every method must have a result for every original; the error says
which method lacks which file. Files in a method folder without an original
are ignored (a method may have been run on more photos than the study uses).

Example::

    study = build_study("originals", {"moss": "out/moss", "jorder": "out/jorder"})
    study.result("moss", "rain_01")  # -> Path("out/moss/rain_01.png")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moss_tf.errors import MossError

__all__ = ["IMAGE_SUFFIXES", "Study", "StudyError", "build_study", "parse_method_arg"]

# Formats Pillow decodes; every file is served re-encoded as a lossless PNG of
# its decoded pixels (moss_tf.study.images), so the format tells no method.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


class StudyError(MossError, ValueError):
    """A study definition, vote database or command-line value is wrong."""


@dataclass(frozen=True)
class Study:
    """The images and methods of one user study, with the file behind each image.

    Attributes:
        methods: method names in the order given by the user (the order of
            tables and plots; evaluators never see it).
        images: image stems, sorted.
        originals: image stem -> rainy original file.
        results: method name -> image stem -> that method's result file.
    """

    methods: tuple[str, ...]
    images: tuple[str, ...]
    originals: Mapping[str, Path]
    results: Mapping[str, Mapping[str, Path]]

    def original(self, image: str) -> Path:
        """The rainy original of ``image`` (a stem from :attr:`images`)."""
        return self.originals[image]

    def result(self, method: str, image: str) -> Path:
        """The result of ``method`` on ``image``."""
        return self.results[method][image]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible form (paths as strings); inverse of :meth:`from_dict`."""
        return {
            "methods": list(self.methods),
            "images": list(self.images),
            "originals": {image: str(path) for image, path in self.originals.items()},
            "results": {
                method: {image: str(path) for image, path in files.items()}
                for method, files in self.results.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Study:
        """Rebuild a study saved by :meth:`to_dict` (files are not re-checked)."""
        return cls(
            methods=tuple(data["methods"]),
            images=tuple(data["images"]),
            originals={image: Path(path) for image, path in data["originals"].items()},
            results={
                method: {image: Path(path) for image, path in files.items()}
                for method, files in data["results"].items()
            },
        )


def parse_method_arg(text: str) -> tuple[str, Path]:
    """Split a command-line ``NAME=DIR`` into the method name and its folder.

    >>> parse_method_arg("moss=out/moss")
    ('moss', PosixPath('out/moss'))
    """
    name, sep, folder = text.partition("=")
    name = name.strip()
    if not sep or not name or not folder:
        raise StudyError(f"--method {text!r}: expected NAME=DIR, e.g. --method moss=results/moss")
    return name, Path(folder)


def build_study(
    originals: str | Path,
    methods: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
) -> Study:
    """Build and validate a study from an originals folder and one folder per method.

    Args:
        originals: folder of the rainy originals (files with a suffix in
            :data:`IMAGE_SUFFIXES`; other files are ignored).
        methods: method name -> result folder, as a mapping or as
            ``(name, folder)`` pairs (pairs let a repeated name be reported).
            At least two methods.

    Returns:
        The :class:`Study`, methods in the given order, images sorted by stem.

    Raises:
        StudyError: a folder is missing or holds no image, a method name is
            empty or repeated, fewer than two methods, two files of one folder
            share a stem, or a method lacks results (every missing file named).
    """
    pairs = list(methods.items()) if isinstance(methods, Mapping) else list(methods)
    names = [name for name, _ in pairs]
    if any(not name.strip() for name in names):
        raise StudyError("a method name is empty")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise StudyError(f"method names must be unique; repeated: {', '.join(repeated)}")
    if len(pairs) < 2:
        raise StudyError(f"a study compares at least 2 methods, got {len(pairs)}: {names}")

    original_files = _images_by_stem(Path(originals), "originals")
    images = tuple(sorted(original_files))
    results: dict[str, dict[str, Path]] = {}
    missing: list[str] = []
    for name, folder in pairs:
        files = _images_by_stem(Path(folder), f"method {name!r}")
        lacking = [original_files[image].name for image in images if image not in files]
        if lacking:
            missing.append(
                f"method {name!r} ({folder}) lacks {len(lacking)} of {len(images)} "
                f"originals: {', '.join(lacking)}"
            )
        results[name] = {image: files[image] for image in images if image in files}
    if missing:
        raise StudyError(
            "every method needs a result with the same file stem as each original:\n  "
            + "\n  ".join(missing)
        )
    return Study(tuple(names), images, original_files, results)


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """Stem -> file for the image files directly inside ``folder``."""
    if not folder.is_dir():
        raise StudyError(f"{what}: folder {folder} does not exist")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if (
            path.name.startswith(".")
            or path.suffix.lower() not in IMAGE_SUFFIXES
            or not path.is_file()
        ):
            continue
        if path.stem in files:
            raise StudyError(
                f"{what}: {files[path.stem].name} and {path.name} in {folder} share the "
                f"stem {path.stem!r}; keep one"
            )
        files[path.stem] = path.resolve()
    if not files:
        raise StudyError(f"{what}: folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files
