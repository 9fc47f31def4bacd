"""The evaluation's HTML page, the one a reviewer decides from (the Kubeflow UI shows it).

Headline metrics beside the champion's and the cross-entropy baseline's where known, every set's
AUROC and FPR95, the score histograms with the threshold drawn, the worst cases as images (OOD
inputs accepted as ID, ID inputs flagged) and a grid of the training outliers. One
self-contained file (images inline), laid out to fit the page at any width.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oaml.contract import confidence_threshold
from oaml.data.imglist import load_image

HEADLINE = (
    ("ID accuracy", ("id", "accuracy"), True),
    ("near AUROC", ("near", "auroc"), True),
    ("near FPR95", ("near", "fpr95"), False),
    ("far AUROC", ("far", "auroc"), True),
    ("far FPR95", ("far", "fpr95"), False),
)  # (title, where in the evaluate JSON, higher is better)

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;padding:16px;color:#222;box-sizing:border-box}
main{max-width:1100px;margin:auto}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.92em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.better{color:#146c2e}.worse{color:#b3261e}.note{color:#666;font-size:.88em}
img{max-width:100%;height:auto}
.cases{display:grid;grid-template-columns:repeat(auto-fill,minmax(110px,1fr));gap:8px}
.cases figure{margin:0;font-size:.8em;text-align:center}
.cases img{width:96px;image-rendering:pixelated;border:1px solid #ccc}
"""


@dataclass(frozen=True)
class Reference:
    """Another model's evaluation shown beside this one: the champion, the CE baseline."""

    name: str
    metrics: dict[str, Any] | None  # evaluate JSON, or flat gated metrics; None: unknown
    note: str = ""


@dataclass(frozen=True)
class Case:
    """One sample worth looking at: its pixels and why it is here."""

    image: np.ndarray  # (H, W) or (H, W, C) uint8
    caption: str


def headline_value(metrics: dict[str, Any], where: tuple[str, str]) -> float | None:
    """A headline number from an evaluate JSON or from flat metrics (`near_auroc`, ...)."""
    group, key = where
    nested = metrics.get(group)
    if isinstance(nested, dict) and key in nested:
        return float(nested[key])
    flat = metrics.get(f"{group}_{key}")
    return None if flat is None else float(flat)


def _png(image: np.ndarray | Path) -> str:
    """An inline data URL for a PNG file or an image array."""
    if isinstance(image, Path):
        data = image.read_bytes()
    else:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(
            image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image
        ).save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def worst_cases(
    evaluation, class_names: list[str], mode: str, n: int = 12
) -> dict[str, list[Case]]:
    """The `n` OOD samples (over all sets) the detector is surest are ID, and the `n` ID
    samples it is surest are OOD; each with its set, confidence and predicted (or true) class."""
    sets = [name for name in evaluation.confidences if name != "id"]
    pooled = np.concatenate([evaluation.confidences[name] for name in sets])
    owner = np.concatenate([np.full(len(evaluation.confidences[s]), i) for i, s in enumerate(sets)])
    offset = np.concatenate([np.arange(len(evaluation.confidences[s])) for s in sets])
    top = np.argsort(-pooled, kind="stable")[:n]
    accepted = [(float(pooled[j]), sets[owner[j]], int(offset[j])) for j in top]
    id_conf = evaluation.confidences["id"]
    flagged = [(float(id_conf[i]), "id", int(i)) for i in np.argsort(id_conf, kind="stable")[:n]]

    def case(conf: float, name: str, index: int, id_set: bool) -> Case:
        root, paths = evaluation.images[name]
        image = np.asarray(load_image(root / paths[index], mode))
        predicted = class_names[int(evaluation.predictions[name][index])]
        caption = f"{name}: taken as {predicted}" if not id_set else f"predicted {predicted}"
        return Case(image, f"{caption}, score {conf:.3g}")

    return {
        "OOD inputs accepted as ID (highest scores)": [case(*t, False) for t in accepted],
        "ID inputs flagged as OOD (lowest scores)": [case(*t, True) for t in flagged],
    }


def _cell(value: float | None, own: float | None, higher_better: bool) -> str:
    """A reference's value and this model's difference to it, green where this model is
    better, red where worse."""
    if value is None:
        return "<td>n/a</td>"
    text = f"{100 * value:.2f}"
    if own is None or np.isclose(value, own):
        return f"<td>{text}</td>"
    better = (own > value) == higher_better
    delta = f"{100 * (own - value):+.2f}"
    return f"<td>{text} <span class='{'better' if better else 'worse'}'>({delta})</span></td>"


def headline_table(metrics: dict[str, Any], references: list[Reference]) -> str:
    """This model's headline numbers beside each reference's (coloured where the reference
    is better or worse), with each reference's note."""
    head = "".join(f"<th>{html.escape(r.name)}</th>" for r in references)
    rows = []
    for title, where, higher in HEADLINE:
        own = headline_value(metrics, where)
        cells = "".join(
            _cell(headline_value(r.metrics, where) if r.metrics else None, own, higher)
            for r in references
        )
        own_text = "n/a" if own is None else f"{100 * own:.2f}"
        rows.append(f"<tr><td>{title}</td><td><b>{own_text}</b></td>{cells}</tr>")
    notes = "".join(
        f"<li><b>{html.escape(r.name)}</b>: {html.escape(r.note)}</li>"
        for r in references
        if r.note
    )
    return (
        f"<div class='scroll'><table><tr><th>percent</th><th>this model</th>{head}</tr>"
        f"{''.join(rows)}</table></div>"
        + (f"<ul class='note'>{notes}</ul>" if notes else "")
        + "<p class='note'>FPR95: OOD accepted where 95% of ID is kept (lower is better). "
        "In brackets: this model minus the reference, green where this model is better.</p>"
    )


def sets_table(metrics: dict[str, Any]) -> str:
    """Every OOD set: group, AUROC, FPR95 (both definitions), size."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(m['group'])}</td>"
        f"<td>{100 * m['auroc']:.2f}</td><td>{100 * m['fpr95']:.2f}</td>"
        f"<td>{100 * m['fpr95_openood']:.2f}</td><td>{m['n']}</td></tr>"
        for name, m in metrics["ood"].items()
    )
    return (
        "<div class='scroll'><table><tr><th>set</th><th>group</th><th>AUROC</th>"
        "<th>FPR95 (95% ID kept)</th><th>FPR95 (OpenOOD)</th><th>n</th></tr>"
        f"{rows}</table></div>"
    )


def _cases_html(cases: dict[str, list[Case]]) -> str:
    parts = []
    for title, found in cases.items():
        figures = "".join(
            f"<figure><img src='{_png(c.image)}' alt='{html.escape(c.caption)}'>"
            f"<figcaption>{html.escape(c.caption)}</figcaption></figure>"
            for c in found
        )
        parts.append(f"<h3>{html.escape(title)}</h3><div class='cases'>{figures}</div>")
    return "".join(parts)


def _figure(path: Path, caption: str) -> str:
    return (
        f"<figure><img src='{_png(path)}' alt='{html.escape(path.stem)}'>"
        f"<figcaption class='note'>{html.escape(caption)}</figcaption></figure>"
    )


def render_report(
    evaluation,
    plots: list[Path],
    class_names: list[str],
    image_mode: str,
    references: list[Reference] = (),
    outlier_grid: Path | None = None,
) -> str:
    """The whole page as one HTML string."""
    metrics = evaluation.metrics
    threshold = confidence_threshold(evaluation.confidences["id"])
    title = f"{metrics['benchmark']}: {metrics['score']} score"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>ID test images: {metrics['id']['n']}; threshold {threshold:.4g} "
        "(the score that keeps 95% of ID test images; the served threshold is calibrated the "
        "same way on ID validation).</p>",
        "<h2>Headline</h2>", headline_table(metrics, list(references)),
        "<h2>Every OOD set</h2>", sets_table(metrics),
        "<h2>Scores</h2>",
        *(_figure(p, "dashed line: the threshold; below it an input is OOD") for p in plots),
        "<h2>Worst cases</h2>", _cases_html(worst_cases(evaluation, class_names, image_mode)),
    ]  # fmt: skip
    if outlier_grid is not None:
        body += ["<h2>Training outliers</h2>", _figure(outlier_grid, "what the student was "
                 "taught to reject (the first 64)")]  # fmt: skip
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>"
    )
