"""Data preparation: the benchmark in the OpenOOD layout, deterministic, with a manifest."""

from kfp.dsl import Dataset, Output

from components import component


@component
def fingerprint_import(
    import_from: str, benchmark: str, data_root: str, import_options: str = "{}"
) -> str:
    """What `import_from` holds now, as a SHA-256 of its listing ("" without an import). Never
    cached and cheap (no image is read): the cached data step takes it as an input, so Kubeflow
    re-imports exactly when images behind the same `import_from` were added, removed or changed."""
    from oaml.stages import import_fingerprint

    return import_fingerprint(import_from, benchmark, data_root, import_options)


@component
def prepare_data(
    benchmark: str,
    data_root: str,
    tracking_uri: str,
    data: Output[Dataset],
    import_from: str = "",
    import_options: str = "{}",
    fingerprint: str = "",
):
    """Prepare (or verify) `benchmark` under `data_root` (the data volume; empty: inside the
    artifact); `import_from` (a folder on the volume or s3://BUCKET/PREFIX) is imported as
    `benchmark` first, with `import_options` (JSON: `oaml data import`'s options); `fingerprint`
    (fingerprint_import's) is part of the cache key. The artifact is the data folder, or a
    pointer to it on the volume. Cacheable: it takes no run ids, its MLflow run joins the
    pipeline's parent run downstream."""
    from oaml.stages import prepare_data
    from oaml.tracking.runs import Tracking, last_run_id

    tracking = Tracking.resolve(tracking_uri)
    result = prepare_data(
        benchmark, data.path, data_root, tracking, import_from, import_options, fingerprint
    )
    data.metadata.update(
        {
            "root": str(result.root),
            "manifest_sha256": result.manifest_sha256 or "",
            "import_fingerprint": fingerprint,
            "mlflow_run_id": last_run_id(),
        }
    )
