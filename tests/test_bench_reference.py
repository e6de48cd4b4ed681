"""The benchmark's PyTorch reference is the released network (docs/method.md §6 test vectors).

Skips without PyTorch (``pip install -e .[bench]``): the reference is only
needed to time moss-tf against it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES

torch = pytest.importorskip("torch", reason="PyTorch is absent: pip install -e .[bench]")

from bench.reference_torch import (  # noqa: E402
    PretrainStep,
    ReleasedNet,
    SemiStep,
    load_released_state,
)

# One thread: OpenMP's spinning workers crawl when other processes hold the cores.
torch.set_num_threads(1)


def released_net(path):
    vectors = np.load(path)
    config = {
        key.split("/", 1)[1]: vectors[key].item() for key in vectors if key.startswith("config/")
    }
    params = {key.split("/", 1)[1]: vectors[key] for key in vectors if key.startswith("param/")}
    return load_released_state(ReleasedNet(**config), params), vectors


def check_fixture(path):
    net, vectors = released_net(path)
    x = torch.from_numpy(vectors["input_nchw"])
    with torch.inference_mode():
        net.eval()
        batch = net(x).numpy()
        single = np.concatenate([net(x[i : i + 1]).numpy() for i in range(len(x))])
    np.testing.assert_allclose(batch, vectors["output_eval_batch_nchw"], atol=1e-5)
    np.testing.assert_allclose(single, vectors["output_eval_single_nchw"], atol=1e-5)
    # Inference forgets its memory update; a training pass keeps it, with the BN statistics.
    np.testing.assert_array_equal(
        net.memory.units.weight.numpy(), vectors["param/memory.units.weight"]
    )
    with torch.no_grad():
        net.train()(x)
    state = net.state_dict()
    for key in (k for k in vectors if k.startswith("after_train/")):
        name = key.split("/", 1)[1]
        np.testing.assert_allclose(state[name].numpy(), vectors[key], rtol=1e-5, atol=1e-6)


def test_small_released_network_is_reproduced():
    check_fixture(FIXTURES / "official_netg_small.npz")


def test_full_released_network_is_reproduced(shared_dir):
    check_fixture(shared_dir / "fixtures" / "official_netg_full.npz")


def test_reference_training_steps_learn_and_move_the_target():
    torch.manual_seed(0)
    net = ReleasedNet(ngf=4, delta=4, num_blocks=3, num_scales=2, num_layers=1, kdim=8)
    clean = torch.rand(2, 3, 16, 16) * 2 - 1
    rainy = torch.clamp(clean + 0.5 * (torch.rand(2, 3, 16, 16) > 0.9), -1, 1)
    step = PretrainStep(net, learning_rate=1e-2)
    losses = [step(rainy, clean) for _ in range(10)]
    assert losses[-1] < 0.7 * losses[0]
    semi = SemiStep(net)
    before = {name: w.clone() for name, w in semi.target.named_parameters()}
    assert np.isfinite(semi(rainy, clean, torch.rand(2, 3, 16, 16) * 2 - 1))
    after = dict(semi.target.named_parameters())
    # Eq. 7 moved the target's weights and memory a little towards the online network.
    assert all(
        not torch.equal(before[name], after[name])
        for name in ("head.weight", "memory.units.weight")
    )
