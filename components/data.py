"""Data preparation: the benchmark in the OpenOOD layout, deterministic, with a manifest."""

from kfp.dsl import Dataset, Output

from components import component


@component
def prepare_data(
    benchmark: str,
    data_root: str,
    tracking_uri: str,
    data: Output[Dataset],
    import_from: str = "",
    import_options: str = "{}",
):
    """Prepare (or verify) `benchmark` under `data_root` (the data volume; empty: inside the
    artifact); `import_from` (a folder on the volume or s3://BUCKET/PREFIX) is imported as
    `benchmark` first, with `import_options` (JSON: `oaml data import`'s options). The artifact
    is the data folder, or a pointer to it on the volume. Cacheable: it takes no run ids, its
    MLflow run joins the pipeline's parent run downstream."""
    from oaml.stages import prepare_data
    from oaml.tracking.runs import Tracking, last_run_id

    tracking = Tracking.resolve(tracking_uri)
    result = prepare_data(benchmark, data.path, data_root, tracking, import_from, import_options)
    data.metadata.update(
        {
            "root": str(result.root),
            "manifest_sha256": result.manifest_sha256 or "",
            "mlflow_run_id": last_run_id(),
        }
    )
