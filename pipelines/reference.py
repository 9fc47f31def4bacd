"""The pipeline parameters' reference page (docs/reference/pipeline.md), from the pipeline's
compiled signature; oaml's reference generator finds it through the `oaml.reference` entry
point group, as the CLI finds `oaml pipeline`."""

from __future__ import annotations

from oaml.cli.reference.settings import cell


def pipeline_reference() -> str:
    """Markdown: the pipeline's parameters, their types, defaults and meaning."""
    from pipelines.oaml_pipeline import oaml_pipeline

    spec = oaml_pipeline.component_spec
    rows = [
        f"| `{name}` | {i.type} | {cell(i.default)} | {' '.join((i.description or '').split())} |"
        for name, i in (spec.inputs or {}).items()
    ]
    return "\n".join([
        "# Pipeline parameters",
        "",
        "Generated from the pipeline's signature (`pipelines/oaml_pipeline.py`) by `make docs`; "
        "the compiled YAML carries the same descriptions, which the Kubeflow Pipelines UI shows. "
        "Set them with `oaml pipeline submit --param NAME=VALUE` or `oaml pipeline run --local "
        "--param NAME=VALUE`; `oaml pipeline params` lists them.",
        "",
        f"{spec.description}",
        "",
        "| parameter | type | default | what |",
        "|---|---|---|---|",
        *rows,
        "",
    ])  # fmt: skip
