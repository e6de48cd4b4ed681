"""The exported SavedModel: both signatures equal the Keras network, versions, warm-up."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_MODEL
from PIL import Image

from moss_tf.commands import export as export_command
from moss_tf.config import config_from_dict, save_config
from moss_tf.export import saved_model as export
from moss_tf.nn.network import MOSSNet


def randomize(net: MOSSNet, seed: int) -> MOSSNet:
    """Give every weight (CBN convs start at zero) and batch-norm statistic a random value."""
    rng = np.random.default_rng(seed)
    for variable in net.weights:
        if "variance" in variable.path:
            value = rng.uniform(0.5, 1.5, variable.shape)
        elif "items" in variable.path:
            value = rng.normal(0.0, 1.0, variable.shape)
        else:
            value = rng.normal(0.0, 0.25, variable.shape)
        variable.assign(value.astype(np.float32))
    return net


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random network saved as a run directory and exported once via the CLI."""
    root = tmp_path_factory.mktemp("export")
    net = randomize(MOSSNet(**TINY_MODEL), seed=1)
    net.build()
    run_dir = root / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    save_config(config_from_dict({"name": "tiny", "model": TINY_MODEL}), run_dir / "config.yaml")
    net.save_weights(run_dir / "model.weights.h5")
    base = root / "saved_models" / "moss"
    assert export_command.main(["--run-dir", str(run_dir), "--output", str(base)]) == 0
    version = base / "1"
    return net, version, tf.saved_model.load(str(version))


def test_a_second_export_into_a_served_folder_is_refused_unless_asked(exported, capsys):
    _, version, _ = exported
    run_dir = version.parents[2] / "runs" / "tiny"
    base = version.parent
    assert export_command.main(["--run-dir", str(run_dir), "--output", str(base)]) == 1
    assert "already holds version(s) 1" in capsys.readouterr().err
    assert not (base / "2").exists()
    # The shipped SavedModel's folder is protected the same way.
    shipped = Path(__file__).resolve().parents[1] / "saved_models" / "moss"
    assert export_command.main(["--run-dir", str(run_dir), "--output", str(shipped)]) == 1
    assert sorted(p.name for p in shipped.iterdir()) == ["1"]


def keras_derain01(net, images01):
    """The Keras network on [0, 1] images, as the signatures promise."""
    return np.clip((net(images01 * 2.0 - 1.0, training=False).numpy() + 1.0) / 2.0, 0.0, 1.0)


def test_serving_default_equals_keras_for_odd_sizes_and_a_batch(exported):
    net, _, loaded = exported
    serve = loaded.signatures["serving_default"]
    rng = np.random.default_rng(0)
    for shape in [(1, 37, 53, 3), (2, 29, 40, 3)]:
        images = rng.random(shape, dtype=np.float32)
        got = serve(images=tf.constant(images))["derained"].numpy()
        want = keras_derain01(net, images)
        assert got.shape == shape
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert got.min() >= 0.0 and got.max() <= 1.0
    # The output depends on the input (a constant network would also pass the above).
    assert np.abs(want[0] - want[1]).mean() > 1e-3


def _png(array_u8):
    buffer = io.BytesIO()
    Image.fromarray(array_u8).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array_u8):
    buffer = io.BytesIO()
    Image.fromarray(array_u8).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_derain_bytes_equals_keras_for_png_and_jpeg_of_different_sizes(exported):
    net, _, loaded = exported
    rng = np.random.default_rng(1)
    first = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    second = rng.integers(0, 256, (24, 31, 3), dtype=np.uint8)
    payload = [_png(first), _jpeg(second)]
    got = loaded.signatures["derain_bytes"](image_bytes=tf.constant(payload))["derained_bytes"]
    assert got.shape == (2,)
    # The server decodes JPEG as the command line does (Pillow): see test_serving_robustness.
    decoded = [first, np.asarray(Image.open(io.BytesIO(payload[1])))]
    for data, source in zip(got.numpy(), decoded, strict=True):
        assert data.startswith(b"\x89PNG")
        result = np.asarray(Image.open(io.BytesIO(data)))
        assert result.shape == source.shape and result.dtype == np.uint8
        want = keras_derain01(net, source[None].astype(np.float32) / 255.0)[0] * 255.0
        # Equal to the rounded Keras output, except where Keras sits within
        # 1e-5 of a rounding boundary.
        diff = np.abs(result.astype(np.float64) - np.round(want))
        near_half = np.abs(want - np.floor(want) - 0.5) < 255 * 1e-5
        assert np.all(diff[~near_half] == 0)
        assert np.all(diff <= 1)


def test_warmup_requests_are_prediction_logs_the_signatures_accept(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, version, loaded = exported
    path = version / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(str(path))
    ]
    signatures = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert signatures == {"serving_default", "derain_bytes"}
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "moss"
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        outputs = loaded.signatures[request.model_spec.signature_name](
            **{key: tf.constant(value) for key, value in inputs.items()}
        )
        (output,) = outputs.values()
        assert output.shape[0] == 1


def test_each_export_writes_the_next_version_folder(exported, tmp_path):
    net, _, _ = exported
    base = tmp_path / "moss"
    (base / "7").mkdir(parents=True)
    (base / "notes").mkdir()  # not a version: ignored, as TF Serving ignores it
    assert export.next_version(tmp_path / "absent") == 1
    first = export.export_saved_model(net, base, warmup=False)
    second = export.export_saved_model(net, base, warmup=False)
    assert (first.name, second.name) == ("8", "9")
    assert (second / "saved_model.pb").is_file()
    # No staging folder is left behind for TF Serving to trip over.
    assert sorted(p.name for p in base.iterdir()) == ["7", "8", "9", "notes"]


def test_the_network_runs_with_unknown_height_and_width():
    """Serving "any H and W" needs one graph for all sizes (``[None, None, None, 3]``)."""
    net = MOSSNet(**TINY_MODEL)
    forward = tf.function(
        lambda x: net(x, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    for shape in [(1, 16, 24, 3), (2, 13, 7, 3)]:
        assert forward(tf.zeros(shape)).shape == shape


def test_an_image_gets_the_same_result_alone_and_in_a_served_batch(tmp_path):
    # memory_decay 0.5 and non-zero CBN convs (which start at zero and cut the
    # decoder off from the memory): the update moves outputs far beyond float
    # noise, as on a trained network. The network's own setting is the released per-batch update.
    net = MOSSNet(**TINY_MODEL, memory_decay=0.5, inference_memory="batch")
    net.build()
    rng = np.random.default_rng(2)
    for variable in net.weights:
        if "fuse" in variable.path and ("gamma" in variable.path or "beta" in variable.path):
            variable.assign(rng.uniform(-0.2, 0.2, variable.shape).astype(np.float32))
    with pytest.raises(export.MossError, match="'batch' cannot be served"):
        export.export_saved_model(net, tmp_path / "moss", inference_memory="batch")

    version = export.export_saved_model(net, tmp_path / "moss", warmup=False)
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    batch = np.random.default_rng(3).random((4, 24, 32, 3), dtype=np.float32)
    alone = serve(images=tf.constant(batch[:1]))["derained"].numpy()[0]
    in_batch = serve(images=tf.constant(batch))["derained"].numpy()[0]
    assert np.abs(in_batch - alone).max() <= 1e-5
    # The released per-batch update would not give that (5e-4 here).
    assert np.abs(keras_derain01(net, batch)[0] - alone).max() > 1e-4
