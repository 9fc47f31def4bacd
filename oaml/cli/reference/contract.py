"""Reference pages of what a deployment reads: the exported ONNX file's metadata (from the
detector contract) and the server's Prometheus metrics (from the server's own registry)."""

from __future__ import annotations


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    cells = [" | ".join(row).join(("| ", " |")) for row in [header, ("---",) * len(header), *rows]]
    return [*cells, ""]


def metadata_reference() -> str:
    """Markdown: the graph's names and every metadata key of an exported detector."""
    from oaml.contract import INPUT_NAME, META_DOCS, OUTPUT_NAMES, SCORE_OUTPUT, Meta

    keys = [value for name, value in vars(Meta).items() if name.isupper()]
    missing = [key for key in keys if key not in META_DOCS]
    if missing:
        raise ValueError(f"oaml.contract.META_DOCS does not describe {missing}")
    lines = [
        "# ONNX file",
        "",
        "Generated from the detector contract (`oaml/contract.py`) by `make docs`.",
        "",
        f"One graph: input `{INPUT_NAME}`, uint8 `[N, H, W, C]` raw pixels at the model's input "
        "size (normalisation is inside the graph; `oaml serve`'s `/v1/score` and `oaml score` "
        "resize image files first); outputs "
        + ", ".join(f"`{name}`" for name in OUTPUT_NAMES)
        + f" and, for a detector that decides on another score than the energy, `{SCORE_OUTPUT}` "
        "(that score's confidence, higher = in-distribution). N is dynamic.",
        "",
        "The file's `metadata_props` (all values strings; lists and objects as JSON), read by "
        "`oaml serve`, `oaml score`, the registry and the Triton export:",
        "",
    ]
    lines += _table(("key", "what"), [(f"`{key}`", META_DOCS[key]) for key in keys])
    return "\n".join(lines)


def metrics_reference() -> str:
    """Markdown: every metric `oaml serve` exposes on GET /metrics, with its type and labels."""
    from oaml.serving.metrics import ServerMetrics

    metrics = ServerMetrics()
    rows = []
    for family in metrics.registry.collect():
        collector = next(  # the collector of this family: its label names
            c for c in vars(metrics).values() if getattr(c, "_name", None) == family.name
        )
        suffix = "_total" if family.type == "counter" else ""
        labels = ", ".join(f"`{label}`" for label in collector._labelnames) or "-"
        rows.append((f"`{family.name}{suffix}`", family.type, labels, family.documentation))
    lines = [
        "# Server metrics",
        "",
        "Generated from `oaml serve`'s Prometheus registry (`oaml/serving/metrics.py`) by "
        "`make docs`. `GET /metrics` answers them in Prometheus' text format; histograms also "
        "give `_bucket`, `_sum` and `_count`, counters `_created`.",
        "",
    ]
    lines += _table(("metric", "type", "labels", "what"), rows)
    return "\n".join(lines)
