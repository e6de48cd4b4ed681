"""The model that ships with the project: there, loadable, derains, matches its SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from moss_tf.commands import evaluate as evaluate_cli
from moss_tf.commands.common import SHIPPED_PRESET
from moss_tf.config import load_config
from moss_tf.data.builtin import builtin_paths
from moss_tf.data.data_config import RainConfig
from moss_tf.data.images import read_image
from moss_tf.data.rain import RainSynthesizer
from moss_tf.infer.derain import Derainer
from moss_tf.nn.network import MOSSNet
from moss_tf.nn.presets import preset_dir, read_metadata

SHIPPED_SAVED_MODEL = Path(__file__).resolve().parents[1] / "saved_models" / "moss" / "1"
# The shipped model's equal-budget supervised control (saved_models/MODEL_CARD.md).
SHIPPED_CONTROL = "moss_release_control"


def rainy_photo():
    """A 192x256 crop of a bundled photograph (not in the training data) with rain."""
    clean = read_image(builtin_paths(["rocket.jpg"])[0])[:192, 100:356]
    rain = RainConfig(preset="realistic", clean_probability=0.0, veil_probability=0.0)
    rain.density = [0.004, 0.006]
    wet = RainSynthesizer(rain)(tf.constant(clean, tf.float32) / 255.0, seed=[3, 5])
    return np.round(wet.numpy() * 255).astype(np.uint8), clean


@pytest.mark.parametrize("preset", [SHIPPED_PRESET, SHIPPED_CONTROL])
def test_the_shipped_model_and_its_control_are_there_and_are_the_released_network(preset):
    assert (preset_dir(preset) / "model.weights.h5").is_file()
    network = MOSSNet.from_preset(preset)
    released = load_config("paper").model
    assert network.blocks_per_stage == released.blocks_per_stage == 4
    assert network.memory_items == released.memory_items == 512
    assert read_metadata(preset)["name"] == preset


def test_the_control_derains_and_is_not_the_shipped_model():
    rainy, clean = rainy_photo()
    outputs = [Derainer.from_preset(p).derain(rainy) for p in (SHIPPED_PRESET, SHIPPED_CONTROL)]
    before = peak_signal_noise_ratio(clean, rainy)
    for output in outputs:
        assert peak_signal_noise_ratio(clean, output) > before + 1.0
    assert np.abs(outputs[0].astype(int) - outputs[1].astype(int)).max() > 0


def test_evaluate_input_without_a_model_derains_with_the_shipped_model(tmp_path, capsys):
    rainy, clean = rainy_photo()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rainy).save(photos / "street.png")
    out = tmp_path / "out"
    assert evaluate_cli.main(["--input", str(photos), "--output", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"using the shipped model {SHIPPED_PRESET}" in printed
    derained = np.asarray(Image.open(out / "street.png"))
    assert derained.shape == rainy.shape
    # It removes rain: closer to the clean photo than the rainy input is.
    before = peak_signal_noise_ratio(clean, rainy)
    after = peak_signal_noise_ratio(clean, derained)
    assert after > before + 1.0, (before, after)


def test_the_shipped_saved_model_agrees_with_the_shipped_weights():
    if not SHIPPED_SAVED_MODEL.is_dir():
        pytest.fail(f"{SHIPPED_SAVED_MODEL} is missing: re-export the shipped weights")
    network = MOSSNet.from_preset(SHIPPED_PRESET)
    rainy, _ = rainy_photo()
    images = tf.constant(np.stack([rainy[:96, :128], rainy[96:, 128:]]) / 255.0, tf.float32)
    served = tf.saved_model.load(str(SHIPPED_SAVED_MODEL)).signatures["serving_default"]
    (output,) = served(images=images).values()
    expected = (network(images * 2.0 - 1.0, training=False) + 1.0) / 2.0
    np.testing.assert_allclose(output.numpy(), expected.numpy(), atol=1e-5)


def test_output_naming_a_file_writes_that_file_in_its_format_again_and_again(tmp_path):
    rainy, _ = rainy_photo()
    source = tmp_path / "street.jpg"
    Image.fromarray(rainy).save(source, quality=95)
    target = tmp_path / "out" / "derained.png"
    for _ in range(2):  # the second run overwrites the file the first wrote
        assert evaluate_cli.main(["--input", str(source), "--output", str(target), "--quiet"]) == 0
        with Image.open(target) as written:
            assert written.format == "PNG" and written.size == (rainy.shape[1], rainy.shape[0])
    assert sorted(p.name for p in target.parent.iterdir()) == ["derained.png"]
