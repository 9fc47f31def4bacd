"""`oaml evaluate` end to end on the real benchmark, as ACCEPTANCE.md specifies its outputs."""

import json

import numpy as np
import pytest
from PIL import Image

from oaml.data.imglist import parse_imglist
from oaml.data.ood_sources import packaged_sets
from tests.conftest import TINY, oaml_in_process, run_oaml

pytestmark = pytest.mark.slow


@pytest.fixture
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture
def extra_imglist(tmp_path):
    """An extra OOD set: RGB and RGBA images of odd sizes, a path with a space, a subfolder."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "extra set"
    (folder / "sub dir").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (9, 9, 4), dtype=np.uint8)).save(
        folder / "sub dir" / "b c.png"
    )
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(folder / "d.jpg")
    listing = folder / "list.txt"
    listing.write_text("a.png 0\nsub dir/b c.png 0\nd.jpg 0\n")
    return listing


def test_evaluate_json_scores_and_plots(tmp_path, data_root, checkpoint, extra_imglist):
    out = tmp_path / "eval.json"
    scores = tmp_path / "scores"
    run_oaml(
        "evaluate", "--checkpoint", str(checkpoint), "--benchmark", "fmnist",
        "--data-root", str(data_root), "--extra-ood", f"mine={extra_imglist}",
        "--json", str(out), "--save-scores", str(scores),
    )  # fmt: skip
    metrics = json.loads(out.read_text())
    assert metrics["benchmark"] == "fmnist" and metrics["score"] == "ebo"
    # A few dozen steps of training: well above the 10% of chance.
    assert metrics["id"]["n"] == 10000 and 0.2 < metrics["id"]["accuracy"] <= 1.0
    # The packaged far sets (clip art, glyphs) wherever `make setup` installed them.
    far_sets = ["textures", "photos", "faces", *packaged_sets()]
    assert set(metrics["ood"]) == {"digits", *far_sets, "mine"}
    assert metrics["ood"]["mine"] == {**metrics["ood"]["mine"], "group": "extra", "n": 3}
    assert metrics["ood"]["digits"]["group"] == "near"
    for entry in metrics["ood"].values():
        for key in ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_openood"):
            assert 0.0 <= entry[key] <= 1.0
    far = [metrics["ood"][s]["auroc"] for s in far_sets]
    assert metrics["far"]["auroc"] == pytest.approx(np.mean(far))
    assert metrics["near"]["auroc"] == pytest.approx(metrics["ood"]["digits"]["auroc"])

    id_scores = np.load(scores / "id.npy")
    assert id_scores.shape == (10000,)
    assert np.load(scores / "mine.npy").shape == (3,)
    digits = len(parse_imglist(data_root / "benchmark_imglist/fmnist/test_digits.txt"))
    assert np.load(scores / "digits.npy").shape == (digits,)
    for png in ("score_histograms.png", "roc_curves.png"):
        assert (tmp_path / png).stat().st_size > 10_000


def test_saved_scores_follow_imglist_order(tmp_path, data_root, checkpoint):
    """Scoring a reordered copy of a set gives the same per-image scores, reordered."""
    listing = data_root / "benchmark_imglist/fmnist/test_faces.txt"
    entries = parse_imglist(listing)
    reversed_list = tmp_path / "rev.txt"
    image_root = data_root / "images_classic"
    reversed_list.write_text("".join(f"{image_root / e.path} 0\n" for e in entries[::-1]))
    run_oaml(
        "evaluate", "--checkpoint", str(checkpoint), "--data-root", str(data_root),
        "--extra-ood", f"rev={reversed_list}", "--save-scores", str(tmp_path / "s"),
    )  # fmt: skip
    forward, backward = np.load(tmp_path / "s/faces.npy"), np.load(tmp_path / "s/rev.npy")
    assert np.allclose(forward, backward[::-1], atol=1e-5)


def test_msp_score_and_fmnist6(tmp_path, data_root):
    out = tmp_path / "run6"
    run_oaml(
        "train", "--out", str(out), "--data-root", str(data_root), *TINY,
        "--set", "benchmark=fmnist6", "--set", "student.train.epochs=1",
    )  # fmt: skip
    run_oaml(
        "evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--benchmark", "fmnist6",
        "--data-root", str(data_root), "--score", "msp", "--json", str(tmp_path / "m.json"),
    )  # fmt: skip
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["score"] == "msp" and metrics["id"]["n"] == 6000
    assert metrics["ood"]["fmnist_held_out"]["group"] == "near"
    assert metrics["ood"]["fmnist_held_out"]["n"] == 4000


@pytest.mark.parametrize("score", ["knn", "vim", "gen"])
def test_posthoc_scores_on_the_real_benchmark(tmp_path, data_root, checkpoint, score):
    """Feature scores fit on ID training images and score every set; a head score does not."""
    out = tmp_path / "m.json"
    run_oaml(
        "evaluate", "--checkpoint", str(checkpoint), "--data-root", str(data_root),
        "--score", score, "--fit-images", "2000", "--json", str(out),
        "--save-scores", str(tmp_path / "s"),
    )  # fmt: skip
    metrics = json.loads(out.read_text())
    assert metrics["score"] == score and metrics["id"]["n"] == 10000
    assert ("score_settings" in metrics) == (score != "gen")
    for name, values in metrics["ood"].items():
        assert 0 <= values["auroc"] <= 1 and values["n"] > 0, name
    # Digits are far from clothes for any sensible score, even on a one-epoch model: above
    # chance (0.5) by a margin (knn, the weakest here, measured 0.597 on this tiny model).
    assert metrics["ood"]["digits"]["auroc"] > 0.55
    assert np.isfinite(np.load(tmp_path / "s" / "id.npy")).all()


def test_user_errors_are_one_line(tmp_path, data_root, checkpoint, tiny_onnx):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n")
    cases = [
        (["--checkpoint", str(tmp_path / "none.pt")], "does not exist"),
        (["--checkpoint", str(checkpoint), "--benchmark", "fmnist6"], "has 10 classes"),
        (["--checkpoint", str(checkpoint), "--extra-ood", "oops"], "NAME=IMGLIST"),
        (["--checkpoint", str(checkpoint), "--score", "odin"], "unknown score 'odin'"),
        (["--onnx", str(tiny_onnx), "--score", "knn"], "evaluate the --checkpoint"),
        (["--checkpoint", str(checkpoint), "--extra-ood", f"x={tmp_path}/no.txt"], "no.txt"),
        (["--checkpoint", str(checkpoint), "--extra-ood", f"e={empty}"], "lists no images"),
        (
            ["--checkpoint", str(checkpoint), "--extra-ood", f"a={empty}", "--extra-ood", "a=b"],
            "given twice",
        ),
    ]
    common = ("evaluate", "--data-root", str(data_root))
    # The first case as a user meets it (a process of its own), the rest in this process.
    procs = [run_oaml(*common, *cases[0][0], check=False)]
    procs += [oaml_in_process(*common, *args) for args, _ in cases[1:]]
    for proc, (_, message) in zip(procs, cases, strict=True):
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
