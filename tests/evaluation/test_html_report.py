"""The evaluation's HTML report: its tables against references by hand, the worst cases picked
right, and the real page rendered in headless Chromium: it fits the page, every image loads."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oaml.evaluation.evaluate import Evaluation
from oaml.evaluation.html_report import (
    Reference,
    headline_table,
    headline_value,
    worst_cases,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Written into the page by the script the test adds: the layout's width against the window's,
# the images that failed to load and those wider than the page.
CHECK = """<script>window.addEventListener('load', () => {
  const doc = document.documentElement, images = [...document.images];
  const out = {scroll: doc.scrollWidth, width: window.innerWidth, images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).length,
    overflowing: images.filter(i => i.getBoundingClientRect().right > window.innerWidth + 1).length,
    text: document.body.innerText};
  const pre = document.createElement('pre'); pre.id = 'check';
  pre.style.wordBreak = 'break-all'; pre.style.whiteSpace = 'pre-wrap';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""


def _metrics(auroc: float, accuracy: float = 0.9) -> dict:
    ood = {"auroc": auroc, "fpr95": 0.3, "fpr95_openood": 0.4, "aupr_in": 0.9, "aupr_out": 0.8,
           "n": 4, "group": "far"}  # fmt: skip
    far = {"auroc": auroc, "fpr95": 0.3}
    return {"benchmark": "fmnist6", "score": "ebo", "id": {"accuracy": accuracy, "n": 4},
            "ood": {"digits": ood}, "near": None, "far": far}  # fmt: skip


def _evaluation(tmp_path: Path) -> Evaluation:
    """Four ID images and four OOD images on disk, each of its own shade, with known scores."""
    for name in ("id", "digits"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(
                np.full((8, 8), 10 * i + (100 if name == "digits" else 0), np.uint8)
            ).save(tmp_path / name / f"{i}.png")
    paths = [f"{i}.png" for i in range(4)]
    return Evaluation(
        metrics=_metrics(0.75),
        confidences={
            "id": np.array([5.0, 1.0, 3.0, 4.0]),
            "digits": np.array([0.5, 4.5, 2.0, 0.1]),
        },
        groups={"digits": "far"},
        predictions={"id": np.array([0, 1, 2, 3]), "digits": np.array([4, 5, 0, 1])},
        images={"id": (tmp_path / "id", paths), "digits": (tmp_path / "digits", paths)},
    )


def test_headline_values_read_nested_and_flat_metrics():
    assert headline_value(_metrics(0.8), ("far", "auroc")) == 0.8
    assert headline_value({"far_auroc": 0.7}, ("far", "auroc")) == 0.7
    assert headline_value(_metrics(0.8), ("near", "auroc")) is None


def test_the_headline_shows_the_difference_to_each_reference():
    table = headline_table(
        _metrics(0.80, accuracy=0.90),
        [Reference("champion", {"id_accuracy": 0.92, "far_auroc": 0.75}, "v3"),
         Reference("cross-entropy start", None, "not known")],
    )  # fmt: skip
    assert "75.00 <span class='better'>(+5.00)</span>" in table  # ours higher AUROC: better
    assert "92.00 <span class='worse'>(-2.00)</span>" in table  # ours lower accuracy: worse
    assert "n/a" in table and "not known" in table


def test_worst_cases_are_the_surest_mistakes(tmp_path):
    cases = worst_cases(_evaluation(tmp_path), [f"c{i}" for i in range(6)], "L", n=2)
    accepted, flagged = cases.values()
    assert [c.caption for c in accepted] == [
        "digits: taken as c5, score 4.5", "digits: taken as c0, score 2"]  # fmt: skip
    assert [int(c.image[0, 0]) for c in accepted] == [110, 120]
    assert [c.caption for c in flagged] == ["predicted c1, score 1", "predicted c2, score 3"]


def _render(page: Path, width: int, tmp_path: Path) -> dict:
    if CHROMIUM is None:
        pytest.fail("chromium is missing: run `make test` (it installs Debian's chromium)")
    checked = page.with_name(f"checked-{width}.html")
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / f'profile-{width}'}", f"--window-size={width},900",
             "--virtual-time-budget=5000"]  # fmt: skip
    shot = page.with_name(f"report-{width}.png")
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", page.as_uri()], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    assert shot.stat().st_size > 10_000
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", checked.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    found = re.search(r'<pre id="check"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"the page's check did not run: {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.slow
def test_the_real_report_fits_the_page_in_chromium(tmp_path, data_root, tiny_checkpoint):
    from oaml.evaluation.evaluate import evaluate
    from oaml.evaluation.review import publish_evaluation
    from oaml.synthesis.class_mix import ClassMixConfig
    from oaml.synthesis.class_mix import synthesize as mix

    evaluation = evaluate(tiny_checkpoint, "fmnist", data_root, device="cpu")
    outliers = mix("fmnist", data_root, tmp_path / "outliers", ClassMixConfig(count=64))
    champion = Reference("champion", {"id_accuracy": 0.5, "far_auroc": 0.6}, "oaml-detector v1")
    shown = publish_evaluation(evaluation, tmp_path / "eval", [champion], outliers.parent)
    page = tmp_path / "eval" / "report.html"
    assert shown[-1] == page and (tmp_path / "eval" / "outliers_grid.png") in shown
    # The references the report sets beside the model, as data too.
    references = json.loads((tmp_path / "eval" / "references.json").read_text())
    assert references == {"champion": {"metrics": champion.metrics, "note": champion.note}}
    for width in (1280, 700):
        layout = _render(page, width, tmp_path)
        assert layout["scroll"] <= layout["width"], layout  # no sideways scrolling
        # 2 plots + 24 worst cases + the outlier grid, every one decoded and inside the page
        assert layout["images"] == 27 and layout["broken"] == 0 and layout["overflowing"] == 0
        text = layout["text"]
        assert "OOD inputs accepted as ID" in text and "ID inputs flagged as OOD" in text
        assert "oaml-detector v1" in text and "Training outliers" in text
        assert f"{100 * evaluation.metrics['id']['accuracy']:.2f}" in text
