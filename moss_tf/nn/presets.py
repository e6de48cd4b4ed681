"""Presets: a trained network in a folder, loadable by name (the layout keras-hub uses).

A preset folder holds::

    config.json         {"class_name": "MOSSNet", "config": {constructor arguments}}
    model.weights.h5    the weights (Keras)
    metadata.json       what it is: description, training recipe and time, scores

The presets that ship inside the package live in ``moss_tf/presets/``;
``MOSSNet.from_preset("moss_release")`` loads one by name, and any folder of
this layout loads by path; :func:`save_preset` writes one. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

from moss_tf.errors import CheckpointError
from moss_tf.nn.defaults import network_defaults

__all__ = [
    "SHIPPED_PRESETS",
    "preset_dir",
    "preset_names",
    "read_metadata",
    "read_preset",
    "save_preset",
]

SHIPPED_PRESETS = Path(__file__).resolve().parents[1] / "presets"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"


def preset_names() -> list[str]:
    """The presets shipped with the package, e.g. ``["moss_release"]``."""
    return sorted(p.parent.name for p in SHIPPED_PRESETS.glob(f"*/{CONFIG_FILE}"))


def preset_dir(preset: str | Path) -> Path:
    """The folder of ``preset``: a shipped preset's name, or a path to a preset folder.

    Raises:
        CheckpointError: naming the preset and the shipped ones.
    """
    path = Path(preset)
    for folder in (path, SHIPPED_PRESETS / str(preset)):
        if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
            return folder
    raise CheckpointError(
        f"{preset}: not a preset (a shipped one: {', '.join(preset_names()) or 'none'}; "
        f"or a folder holding {CONFIG_FILE} and {WEIGHTS_FILE})"
    )


def read_metadata(preset: str | Path) -> dict:
    """The preset's ``metadata.json`` ({} when it has none)."""
    path = preset_dir(preset) / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_preset(preset: str | Path) -> tuple[dict, Path]:
    """``(constructor arguments, weights file)`` of a preset; builds nothing.

    :meth:`MOSSNet.from_preset <moss_tf.nn.network.MOSSNet.from_preset>` builds
    the network from them.
    """
    folder = preset_dir(preset)
    spec = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    if spec.get("class_name") != "MOSSNet" or not isinstance(spec.get("config"), dict):
        raise CheckpointError(f"{folder / CONFIG_FILE}: not a MOSSNet preset")
    return spec["config"], folder / WEIGHTS_FILE


def save_preset(network, folder: str | Path, metadata: dict | None = None) -> Path:
    """Write ``network`` as a preset folder (created if missing); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {key: getattr(network, key) for key in network_defaults()}
    spec = {"class_name": "MOSSNet", "config": config}
    (folder / CONFIG_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    network.save_weights(folder / WEIGHTS_FILE)
    if metadata is not None:
        text = json.dumps(metadata, indent=2, sort_keys=False) + "\n"
        (folder / METADATA_FILE).write_text(text, encoding="utf-8")
    return folder
