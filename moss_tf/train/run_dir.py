"""Where a training stage keeps its files, and the checks made before it starts.

No TensorFlow here: ``train.py`` runs these checks before importing it, so a
missing pretrained network or an unwritable run directory is reported at once.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from moss_tf.errors import CheckpointError, MossError, TrainingError
from moss_tf.files import check_writable_folder

MODEL_WEIGHTS = "model.weights.h5"


@dataclass
class StagePaths:
    """Where one stage of a run keeps its files."""

    run_dir: Path
    stage: str
    folder: Path = field(init=False)

    def __post_init__(self):
        self.folder = self.run_dir / self.stage

    @property
    def last(self) -> Path:
        return self.folder / "checkpoints" / "last.npz"

    @property
    def best(self) -> Path:
        return self.folder / "checkpoints" / "best.npz"

    @property
    def best_weights(self) -> Path:
        return self.folder / "best.weights.h5"

    @property
    def final_weights(self) -> Path:
        return self.folder / "final.weights.h5"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"


def initial_weights(
    stage: str, run_dir: Path, resume: bool, init: str | Path | None
) -> Path | None:
    """The network weights a stage starts from, checked to exist.

    ``semi`` starts from the pretrained network that ``evaluate.py`` scored
    after stage ``pretrain`` (``<run_dir>/pretrain/best.weights.h5``: the best
    validation, else the last step) unless ``init`` names other weights or
    the stage resumes from its checkpoint.

    Raises:
        TrainingError: saying what to run (or pass) when the file is missing.
    """
    resuming = resume and StagePaths(run_dir, stage).last.is_file()
    if stage == "semi" and init is None and not resuming:
        init = StagePaths(run_dir, "pretrain").best_weights
        if not init.is_file():
            raise TrainingError(
                f"stage semi starts from the pretrained network, but {init} does not exist: "
                f"run python train.py --stage pretrain --run-dir {run_dir} first "
                "(or pass --init WEIGHTS)"
            )
    if init is not None and not Path(init).is_file():
        raise TrainingError(f"--init {init}: file not found")
    return Path(init) if init is not None else None


def check_can_create(folder: Path) -> None:
    """Raise TrainingError, naming ``folder``, when it cannot be created or written.

    Creates nothing that stays: see :func:`check_writable_folder`.
    """
    try:
        existing = check_writable_folder(folder, "run directory")
    except MossError as err:
        raise TrainingError(str(err)) from None
    if shutil.disk_usage(existing).free < 64 * 2**20:
        raise TrainingError(f"{folder}: less than 64 MiB free on its disk for checkpoints")


def trained_network_file(run_dir: str | Path | None = None, checkpoint: str | Path | None = None):
    """The weights file of a run directory (its ``model.weights.h5``) or ``checkpoint``.

    Raises:
        CheckpointError: when it does not exist, saying what to run.
    """
    if (run_dir is None) == (checkpoint is None):
        raise CheckpointError("give exactly one of a run directory or a checkpoint file")
    if run_dir is not None:
        checkpoint = Path(run_dir) / MODEL_WEIGHTS
        if not checkpoint.is_file():
            raise CheckpointError(
                f"no trained model in {run_dir} ({MODEL_WEIGHTS} is missing): "
                "run python train.py --stage pretrain first"
            )
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint not found")
    return checkpoint
