"""Shard folders (python -m moss_tf.data.shards): original bytes, the same crops, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_stream import _assert_resumes_at_step_2, _data, _first_batches, _pairs

from moss_tf.data import DataError, build_test_sets, build_training_data
from moss_tf.data.shard_files import MANIFEST, open_shards
from moss_tf.data.shards import main, pack_folder, verify_shards

SMALL_SHARDS = 0.01  # MiB: a few files per shard, so reads cross shards


def _packed(tmp_path, count=6):
    """(loose rain/ + norain/ folder, its shards, shards of its rain/ folder alone)."""
    loose = _pairs(tmp_path / "set", count, rainy_ext="jpg")
    paired = tmp_path / "shards"
    unpaired = tmp_path / "rain_shards"
    pack_folder(loose, paired, shard_mb=SMALL_SHARDS, progress=None)
    pack_folder(loose / "rain", unpaired, shard_mb=SMALL_SHARDS, progress=None)
    return loose, paired, unpaired


def test_packing_keeps_every_file_byte_for_byte(tmp_path):
    loose, paired, unpaired = _packed(tmp_path)
    shards = open_shards(paired)
    assert shards.kind == "paired" and len(shards.pairs) == 6
    assert len({m.shard for pair in shards.pairs for m in pair}) > 1  # several shards
    for rainy, clean in shards.pairs:
        assert rainy.read_bytes() == (loose / rainy.name).read_bytes()
        assert clean.read_bytes() == (loose / clean.name).read_bytes()
        assert (rainy.name, clean.name) == (f"rain/{rainy.stem}.jpg", f"norain/{rainy.stem}.png")
    images = open_shards(unpaired).images
    assert [m.name for m in images] == [f"{n}.jpg" for n in range(6)]
    assert verify_shards(paired) == 12  # every record's checksum and bytes


def test_shards_give_the_crops_of_the_loose_files(tmp_path):
    loose, paired, unpaired = _packed(tmp_path)

    def config(pairs, rainy, load):
        labeled = {"pairs": str(pairs), "fraction": 0.5}
        return _data(labeled=labeled, unlabeled={"rainy": str(rainy)}, load=load)

    _, from_files = _first_batches(config(loose, loose / "rain", "stream"), with_unlabeled=True)
    # Streamed: labeled pairs from shards, unlabeled images from shards and loose files
    # mixed (the leftover rainy inputs and a loose folder). In memory: all from shards.
    for rainy, load in ((loose / "rain", "stream"), (unpaired, "memory")):
        data, from_shards = _first_batches(config(paired, rainy, load), with_unlabeled=True)
        assert "shards of rain/ + norain/" in data.description
        for expected, got in zip(from_files, from_shards, strict=True):
            np.testing.assert_array_equal(expected, got, err_msg=load)
    _assert_resumes_at_step_2(config(paired, unpaired, "stream"), from_files[0])
    (split,) = build_test_sets(_data(test=str(paired))).values()
    (loose_split,) = build_test_sets(_data(test=str(loose))).values()
    for a, b in zip(split, loose_split, strict=True):
        np.testing.assert_array_equal(a["rainy"], b["rainy"])


def test_a_truncated_or_missing_shard_is_named(tmp_path):
    _, paired, _ = _packed(tmp_path)
    cfg = _data(labeled={"pairs": str(paired)}, load="stream")
    shard = sorted(paired.glob("shard-*.tfrecord"))[1]
    original = shard.read_bytes()
    shard.write_bytes(original[:-100])
    with pytest.raises(DataError, match=rf"{shard.name}: shard is \d+ bytes but .* says"):
        build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=False)
    shard.unlink()
    with pytest.raises(DataError, match=rf"{shard.name}: shard missing"):
        build_training_data(cfg, batch_size=2, crop_size=16, seed=0, with_unlabeled=False)
    corrupt = bytearray(original)
    corrupt[len(corrupt) // 2] ^= 0xFF  # same size: only the checksums see it
    shard.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=rf"{shard.name}: corrupt"):
        verify_shards(paired)


def test_packing_refuses_to_overwrite(tmp_path, capsys):
    loose, paired, _ = _packed(tmp_path)
    with pytest.raises(DataError, match=r"shards: not empty; .* --overwrite"):
        pack_folder(loose, paired, progress=None)
    assert main([str(loose), "--output", str(paired), "--overwrite"]) == 0
    assert len(open_shards(paired).pairs) == 6 and (paired / MANIFEST).is_file()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main([str(loose), "--output", str(other), "--overwrite"]) == 1
    assert "not a shard folder; refusing to delete it" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"


def test_an_unpartnered_file_stops_packing_naming_it(tmp_path):
    loose = _pairs(tmp_path / "set", 3)
    (loose / "norain" / "1.png").unlink()
    with pytest.raises(DataError, match=r"rain/1\.png: no clean partner"):
        pack_folder(loose, tmp_path / "out", progress=None)
