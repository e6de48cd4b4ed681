"""Checkpoints and run directories.

A run directory (``runs/<config name>`` by default) holds::

    config.yaml            resolved config of the stage that ran last
    model.weights.h5       the network to evaluate and export (best of the last stage)
    pretrain/ semi/        one folder per stage:
        config.yaml            resolved config of that stage
        checkpoints/last.npz   full training state, written every train.checkpoint_every steps
        checkpoints/best.npz   full training state at the best validation PSNR
        best.weights.h5        the online network at the best validation PSNR
        final.weights.h5       the online network after the last step
        logs/                  TensorBoard

A full training state is one ``.npz``: every variable of the online and
target networks (weights, memory items, batch-norm statistics, random-seed
states), the optimizer's variables and the step. Every file is written to a
temporary name and renamed into place, so a kill at any moment leaves the
previous file loadable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moss_tf.errors import CheckpointError, MossError
from moss_tf.train.run_dir import MODEL_WEIGHTS, trained_network_file

CONFIG_FILE = "config.yaml"

# A temporary file is created readable by its owner only; the file renamed
# into place gets the permissions a plain write would give (0666 less the umask).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path`` (atomic on POSIX).

    Raises:
        CheckpointError: naming ``path``, when the file system refuses (a full
            disk, no permission); the previous ``path``, if any, is unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as err:
        raise CheckpointError(_not_written(path, err)) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _not_written(path: Path, err: OSError) -> str:
    kept = "the previous one is kept unchanged" if path.is_file() else "nothing was written"
    return f"{path}: cannot write ({err.strerror or err}); {kept}"


def save_weights(network, path: str | Path) -> None:
    """Save a network's Keras weights atomically (``*.weights.h5``)."""

    def write(tmp):
        # Keras insists on the .weights.h5 suffix: write beside, then move.
        staged = Path(f"{tmp}.weights.h5")
        try:
            network.save_weights(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)

    atomic_write(path, write)


def save_state(path: str | Path, variables: Sequence, step: int, meta: dict) -> None:
    """Write a full training state: ``variables`` in order, the step and metadata."""
    arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    meta = {**meta, "step": int(step), "paths": [v.path for v in variables]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


# What a damaged, truncated or foreign .npz raises on reading.
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError)


def read_meta(path: str | Path) -> dict:
    """The metadata of a training state (step, stage, config, variable paths).

    Raises:
        CheckpointError: one line naming ``path``: missing, empty, unreadable
            or not a moss-tf checkpoint.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty checkpoint (0 bytes){_remedy(path)}")
        with np.load(path) as archive:
            meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except _UNREADABLE as err:
        reason = getattr(err, "strerror", None) or err
        raise CheckpointError(
            f"{path}: not a readable moss-tf checkpoint ({reason}){_remedy(path)}"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{path}: not a moss-tf checkpoint (no step in its metadata)")
    return meta


def _remedy(path: Path) -> str:
    """What to do about a damaged ``last.npz``: its ``best.npz`` is another full state."""
    best = path.with_name("best.npz")
    if path.name != "last.npz" or not best.is_file():
        return ""
    return (
        f"; to resume from the best checkpoint instead, copy {best} over it; "
        "to start the stage afresh, run without --resume"
    )


def restore_state(path: str | Path, variables: Sequence) -> dict:
    """Assign a training state written by :func:`save_state` to ``variables``.

    Returns:
        The metadata (with ``step``).

    Raises:
        CheckpointError: when the file is damaged or its variables do not fit
            (a checkpoint of another configuration), naming the first mismatch.
    """
    meta = read_meta(path)
    try:
        with np.load(path) as archive:
            arrays = [archive[f"v{i:05d}"] for i in range(len(meta["paths"]))]
    except _UNREADABLE as err:
        raise CheckpointError(f"{path}: damaged checkpoint ({err}){_remedy(Path(path))}") from None
    if len(arrays) != len(variables):
        raise CheckpointError(
            f"{path}: holds {len(arrays)} variables, this configuration has {len(variables)}: "
            "it was written with another model/stage configuration"
        )
    for saved_path, array, variable in zip(meta["paths"], arrays, variables, strict=True):
        if tuple(array.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{path}: variable {saved_path} has shape {tuple(array.shape)}, this "
                f"configuration expects {tuple(variable.shape)} ({variable.path}): "
                "the checkpoint was written with another model configuration"
            )
    for array, variable in zip(arrays, variables, strict=True):
        variable.assign(array)
    return meta


def state_variables(trainer) -> list:
    """Everything a resumed run needs, in a fixed order."""
    variables = list(trainer.online.variables)
    if trainer.target is not None:
        variables += list(trainer.target.variables)
    variables.append(trainer.mixture_seeds.state)
    variables += list(trainer.optimizer.variables)
    return variables


def check_writable(folder: str | Path, needed_bytes: int = 0) -> None:
    """Fail early, naming ``folder``, when it cannot be written or the disk is full."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as handle:
            handle.write(b"x")
            handle.flush()
    except OSError as err:
        raise MossError(f"{folder}: run directory is not writable ({err.strerror})") from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise MossError(
            f"{folder}: only {free / 2**20:.0f} MiB free on its disk, "
            f"checkpoints need about {needed_bytes / 2**20:.0f} MiB"
        )


def load_network(
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    config_path: str | Path | None = None,
):
    """Load the network to evaluate or export, with its experiment config.

    Args:
        run_dir: a run directory: its ``config.yaml`` and ``model.weights.h5``.
        checkpoint: a ``*.weights.h5`` file (with ``config.yaml`` beside it or in
            its parent) or a full training state ``*.npz`` (its online network).
        config_path: a YAML config to use instead of the one found.

    Returns:
        ``(network, config)``: a built :class:`MOSSNet` and its
        :class:`~moss_tf.config.ExperimentConfig`.
    """
    from moss_tf.config import load_config
    from moss_tf.nn.network import MOSSNet

    checkpoint = trained_network_file(run_dir, checkpoint)
    if config_path is None:
        candidates = [checkpoint.parent / CONFIG_FILE, checkpoint.parent.parent / CONFIG_FILE]
        if checkpoint.parent.name == "checkpoints":
            candidates.insert(0, checkpoint.parent.parent / CONFIG_FILE)
        config_path = next((c for c in candidates if c.is_file()), None)
        if config_path is None:
            raise CheckpointError(
                f"{checkpoint}: no {CONFIG_FILE} beside it or in its parent; pass --config"
            )
    cfg = load_config(config_path)
    network = MOSSNet(**cfg.model.to_dict(), name="online")
    network.build()
    if checkpoint.suffix == ".npz":
        meta = read_meta(checkpoint)
        count = len(network.variables)
        with np.load(checkpoint) as archive:
            arrays = [archive[f"v{i:05d}"] for i in range(min(count, len(meta["paths"])))]
        _assign_checked(checkpoint, network.variables, arrays)
    else:
        try:
            network.load_weights(checkpoint)
        except (ValueError, OSError) as err:
            raise CheckpointError(
                f"{checkpoint}: does not fit the model of {config_path} ({err})"
            ) from None
    return network, cfg


def _assign_checked(source, variables, arrays) -> None:
    if len(arrays) != len(variables) or any(
        tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables, strict=False)
    ):
        raise CheckpointError(f"{source}: does not fit this model configuration")
    for array, variable in zip(arrays, variables, strict=True):
        variable.assign(array)


def describe(path: str | Path) -> str:
    """One line about a training state, for logs."""
    meta = read_meta(path)
    return f"{path} (stage {meta.get('stage')}, step {meta['step']})"


__all__ = [
    "CONFIG_FILE",
    "MODEL_WEIGHTS",
    "CheckpointError",
    "atomic_write",
    "check_writable",
    "describe",
    "load_network",
    "read_meta",
    "restore_state",
    "save_state",
    "save_weights",
    "state_variables",
]
