"""The offline benchmark: determinism, manifest, splits, and the fmnist6 open-set variant."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from oaml.data import ood_sources
from oaml.data.benchmarks import get_benchmark
from oaml.data.fashion_mnist import load_split
from oaml.data.imglist import parse_imglist
from oaml.data.prepare import PACKAGED_COUNT, prepare, verify


def _idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    """IDX files holding the first 1,000 real training and 200 test images (fast to prepare)."""
    folder = tmp_path_factory.mktemp("fmnist_small")
    for split, count, stem in (("train", 1000, "train"), ("test", 200, "t10k")):
        images, labels = load_split(split)
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images[:count])))
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels[:count])))
    return folder


def _manifest(root, name="fmnist"):
    return json.loads((root / "benchmark_imglist" / name / "manifest.json").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_source) -> Path:
    """fmnist prepared once from `small_source`; each test damages its own copy (`_copy`)."""
    root = tmp_path_factory.mktemp("built") / "d"
    assert not prepare("fmnist", root, source_dir=small_source, val_size=100).reused
    return root


def _copy(built: Path, tmp_path: Path) -> Path:
    """A copy of the prepared root with the files' times kept (as a backup restore keeps them)."""
    return Path(shutil.copytree(built, tmp_path / "d"))


def test_same_sha256_twice(tmp_path, small_source, built):
    second = prepare("fmnist", tmp_path / "b", source_dir=small_source, val_size=100)
    assert not second.reused
    assert _manifest(built)["imglists"] == _manifest(tmp_path / "b")["imglists"]


def test_second_run_verifies_and_a_damaged_list_is_rebuilt(tmp_path, small_source, built):
    root = _copy(built, tmp_path)
    assert prepare("fmnist", root, source_dir=small_source, val_size=100).reused
    listing = root / "benchmark_imglist" / "fmnist" / "test_photos.txt"
    listing.write_text(listing.read_text()[:-20])
    assert not verify("fmnist", root)
    assert not prepare("fmnist", root, source_dir=small_source, val_size=100).reused
    assert verify("fmnist", root)


def test_a_damaged_image_is_detected_and_repaired(tmp_path, small_source, built):
    root = _copy(built, tmp_path)
    image = (
        root
        / "images_classic"
        / parse_imglist(root / "benchmark_imglist/fmnist/test_fmnist.txt")[3].path
    )
    original = image.read_bytes()
    image.write_bytes(original[:-10])
    assert not verify("fmnist", root)
    prepare("fmnist", root, source_dir=small_source, val_size=100)
    assert image.read_bytes() == original and verify("fmnist", root)


def test_a_rewrite_of_the_same_size_is_detected_and_an_unchanged_folder_is_not_reread(
    tmp_path, small_source, built, monkeypatch
):
    """A re-run checks sizes and times, and hashes the images only when one changed since the
    last full check: an image rewritten with other bytes of the same length is caught."""
    import oaml.data.prepare as prepare_module

    root = _copy(built, tmp_path)
    hashed = []
    real_sha256 = prepare_module.sha256_file
    monkeypatch.setattr(
        prepare_module, "sha256_file", lambda path: hashed.append(path) or real_sha256(path)
    )
    assert verify("fmnist", root)
    assert not [p for p in hashed if "images_classic" in str(p)]  # nothing changed: no reading
    image = (
        root
        / "images_classic"
        / parse_imglist(root / "benchmark_imglist/fmnist/test_fmnist.txt")[5].path
    )
    original = image.read_bytes()
    image.write_bytes(bytes(255 - b for b in original))  # same size, new time
    assert not verify("fmnist", root)
    prepare("fmnist", root, source_dir=small_source, val_size=100)
    assert image.read_bytes() == original and verify("fmnist", root)


def test_a_source_folder_without_the_files_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks the Fashion-MNIST files"):
        prepare("fmnist", tmp_path / "d", source_dir=tmp_path)


def test_full_fmnist_splits(data_root):
    lists = data_root / "benchmark_imglist" / "fmnist"
    train = parse_imglist(lists / "train_fmnist.txt")
    val = parse_imglist(lists / "val_fmnist.txt")
    test = parse_imglist(lists / "test_fmnist.txt")
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert not {e.path for e in train} & {e.path for e in val}
    assert np.bincount([e.label for e in val]).tolist() == [500] * 10  # stratified
    manifest = _manifest(data_root)
    assert all(len(v["sha256"]) == 64 for v in manifest["imglists"].values())
    counts = {k.rsplit("/", 1)[1]: v["count"] for k, v in manifest["imglists"].items()}
    assert counts["test_digits.txt"] == 1797 and counts["test_faces.txt"] == 200
    # The packaged far sets where installed, listed in the spec that evaluation reads.
    packaged = sorted(ood_sources.packaged_sets())
    assert manifest["packaged"] == packaged
    assert all(counts[f"test_{name}.txt"] == PACKAGED_COUNT for name in packaged)
    far = [s.name for s in get_benchmark("fmnist", data_root).ood if s.group == "far"]
    assert far == ["textures", "photos", "faces", *packaged]


def test_fmnist6_holds_out_classes_6_to_9(data_root):
    lists = data_root / "benchmark_imglist" / "fmnist6"
    assert max(e.label for e in parse_imglist(lists / "train_fmnist6.txt")) == 5
    held_out = parse_imglist(lists / "test_fmnist_held_out.txt")
    assert len(held_out) == 4000 and {e.label for e in held_out} == {-1}
    test6 = {e.path for e in parse_imglist(lists / "test_fmnist6.txt")}
    assert len(test6) == 6000 and not test6 & {e.path for e in held_out}


def test_ood_validation_shares_no_source_with_tests():
    val = set(ood_sources.PHOTO_VAL_SOURCES)
    assert not val & set(ood_sources.PHOTO_TEST_SOURCES)
    assert not val & set(ood_sources.TEXTURE_SOURCES)


def test_prepare_refuses_benchmarks_it_cannot_build(tmp_path):
    with pytest.raises(ValueError, match="cannot be built offline"):
        prepare("cifar10", tmp_path)
