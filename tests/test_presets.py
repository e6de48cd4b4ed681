"""Presets, the one-call Python API, the .keras format and the network's defaults written once."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import keras
import numpy as np
import pytest
from conftest import REPO, TINY_MODEL
from PIL import Image

from moss_tf import Derainer, MOSSNet
from moss_tf.config import ModelConfig
from moss_tf.errors import CheckpointError, MossError
from moss_tf.nn.convert import OFFICIAL_NAMES, model_kwargs_from_official
from moss_tf.nn.defaults import network_defaults
from moss_tf.nn.presets import preset_names, save_preset


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    net = MOSSNet(**TINY_MODEL, inference_memory="frozen")
    net.build()
    rng = np.random.default_rng(0)
    for variable in net.trainable_variables:
        variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
    folder = save_preset(net, tmp_path_factory.mktemp("preset") / "tiny", {"name": "tiny"})
    return net, folder


def test_the_network_defaults_are_written_once_and_agree_everywhere():
    signature = {
        name: p.default
        for name, p in inspect.signature(MOSSNet.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert network_defaults() == signature
    assert dataclasses.asdict(ModelConfig()) == signature
    official = model_kwargs_from_official({})
    assert official == {ours: signature[ours] for ours in OFFICIAL_NAMES.values()}
    # The PyTorch reference of the benchmarks keeps the authors' names; same values.
    tree = ast.parse((REPO / "bench" / "reference_torch.py").read_text())
    init = next(
        node.args
        for cls in tree.body
        if isinstance(cls, ast.ClassDef) and cls.name == "ReleasedNet"
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    names = [a.arg for a in init.args[-len(init.defaults) :]]
    reference = {n: ast.literal_eval(d) for n, d in zip(names, init.defaults, strict=True)}
    assert {OFFICIAL_NAMES[n]: v for n, v in reference.items()} == {
        ours: signature[ours] for ours in OFFICIAL_NAMES.values()
    }


def test_a_preset_folder_round_trips_the_network(tiny_preset):
    net, folder = tiny_preset
    again = MOSSNet.from_preset(folder)
    images = np.random.default_rng(1).uniform(-1, 1, (1, 24, 32, 3)).astype("float32")
    np.testing.assert_array_equal(again(images).numpy(), net(images).numpy())
    assert again.inference_memory == "frozen"
    assert MOSSNet.from_preset(folder, inference_memory="per_image").inference_memory == "per_image"


def test_the_shipped_preset_is_listed_and_a_wrong_name_is_named():
    assert "moss_release" in preset_names()
    with pytest.raises(CheckpointError, match=r"no_such_preset: not a preset.*moss_release"):
        MOSSNet.from_preset("no_such_preset")


def test_derain_takes_a_path_a_pil_image_or_an_array_and_returns_uint8(tiny_preset, tmp_path):
    _, folder = tiny_preset
    derainer = Derainer.from_preset(folder)
    rgb = np.random.default_rng(2).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    expected = derainer.derain_uint8(rgb)
    assert expected.dtype == np.uint8 and expected.shape == rgb.shape
    for given in (tmp_path / "photo.png", str(tmp_path / "photo.png"), Image.fromarray(rgb), rgb):
        np.testing.assert_array_equal(derainer.derain(given), expected)
    grey = derainer.derain(rgb[..., 0])
    assert grey.shape == rgb.shape
    with pytest.raises(MossError, match="expected a uint8 image, got float32"):
        derainer.derain(rgb.astype(np.float32))


def test_a_whole_trained_model_saves_and_loads_in_the_keras_format(tiny_preset, tmp_path):
    net, _ = tiny_preset
    net.save(tmp_path / "tiny.keras")
    loaded = keras.saving.load_model(tmp_path / "tiny.keras")
    assert isinstance(loaded, MOSSNet)
    images = np.random.default_rng(3).uniform(-1, 1, (1, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(images).numpy(), net(images).numpy())
