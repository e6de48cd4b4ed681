"""Folder layouts, file lists, the labeled-fraction split and test-split naming."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moss_tf.data import DataError, ImageError
from moss_tf.data.layouts import find_images, find_pairs, find_test_splits, split_pairs


def _write(path: Path, value: int = 0, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def test_rain_norain_same_names(tmp_path):
    for n in (1, 2, 10):
        _write(tmp_path / "rain" / f"norain-{n}.png")
        _write(tmp_path / "norain" / f"norain-{n}.png")
    pairs, layout = find_pairs(tmp_path)
    assert layout == "rain/ + norain/"
    assert [(p.rainy.name, p.clean.name) for p in pairs] == [
        ("norain-1.png", "norain-1.png"),
        ("norain-2.png", "norain-2.png"),
        ("norain-10.png", "norain-10.png"),
    ]
    assert all(p.rainy.parent.name == "rain" and p.clean.parent.name == "norain" for p in pairs)


def test_rainy_subfolder_with_clean_files_at_the_root(tmp_path):
    for n in (1, 2):
        _write(tmp_path / "rainy" / f"rain-{n}.png")
        _write(tmp_path / f"norain-{n}.png")
    pairs, layout = find_pairs(tmp_path)
    assert layout == "rainy/rain-N + norain-N"
    assert [(p.rainy.name, p.clean.name) for p in pairs] == [
        ("rain-1.png", "norain-1.png"),
        ("rain-2.png", "norain-2.png"),
    ]
    assert pairs[0].clean.parent == tmp_path


def test_input_target_and_stems_match_across_endings(tmp_path):
    _write(tmp_path / "input" / "a.jpg")
    _write(tmp_path / "target" / "a.png")
    pairs, layout = find_pairs(tmp_path)
    assert layout == "input/ + target/"
    assert [(p.rainy.name, p.clean.name) for p in pairs] == [("a.jpg", "a.png")]


def test_rain200h_original_and_ddn_layouts(tmp_path):
    _write(tmp_path / "h" / "rain" / "X2" / "norain-1x2.png")
    _write(tmp_path / "h" / "norain" / "norain-1.png")
    pairs, layout = find_pairs(tmp_path / "h")
    assert "X2" in layout and pairs[0].clean.name == "norain-1.png"

    for k in (1, 2):
        _write(tmp_path / "ddn" / "rainy_image" / f"7_{k}.jpg")
    _write(tmp_path / "ddn" / "ground_truth" / "7.jpg")
    pairs, layout = find_pairs(tmp_path / "ddn")
    assert "DDN" in layout
    assert [(p.rainy.name, p.clean.name) for p in pairs] == [
        ("7_1.jpg", "7.jpg"),
        ("7_2.jpg", "7.jpg"),
    ]


def test_pair_list_and_image_list(tmp_path):
    _write(tmp_path / "r" / "x y.png")
    _write(tmp_path / "c" / "x.png")
    (tmp_path / "pairs.txt").write_text('# rainy clean\n\n"r/x y.png" c/x.png\n')
    pairs, layout = find_pairs(tmp_path / "pairs.txt")
    assert layout == "pair list"
    assert (
        pairs[0].rainy == tmp_path / "r" / "x y.png" and pairs[0].clean == tmp_path / "c" / "x.png"
    )

    (tmp_path / "photos.txt").write_text("r/x y.png\n# comment\nc/x.png\n")
    assert find_images(tmp_path / "photos.txt") == [
        tmp_path / "r" / "x y.png",
        tmp_path / "c" / "x.png",
    ]

    (tmp_path / "bad.txt").write_text("only-one-path.png\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 2 path"):
        find_pairs(tmp_path / "bad.txt")


def test_unknown_layout_lists_the_supported_ones(tmp_path):
    _write(tmp_path / "photos" / "a.png")
    with pytest.raises(DataError) as err:
        find_pairs(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    for layout in ("rain/ + norain/", "input/ + target/", "rainy/rain-N + norain-N", "list"):
        assert layout in message


def test_empty_folders_are_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        find_pairs(tmp_path / "empty")
    with pytest.raises(DataError, match="no images"):
        find_images(tmp_path / "empty")
    (tmp_path / "set" / "rain").mkdir(parents=True)
    (tmp_path / "set" / "norain").mkdir()
    with pytest.raises(DataError, match=r"rain: no images"):
        find_pairs(tmp_path / "set")


def test_missing_partner_errors_or_is_skipped_with_a_log(tmp_path, caplog):
    _write(tmp_path / "rain" / "a.png")
    _write(tmp_path / "rain" / "b.png")
    _write(tmp_path / "norain" / "a.png")
    with pytest.raises(ImageError, match="no clean partner") as err:
        find_pairs(tmp_path)
    assert str(tmp_path / "rain" / "b.png") in str(err.value)

    with caplog.at_level(logging.WARNING, logger="moss_tf.data"):
        pairs, _ = find_pairs(tmp_path, on_bad_image="skip")
    assert [p.name for p in pairs] == ["a"]
    assert "b.png" in caplog.text and "skipped 1 file" in caplog.text


def test_labeled_fraction_split_is_seeded_disjoint_and_sized():
    pairs = [f"pair{i}" for i in range(50)]
    labeled, rest = split_pairs(pairs, 0.1, seed=0)
    assert len(labeled) == 5 and len(rest) == 45
    assert set(labeled).isdisjoint(rest) and set(labeled) | set(rest) == set(pairs)
    assert split_pairs(pairs, 0.1, seed=0) == (labeled, rest)  # same seed, same split
    assert split_pairs(pairs, 0.1, seed=1)[0] != labeled  # another seed, another split
    assert len(split_pairs(pairs, 0.4, seed=0)[0]) == 20
    assert len(split_pairs(pairs[:3], 0.1, seed=0)[0]) == 1  # never empty


def test_ddn_sirr_test_folder_gives_dense_and_sparse(tmp_path):
    for k in range(1, 21):
        _write(tmp_path / "test" / "rain" / f"input{k}.png")
        _write(tmp_path / "test" / "norain" / f"input{k}.png")
    splits = find_test_splits(tmp_path / "test")
    assert sorted(splits) == ["dense", "sparse"]
    assert [p.name for p in splits["dense"]] == [f"input{k}" for k in range(1, 11)]
    assert [p.name for p in splits["sparse"]] == [f"input{k}" for k in range(11, 21)]


def test_other_test_folders_are_named_after_the_folder_or_subfolders(tmp_path):
    _write(tmp_path / "Rain100L" / "rain" / "norain-1.png")
    _write(tmp_path / "Rain100L" / "norain" / "norain-1.png")
    assert list(find_test_splits(tmp_path / "Rain100L")) == ["Rain100L"]
    _write(tmp_path / "Rain100H" / "input" / "1.png")
    _write(tmp_path / "Rain100H" / "target" / "1.png")
    assert list(find_test_splits(tmp_path)) == ["Rain100H", "Rain100L"]
