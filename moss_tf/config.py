"""Experiment configuration: YAML -> typed dataclasses -> constructors.

One flow for every entry point::

    cfg = load_config("configs/demo.yaml", overrides=["train.steps=100"])
    net = MOSSNet(**cfg.model.to_dict())

Unknown keys, wrong types and impossible values raise :class:`ConfigError`
naming the file and the dotted key at fault. YAML is read with a
``yaml.SafeLoader`` (nothing in a config file can execute code) that also
refuses what no config needs and a hostile file uses to exhaust memory:
anchors and aliases (``&a`` / ``*a``: a few hundred bytes of them expand to
gigabytes), files over :data:`MAX_CONFIG_BYTES`, single values over
:data:`MAX_VALUE_CHARS` characters and nesting deeper than :data:`MAX_DEPTH`.
Values quoted in error messages are shortened.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moss_tf.data.data_config import DataConfig
from moss_tf.errors import ConfigError
from moss_tf.nn.defaults import MEMORY_MODES, network_defaults

LR_SCHEDULES = ("constant", "cosine")
# train.select_floor's value for "above this split's rainy input".
FLOOR_INPUT = "input"
# The configs that ship with the package (`--config NAME` finds them by name).
SHIPPED_CONFIGS = Path(__file__).with_name("configs")
# train.mixed_precision -> the Keras policy it trains under (None: float32).
MIXED_PRECISION_POLICIES = {
    False: None,
    True: "mixed_float16",
    "float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
}

# Limits on what a config file may hold (see the module docstring). The
# shipped configs are under 4 kB, their longest value (a path) under 100 characters.
MAX_CONFIG_BYTES = 256 * 1024
MAX_VALUE_CHARS = 4096  # a path (Linux's PATH_MAX)
MAX_DEPTH = 16

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_VALUE_CHARS",
    "ConfigError",
    "ExperimentConfig",
    "ModelConfig",
    "OverrideError",
    "SemiConfig",
    "TrainConfig",
    "blame",
    "config_from_dict",
    "find_config",
    "load_config",
    "parse_override",
    "save_config",
]


class Section:
    """Mix-in for config dataclasses: dict round trip and value checks."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str) -> None:
        """Raise ConfigError for impossible values; ``where`` is the key prefix."""


def _check(condition: bool, where: str, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}.{key}: {message}" if where else f"{key}: {message}")


@dataclass
class ModelConfig(Section):
    """The network's hyper-parameters; keys equal ``MOSSNet`` arguments.

    Official names (docs/method.md §1) in brackets: base_channels (ngf), channel_step
    (delta), num_stages (num_blocks), num_resampling_stages (num_scales),
    blocks_per_stage (num_layers), memory_items (kdim), memory_decay
    (moving_average_rate). ``inference_memory`` is the memory update at
    inference: ``per_image`` (each image's own, batch-independent),
    ``batch`` (the released network's per-batch update) or ``frozen``.
    """

    # The defaults are MOSSNet's own (moss_tf/nn/network.py), written there only.
    base_channels: int = network_defaults()["base_channels"]
    channel_step: int = network_defaults()["channel_step"]
    num_stages: int = network_defaults()["num_stages"]
    num_resampling_stages: int = network_defaults()["num_resampling_stages"]
    blocks_per_stage: int = network_defaults()["blocks_per_stage"]
    memory_items: int = network_defaults()["memory_items"]
    memory_decay: float = network_defaults()["memory_decay"]
    use_memory: bool = network_defaults()["use_memory"]
    use_skip: bool = network_defaults()["use_skip"]
    gate_keep_probability: float = network_defaults()["gate_keep_probability"]
    inference_memory: str = network_defaults()["inference_memory"]

    def validate(self, where: str) -> None:
        for key in ("base_channels", "channel_step", "num_stages", "blocks_per_stage"):
            _check(getattr(self, key) >= 1, where, key, "must be >= 1")
        _check(self.memory_items >= 1, where, "memory_items", "must be >= 1")
        _check(
            0 <= self.num_resampling_stages <= self.num_stages,
            where,
            "num_resampling_stages",
            f"must be in [0, num_stages={self.num_stages}]",
        )
        _check(0.0 <= self.memory_decay <= 1.0, where, "memory_decay", "must be in [0, 1]")
        _check(
            0.0 < self.gate_keep_probability <= 1.0,
            where,
            "gate_keep_probability",
            "must be in (0, 1]",
        )
        _check(
            self.inference_memory in MEMORY_MODES,
            where,
            "inference_memory",
            f"must be one of {', '.join(MEMORY_MODES)}, got {self.inference_memory!r}",
        )


@dataclass
class TrainConfig(Section):
    """Optimisation, logging and checkpointing for both stages."""

    steps: int = 300
    batch_size: int = 8
    crop_size: int = 64
    learning_rate: float = 2e-4
    # "constant" (the authors' recipe) or "cosine": each stage decays its
    # learning rate from learning_rate to learning_rate * lr_min_fraction over
    # its steps (keras.optimizers.schedules.CosineDecay), so the last
    # checkpoints of a stage settle instead of moving at full step size.
    lr_schedule: str = "constant"
    lr_min_fraction: float = 0.0
    seed: int = 0
    log_every: int = 10
    validate_every: int = 100
    # The validation splits whose mean RGB PSNR chooses the best checkpoint
    # (best.npz, best.weights.h5) and is the logs' val_psnr_rgb; every split
    # is still scored and logged. Empty: all splits. E.g. the data.validation
    # splits, to choose on rain the project did not make.
    select_on: list[str] = field(default_factory=list)
    # Floors a validation must meet to be chosen at all, as split: minimum RGB
    # PSNR (dB), or "input": above that split's rainy input; e.g. {none: 35.0,
    # light: input} chooses on rain made by others only among the checkpoints
    # that still leave rain-free photos above 35 dB and improve on light rain.
    # When no validation meets them, best.weights.h5 is the stage's final network.
    select_floor: dict[str, float | str] = field(default_factory=dict)
    checkpoint_every: int = 100
    image_every: int = 100
    devices: list[str] = field(default_factory=list)
    # Mixed precision: false (float32), true or "float16" (GPUs; with loss
    # scaling) or "bfloat16" (TPUs, recent GPUs, and CPUs with AVX512_BF16 or
    # AMX). Weights, the memory and batch-norm statistics stay float32.
    mixed_precision: bool | str = False
    jit_compile: bool = False
    # Recompute the residual stages' activations in the backward pass instead
    # of storing them (MOSSNet.recompute): exact, less memory, more time.
    recompute: bool = False
    # Stability (issue 10). The encoder's feature scale is invisible to the
    # loss (batch norm and cosine scores see only directions) yet feeds the
    # decoder through the memory; under Adam it runs away and the network
    # collapses. A hinge on each encoder stage's per-image RMS, zero while the
    # RMS stays under the limit, holds it. feature_scale_weight: 0 is the
    # authors' recipe (plain Adam on L1).
    feature_scale_limit: float = 10.0
    feature_scale_weight: float = 1.0
    clip_grad_norm: float | None = None
    # Weight averaging (issue 10): an exponential moving average of the
    # trainable weights (the optimizer's use_ema), which validation, the
    # best/final weights and the run's model.weights.h5 use; training itself
    # steps the raw weights. The value is the average's time constant as a
    # fraction of the stage's steps: momentum 1 - 1 / (weight_average * steps),
    # so 0.25 is 0.999 over 4,000 steps and a scaled-down run averages alike.
    # 0: off (the authors' recipe).
    weight_average: float = 0.0
    # Stop a run whose loss jumps or whose scales explode without NaN
    # (moss_tf.train.divergence.DivergenceGuard); 0 turns a check off.
    divergence_loss_factor: float = 3.0
    divergence_patience: int = 20
    divergence_scale_limit: float = 1e6

    @property
    def precision_policy(self) -> str | None:
        """The Keras policy ``mixed_precision`` trains under (None: float32)."""
        return MIXED_PRECISION_POLICIES[self.mixed_precision]

    def validate(self, where: str) -> None:
        for key in ("steps", "batch_size", "log_every", "validate_every", "checkpoint_every"):
            _check(getattr(self, key) >= 1, where, key, "must be >= 1")
        _check(self.image_every >= 0, where, "image_every", "must be >= 0 (0 = never)")
        _check(
            len(set(self.select_on)) == len(self.select_on) and all(self.select_on),
            where,
            "select_on",
            f"must be distinct, non-empty split names, got {self.select_on}",
        )
        for split, floor in self.select_floor.items():
            _check(
                not isinstance(floor, str) or floor == FLOOR_INPUT,
                where,
                f"select_floor.{split}",
                f'must be a PSNR in dB or "{FLOOR_INPUT}", got {floor!r}',
            )
        _check(
            self.crop_size >= 8 and self.crop_size % 8 == 0,
            where,
            "crop_size",
            f"must be a multiple of 8 and >= 8, got {self.crop_size}",
        )
        _check(self.learning_rate > 0, where, "learning_rate", "must be > 0")
        _check(
            self.lr_schedule in LR_SCHEDULES,
            where,
            "lr_schedule",
            f"must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
        )
        _check(0 <= self.lr_min_fraction <= 1, where, "lr_min_fraction", "must be in [0, 1]")
        _check(self.feature_scale_limit > 0, where, "feature_scale_limit", "must be > 0")
        for key in ("feature_scale_weight", "divergence_loss_factor", "divergence_scale_limit"):
            _check(getattr(self, key) >= 0, where, key, "must be >= 0")
        _check(self.weight_average >= 0, where, "weight_average", "must be >= 0 (0 = off)")
        _check(
            self.mixed_precision in MIXED_PRECISION_POLICIES,
            where,
            "mixed_precision",
            f"must be false, true, float16 or bfloat16, got {self.mixed_precision!r}",
        )
        _check(self.divergence_patience >= 1, where, "divergence_patience", "must be >= 1")
        _check(
            self.clip_grad_norm is None or self.clip_grad_norm > 0,
            where,
            "clip_grad_norm",
            "must be > 0 or null",
        )


@dataclass
class SemiConfig(Section):
    """Stage ``semi`` (Algorithm 2) settings; docs/method.md §2."""

    steps: int | None = None
    # Stage semi's starting learning rate; null: train.learning_rate.
    learning_rate: float | None = None
    supervised_weight: float = 10.0
    unsupervised_weight: float = 1.0
    tv_weight: float = 0.001
    target_decay: float = 0.999
    density_range: list[float] = field(default_factory=lambda: [0.5, 1.1])
    # Shuffle the rain layers over the 4x batch (Eq. 9). False keeps each
    # background with the rain at its own position, which makes a run on N
    # replicas match one replica bit for bit (used by the tests).
    shuffle_rain: bool = True
    self_training: bool = True

    def validate(self, where: str) -> None:
        if self.steps is not None:
            _check(self.steps >= 1, where, "steps", "must be >= 1 or null")
        if self.learning_rate is not None:
            _check(self.learning_rate > 0, where, "learning_rate", "must be > 0 or null")
        for key in ("supervised_weight", "unsupervised_weight", "tv_weight"):
            _check(getattr(self, key) >= 0, where, key, "must be >= 0")
        _check(0.0 <= self.target_decay <= 1.0, where, "target_decay", "must be in [0, 1]")
        _check(
            len(self.density_range) == 2 and 0 <= self.density_range[0] <= self.density_range[1],
            where,
            "density_range",
            f"must be [low, high] with 0 <= low <= high, got {self.density_range}",
        )


@dataclass
class ExperimentConfig(Section):
    """A whole experiment: one YAML file."""

    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)

    def validate(self, where: str = "") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f.name)
        for split, floor in self.train.select_floor.items():
            rain_free = split in self.data.holdout_rain and self.data.holdout_rain[split] is None
            _check(
                not (floor == FLOOR_INPUT and rain_free),
                "train",
                f"select_floor.{split}",
                f'"{FLOOR_INPUT}" needs a rained split, and data.holdout_rain.{split} is '
                "rain-free (null): give a PSNR floor instead",
            )


# --------------------------------------------------------------------------- parsing


class _ConfigLoader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors and aliases, oversized values and deep nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
            self._refuse(
                event,
                "YAML anchors and aliases (&name, *name, <<: *name) are not allowed in a "
                "config (a few of them can expand to gigabytes); write the values out",
            )
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_VALUE_CHARS:
            self._refuse(
                event, f"a value of {len(event.value):,} characters (at most {MAX_VALUE_CHARS:,})"
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                self._refuse(event, f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    @staticmethod
    def _refuse(event, problem: str):
        raise yaml.composer.ComposerError(None, None, problem, event.start_mark)


def _parse_yaml(text: str, where: str) -> Any:
    """The value of a YAML text, read with :class:`_ConfigLoader`.

    Raises:
        ConfigError: starting with ``where`` (and the line at fault, when known).
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader (see the class)
    except yaml.composer.ComposerError as err:
        raise ConfigError(f"{where}{_line(err)}: {err.problem}") from None
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{where}{_line(err)}: not valid YAML: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from None


def _line(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    return f", line {mark.line + 1}" if mark is not None else ""


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 50
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4
_SHORT.maxlevel = 3


def _shown(value: Any) -> str:
    """``repr(value)``, shortened (``[[1, 2, ...], ...]``) to stay readable in a message."""
    return _SHORT.repr(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {_shown(value)}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_shown(value)}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_shown(value)}")
        _, value_type = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-4 (no dot) as a string; accept it as the number it is.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_shown(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_shown(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, values: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {_shown(values)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]}"
            + (f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
            + f"; known keys{' of ' + prefix if prefix else ''}: {', '.join(sorted(known))}"
        )
    kwargs = {
        name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class OverrideError(ConfigError):
    """A ``--set KEY=VALUE`` override is wrong; the message starts with ``--set KEY``."""


def _split_override(text: str) -> tuple[str, Any]:
    """``"train.steps=100"`` -> ``("train.steps", 100)``; the value is parsed as YAML."""
    if "=" not in text:
        raise OverrideError(f"--set {text!r}: expected KEY=VALUE, e.g. train.steps=100")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise OverrideError(f"--set {text!r}: bad key {key!r}")
    try:
        value = _parse_yaml(raw, "value") if raw.strip() else ""
    except ConfigError as err:
        raise OverrideError(f"--set {_shown(text)}: {err}") from None
    return key, value


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"train.steps=100"`` into ``{"train": {"steps": 100}}``.

    The value is parsed as YAML (``1e-4``, ``true``, ``[0.5, 1.1]``, ``null``).
    """
    return _nest(*_split_override(text))


def _nest(key: str, value: Any) -> dict[str, Any]:
    """``("train.steps", 100)`` -> ``{"train": {"steps": 100}}``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _section_type(tp: Any) -> Any:
    """``tp`` without ``| None``: the section (or mapping) an optional field holds."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return tp


def _check_override_key(text: str, key: str) -> None:
    """Raise OverrideError, naming ``--set KEY``, when ``key`` is no config key."""
    section: Any = ExperimentConfig
    prefix = ""
    for part in key.split("."):
        section = _section_type(section)
        if typing.get_origin(section) is dict:  # a mapping by name: any name is a key
            section = typing.get_args(section)[1]
            prefix = f"{prefix}.{part}"
            continue
        if not dataclasses.is_dataclass(section):
            raise OverrideError(f"--set {text}: {prefix} is a value, not a section")
        known = {f.name for f in dataclasses.fields(section) if f.init}
        if part not in known:
            where = f" of {prefix}" if prefix else ""
            raise OverrideError(
                f"--set {text}: unknown key {key}; known keys{where}: {', '.join(sorted(known))}"
            )
        section = typing.get_type_hints(section)[part]
        prefix = f"{prefix}.{part}" if prefix else part


def _key_at_fault(message: str) -> str:
    """The dotted key a ConfigError message starts with (``train.steps: ...``)."""
    if message.startswith("unknown key "):
        return message[len("unknown key ") :].split(";")[0].split(" ")[0]
    return message.split(": ", 1)[0]


def blame(err: ConfigError, overrides: list[str] | tuple, path: str | Path | None = None):
    """``err`` attributed to where its key was set: an ``--set`` override or the file.

    Returns:
        An :class:`OverrideError` starting ``--set KEY=VALUE:`` when the key
        ``err`` names was set by one of ``overrides`` (the last one wins),
        else ``err`` with ``path`` (if given) in front.
    """
    message = str(err)
    if isinstance(err, OverrideError):
        return err
    key = _key_at_fault(message)
    for text in reversed(overrides):
        set_key = text.split("=", 1)[0].strip()
        if key == set_key or key.startswith((f"{set_key}.", f"{set_key}[")):
            detail = message[len(key) + 2 :] if message.startswith(f"{key}: ") else message
            return OverrideError(f"--set {text.strip()}: {detail}")
    return ConfigError(f"{path}: {message}") if path is not None else err


def config_from_dict(values: dict[str, Any], overrides: list[str] | tuple = ()) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a plain mapping.

    ``overrides`` are ``KEY=VALUE`` texts applied in order; an error about a
    key one of them set is an :class:`OverrideError` naming ``--set KEY``.
    """
    for text in overrides:
        key, value = _split_override(text)
        _check_override_key(text.strip(), key)
        values = _merge(values, _nest(key, value))
    try:
        cfg = _build(ExperimentConfig, values, "")
        cfg.validate()
    except ConfigError as err:
        raise blame(err, overrides) from None
    return cfg


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping, with its ``base:`` file (if any) merged underneath."""
    values = _parse_yaml(_config_text(path), str(path))
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    values.setdefault("name", path.stem)
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, got {_shown(base)}")
    beside = path.parent / base  # else a shipped config by name, e.g. `base: paper.yaml`
    base_path = (beside if beside.exists() else find_config(base)).resolve()
    if base_path in chain:
        raise ConfigError(f"{path}: base: {base} includes itself")
    return _merge(_read_yaml(base_path, (*chain, path.resolve())), values)


def find_config(name_or_path: str | Path) -> Path:
    """A config file: a path that exists, else a config shipped in ``moss_tf/configs/`` by name.

    ``ddn_sirr``, ``ddn_sirr.yaml``, ``configs/ddn_sirr.yaml`` and
    ``ablations/basic`` all name shipped configs (as in the README's commands).

    Raises:
        ConfigError: naming the path and the shipped configs.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    name = path.as_posix().removeprefix("configs/")
    for candidate in (SHIPPED_CONFIGS / name, SHIPPED_CONFIGS / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{path}: config file not found (nor a shipped config of that name: "
        f"{', '.join(shipped_config_names())})"
    )


def shipped_config_names() -> list[str]:
    """The configs in ``moss_tf/configs/`` by name, e.g. ``["ablations/basic", "ddn_sirr"]``."""
    return sorted(
        p.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix()
        for p in SHIPPED_CONFIGS.rglob("*.yaml")
    )


def _config_text(path: Path) -> str:
    """The text of a config file, refused when over :data:`MAX_CONFIG_BYTES` or not UTF-8."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; an experiment config is a "
            "few kB (is this the right file?)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start})") from None


def load_config(path: str | Path, overrides: list[str] | tuple = ()) -> ExperimentConfig:
    """Read a YAML experiment file, apply ``KEY=VALUE`` overrides, validate.

    A file may start from another with ``base: other.yaml`` (a path relative
    to it); its own keys override the base's, section by section.

    Raises:
        ConfigError: naming ``path`` and the key at fault, or (as an
            :class:`OverrideError`) ``--set KEY=VALUE`` when an override set it.
    """
    path = find_config(path)
    values = _read_yaml(path)
    try:
        return config_from_dict(values, overrides)
    except ConfigError as err:
        raise blame(err, overrides, path) from None


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable by :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
