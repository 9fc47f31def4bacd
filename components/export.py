"""Export: the student with its energy head as one ONNX graph, parity-checked."""

from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def export_onnx(
    preset: str,
    overrides: str,
    student: Input[Model],
    data: Input[Dataset],
    tracking_uri: str,
    parent_run_id: str,
    kfp_run_id: str,
    detector: Output[Model],
):
    """uint8 NHWC pixels in, logits and energy out (and the preset's score where it is another
    head-only one); metadata carries the calibrated threshold. The artifact is a folder holding
    detector.onnx."""
    import json
    from pathlib import Path

    from oaml.stages import export_detector
    from oaml.tracking.runs import Tracking

    tracking = Tracking.resolve(tracking_uri, parent_run_id, kfp_run_id)
    out = Path(detector.path) / "detector.onnx"
    path = export_detector(student.path, data.path, out, tracking, preset, json.loads(overrides))
    detector.metadata["format"] = "onnx"
    detector.metadata["bytes"] = path.stat().st_size
