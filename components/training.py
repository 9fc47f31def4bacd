"""Training: the teacher, the cross-entropy start, and the student fine-tuned with a method."""

from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def train_teacher(
    preset: str,
    overrides: str,
    data: Input[Dataset],
    tracking_uri: str,
    work_dir: str,
    device: str,
    num_nodes: int,
    gpus_per_node: int,
    image: str,
    teacher: Output[Model],
):
    """Train the preset's teacher (the frozen model the student distils from); on several
    nodes as a Kubeflow TrainJob, on several GPUs of one node under torchrun."""
    import json

    from oaml.stages import train_from_scratch
    from oaml.tracking.runs import Tracking, last_run_id
    from oaml.training.scale_out import ScaleOut

    train_from_scratch(
        "teacher", preset, json.loads(overrides), data.path, teacher.path,
        Tracking.resolve(tracking_uri), device, work_dir or None,
        ScaleOut.for_pipeline(num_nodes, gpus_per_node, image),
    )  # fmt: skip
    teacher.metadata.update({"role": "teacher", "mlflow_run_id": last_run_id()})


@component
def train_start(
    preset: str,
    overrides: str,
    data: Input[Dataset],
    tracking_uri: str,
    work_dir: str,
    device: str,
    num_nodes: int,
    gpus_per_node: int,
    image: str,
    start: Output[Model],
):
    """Train the student with cross-entropy: the checkpoint every method fine-tunes from."""
    import json

    from oaml.stages import train_from_scratch
    from oaml.tracking.runs import Tracking, last_run_id
    from oaml.training.scale_out import ScaleOut

    train_from_scratch(
        "start", preset, json.loads(overrides), data.path, start.path,
        Tracking.resolve(tracking_uri), device, work_dir or None,
        ScaleOut.for_pipeline(num_nodes, gpus_per_node, image),
    )  # fmt: skip
    start.metadata.update({"role": "start", "mlflow_run_id": last_run_id()})


@component
def train_student(
    preset: str,
    overrides: str,
    method: str,
    data: Input[Dataset],
    start: Input[Model],
    teacher: Input[Model],
    outliers: Input[Dataset],
    tracking_uri: str,
    parent_run_id: str,
    kfp_run_id: str,
    work_dir: str,
    device: str,
    num_nodes: int,
    gpus_per_node: int,
    image: str,
    student: Output[Model],
):
    """Fine-tune the start with `method` (oaml: distillation, CLUB, energy margins); first nest
    the runs of the cacheable stages it builds on under the pipeline's parent run."""
    import json

    from oaml.stages import train_student
    from oaml.tracking.runs import Tracking, adopt_runs
    from oaml.training.scale_out import ScaleOut

    tracking = Tracking.resolve(tracking_uri, parent_run_id, kfp_run_id)
    upstream = [a.metadata.get("mlflow_run_id", "") for a in (data, outliers, teacher, start)]
    adopt_runs(tracking, upstream)
    train_student(
        preset, json.loads(overrides), data.path, start.path, teacher.path, outliers.path,
        student.path, tracking, method, device, work_dir or None,
        ScaleOut.for_pipeline(num_nodes, gpus_per_node, image),
    )  # fmt: skip
    student.metadata.update({"role": "student", "method": method})
