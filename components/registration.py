"""Registration: the detector as a new MLflow model version, tagged, with alias `challenger`."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input, Model

from components import component


@component
def register(
    detector: Input[Model],
    evaluation: Input[Artifact],
    registered_model: str,
    preset: str,
    tracking_uri: str,
    parent_run_id: str,
    kfp_run_id: str,
) -> NamedTuple(
    "Registration", version=str, alias=str, model_uri=str, tracking_uri=str, parent_run_id=str
):
    """Log the ONNX detector with signature and metadata, register it, tag the version with
    its metrics, the Kubeflow run, the git commit, the data manifest and the preset."""
    import json
    from pathlib import Path
    from typing import NamedTuple

    from oaml.stages import register_detector
    from oaml.tracking.runs import Tracking

    tracking = Tracking.resolve(tracking_uri, parent_run_id, kfp_run_id)
    metrics = json.loads((Path(evaluation.path) / "metrics.json").read_text())
    onnx = Path(detector.path) / "detector.onnx"
    result = register_detector(onnx, metrics, registered_model, tracking, {"preset": preset})
    fields = ("version", "alias", "model_uri", "tracking_uri", "parent_run_id")
    out = NamedTuple("Registration", [(f, str) for f in fields])
    return out(result.version, result.alias, result.model_uri, tracking.tracking_uri, parent_run_id)
