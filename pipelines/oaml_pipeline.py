"""The whole OAML pipeline: which stage feeds which, and where each runs on the cluster.

data -> {outliers, teacher, cross-entropy start} -> student (OAML fine-tuning) -> evaluate
-> ONNX export -> register (alias challenger), inside an exit handler that closes the MLflow
parent run either way. Kubernetes settings (GPUs, node selection, volumes, Secrets) are ignored
by kfp.local, so the same function runs on a laptop.
"""

from kfp import dsl, kubernetes

from components import DEFAULT_IMAGE
from components.config import merged_overrides
from components.data import fingerprint_import, prepare_data
from components.evaluation import evaluate
from components.export import export_onnx
from components.registration import register
from components.synthesis import synthesize_outliers
from components.tracking import close_tracking, open_tracking
from components.training import train_start, train_student, train_teacher

PIPELINE_NAME = "oaml"
DATA_PVC = "oaml-data"
DATA_MOUNT = "/data"
S3_SECRET = "oaml-s3"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (k8s/secrets/)
MLFLOW_AUTH_SECRET = "oaml-mlflow-auth"  # MLFLOW_TRACKING_USERNAME/PASSWORD, optional
S3_CONFIG = "oaml-s3-config"  # MLFLOW_S3_ENDPOINT_URL
# The label k8s/base's NetworkPolicy mlflow-ingress admits: only pods carrying it reach MLflow.
MLFLOW_CLIENT_LABEL = ("oaml.io/mlflow-client", "true")
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")


def with_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """S3 and MLflow credentials from Kubernetes Secrets, the S3 endpoint from a ConfigMap, and
    the pod label that lets the step through MLflow's NetworkPolicy."""
    kubernetes.add_pod_label(task, *MLFLOW_CLIENT_LABEL)
    keys = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    kubernetes.use_secret_as_env(task, S3_SECRET, {k: k for k in keys})
    auth = ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]
    kubernetes.use_secret_as_env(task, MLFLOW_AUTH_SECRET, {k: k for k in auth}, optional=True)
    kubernetes.use_config_map_as_env(
        task, S3_CONFIG, {"MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL"}, optional=True
    )
    return task


def on_cluster(
    task: dsl.PipelineTask, image, cpu: str = "2", memory: str = "8Gi", data: bool = True
) -> dsl.PipelineTask:
    """Every stage: the project image, credentials, and the data volume where it reads data."""
    task.set_container_image(image)
    task.set_cpu_limit(cpu).set_memory_limit(memory)
    with_credentials(task)
    if data:
        kubernetes.mount_pvc(task, pvc_name=DATA_PVC, mount_path=DATA_MOUNT)
    return task


def on_gpu(
    task: dsl.PipelineTask, cpu: str = "8", memory: str = "32Gi", gpus=1
) -> dsl.PipelineTask:
    """A GPU stage: `gpus` nvidia.com/gpu (a number or a pipeline parameter) on a GPU node
    (selector and taint toleration), CPU and memory limits for the data loaders, and a
    memory-backed /dev/shm (PyTorch's workers)."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    task.set_cpu_limit(cpu).set_memory_limit(memory)
    kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    return task


def build_pipeline(fixed_image: str | None = None, trainjob_launchers: bool = False):
    """The pipeline function. `fixed_image` sets every stage's image when the pipeline is built
    instead of from the `image` parameter: kfp.local's DockerRunner takes a task's image as
    written and does not resolve a runtime parameter in it. `trainjob_launchers`: the training
    steps only launch and wait for their TrainJobs (num_nodes > 1), so they ask for no GPU."""

    def training_step(task: dsl.PipelineTask, image, gpus) -> dsl.PipelineTask:
        """A training stage: on GPUs (gpus_per_node of them), or a small launcher pod."""
        on_cluster(task, image)
        if trainjob_launchers:
            return task.set_cpu_limit("1").set_memory_limit("2Gi")
        return on_gpu(task, gpus=gpus)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="OAML: outliers, teacher, OAML student, evaluation, ONNX export, registration.",
    )
    def oaml_pipeline(
        preset: str = "quick",
        benchmark: str = "fmnist",
        overrides: str = "[]",
        method: str = "oaml",
        data_root: str = DATA_MOUNT,
        tracking_uri: str = "http://mlflow.oaml.svc.cluster.local:5000",
        registered_model: str = "oaml-detector",
        image: str = DEFAULT_IMAGE,
        device: str = "auto",
        work_dir: str = "",
        sd_checkpoint: str = "",
        num_nodes: int = 1,
        gpus_per_node: int = 1,
        import_from: str = "",
        import_options: str = "{}",
    ):
        """The whole OAML run on a cluster (or locally through kfp.local), tracked in MLflow.

        Args:
            preset: A shipped preset (`oaml presets`) or the path of a preset YAML file.
            benchmark: The benchmark to train on: a built-in one or a name `oaml data import`
                wrote under data_root; added to the overrides as benchmark=NAME.
            overrides: JSON list of preset overrides, each "a.b=value" (`--set` of the CLI).
            method: The student's training method (`oaml methods`).
            data_root: Where the benchmarks live: the data volume's mount in each step.
            tracking_uri: The MLflow tracking server every step logs to.
            registered_model: The MLflow registered model each run adds a version to.
            image: The training image every step runs (pin it by digest for releases).
            device: auto, cpu or cuda: where training and evaluation run.
            work_dir: For local runs: a folder of resumable stage outputs ("" = none).
            sd_checkpoint: A Stable Diffusion folder (e.g. on the data volume) that generates
                the outliers instead of forward diffusion ("" = none).
            num_nodes: Above 1, the teacher, start and student stages each run as a Kubeflow
                TrainJob of num_nodes x gpus_per_node processes; the step launches and waits.
            gpus_per_node: GPUs per training process group; on one node above 1, the step
                trains data-parallel itself (give it that many GPUs: k8s/README.md).
            import_from: A folder of class subfolders on the data volume, or
                s3://BUCKET/PREFIX, imported as `benchmark` by the data step ("" = none). The
                step is cached on a fingerprint of the source's listing, taken each run: new
                or changed images re-import.
            import_options: JSON object of `oaml data import`'s options (holdout_classes,
                group_by, ood, size, ...).
        """
        image = fixed_image or image
        settings = merged_overrides(
            benchmark=benchmark, overrides=overrides, sd_checkpoint=sd_checkpoint
        )
        settings.set_caching_options(True)
        on_cluster(settings, image, cpu="1", memory="1Gi", data=False)
        closing = close_tracking(
            tracking_uri=tracking_uri, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER
        )
        closing.set_caching_options(False)
        on_cluster(closing, image, cpu="1", memory="1Gi", data=False)

        with dsl.ExitHandler(closing, name="tracked-stages"):
            opened = open_tracking(
                tracking_uri=tracking_uri,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                preset=preset,
                benchmark=benchmark,
            )
            opened.set_caching_options(False)
            on_cluster(opened, image, cpu="1", memory="1Gi", data=False)
            tracked = {
                "tracking_uri": tracking_uri,
                "parent_run_id": opened.output,
                "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            }
            common = {"preset": preset, "overrides": settings.output}
            imported = {"import_from": import_from, "import_options": import_options}
            fingerprint = fingerprint_import(benchmark=benchmark, data_root=data_root, **imported)
            fingerprint.set_caching_options(False)  # it looks at the source each run
            on_cluster(fingerprint, image, cpu="1", memory="1Gi")
            data = prepare_data(
                benchmark=benchmark,
                data_root=data_root,
                tracking_uri=tracking_uri,
                **imported,
                fingerprint=fingerprint.output,
            )
            data.set_caching_options(True)
            on_cluster(data, image, cpu="2", memory="8Gi")
            cached = {"tracking_uri": tracking_uri, "work_dir": work_dir}
            scale = {"num_nodes": num_nodes, "gpus_per_node": gpus_per_node, "image": image}
            data_in = data.outputs["data"]

            outliers = synthesize_outliers(**common, data=data_in, **cached)
            outliers.set_caching_options(True)
            on_gpu(on_cluster(outliers, image))

            teacher = train_teacher(**common, data=data_in, **cached, device=device, **scale)
            teacher.set_caching_options(True)
            training_step(teacher, image, gpus_per_node)

            start = train_start(**common, data=data_in, **cached, device=device, **scale)
            start.set_caching_options(True)
            training_step(start, image, gpus_per_node)

            student = train_student(
                **common,
                method=method,
                data=data_in,
                start=start.outputs["start"],
                teacher=teacher.outputs["teacher"],
                outliers=outliers.outputs["outliers"],
                **tracked,
                work_dir=work_dir,
                device=device,
                **scale,
            )
            student.set_caching_options(False)
            training_step(student, image, gpus_per_node)

            evaluated = evaluate(
                **common,
                data=data_in,
                student=student.outputs["student"],
                start=start.outputs["start"],
                outliers=outliers.outputs["outliers"],
                registered_model=registered_model,
                **tracked,
                device=device,
            )
            evaluated.set_caching_options(False)
            on_gpu(on_cluster(evaluated, image))

            exported = export_onnx(
                **common, student=student.outputs["student"], data=data_in, **tracked
            )
            exported.set_caching_options(False)
            # After the evaluation: both read the preset's score, so a bad one fails there first
            # (and nothing is exported from a student whose evaluation failed).
            exported.after(evaluated)
            on_cluster(exported, image, cpu="4", memory="8Gi")

            registered = register(
                detector=exported.outputs["detector"],
                evaluation=evaluated.outputs["evaluation"],
                registered_model=registered_model,
                preset=preset,
                **tracked,
            )
            registered.set_caching_options(False)
            on_cluster(registered, image, cpu="1", memory="2Gi", data=False)

    return oaml_pipeline


oaml_pipeline = build_pipeline()
