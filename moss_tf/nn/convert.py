"""Official PyTorch MOSS weights -> :class:`~moss_tf.nn.network.MOSSNet`.

This module is the one place where the released network's names appear: its
hyper-parameter names (``ngf``, ``delta``, ...) and its ``state_dict`` keys.

Python::

    state = dict(np.load("netG.npz"))            # state_dict key -> array
    net = from_official(state, {"ngf": 16, "kdim": 512})

Command line::

    python -m moss_tf.nn.convert netG.pth --output converted/model.weights.h5

writes Keras weights and a ``config.yaml`` beside them, so that
``evaluate.py --checkpoint converted/model.weights.h5`` and
``python -m moss_tf.export --checkpoint ...`` use them directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from moss_tf.errors import MossError
from moss_tf.nn.defaults import network_defaults

# Official hyper-parameter name -> MOSSNet argument (the released defaults are MOSSNet's).
OFFICIAL_NAMES = {
    "ngf": "base_channels",
    "delta": "channel_step",
    "num_blocks": "num_stages",
    "num_scales": "num_resampling_stages",
    "num_layers": "blocks_per_stage",
    "kdim": "memory_items",
    "moving_average_rate": "memory_decay",
}


class ConversionError(MossError):
    """The official state dict does not fit the network; the message lists every key."""


def model_kwargs_from_official(official_config: Mapping) -> dict:
    """Translate an official config (``ngf``, ``kdim``, ...) into MOSSNet arguments.

    Missing names take the released defaults; unknown names are an error.
    """
    unknown = sorted(set(official_config) - set(OFFICIAL_NAMES))
    if unknown:
        raise ConversionError(
            f"unknown official config names: {', '.join(unknown)}; "
            f"known: {', '.join(OFFICIAL_NAMES)}"
        )
    defaults = network_defaults()
    kwargs = {}
    for official, ours in OFFICIAL_NAMES.items():
        value = official_config.get(official, defaults[ours])
        kwargs[ours] = float(value) if isinstance(defaults[ours], float) else int(value)
    return kwargs


def _conv_kernel(array):
    """PyTorch ``(out, in, kh, kw)`` -> Keras ``(kh, kw, in, out)``."""
    return np.transpose(array, (2, 3, 1, 0))


def _vector(array):
    """PyTorch ``(1, C, 1, 1)`` -> Keras ``(C,)``."""
    return np.reshape(array, (-1,))


def _identity(array):
    return array


def official_weight_map(net) -> dict[str, tuple[object, Callable]]:
    """Official ``state_dict`` key -> (Keras variable of ``net``, array transform)."""
    mapping = {"head.weight": (net.head.kernel, _conv_kernel)}

    def blocks(prefix, stages):
        for i, stage in enumerate(stages):
            for j, block in enumerate(stage):
                key = f"{prefix}.{prefix}{i}.{j}"
                mapping[f"{key}.conv1.weight"] = (block.conv1.kernel, _conv_kernel)
                mapping[f"{key}.conv2.weight"] = (block.conv2.kernel, _conv_kernel)
                if block.shortcut is not None:
                    mapping[f"{key}.translation.weight"] = (block.shortcut.kernel, _conv_kernel)

    blocks("enc", net.encoder_stages)
    if net.use_memory:
        mapping["memory.units.weight"] = (net.memory.items, _identity)
    blocks("dec", net.decoder_stages)
    for i, fuse in enumerate(net.fusions):
        key = f"fuse.fuse{i}"
        mapping[f"{key}.affine_gamma"] = (fuse.affine_gamma, _vector)
        mapping[f"{key}.affine_beta"] = (fuse.affine_beta, _vector)
        mapping[f"{key}.norm.running_mean"] = (fuse.moving_mean, _identity)
        mapping[f"{key}.norm.running_var"] = (fuse.moving_variance, _identity)
        mapping[f"{key}.alpha.weight"] = (fuse.alpha.kernel, _conv_kernel)
        mapping[f"{key}.gamma.weight"] = (fuse.gamma.kernel, _conv_kernel)
        mapping[f"{key}.beta.weight"] = (fuse.beta.kernel, _conv_kernel)
    mapping["tail.weight"] = (net.tail.kernel, _conv_kernel)
    mapping["tail.bias"] = (net.tail.bias, _identity)
    return mapping


# Buffers PyTorch keeps that carry nothing the network needs.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def load_official_state(net, state: Mapping[str, np.ndarray]) -> None:
    """Assign an official ``state_dict`` (key -> array) to a built ``net``.

    Raises:
        ConversionError: listing every missing, unknown and mis-shaped key.
    """
    mapping = official_weight_map(net)
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    missing = sorted(set(mapping) - set(state))
    unknown = sorted(set(state) - set(mapping))
    misshaped = []
    converted = {}
    for key in sorted(set(mapping) & set(state)):
        variable, transform = mapping[key]
        array = transform(np.asarray(state[key], dtype=np.float32))
        if tuple(array.shape) != tuple(variable.shape):
            misshaped.append(
                f"{key}: got {tuple(np.shape(state[key]))}, "
                f"expected {tuple(variable.shape)} after conversion"
            )
        converted[key] = array
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown keys ({len(unknown)}): {', '.join(unknown)}")
    if misshaped:
        problems.append(f"mis-shaped keys ({len(misshaped)}): {'; '.join(misshaped)}")
    if problems:
        raise ConversionError("the state dict does not fit the network: " + " | ".join(problems))
    for key, array in converted.items():
        mapping[key][0].assign(array)


def from_official(state: Mapping[str, np.ndarray], official_config: Mapping | None = None):
    """Build a :class:`MOSSNet` carrying the official weights.

    Args:
        state: official PyTorch ``state_dict`` key -> NumPy array (NCHW kernels).
        official_config: official names (``ngf``, ``delta``, ``num_blocks``,
            ``num_scales``, ``num_layers``, ``kdim``, ``moving_average_rate``);
            missing names take the released defaults.

    Returns:
        A built ``MOSSNet``: call it on NHWC float32 images in [-1, 1] with a
        ``training`` flag; it returns [-1, 1].

    Example:
        >>> arrays = np.load("official_netg_small.npz")
        >>> state = {k[6:]: arrays[k] for k in arrays.files if k.startswith("param/")}
        >>> net = from_official(state, {"ngf": 8, "delta": 8, "num_layers": 2, "kdim": 32})
    """
    from moss_tf.nn.network import MOSSNet

    net = MOSSNet(**model_kwargs_from_official(official_config or {}))
    net.build()
    load_official_state(net, state)
    return net


def read_state_dict(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read an official checkpoint: ``.npz`` (keys, optionally ``param/``-prefixed,
    and ``config/<name>`` entries) or ``.pth`` (needs PyTorch).

    Returns:
        ``(state, official_config)``; the config is empty when the file has none.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: checkpoint not found")
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            files = arrays.files
            config = {
                k[len("config/") :]: arrays[k].item() for k in files if k.startswith("config/")
            }
            has_prefix = any(k.startswith("param/") for k in files)
            state = {
                (k[len("param/") :] if has_prefix else k): arrays[k]
                for k in files
                if (k.startswith("param/") if has_prefix else not k.startswith("config/"))
            }
        return state, config
    if path.suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise ConversionError(
                f"{path}: reading .pth files needs PyTorch (pip install torch), "
                "or convert the state dict to .npz with numpy first"
            ) from None
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "netG", "model"):
            if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
                loaded = loaded[key]
        state = {
            k.removeprefix("module."): v.detach().cpu().numpy()
            for k, v in loaded.items()
            if hasattr(v, "detach")
        }
        return state, {}
    raise ConversionError(f"{path}: expected a .npz or .pth checkpoint")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moss_tf.nn.convert",
        description="Convert the official PyTorch MOSS weights to Keras weights.",
    )
    parser.add_argument("checkpoint", help="official state dict: .npz, or .pth with torch")
    parser.add_argument(
        "--output", required=True, help="Keras weights file to write (*.weights.h5)"
    )
    for official, ours in OFFICIAL_NAMES.items():
        default = network_defaults()[ours]
        parser.add_argument(
            f"--{official.replace('_', '-')}",
            dest=official,
            type=type(default),
            default=None,
            help=f"official hyper-parameter (default: from the file, else {default})",
        )
    args = parser.parse_args(argv)
    output = Path(args.output)
    if not output.name.endswith(".weights.h5"):
        parser.error(f"--output {output}: the file name must end in .weights.h5")
    try:
        state, config = read_state_dict(args.checkpoint)
        config.update({k: getattr(args, k) for k in OFFICIAL_NAMES if getattr(args, k) is not None})
        net = from_official(state, config)
    except MossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from moss_tf.config import ExperimentConfig, ModelConfig, save_config

    output.parent.mkdir(parents=True, exist_ok=True)
    net.save_weights(output)
    cfg = ExperimentConfig(name=output.parent.name or "converted")
    cfg.model = ModelConfig(**model_kwargs_from_official(config))
    save_config(cfg, output.parent / "config.yaml")
    print(f"wrote {output} and {output.parent / 'config.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
