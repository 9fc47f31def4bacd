"""Training across nodes: a Kubeflow Trainer TrainJob that runs `oaml train` under torchrun.

Written for Kubeflow Trainer v2.2+ (`trainer.kubeflow.org/v1alpha1`, pod changes as
`runtimePatches`; v2.0 and v2.1 named them differently) on the `torch-distributed`
ClusterTrainingRuntime, whose controller sets PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK and
PET_MASTER_ADDR/PORT: a bare `torchrun` reads them. The body is built as a dict and checked by the
`kubeflow` SDK's typed models (kubeflow-trainer-api 2.3): a wrong type fails, and a key the models
do not know (they drop it silently) fails the round trip. Submitted with the Kubernetes client;
the SDK's TrainerClient waits for Complete/Failed and streams node-0's log.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
TRAINER_VERSION = "v2.3.0"  # the Trainer release the manifests and models are pinned to
RUNTIME = "torch-distributed"
NODE_CONTAINER = "node"  # the trainer container of the torch-distributed runtime
GPU = "nvidia.com/gpu"


class TrainJobError(RuntimeError):
    """A TrainJob that failed, timed out or could not be built; the message names it."""


@dataclass(frozen=True)
class TrainJobSpec:
    """What a training stage asks of the cluster: image, `oaml train` arguments and size."""

    name: str
    image: str
    train_args: list[str]
    num_nodes: int
    gpus_per_node: int = 1
    cpu: str = "8"
    memory: str = "32Gi"
    data_pvc: str = "oaml-data"
    data_mount: str = "/data"
    # Environment variable -> (Secret, key, optional): credentials never written in the body.
    secret_env: dict[str, tuple[str, str, bool]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.gpus_per_node < 0:
            raise TrainJobError(
                f"a TrainJob needs at least one node and no negative GPU count "
                f"(got {self.num_nodes} nodes, {self.gpus_per_node} GPUs per node)"
            )
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.name):
            raise TrainJobError(
                f"TrainJob name {self.name!r} is not a DNS label (lower case, digits, '-', "
                "at most 63 characters)"
            )


def job_name(*parts: str) -> str:
    """A valid TrainJob name from free-form parts, the same for the same parts: a retried step
    finds the TrainJob its killed attempt left running instead of starting a second one."""
    text = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts if p)
    return text[:63].strip("-") or "oaml"


def trainer_command(spec: TrainJobSpec) -> tuple[list[str], list[str]]:
    """torchrun (reading the PET_* variables the runtime sets) over `oaml train ... --resume`:
    a re-run of the step, or a restarted job, continues from the last epoch on the volume."""
    args = ["-m", "oaml.cli", "train", *spec.train_args]
    if "--resume" not in args:
        args.append("--resume")
    return ["torchrun"], args


def _env_vars(spec: TrainJobSpec) -> list[dict[str, Any]]:
    plain = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    secret = [
        {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": s, "key": key, "optional": optional}},
        }
        for name, (s, key, optional) in sorted(spec.secret_env.items())
    ]
    return plain + secret


def _resources(spec: TrainJobSpec) -> dict[str, Any]:
    amounts = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        amounts[GPU] = str(spec.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _pod_patch(spec: TrainJobSpec) -> dict[str, Any]:
    """The data volume on every node, memory-backed /dev/shm for loader workers, GPU nodes."""
    pod: dict[str, Any] = {
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": spec.data_pvc}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
        "containers": [
            {
                "name": NODE_CONTAINER,
                "volumeMounts": [
                    {"name": "data", "mountPath": spec.data_mount},
                    {"name": "dshm", "mountPath": "/dev/shm"},
                ],
            }
        ],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.gpus_per_node:
        pod["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    template = {"spec": {"template": {"spec": pod}}}
    replicated = [{"name": NODE_CONTAINER, "template": template}]
    return {
        "manager": "oaml.io/pipeline",
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": replicated}}},
    }


def trainjob_body(spec: TrainJobSpec) -> dict[str, Any]:
    """The TrainJob as the API server receives it, checked against the SDK's models."""
    command, args = trainer_command(spec)
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": command,
        "args": args,
        "env": _env_vars(spec),
        "numNodes": spec.num_nodes,
        "resourcesPerNode": _resources(spec),
    }
    if spec.gpus_per_node:
        trainer["numProcPerNode"] = spec.gpus_per_node  # one process per GPU
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": spec.name, "labels": dict(spec.labels)},
        "spec": {
            "runtimeRef": {
                "apiGroup": GROUP,
                "kind": "ClusterTrainingRuntime",
                "name": RUNTIME,
            },
            "trainer": trainer,
            "runtimePatches": [_pod_patch(spec)],
        },
    }
    return validated(body)


def validated(body: dict[str, Any]) -> dict[str, Any]:
    """`body` unchanged if the SDK's TrainJob model takes it whole, else TrainJobError."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    try:
        model = TrainerV1alpha1TrainJob.from_dict(body)
    except Exception as exc:
        raise TrainJobError(f"TrainJob does not fit the Trainer API: {exc}") from None
    if model is None or model.to_dict() != body:
        raise TrainJobError(
            "TrainJob holds fields the Trainer API models do not know (they would be dropped): "
            f"{_difference(body, model.to_dict() if model else {})}"
        )
    return body


def _difference(expected: Any, got: Any, path: str = "") -> str:
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            if key not in got:
                return f"{path}.{key}"
            found = _difference(expected[key], got[key], f"{path}.{key}")
            if found:
                return found
        return ""
    if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            found = _difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return ""
    return "" if expected == got else path or "."


@dataclass(frozen=True)
class TrainJobOutcome:
    name: str
    status: str
    seconds: float


def _create(api, namespace: str, body: dict[str, Any]) -> bool:
    """Create the TrainJob; False when one of that name exists already."""
    from kubernetes import client

    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    except client.ApiException as exc:
        if exc.status == 409:
            return False
        name = body["metadata"]["name"]
        raise TrainJobError(
            f"cannot create TrainJob {namespace}/{name}: {exc.status} {exc.reason}"
        ) from None
    return True


def _wait_gone(api, namespace: str, name: str, timeout: float = 300) -> None:
    from kubernetes import client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(2)
    raise TrainJobError(f"TrainJob {namespace}/{name} was not deleted within {timeout:.0f} s")


def run_trainjob(
    spec: TrainJobSpec,
    namespace: str,
    timeout: float = 7 * 24 * 3600,
    log: Callable[[str], None] = print,
) -> TrainJobOutcome:
    """Create the TrainJob, stream node 0's log into `log` while it runs, wait for Complete or
    Failed (TrainJobError on Failed or timeout) and delete it (its pods and their logs go with
    it: the step's own log keeps the copy)."""
    import threading

    from kubeflow.trainer import KubernetesBackendConfig, TrainerClient
    from kubernetes import client, config

    body = trainjob_body(spec)
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    trainer = TrainerClient(KubernetesBackendConfig(namespace=namespace))
    if not _create(api, namespace, body):
        if str(trainer.get_job(spec.name).status) == "Failed":
            log(f"TrainJob {namespace}/{spec.name} of an earlier attempt failed: starting again")
            trainer.delete_job(spec.name)
            _wait_gone(api, namespace, spec.name)
            _create(api, namespace, body)
        else:
            log(f"TrainJob {namespace}/{spec.name} of an earlier attempt is there: following it")
    started = time.perf_counter()

    def stream() -> None:
        try:
            for line in trainer.get_job_logs(spec.name, step="node-0", follow=True):
                log(line.rstrip("\n"))
        except Exception as exc:  # logs are a convenience; the status decides
            log(f"(log stream of {spec.name} ended: {type(exc).__name__})")

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        job = trainer.wait_for_job_status(spec.name, {"Complete", "Failed"}, timeout=int(timeout))
    except (RuntimeError, TimeoutError) as exc:
        raise TrainJobError(f"TrainJob {namespace}/{spec.name}: {exc}") from None
    streamer.join(timeout=30)
    status = str(job.status)
    if status != "Complete":
        raise TrainJobError(
            f"TrainJob {namespace}/{spec.name} ended {status}: see `kubectl -n {namespace} "
            f"describe trainjob {spec.name}` and its pods' logs"
        )
    trainer.delete_job(spec.name)
    return TrainJobOutcome(spec.name, status, time.perf_counter() - started)
