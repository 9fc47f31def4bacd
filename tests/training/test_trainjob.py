"""The Kubeflow TrainJob a multi-node training stage creates: built, checked against the SDK's
Trainer API models, and its trainer command run here exactly as the torch-distributed runtime
runs it on one node (torchrun reading the PET_* variables the Trainer controller sets)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from oaml.models.checkpoint import read_checkpoint
from oaml.training.trainjob import TrainJobError, TrainJobSpec, job_name, trainjob_body, validated

SPEC = TrainJobSpec(
    name="oaml-teacher-abc12",
    image="ghcr.io/oaml/oaml:0.1.0",
    train_args=["--out", "/data/trainjobs/teacher", "--preset", "/data/trainjobs/p.yaml"],
    num_nodes=4,
    gpus_per_node=8,
    secret_env={"AWS_ACCESS_KEY_ID": ("oaml-s3", "AWS_ACCESS_KEY_ID", True)},
    node_selector={"nvidia.com/gpu.present": "true"},
    service_account="oaml-trainer",
)


def test_body_is_a_torch_distributed_trainjob_the_models_accept():
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    body = trainjob_body(SPEC)
    assert body["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and body["kind"] == "TrainJob"
    assert body["spec"]["runtimeRef"]["name"] == "torch-distributed"
    trainer = body["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"][:3] == ["-m", "oaml.cli", "train"] and "--resume" in trainer["args"]
    # Credentials by reference only: no value of a Secret is in the body.
    (secret,) = [e for e in trainer["env"] if e["name"] == "AWS_ACCESS_KEY_ID"]
    assert "value" not in secret and secret["valueFrom"]["secretKeyRef"]["name"] == "oaml-s3"
    pod = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ][0]["template"]["spec"]["template"]["spec"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "oaml-data"}} in pod["volumes"]
    assert pod["containers"][0]["volumeMounts"][0] == {"name": "data", "mountPath": "/data"}
    assert pod["serviceAccountName"] == "oaml-trainer"
    model = TrainerV1alpha1TrainJob.from_dict(body)
    assert model.spec.trainer.num_nodes == 4 and model.to_dict() == body


def test_fields_the_api_does_not_know_are_refused():
    body = trainjob_body(SPEC)
    body["spec"]["podTemplateOverrides"] = []  # Trainer v2.1's name, gone in v2.2
    with pytest.raises(TrainJobError, match="podTemplateOverrides"):
        validated(body)
    body = trainjob_body(SPEC)
    body["spec"]["trainer"]["numNodes"] = "four"
    with pytest.raises(TrainJobError, match="does not fit"):
        validated(body)


def test_names_are_dns_labels():
    with pytest.raises(TrainJobError, match="DNS label"):
        TrainJobSpec(name="Oaml_Teacher", image="x", train_args=[], num_nodes=2)
    name = job_name("oaml", "student-0123456789abcdef" * 4)
    assert len(name) <= 63 and TrainJobSpec(name=name, image="x", train_args=[], num_nodes=2)
    # The same stage folder names the same job: a retried step follows the one left running.
    assert (
        job_name("oaml", "Teacher_0f3a") == job_name("oaml", "Teacher_0f3a") == "oaml-teacher-0f3a"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_trainer_command_trains_on_two_processes_as_the_runtime_runs_it(tmp_path, data_root):
    """The body's command and args, run with the PET_* environment the Trainer controller sets
    for one node of two processes (gloo here; NCCL on GPU nodes)."""
    out = tmp_path / "trainjobs" / "start"
    args = [
        "--out", str(out), "--preset", "quick", "--data-root", str(data_root),
        "--role", "student", "--method", "ce", "--device", "cpu",
        "--set", "student.train.train_subset=1200", "--set", "student.train.batch_size=60",
        "--set", "student.model.width=0.125", "--set", "student.train.epochs=1",
    ]  # fmt: skip
    spec = TrainJobSpec(
        name="oaml-start-1", image="oaml:test", train_args=args, num_nodes=1, gpus_per_node=0
    )
    trainer = trainjob_body(spec)["spec"]["trainer"]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PET_NNODES": "1", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "0",
        "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    proc = subprocess.run(
        trainer["command"] + trainer["args"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lineage = read_checkpoint(out / "checkpoint.pt")["lineage"]
    assert lineage["processes"] == 2 and lineage["method"] == "ce"
