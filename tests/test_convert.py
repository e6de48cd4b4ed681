"""The converter reproduces the authors' released network (docs/method.md §6 test vectors)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES

from moss_tf.config import load_config
from moss_tf.nn.convert import ConversionError, from_official, main, read_state_dict
from moss_tf.nn.network import MOSSNet


def nhwc(array):
    return np.transpose(array, (0, 2, 3, 1))


def check_fixture(path):
    state, official_config = read_state_dict(path)
    vectors = np.load(path)
    net = from_official(state, official_config)
    x = nhwc(vectors["input_nchw"])

    single = nhwc(vectors["output_eval_single_nchw"])
    alone = np.concatenate([net(x[i : i + 1], training=False).numpy() for i in range(len(x))])
    np.testing.assert_allclose(alone, single, atol=1e-4)
    # The default per-image memory update: the batch of 2 gives each image's
    # released single-image output.
    assert net.inference_memory == "per_image"
    np.testing.assert_allclose(net(x, training=False).numpy(), single, atol=1e-4)

    # inference_memory="batch" is the released network run on the batch.
    released_batch = MOSSNet.from_config({**net.get_config(), "inference_memory": "batch"})
    released_batch.build()
    released_batch.set_weights(net.get_weights())
    batch = released_batch(x, training=False).numpy()
    np.testing.assert_allclose(batch, nhwc(vectors["output_eval_batch_nchw"]), atol=1e-4)

    net(x, training=True)
    after = vectors["after_train/memory.units.weight"]
    assert np.abs(after - vectors["param/memory.units.weight"]).max() > 1e-4  # it moved
    np.testing.assert_allclose(net.memory.items.numpy(), after, atol=1e-5)
    for i, fuse in enumerate(net.fusions):
        key = f"after_train/fuse.fuse{i}.norm"
        np.testing.assert_allclose(
            fuse.moving_mean.numpy(), vectors[f"{key}.running_mean"], atol=1e-5
        )
        np.testing.assert_allclose(
            fuse.moving_variance.numpy(), vectors[f"{key}.running_var"], rtol=1e-5, atol=1e-5
        )


def test_small_official_network_is_reproduced():
    check_fixture(FIXTURES / "official_netg_small.npz")


def test_full_official_network_is_reproduced(shared_dir):
    check_fixture(shared_dir / "fixtures" / "official_netg_full.npz")


def test_bad_state_dicts_list_every_fault():
    state, config = read_state_dict(FIXTURES / "official_netg_small.npz")
    state = dict(state)
    del state["head.weight"]
    state["extra.weight"] = np.zeros(3)
    state["tail.bias"] = np.zeros(4)
    with pytest.raises(ConversionError) as err:
        from_official(state, config)
    message = str(err.value)
    assert "missing keys (1): head.weight" in message
    assert "unknown keys (1): extra.weight" in message
    assert "tail.bias: got (4,), expected (3,)" in message


def test_unknown_official_config_name_is_refused():
    with pytest.raises(ConversionError, match="ngff"):
        from_official({}, {"ngff": 8})


def test_command_line_writes_weights_and_config_that_load_back(tmp_path, rng):
    output = tmp_path / "converted" / "model.weights.h5"
    assert main([str(FIXTURES / "official_netg_small.npz"), "--output", str(output)]) == 0
    cfg = load_config(output.parent / "config.yaml")
    assert (cfg.model.base_channels, cfg.model.memory_items) == (8, 32)
    net = MOSSNet(**cfg.model.to_dict())
    net.build()
    net.load_weights(output)
    state, official_config = read_state_dict(FIXTURES / "official_netg_small.npz")
    reference = from_official(state, official_config)
    x = rng.uniform(-1, 1, (1, 24, 32, 3)).astype("float32")
    np.testing.assert_array_equal(net(x).numpy(), reference(x).numpy())


def test_command_line_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "nope.npz"), "--output", str(tmp_path / "x.weights.h5")]) == 2
    assert "nope.npz: checkpoint not found" in capsys.readouterr().err


def test_pth_without_torch_says_what_to_install(tmp_path):
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed: the missing-torch message cannot show")
    except ImportError:
        pass
    path = tmp_path / "netG.pth"
    path.write_bytes(b"not really")
    with pytest.raises(ConversionError, match="needs PyTorch"):
        read_state_dict(path)
