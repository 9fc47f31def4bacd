"""The pipeline's MLflow parent run: opened first, closed by the exit handler whatever happens."""

from kfp import dsl

from components import component


@component
def open_tracking(
    tracking_uri: str, kfp_run_id: str, run_name: str, preset: str, benchmark: str
) -> str:
    """Open the MLflow parent run of this pipeline run and return its id (stages nest under it)."""
    from oaml.tracking.runs import Tracking, open_pipeline_run

    tracking = Tracking.resolve(tracking_uri, "", kfp_run_id)
    return open_pipeline_run(tracking, run_name, {"preset": preset, "benchmark": benchmark})


@component
def close_tracking(tracking_uri: str, kfp_run_id: str, status: dsl.PipelineTaskFinalStatus):
    """Mark this pipeline run's parent run FINISHED, or FAILED when any stage failed. (An exit
    task may depend on no other task, so it finds the parent run by the Kubeflow run id.)"""
    from oaml.tracking.runs import Tracking, close_pipeline_run

    state = "FINISHED" if status.state == "SUCCEEDED" else "FAILED"
    close_pipeline_run(Tracking.resolve(tracking_uri, "", kfp_run_id), state)
