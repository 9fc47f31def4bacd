"""`oaml score`: files, folders and imglists in; CSV or JSONL out; same numbers as the server."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from oaml.data.imglist import parse_imglist
from oaml.serving.detector import Detector
from oaml.serving.images import decode_image
from tests.conftest import oaml_in_process, run_oaml

pytestmark = pytest.mark.slow


def test_score_folder_imglist_and_bad_file(tiny_onnx, data_root, tmp_path):
    listing = data_root / "benchmark_imglist" / "fmnist" / "test_faces.txt"
    entries = parse_imglist(listing)
    folder = tmp_path / "inputs"
    folder.mkdir()
    for entry in entries[:5]:
        shutil.copy(data_root / "images_classic" / entry.path, folder / entry.path.split("/")[-1])
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    small_list = tmp_path / "list.txt"
    small_list.write_text(
        "".join(f"{data_root / 'images_classic' / e.path} 0\n" for e in entries[5:8])
    )
    out = tmp_path / "scores.csv"
    proc = run_oaml("score", str(folder), str(small_list), "--model", str(tiny_onnx),
                    "--out", str(out), "--batch-size", "3")  # fmt: skip
    assert "8 images scored" in proc.stdout and "1 unreadable" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 9
    broken = [r for r in rows if r["path"].endswith("broken.png")]
    assert broken and "not an image" in broken[0]["error"]

    detector = Detector(tiny_onnx)
    good = [r for r in rows if not r["error"]]
    from pathlib import Path

    images = np.stack([decode_image(Path(r["path"]), 28, 1) for r in good])
    for row, expected in zip(good, detector.decide(*detector.run(images)), strict=True):
        assert int(row["label"]) == expected["label"]
        assert float(row["energy"]) == pytest.approx(expected["energy"], abs=1e-5)
        assert (row["is_ood"] == "True") == expected["is_ood"]

    jsonl = tmp_path / "scores.jsonl"
    run_oaml("score", str(small_list), "--model", str(tiny_onnx), "--out", str(jsonl))
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["error"] is None


def test_score_openood_imglist_with_image_root(tiny_onnx, data_root, tmp_path):
    listing = data_root / "benchmark_imglist" / "fmnist" / "test_faces.txt"
    out = tmp_path / "faces.jsonl"
    proc = run_oaml("score", str(listing), "--model", str(tiny_onnx), "--out", str(out),
                    "--image-root", str(data_root / "images_classic"))  # fmt: skip
    assert "200 images scored" in proc.stdout and "0 unreadable" in proc.stdout
    assert len(out.read_text().splitlines()) == 200


def test_score_rejects_unknown_output_format_and_missing_input(tiny_onnx, tmp_path):
    proc = oaml_in_process("score", str(tmp_path), "--model", str(tiny_onnx),
                           "--out", str(tmp_path / "x.parquet"))  # fmt: skip
    assert proc.returncode == 2 and ".csv or .jsonl" in proc.stderr
    proc = oaml_in_process("score", str(tmp_path / "nope.png"), "--model", str(tiny_onnx),
                           "--out", str(tmp_path / "x.csv"))  # fmt: skip
    assert proc.returncode == 2 and "nope.png" in proc.stderr
    assert not (tmp_path / "x.csv").exists()
