"""The network's defaults, read from ``MOSSNet.__init__`` without starting TensorFlow.

The constructor's signature in :mod:`moss_tf.nn.network` is the one place the
network's hyper-parameters and their defaults are written. The experiment
config (``model:`` section), the PyTorch conversion and the benchmarks take
them from here; this module reads them from the source text, so a config can be
checked in well under a second, before TensorFlow is imported.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

__all__ = ["MEMORY_MODES", "network_defaults"]

# How the memory is updated at inference: ``per_image`` (each image's own,
# batch-independent), ``batch`` (the released network's per-batch update) or
# ``frozen`` (the trained memory read unchanged).
MEMORY_MODES = ("per_image", "batch", "frozen")

_NETWORK_SOURCE = Path(__file__).with_name("network.py")


@functools.cache
def network_defaults() -> dict[str, object]:
    """``MOSSNet.__init__``'s keyword defaults, e.g. ``{"base_channels": 16, ...}``."""
    tree = ast.parse(_NETWORK_SOURCE.read_text(encoding="utf-8"))
    init = next(
        node
        for cls in tree.body
        if isinstance(cls, ast.ClassDef) and cls.name == "MOSSNet"
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    arguments = init.args.args[-len(init.args.defaults) :]
    return {
        arg.arg: ast.literal_eval(default)
        for arg, default in zip(arguments, init.args.defaults, strict=True)
    }
