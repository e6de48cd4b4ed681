"""Command-line pieces shared by the commands (``moss-train``, ``moss-evaluate``, ``moss-export``).

Nothing here imports TensorFlow at module level: the commands parse and check
their arguments and config first, so a mistake is reported at once, and only
then start TensorFlow with :func:`start_tensorflow`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

DEFAULT_CONFIG = "demo"  # moss_tf/configs/demo.yaml
# The trained model that ships with the package (saved_models/MODEL_CARD.md).
SHIPPED_PRESET = "moss_release"
VERBOSE_ENV = "MOSS_VERBOSE"

# Lines TensorFlow's C++ start-up writes to stderr before its logging is set
# up, so TF_CPP_MIN_LOG_LEVEL cannot hide them. They read like failures.
_ABSL_NOTICE = r"WARNING: All log messages before absl::InitializeLog\(\) is called"
# On a machine without an NVIDIA driver these only say that no GPU is used.
_NO_GPU_NOTICES = r"Could not find cuda drivers on your machine|failed call to cuInit"
# moss_tf turns oneDNN on itself (moss_tf/__init__.py); TensorFlow says so twice.
_ONEDNN_NOTICE = r"oneDNN custom operations are on"


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--config FILE`` and ``--set KEY=VALUE [KEY=VALUE ...]`` (repeatable)."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set train.steps=100 train.batch_size=8 (repeatable)",
    )


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: also show TensorFlow's start-up and C++ log lines."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=_verbose_by_environment(),
        help=f"show TensorFlow's start-up and log lines (or set {VERBOSE_ENV}=1)",
    )


def _verbose_by_environment() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def add_model_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--run-dir DIR`` or ``--checkpoint FILE``: where a trained network comes from."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    source.add_argument("--checkpoint", help="a *.weights.h5 file instead of a run directory")
    source.add_argument(
        "--preset",
        help=f"a shipped preset by name (e.g. {SHIPPED_PRESET}) or a preset folder",
    )


def add_inference_memory_argument(parser: argparse.ArgumentParser) -> None:
    """``--inference-memory per_image|frozen``: the memory update at inference."""
    parser.add_argument(
        "--inference-memory",
        choices=("per_image", "frozen"),
        help="the memory at inference: per_image updates it from each image (or photo) alone "
        "(the released network run one image at a time); frozen reads the trained memory "
        "unchanged (fully local, cheaper). Default: the model config's, per_image unless set",
    )


def use_shipped_model_unless_given(args: argparse.Namespace) -> bool:
    """Use the shipped preset when no model source (run dir, checkpoint, preset) was given.

    Returns whether it did (the caller says so to the user).
    """
    if args.run_dir or args.checkpoint or args.preset:
        return False
    args.preset = SHIPPED_PRESET
    return True


def describe_os_error(err: OSError) -> str:
    """One line for an operating-system error: the file and the system's reason."""
    reason = err.strerror or str(err)
    names = [name for name in (err.filename, err.filename2) if name]
    return f"{' -> '.join(map(str, names))}: {reason}" if names else reason


def report_error(err: Exception, code: int = 1) -> int:
    """Print ``error: ...`` in one line and return the exit ``code``.

    A :class:`MossError` says what is wrong in its own words; an ``OSError``
    (the machine's: a full disk, a vanished mount) names the file and the
    system's reason (:func:`describe_os_error`).
    """
    message = describe_os_error(err) if isinstance(err, OSError) else str(err)
    print(f"error: {message}", file=sys.stderr)
    return code


def default_run_dir(config_name: str) -> Path:
    """``runs/<config name>``, relative to the current directory."""
    return Path("runs") / config_name


def load_experiment(args: argparse.Namespace, check_paths: bool = False):
    """The experiment config of ``--config`` (default demo) with the ``--set`` overrides.

    With ``check_paths``, also every data folder or file it names must exist.

    Raises:
        ConfigError: naming the file or the ``--set KEY=VALUE`` at fault.
    """
    from moss_tf.config import ConfigError, blame, load_config

    path = args.config or DEFAULT_CONFIG
    cfg = load_config(path, args.overrides)
    if check_paths:
        try:
            check_data_paths(cfg.data)
        except ConfigError as err:
            raise blame(err, args.overrides, path) from None
    return cfg


def check_data_paths(data) -> None:
    """Raise ConfigError, naming the key, for a path of the ``data`` section that does not exist."""
    from moss_tf.data.data_config import BUILTIN, resolve_path

    paths = {
        "data.labeled.pairs": data.labeled.pairs,
        "data.labeled.clean": data.labeled.clean,
        "data.labeled.rain.streaks": data.labeled.rain.streaks,
        "data.unlabeled.rainy": data.unlabeled.rainy,
        "data.unlabeled.clean": data.unlabeled.clean,
        "data.unlabeled.rain.streaks": data.unlabeled.rain.streaks,
        "data.test": data.test,
        **{f"data.validation.{name}": path for name, path in data.validation.items()},
        **{
            f"data.labeled.extra_clean[{i}]": path
            for i, path in enumerate(data.labeled.extra_clean)
        },
    }
    for key, value in paths.items():
        if value is not None and value != BUILTIN:
            resolve_path(value, key)


def start_tensorflow(verbose: bool = False):
    """Import TensorFlow and find its devices; returns the ``tensorflow`` module.

    Unless ``verbose`` (or ``MOSS_VERBOSE=1``), C++ log lines below ERROR are
    off and the start-up lines that only say "no GPU here" (on a machine
    without an NVIDIA driver) or "oneDNN is on" are dropped; every other
    line TensorFlow writes meanwhile is shown.
    """
    if "tensorflow" in sys.modules:  # already started (tests, or a library user)
        return sys.modules["tensorflow"]
    if verbose or _verbose_by_environment():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    noise = f"{_ABSL_NOTICE}|{_ONEDNN_NOTICE}"
    noise += "" if _has_nvidia_driver() else f"|{_NO_GPU_NOTICES}"
    with _stderr_without(re.compile(noise)):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # CUDA's start-up happens here, once
    return tf


def _has_nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()


@contextlib.contextmanager
def _stderr_without(noise: re.Pattern):
    """Hold what is written to file descriptor 2 meanwhile; replay it minus ``noise`` lines.

    TensorFlow's C++ code writes to the descriptor, not to ``sys.stderr``,
    hence the descriptor-level capture.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.writelines(
                line for line in text.splitlines(keepends=True) if not noise.search(line)
            )
            sys.stderr.flush()


def check_model_source(args: argparse.Namespace, cfg) -> None:
    """Raise CheckpointError when ``--checkpoint`` or the run directory holds no network.

    Also ConfigError for a ``--set model.KEY=VALUE``: the network's settings come
    with the trained network, and changing them would not match its weights.
    """
    from moss_tf.config import ConfigError
    from moss_tf.train.run_dir import trained_network_file

    model_overrides = [o for o in args.overrides if o.split("=", 1)[0].startswith("model.")]
    if model_overrides:
        raise ConfigError(
            f"--set {model_overrides[0]}: the network's settings come with the trained "
            "network (the config.yaml beside its weights) and cannot be changed here; "
            "for the memory at inference use --inference-memory"
        )
    if args.preset:
        from moss_tf.nn.presets import preset_dir

        preset_dir(args.preset)
    elif args.checkpoint:
        trained_network_file(checkpoint=args.checkpoint)
    else:
        trained_network_file(run_dir=args.run_dir or default_run_dir(cfg.name))


def load_trained_network(args: argparse.Namespace, cfg):
    """The network named by ``--preset``, ``--checkpoint`` or ``--run-dir`` (default
    ``runs/<cfg.name>``).

    Returns:
        ``(network, source)``: a built MOSSNet and the path it came from.
    """
    from moss_tf.nn.network import MOSSNet
    from moss_tf.nn.presets import preset_dir
    from moss_tf.train.checkpoints import load_network

    if args.preset:
        network, source = MOSSNet.from_preset(args.preset), preset_dir(args.preset)
    elif args.checkpoint:
        network, _ = load_network(checkpoint=args.checkpoint, config_path=args.config)
        source = Path(args.checkpoint)
    else:
        source = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name)
        network, _ = load_network(run_dir=source)
    mode = getattr(args, "inference_memory", None)
    return (network.with_inference_memory(mode) if mode else network), source
