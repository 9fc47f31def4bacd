"""The training/components image as a container: built with `make train-image`, it runs the CLI
as uid 1000, carries the CUDA libraries torch and onnxruntime load (checked without a GPU), faiss
and both PostgreSQL drivers, and runs the MLflow server of k8s/base against real PostgreSQL and
S3. `make test-images` runs these."""

from __future__ import annotations

import mlflow
import pytest

from tests.docker import engine as eng
from tests.tracking import services

pytestmark = [pytest.mark.slow, pytest.mark.images]

SIZE_LIMIT = 12e9  # torch's CUDA wheels alone are about 5 GB; catches a second copy

# Each shared library the CUDA paths dlopen, loaded from the wheels (no GPU needed to load).
CUDA_PROBE = """
import ctypes, glob, site, sys
import torch, onnxruntime as ort
assert torch.version.cuda.startswith("13."), torch.version.cuda
assert not torch.cuda.is_available()  # no GPU here: the libraries must still be present
nvidia = site.getsitepackages()[0] + "/nvidia"
for pattern in ("cu13/lib/libcudart.so.13", "cu13/lib/libcublas.so.13", "cudnn/lib/libcudnn.so.9",
                "cu12/lib/libcublas.so.12", "*/lib/libcudart.so.12"):
    found = glob.glob(f"{nvidia}/{pattern}") + glob.glob(f"{nvidia}/*/lib/{pattern.split('/')[-1]}")
    assert found, f"missing {pattern}"
    ctypes.CDLL(found[0])
assert torch.backends.cudnn.is_available() and torch.backends.cudnn.version() >= 90000
assert "CUDAExecutionProvider" in ort.get_available_providers()
ort.preload_dlls()
import faiss, psycopg, psycopg2, kfp, components, pipelines, kubeflow.trainer, kubeflow_trainer_api
assert hasattr(faiss, "StandardGpuResources"), "faiss is the CPU build"
print("ok", torch.__version__, ort.__version__, faiss.__version__, faiss.get_num_gpus())
"""


@pytest.fixture(scope="module")
def image():
    engine = eng.require_engine()
    seconds = eng.built(engine, "train-image")
    size = engine.image_size(eng.TRAIN_IMAGE)
    print(f"\n{eng.TRAIN_IMAGE}: built in {seconds:.0f} s, {size / 1e9:.2f} GB")
    return engine, eng.TRAIN_IMAGE


def test_cli_runs_as_uid_1000(image):
    engine, name = image
    config = engine.inspect(name)["Config"]
    assert config["User"] == "1000:1000"
    out = engine.run("run", "--rm", "--read-only", name, "sh", "-c", "id -u; oaml --help").stdout
    assert out.startswith("1000\n") and "pipeline" in out and "synthesize" in out
    fmnist = engine.run("run", "--rm", name, "ls", "/usr/share/datasets/fashion-mnist").stdout
    assert "train-images-idx3-ubyte.gz" in fmnist
    # The packaged far-OOD sets, so the cluster's data step builds what a laptop builds.
    probe = "from oaml.data import ood_sources as o; print(sorted(o.packaged_sets()))"
    packaged = engine.run("run", "--rm", name, "python", "-c", probe).stdout
    assert packaged.strip() == "['clipart', 'glyphs']"
    assert engine.image_size(name) < SIZE_LIMIT


def test_trainjob_command_trains_on_two_processes_in_the_image(image):
    """What a TrainJob node runs (its command and args from the body the pipeline builds), in
    the image as uid 1000, with the PET_* variables the torch-distributed runtime sets."""
    import shlex
    import socket

    from oaml.training.trainjob import TrainJobSpec, trainjob_body

    args = [
        "--out", "/tmp/run", "--preset", "quick", "--data-root", "/tmp/data", "--device", "cpu",
        "--set", "student.train.train_subset=600", "--set", "student.train.batch_size=60",
        "--set", "student.model.width=0.125", "--set", "student.train.epochs=1",
    ]  # fmt: skip
    spec = TrainJobSpec(name="oaml-image", image=image[1], train_args=args, num_nodes=1)
    trainer = trainjob_body(spec)["spec"]["trainer"]
    engine, name = image
    script = (
        "oaml data prepare --benchmark fmnist --root /tmp/data >/dev/null && "
        + shlex.join(trainer["command"] + trainer["args"])
        + " && python -c \"import torch; print('processes', torch.load('/tmp/run/checkpoint.pt',"
        " weights_only=True)['lineage']['processes'])\""
    )
    with socket.socket() as sock:  # host network (no bridge in a sandbox): a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = ["-e", "PET_NNODES=1", "-e", "PET_NPROC_PER_NODE=2", "-e", "PET_NODE_RANK=0",
           "-e", "PET_MASTER_ADDR=127.0.0.1", "-e", f"PET_MASTER_PORT={port}"]  # fmt: skip
    out = engine.run(
        "run", "--rm", "--network=host", *env, name, "sh", "-c", script, timeout=600
    ).stdout
    assert "processes 2" in out, out


def test_cuda_libraries_faiss_and_postgres_drivers_are_present(image):
    engine, name = image
    out = engine.run("run", "--rm", name, "python", "-c", CUDA_PROBE, timeout=300).stdout
    assert out.startswith("ok 2.14.1"), out


def test_mlflow_server_runs_from_the_image(image, postgres_uri, s3_store, tmp_path):
    """k8s/base runs the tracking server from this image: PostgreSQL backend, S3 artifacts."""
    engine, name = image

    def in_container(env: dict) -> list[str]:
        flags = [f"--env={key}={value}" for key, value in env.items()]
        return [engine.command, "run", "--rm", "--network=host", *flags, name, "mlflow"]

    with services.mlflow_server(postgres_uri, s3_store, tmp_path, launcher=in_container) as url:
        client = mlflow.MlflowClient(url)
        experiment = client.create_experiment("image-check")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "auroc", 0.9)
        (tmp_path / "note.txt").write_text("through the server's artifact proxy")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        assert client.get_run(run.info.run_id).data.metrics == {"auroc": 0.9}
    assert any(key.endswith("/note.txt") for key in s3_store.keys("mlflow/"))
