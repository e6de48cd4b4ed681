"""The wheel works once installed: the command and the Python call derain, from anywhere.

The wheel is built from this checkout and installed into a fresh virtual
environment in a temporary folder, outside the checkout; its dependencies
(TensorFlow, ...) come from the running environment through a path file, so
the test needs no download. Commands run from a folder outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its bin folder."""
    root = tmp_path_factory.mktemp("install")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(root / "dist"),
            str(REPO),
        ],
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("moss_tf-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    bin_dir = venv / "bin"
    site = Path(
        run(
            [
                str(bin_dir / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            cwd=root,
        ).stdout.strip()
    )
    # The dependencies from this environment (not its editable moss_tf: .pth files there are
    # not read from a path listed in another .pth file).
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(bin_dir / "python"),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        cwd=root,
    )
    return bin_dir


def test_the_installed_command_and_the_python_call_derain_the_same(installed, tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "rainy.png"
    Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(photo)

    printed = run(
        [str(installed / "moss-derain"), str(photo), "--output", "derained.png"], tmp_path
    )
    assert "using the shipped model moss_release" in printed.stdout
    from_command = np.asarray(Image.open(tmp_path / "derained.png"))

    script = (
        "import numpy as np, moss_tf\n"
        "from moss_tf import Derainer\n"
        "print(moss_tf.__file__)\n"
        "np.save('api.npy', Derainer.from_preset('moss_release').derain('rainy.png'))\n"
    )
    where = run([str(installed / "python"), "-c", script], tmp_path).stdout
    assert str(installed.parent) in where, f"moss_tf was not imported from the wheel: {where}"
    from_python = np.load(tmp_path / "api.npy")
    assert from_python.dtype == np.uint8 and from_python.shape == (60, 90, 3)
    np.testing.assert_array_equal(from_python, from_command)


def test_the_installed_package_finds_its_configs_and_scores_folders(installed, tmp_path):
    clean = tmp_path / "clean"
    derained = tmp_path / "derained"
    for folder, value in ((clean, 100), (derained, 110)):
        folder.mkdir()
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(folder / "a.png")
    printed = run([str(installed / "moss-score"), str(derained), str(clean)], tmp_path).stdout
    assert "28.13" in printed  # PSNR of a constant error of 10 grey levels: 20 log10(255/10)
    help_text = run([str(installed / "moss-train"), "--help"], tmp_path).stdout
    assert "--stage" in help_text
    check = "from moss_tf.config import load_config; print(load_config('ddn_sirr').train.steps)"
    assert run([str(installed / "python"), "-c", check], tmp_path).stdout.strip().isdigit()
