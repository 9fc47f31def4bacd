"""How a training stage spreads: in this process, over the GPUs of this node under torchrun, or
over several nodes as a Kubeflow TrainJob. The last two run the same `oaml train` command on a
stage folder that keeps its resumable state (`--resume`), and hand back its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from oaml.config import Preset, to_dict
from oaml.io import atomic_write_text
from oaml.models.checkpoint import read_checkpoint
from oaml.training.engine import FINAL_FILE, TrainResult
from oaml.training.launch import launch
from oaml.training.trainjob import TrainJobSpec, job_name, run_trainjob


@dataclass(frozen=True)
class ScaleOut:
    """How a training stage spreads: one node trains inside the step (in this process for one
    GPU, under torchrun for several); more nodes run the same `oaml train` as a Kubeflow
    TrainJob whose stage folder lives under `shared_dir`, on the data volume every node mounts."""

    num_nodes: int = 1
    gpus_per_node: int = 1
    image: str = ""
    namespace: str = ""
    shared_dir: str = ""
    data_pvc: str = "oaml-data"
    data_mount: str = "/data"
    secret_env: dict[str, tuple[str, str, bool]] | None = None
    node_selector: dict[str, str] | None = None
    service_account: str | None = None

    @classmethod
    def for_pipeline(cls, num_nodes: int, gpus_per_node: int, image: str) -> ScaleOut:
        """The pipeline's setting: its data PVC at /data (TrainJob folders go under the data
        root's `trainjobs/`, so the data root must be on that volume), S3 credentials from its
        Secret, GPU nodes, the trainer's service account (no API rights)."""
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return cls(
            num_nodes=num_nodes, gpus_per_node=gpus_per_node, image=image,
            secret_env={k: ("oaml-s3", k, True) for k in keys},
            node_selector={"nvidia.com/gpu.present": "true"},
            service_account="oaml-trainer",  # no API rights (k8s/base/trainjob-policy.yaml)
        )  # fmt: skip

    def on(self, root: Path) -> ScaleOut:
        """With TrainJob folders under `root/trainjobs` unless a shared folder is set."""
        return self if self.shared_dir else replace(self, shared_dir=str(root / "trainjobs"))

    @property
    def in_process(self) -> bool:
        return self.num_nodes <= 1 and self.gpus_per_node <= 1

    @property
    def trainjob(self) -> bool:
        return self.num_nodes > 1

    def check(self) -> None:
        if self.num_nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(
                f"num_nodes and gpus_per_node must be at least 1 (got {self.num_nodes}, "
                f"{self.gpus_per_node})"
            )
        if self.trainjob and not (self.image and self.shared_dir):
            raise ValueError(
                "a TrainJob needs the training image and a folder on the shared data volume"
            )
        if self.trainjob and not Path(self.shared_dir).is_relative_to(self.data_mount):
            raise ValueError(
                f"TrainJob folder {self.shared_dir} is not on the data volume mounted at "
                f"{self.data_mount}: put the data root on that volume"
            )


def train_elsewhere(
    scale: ScaleOut, folder: Path, preset: Preset, role: str, method: str, root: Path,
    device: str,
):  # fmt: skip
    """Run `oaml train` for the stage under torchrun in this pod (one node, several GPUs) or as
    a TrainJob (several nodes); the stage folder keeps its resumable state either way."""

    folder.mkdir(parents=True, exist_ok=True)
    preset_file = folder / "preset.yaml"
    atomic_write_text(preset_file, yaml.safe_dump(to_dict(preset), sort_keys=False))
    args = [
        "--out", str(folder), "--preset", str(preset_file), "--data-root", str(root),
        "--role", role, "--method", method, "--device", device, "--resume",
    ]  # fmt: skip
    if scale.trainjob:
        spec = TrainJobSpec(
            name=job_name("oaml", folder.name), image=scale.image, train_args=args,
            num_nodes=scale.num_nodes, gpus_per_node=scale.gpus_per_node,
            data_pvc=scale.data_pvc, data_mount=scale.data_mount,
            secret_env=dict(scale.secret_env or {}), node_selector=dict(scale.node_selector or {}),
            service_account=scale.service_account, labels={"app.kubernetes.io/part-of": "oaml"},
        )  # fmt: skip
        run_trainjob(spec, scale.namespace or _own_namespace())
    else:
        code = launch(args, scale.gpus_per_node)
        if code != 0:
            raise RuntimeError(f"oaml train --nproc {scale.gpus_per_node} exited with {code}")
    final = read_checkpoint(folder / FINAL_FILE)
    return TrainResult(folder / FINAL_FILE, int(final["epoch"]), list(final["history"]))


def _own_namespace() -> str:
    """The namespace of the pod this runs in (its service account's), else 'default'."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.is_file() else "default"
