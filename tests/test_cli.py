"""Command lines: --set forms, errors that name their source, answers before TensorFlow starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from moss_tf.commands import derain, evaluate, train
from moss_tf.commands import export as export_command
from moss_tf.commands.common import _has_nvidia_driver, _stderr_without
from moss_tf.config import ConfigError, OverrideError, load_config


def test_set_takes_several_pairs_per_flag_and_repeats():
    args = train.parse_args(
        ["--stage", "pretrain", "--set", "train.steps=2", "train.batch_size=4", "--set", "a.b=1"]
    )
    assert args.overrides == ["train.steps=2", "train.batch_size=4", "a.b=1"]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.stepz=5", "--set train.stepz=5: unknown key train.stepz"),
        ("train.crop_size=30", "--set train.crop_size=30: must be a multiple of 8"),
        ("train.steps=many", "--set train.steps=many: expected an integer"),
        ("train.steps.deep=1", "--set train.steps.deep=1: train.steps is a value"),
    ],
)
def test_an_override_error_names_the_set_flag_not_the_file(override, named):
    with pytest.raises(OverrideError) as err:
        load_config(REPO / "moss_tf" / "configs" / "demo.yaml", [override])
    assert str(err.value).startswith(named)
    assert "demo.yaml" not in str(err.value)


def test_a_file_error_still_names_the_file_when_overrides_are_given(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  crop_size: 30\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.crop_size") as err:
        load_config(path, ["train.steps=3"])
    assert not isinstance(err.value, OverrideError)


def test_the_last_override_of_a_key_is_the_one_blamed():
    with pytest.raises(OverrideError, match=r"^--set train\.steps=0:"):
        load_config(REPO / "moss_tf" / "configs" / "demo.yaml", ["train.steps=5", "train.steps=0"])


def test_a_missing_data_path_set_on_the_command_line_is_named(tmp_path, capsys):
    run = tmp_path / "r"
    code = train.main(["--stage", "pretrain", "--run-dir", str(run), "--set", "data.test=/no/x"])
    assert code == 2
    assert "--set data.test=/no/x: '/no/x' not found" in capsys.readouterr().err
    assert not run.exists()


def test_evaluate_names_a_missing_input(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.weights.h5").write_bytes(b"")
    code = evaluate.main(["--run-dir", str(run), "--input", "/no/photos", "--output", "o"])
    assert code == 1
    assert "--input /no/photos: not found" in capsys.readouterr().err


def test_moss_derain_help_shows_its_own_options_only(capsys):
    with pytest.raises(SystemExit) as exit_:
        derain.main(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: moss-derain ")
    assert "INPUT" in shown and "--output OUT" in shown and "--preset" in shown
    for evaluate_only in ("--test", "--json", "--per-image", "--input"):
        assert evaluate_only not in shown


def test_moss_derain_names_a_missing_input_or_output(tmp_path, capsys):
    for argv in ([], ["photo.jpg"], ["--output", "out"]):
        with pytest.raises(SystemExit) as exit_:
            derain.main(argv)
        assert exit_.value.code == 2
    assert "required: INPUT, --output" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.weights.h5").write_bytes(b"")
    assert derain.main(["/no/photos", "--output", "o", "--run-dir", str(run)]) == 1
    assert "INPUT /no/photos: not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", [evaluate.main, export_command.main])
def test_model_overrides_are_refused_where_the_network_comes_trained(tmp_path, capsys, command):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.weights.h5").write_bytes(b"")
    out = str(tmp_path / "out")
    code = command(["--run-dir", str(run), "--output", out, "--set", "model.memory_items=64"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--set model.memory_items=64: the network's settings come with the trained" in err
    assert "--inference-memory" in err


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    """``python -c code`` in the repository, as a user starts it (no TF_CPP_MIN_LOG_LEVEL)."""
    user_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**user_env, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_mistakes_are_reported_before_tensorflow_is_imported(tmp_path):
    semi_without_pretrain = f"['--stage', 'semi', '--run-dir', {str(tmp_path)!r}]"
    result = run_python(
        "import sys, train\n"
        "codes = [train.main(['--stage', 'pretrain', '--set', 'train.stepz=1']),\n"
        f"         train.main({semi_without_pretrain})]\n"
        "print(codes, 'tensorflow' in sys.modules)\n"
    )
    assert result.stdout.strip() == "[2, 2] False", result.stderr
    assert "--set train.stepz=1: unknown key" in result.stderr
    assert "run python train.py --stage pretrain" in result.stderr


def test_stderr_filter_drops_only_the_noise_lines(capfd):
    import re

    with _stderr_without(re.compile("noise")):
        os.write(2, b"some noise line\nTraceback: something a user needs\n")
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "noise" not in err
    assert "something a user needs" in err and "from python" in err


@pytest.mark.skipif(_has_nvidia_driver(), reason="this machine has an NVIDIA driver")
def test_tensorflow_starts_without_cuda_lines_unless_asked():
    start = "from moss_tf.commands.common import start_tensorflow; start_tensorflow(); print('ok')"
    quiet = run_python(start)
    assert quiet.stdout.strip() == "ok", quiet.stderr
    for noise in ("cuda", "cuInit", "absl", "oneDNN"):
        assert noise not in quiet.stderr
    verbose = run_python(start, MOSS_VERBOSE="1")
    assert "cuda" in verbose.stderr and "oneDNN custom operations are on" in verbose.stderr
