"""`oaml data import` on a folder of real pictures (scikit-image's photographs, cropped) in every
mode a user's folder holds, with the files a real folder also holds: duplicates, frames of one
subject, a truncated JPEG, a text file, an empty file, a file outside any class."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oaml.data.benchmarks import get_benchmark
from oaml.data.imglist import parse_imglist
from oaml.data.import_sources import s3_client, source_fingerprint
from oaml.data.importer import ImportConfig, run_import
from oaml.data.ood_sources import random_crops, skimage_image
from tests.conftest import oaml_in_process

SPLIT_FILES = ("train", "val", "test", "calibration")


def _crops(picture: str, count: int, seed: int, channels: int = 3) -> list[np.ndarray]:
    image = skimage_image(picture, channels)
    return random_crops(image, count, np.random.default_rng(seed), 40, scale=(0.2, 0.6))


def _save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """cat (RGB JPEGs, frames of 4 subjects, one nested folder), mug (RGBA PNGs), rocket
    (palette PNGs), page (grey, 8- and 16-bit PNGs); plus the files to skip."""
    root = tmp_path_factory.mktemp("user") / "photos"
    for k, crop in enumerate(_crops("chelsea", 12, 0)):
        sub = "indoor/" if k % 2 else ""
        _save(root / f"cat/{sub}u{k // 3}-frame{k % 3}.jpg", Image.fromarray(crop), quality=90)
    for k, crop in enumerate(_crops("coffee", 12, 1)):
        alpha = np.full((*crop.shape[:2], 1), 200, np.uint8)
        _save(root / f"mug/mug{k}.png", Image.fromarray(np.concatenate([crop, alpha], 2)))
    for k, crop in enumerate(_crops("rocket", 12, 2)):
        _save(root / f"rocket/r{k}.png", Image.fromarray(crop).convert("P"))
    for k, crop in enumerate(_crops("text", 12, 3, channels=1)):
        grey = crop[:, :, 0] if crop.ndim == 3 else crop
        image = Image.fromarray(grey.astype(np.uint16) * 257) if k % 2 else Image.fromarray(grey)
        _save(root / f"page/p{k}.png", image)
    # A copy within a class, a copy across classes, and the files a real folder also has.
    (root / "cat/copy-of-u0-frame0.jpg").write_bytes((root / "cat/u0-frame0.jpg").read_bytes())
    (root / "page/stray-mug.png").write_bytes((root / "mug/mug0.png").read_bytes())
    good = (root / "cat/u0-frame0.jpg").read_bytes()
    (root / "cat/broken.jpg").write_bytes(good[: len(good) // 2])
    (root / "cat/notes.txt").write_text("shot on a phone\n")
    (root / "mug/empty.png").write_bytes(b"")
    (root / "README.md").write_text("my photos\n")
    return root


@pytest.fixture(scope="module")
def ood_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user_ood") / "astronauts"
    for k, crop in enumerate(_crops("astronaut", 6, 4)):
        _save(folder / f"a{k}.png", Image.fromarray(crop))
    return folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory, user_folder) -> Path:
    data = tmp_path_factory.mktemp("data")
    result = oaml_in_process(
        "data", "import", "--from", str(user_folder), "--name", "mine", "--root", str(data),
        "--group-by", r"^(u\d+)-", "--seed", "1", "--workers", "1", "--far-count", "40",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return data


def _report(data: Path, name: str = "mine") -> dict:
    return json.loads((data / "benchmark_imglist" / name / "import_report.json").read_text())


def _lists(data: Path, name: str = "mine") -> dict[str, list]:
    folder = data / "benchmark_imglist" / name
    return {s: parse_imglist(folder / f"{s}_{name}.txt") for s in SPLIT_FILES}


def test_splits_are_disjoint_stratified_and_named_by_split(imported):
    lists = _lists(imported)
    paths = [e.path for entries in lists.values() for e in entries]
    assert len(paths) == len(set(paths))
    spec = get_benchmark("mine", imported)
    assert spec.class_names == ("cat", "mug", "page", "rocket")
    assert spec.calibration is not None and spec.calibration.imglist.endswith(
        "calibration_mine.txt"
    )
    for label in range(4):
        assert any(e.label == label for e in lists["train"]), label
    assert len(lists["train"]) > len(lists["test"]) > 0
    assert len(lists["calibration"]) > 0 and len(lists["val"]) > 0


def test_every_mode_arrives_as_one_channel_count_at_one_size(imported):
    spec = get_benchmark("mine", imported)
    assert spec.channels == 3 and spec.input_size == 40  # mixed modes; crops are 40 px
    assert len(spec.mean) == len(spec.std) == 3
    for entries in _lists(imported).values():
        for entry in entries:
            with Image.open(imported / "images_classic" / entry.path) as img:
                assert img.mode == "RGB" and img.size == (40, 40), entry.path


def test_each_image_keeps_its_source_file_name(imported, user_folder):
    sources = {p.name for p in user_folder.rglob("*") if p.is_file()}
    for entries in _lists(imported).values():
        assert all(Path(e.path).name in sources for e in entries)
    # Folders below the class are kept too, so the path traces back to the file.
    assert any("/cat/indoor/u" in e.path for s in _lists(imported).values() for e in s)


def test_bad_files_are_reported_with_their_reason(imported, user_folder):
    report = _report(imported)
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"broken.jpg", "notes.txt", "empty.png", "README.md"}
    assert "decoded" in reasons["broken.jpg"]
    assert "not an image" in reasons["notes.txt"]
    assert "class subfolder" in reasons["README.md"]
    assert report["counts"]["listed"] == sum(1 for p in user_folder.rglob("*") if p.is_file())
    assert report["counts"]["imported"] == 12 * 4 + 2  # the two copies are kept, in one split
    assert report["classes"]["cat"]["images"] == 13
    assert report["imbalance"] == pytest.approx(13 / 12, abs=1e-3)


def test_duplicates_and_groups_stay_in_one_split(imported):
    split_of = {
        Path(e.path).name: split for split, entries in _lists(imported).items() for e in entries
    }
    assert split_of["copy-of-u0-frame0.jpg"] == split_of["u0-frame0.jpg"]
    assert split_of["stray-mug.png"] == split_of["mug0.png"]
    for unit in range(4):
        assert len({split_of[f"u{unit}-frame{k}.jpg"] for k in range(3)}) == 1
    duplicates = _report(imported)["duplicates"]
    assert duplicates["groups"] == 2 and duplicates["across_classes"] == 1


def test_built_in_far_sets_match_the_data(imported):
    spec = get_benchmark("mine", imported)
    far = {s.name for s in spec.ood if s.group == "far"}
    # clipart and glyphs from Debian's openclipart-png and fonts-noto-core (`make setup`).
    assert far == {"textures", "photos", "faces", "digits", "clipart", "glyphs"}
    for name in ("photos", "clipart", "glyphs"):
        listed = parse_imglist(next(s for s in spec.ood if s.name == name).imglist_path(imported))
        assert len(listed) == 40  # --far-count
        with Image.open(imported / "images_classic" / listed[0].path) as img:
            assert img.mode == "RGB" and img.size == (40, 40)


def test_same_seed_same_lists_and_a_rerun_reuses_the_conversions(imported, user_folder):
    before = {s: [(e.path, e.label) for e in v] for s, v in _lists(imported).items()}
    cfg = ImportConfig(
        source=str(user_folder), name="mine", root=imported, group_by=r"^(u\d+)-", seed=1,
        workers=2, far_count=40,
    )  # fmt: skip
    run_import(cfg)
    after = {s: [(e.path, e.label) for e in v] for s, v in _lists(imported).items()}
    assert after == before
    counts = _report(imported)["counts"]
    assert counts["reused"] == counts["imported"]
    # Nothing read again but the two files that are no images (README.md is in no class).
    assert counts["probes_reused"] == counts["listed"] - 3


def test_a_killed_import_resumes(tmp_path, user_folder):
    """A run killed mid-conversion (journal cut, no spec yet) finishes with the same lists."""
    cfg = ImportConfig(source=str(user_folder), name="k", root=tmp_path, workers=1, far_count=40)
    run_import(cfg)
    folder = tmp_path / "benchmark_imglist" / "k"
    expected = (folder / "train_k.txt").read_text()
    journal = folder / ".import-journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:20]) + "\n" + lines[20][:15])  # cut mid-line
    for name in ("benchmark.json", "train_k.txt", "manifest.json"):
        (folder / name).unlink()
    run_import(cfg)
    assert (folder / "train_k.txt").read_text() == expected
    assert _report(tmp_path, "k")["counts"]["reused"] == 20


def test_strict_refuses_and_names_the_file(tmp_path, user_folder):
    result = oaml_in_process(
        "data", "import", "--from", str(user_folder), "--name", "s", "--root", str(tmp_path),
        "--strict", "--workers", "1", "--far-count", "40",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--strict" in result.stderr and "notes.txt" in result.stderr
    assert not (tmp_path / "benchmark_imglist" / "s" / "benchmark.json").exists()


def test_holdout_classes_and_user_ood_become_test_sets(tmp_path, user_folder, ood_folder):
    result = oaml_in_process(
        "data", "import", "--from", str(user_folder), "--name", "open", "--root", str(tmp_path),
        "--holdout-classes", "rocket", "--ood", f"astronauts={ood_folder}",
        "--ood", f"near:again={ood_folder}", "--workers", "1", "--far-count", "40", "--size", "32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = get_benchmark("open", tmp_path)
    assert spec.class_names == ("cat", "mug", "page") and spec.input_size == 32
    groups = {s.name: s.group for s in spec.ood}
    held = [name for name in groups if "rocket" in name]
    assert len(held) == 1 and groups[held[0]] == "near"
    assert groups["astronauts"] == "far" and groups["again"] == "near"
    rockets = parse_imglist(next(s for s in spec.ood if s.name == held[0]).imglist_path(tmp_path))
    assert len(rockets) == 12 and all(e.label == -1 for e in rockets)
    train = parse_imglist(spec.train.imglist_path(tmp_path))
    assert not any("rocket" in e.path for e in train)


def test_grey_folders_import_as_one_channel(tmp_path):
    source = tmp_path / "src"
    for label, picture in enumerate(("camera", "moon")):
        for k, crop in enumerate(_crops(picture, 10, label, channels=1)):
            _save(source / picture / f"{k}.png", Image.fromarray(crop.reshape(40, 40)))
    run_import(
        ImportConfig(source=str(source), name="grey", root=tmp_path / "d", workers=1, far_count=40)
    )
    spec = get_benchmark("grey", tmp_path / "d")
    assert spec.channels == 1 and len(spec.mean) == 1


def test_a_csv_of_paths_and_labels(tmp_path, user_folder):
    rows = ["path,label"] + [
        f"{p.relative_to(user_folder.parent)},{p.parent.name}"
        for p in sorted((user_folder / "mug").glob("*.png"))
        + sorted((user_folder / "rocket").glob("*.png"))
    ]
    table = user_folder.parent / "labels.csv"
    table.write_text("\n".join(rows) + "\n")
    run_import(ImportConfig(source=str(table), name="csv", root=tmp_path, workers=1, far_count=40))
    spec = get_benchmark("csv", tmp_path)
    assert spec.class_names == ("mug", "rocket")
    report = _report(tmp_path, "csv")
    assert report["counts"]["imported"] == 24
    assert [Path(s["file"]).name for s in report["skipped"]] == ["empty.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--holdout-classes", "dog"], "no such class"),
        (["--group-by", "(unclosed"], "not a regular expression"),
        (["--val", "0.5", "--test", "0.5"], "positive share"),
        (["--name", "../up"], "--name"),
        (["--ood", "nofolder"], "SET=DIR"),
        (["--ood", "id=/tmp"], "ID test set"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, user_folder, args, message):
    result = oaml_in_process(
        "data", "import", "--from", str(user_folder), "--name", "x", "--root", str(tmp_path),
        *args,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_source_names_the_layout(tmp_path):
    result = oaml_in_process(
        "data", "import", "--from", str(tmp_path / "nope"), "--name", "x", "--root", str(tmp_path)
    )
    assert result.returncode == 2 and "class subfolders" in result.stderr


def test_an_unknown_benchmark_says_how_to_import(tmp_path):
    with pytest.raises(KeyError, match="oaml data import"):
        get_benchmark("nothere", tmp_path)


def test_png_bytes_survive_as_the_source_name(imported):
    entry = _lists(imported)["train"][0]
    data = (imported / "images_classic" / entry.path).read_bytes()
    assert Image.open(io.BytesIO(data)).format == "PNG"


def test_a_class_too_small_to_split_is_left_out_and_reported(tmp_path, user_folder):
    source = tmp_path / "src"
    shutil.copytree(user_folder / "mug", source / "mug")
    shutil.copytree(user_folder / "page", source / "page")
    (source / "rocket").mkdir()
    for path in sorted((user_folder / "rocket").glob("*.png"))[:3]:
        shutil.copy(path, source / "rocket" / path.name)
    result = oaml_in_process(
        "data", "import", "--from", str(source), "--name", "few", "--root", str(tmp_path / "d"),
        "--workers", "1", "--far-count", "40",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "rocket (3)" in result.stderr
    assert get_benchmark("few", tmp_path / "d").class_names == ("mug", "page")
    report = _report(tmp_path / "d", "few")
    assert report["left_out_classes"] == {"rocket": 3}
    assert sum("only 3 readable" in s["reason"] for s in report["skipped"]) == 3


@pytest.mark.slow
def test_an_s3_prefix_imports_like_the_folder(
    tmp_path, user_folder, ood_folder, imported, s3_store, monkeypatch
):
    """The same tree under s3://BUCKET/user/photos (SeaweedFS, a real S3 server) gives the same
    lists as the folder it was uploaded from."""
    from tests.conftest import run_oaml
    from tests.tracking.services import S3_KEY, S3_SECRET

    client = s3_store.client()
    for path in sorted(p for p in user_folder.rglob("*") if p.is_file()):
        key = f"user/photos/{path.relative_to(user_folder).as_posix()}"
        client.put_object(Bucket=s3_store.bucket, Key=key, Body=path.read_bytes())
    env = {
        "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": s3_store.endpoint,
    }  # fmt: skip
    run_oaml(
        "data", "import", "--from", f"s3://{s3_store.bucket}/user/photos", "--name", "mine",
        "--root", str(tmp_path), "--group-by", r"^(u\d+)-", "--seed", "1", "--far-count", "40",
        env=env, unset=("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"),
    )  # fmt: skip
    # The pipeline's cache key for the prefix: the same until an object is added.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    s3_client.cache_clear()
    cfg = ImportConfig(source=f"s3://{s3_store.bucket}/user/photos", name="m", root=tmp_path)
    before = source_fingerprint(cfg)
    assert source_fingerprint(cfg) == before
    client.put_object(Bucket=s3_store.bucket, Key="user/photos/mug/more.png", Body=b"x")
    assert source_fingerprint(cfg) != before
    s3_client.cache_clear()
    from_s3 = {s: [(e.path, e.label) for e in v] for s, v in _lists(tmp_path).items()}
    assert from_s3 == {s: [(e.path, e.label) for e in v] for s, v in _lists(imported).items()}
    skipped = {Path(s["file"]).name for s in _report(tmp_path)["skipped"]}
    assert skipped == {"broken.jpg", "notes.txt", "empty.png", "README.md"}
    # The user's OOD images from a prefix too (what a pipeline on a cluster passes).
    for path in sorted(ood_folder.iterdir()):
        client.put_object(
            Bucket=s3_store.bucket, Key=f"user/astro/{path.name}", Body=path.read_bytes()
        )
    run_oaml(
        "data", "import", "--from", f"s3://{s3_store.bucket}/user/photos", "--name", "o",
        "--root", str(tmp_path), "--ood", f"astro=s3://{s3_store.bucket}/user/astro",
        "--far-count", "40", env=env, unset=("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"),
    )  # fmt: skip
    astro = parse_imglist(tmp_path / "benchmark_imglist/o/test_astro.txt")
    assert sorted(Path(e.path).name for e in astro) == sorted(p.name for p in ood_folder.iterdir())
    wrong = run_oaml(
        "data", "import", "--from", f"s3://{s3_store.bucket}/nothing", "--name", "none",
        "--root", str(tmp_path), env=env, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and "class prefixes" in wrong.stderr


def test_the_fingerprint_follows_the_listing(tmp_path, user_folder, ood_folder):
    """The pipeline's cache key for a folder: unchanged listing, same key; a file rewritten,
    added or removed (in a class or an --ood folder), another key."""
    source, ood = tmp_path / "src", tmp_path / "ood"
    shutil.copytree(user_folder, source)
    shutil.copytree(ood_folder, ood)
    cfg = ImportConfig(source=str(source), name="f", root=tmp_path, ood=(("a", str(ood), "far"),))
    first = source_fingerprint(cfg)
    assert source_fingerprint(cfg) == first and len(first) == 64
    keys = {first}
    (source / "mug/mug1.png").write_bytes((source / "mug/mug2.png").read_bytes() + b"\0")
    keys.add(source_fingerprint(cfg))
    shutil.copy(source / "rocket/r1.png", source / "rocket/new.png")
    keys.add(source_fingerprint(cfg))
    (ood / "a0.png").unlink()
    keys.add(source_fingerprint(cfg))
    assert len(keys) == 4
    assert source_fingerprint(replace(cfg, ood=())) not in keys


def test_a_changed_file_is_read_and_converted_again(tmp_path, user_folder):
    source = tmp_path / "src"
    shutil.copytree(user_folder / "mug", source / "mug")
    shutil.copytree(user_folder / "rocket", source / "rocket")
    cfg = ImportConfig(source=str(source), name="c", root=tmp_path / "d", workers=1, far_count=40)
    run_import(cfg)
    changed = source / "rocket" / "r0.png"
    Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(changed)
    run_import(cfg)
    counts = _report(tmp_path / "d", "c")["counts"]
    assert counts["probes_reused"] == counts["listed"] - 2  # r0.png and the empty file
    assert counts["reused"] == counts["imported"] - 1
    listed = {Path(e.path).name: e.path for s in _lists(tmp_path / "d", "c").values() for e in s}
    with Image.open(tmp_path / "d" / "images_classic" / listed["r0.png"]) as img:
        assert np.asarray(img).max() == 7


def test_a_held_out_class_keeps_its_name_in_the_set_name(tmp_path, user_folder, ood_folder):
    source = tmp_path / "src"
    shutil.copytree(user_folder / "mug", source / "coffee mug")
    shutil.copytree(user_folder / "page", source / "page")
    shutil.copytree(user_folder / "rocket", source / "rocket")
    cfg = ImportConfig(
        source=str(source), name="h", root=tmp_path / "d", holdout_classes=("coffee mug",),
        ood=(("holdout_fake", str(ood_folder), "far"),), workers=1, far_count=40,
    )  # fmt: skip
    run_import(cfg)
    groups = {s.name: s.group for s in get_benchmark("h", tmp_path / "d").ood}
    assert groups["holdout_coffee mug"] == "near"
    assert groups["holdout_fake"] == "far"  # a user's set is what they say, whatever its name
