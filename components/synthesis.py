"""Outlier synthesis: forward-diffused ID training images (the preset's count and timesteps)."""

from kfp.dsl import Dataset, Input, Output

from components import component


@component
def synthesize_outliers(
    preset: str,
    overrides: str,
    data: Input[Dataset],
    tracking_uri: str,
    work_dir: str,
    outliers: Output[Dataset],
):
    """Noise ID training images at timesteps t_min..t_max into shards with a manifest."""
    import json

    from oaml.stages import synthesize_outliers
    from oaml.tracking.runs import Tracking, last_run_id

    folder = synthesize_outliers(
        preset, json.loads(overrides), data.path, outliers.path, Tracking.resolve(tracking_uri),
        work_dir or None,
    )  # fmt: skip
    manifest = json.loads((folder / "manifest.json").read_text())
    outliers.metadata.update({"count": manifest["count"], "mlflow_run_id": last_run_id()})
