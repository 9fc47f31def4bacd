"""The compiled IR: every stage, GPU requests, node selection, volumes, Secrets and caching."""

from __future__ import annotations

import yaml

from tests.conftest import oaml_in_process, run_oaml

STAGES = {
    "prepare-data", "synthesize-outliers", "train-teacher", "train-start", "train-student",
    "evaluate", "export-onnx", "register", "open-tracking", "close-tracking", "merged-overrides",
    "fingerprint-import",
}  # fmt: skip
TRAINING = {"train-teacher", "train-start", "train-student"}
GPU_STAGES = {"synthesize-outliers", "evaluate", *TRAINING}
GPUS_PARAM = "{{$.inputs.parameters['pipelinechannel--gpus_per_node']}}"
CACHED = {"prepare-data", "synthesize-outliers", "train-teacher", "train-start"}


def compiled(tmp_path, *flags: str) -> dict:
    out = tmp_path / "pipeline.yaml"
    proc = run_oaml("pipeline", "compile", "--out", str(out), *flags)
    assert str(out) in proc.stdout
    # Two documents: the pipeline spec, then the Kubernetes platform spec (kfp-kubernetes).
    spec, platform = yaml.safe_load_all(out.read_text())
    return {**spec, **platform}


def tasks(ir: dict) -> dict[str, dict]:
    """Every task of the pipeline, nested DAGs (the exit handler's) included."""
    found = dict(ir["root"]["dag"]["tasks"])
    for component in ir["components"].values():
        found.update(component.get("dag", {}).get("tasks", {}))
    return found


def test_ir_has_every_stage_with_its_inputs(tmp_path):
    ir = compiled(tmp_path)
    every = tasks(ir)
    assert set(every) >= STAGES
    params = ir["root"]["inputDefinitions"]["parameters"]
    for name in ("preset", "benchmark", "data_root", "tracking_uri", "registered_model", "image"):
        assert name in params
    assert params["registered_model"]["defaultValue"] == "oaml-detector"
    student = every["train-student"]["inputs"]["artifacts"]
    assert {"start", "teacher", "outliers", "data"} <= set(student)
    # A user's folder or S3 prefix reaches the data step, which imports it as the benchmark.
    assert params["import_from"]["defaultValue"] == ""
    data_inputs = every["prepare-data"]["inputs"]["parameters"]
    assert {"import_from", "import_options"} <= set(data_inputs)
    # Cached by content: keyed on the fingerprint of the source's listing, taken every run.
    key = data_inputs["fingerprint"]["taskOutputParameter"]
    assert key == {"producerTask": "fingerprint-import", "outputParameterKey": "Output"}
    assert not every["fingerprint-import"].get("cachingOptions", {}).get("enableCache", False)
    # The exit handler closes the MLflow parent run whatever happens.
    assert every["close-tracking"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"


def test_gpu_stages_request_gpus_and_run_on_gpu_nodes(tmp_path):
    ir = compiled(tmp_path)
    executors = ir["deploymentSpec"]["executors"]
    platform = ir["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    every = tasks(ir)
    for stage in STAGES:
        executor = every[stage]["componentRef"]["name"].replace("comp-", "exec-")
        container = executors[executor]["container"]
        resources = container.get("resources", {})
        k8s = platform.get(executor, {})
        # Every stage: the image parameter, credentials from Secrets, nothing inline.
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}"
        secrets = {s["secretName"] for s in k8s.get("secretAsEnv", [])}
        assert {"oaml-s3", "oaml-mlflow-auth"} <= secrets, stage
        # The label k8s/base's NetworkPolicy admits to MLflow.
        assert k8s["podMetadata"]["labels"]["oaml.io/mlflow-client"] == "true", stage
        assert "AWS_SECRET_ACCESS_KEY" not in str(container.get("env", ""))
        if stage in GPU_STAGES:
            accel = resources["accelerator"]
            # Training stages: as many GPUs as the gpus_per_node parameter says (default 1).
            count = GPUS_PARAM if stage in TRAINING else "1"
            assert accel["resourceType"] == "nvidia.com/gpu" and accel["resourceCount"] == count
            assert resources["resourceCpuLimit"] and resources["resourceMemoryLimit"]
            assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
            shm = k8s["emptyDirMounts"][0]
            assert (shm["mountPath"], shm["medium"]) == ("/dev/shm", "Memory")
            assert k8s["pvcMount"][0]["mountPath"] == "/data"
        else:
            assert "accelerator" not in resources, stage


def test_scale_out_parameters_and_the_trainjob_launcher_variant(tmp_path):
    """num_nodes and gpus_per_node reach every training stage; compiled with
    --trainjob-launchers the training steps only launch TrainJobs and ask for no GPU."""
    ir = compiled(tmp_path)
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["num_nodes"]["defaultValue"] == 1
    assert params["gpus_per_node"]["defaultValue"] == 1
    every = tasks(ir)
    for stage in TRAINING:
        given = every[stage]["inputs"]["parameters"]
        assert {"num_nodes", "gpus_per_node", "image"} <= set(given), stage
    launchers = compiled(tmp_path, "--trainjob-launchers")
    executors = launchers["deploymentSpec"]["executors"]
    platform = launchers["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for stage in TRAINING:
        executor = tasks(launchers)[stage]["componentRef"]["name"].replace("comp-", "exec-")
        assert "accelerator" not in executors[executor]["container"]["resources"], stage
        assert "nodeSelector" not in platform[executor], stage
        assert platform[executor]["pvcMount"][0]["mountPath"] == "/data"  # stage folders
    assert "accelerator" in executors["exec-evaluate"]["container"]["resources"]


def test_deterministic_stages_are_cached(tmp_path):
    every = tasks(compiled(tmp_path))
    for stage in STAGES:
        enabled = every[stage].get("cachingOptions", {}).get("enableCache", False)
        assert enabled == (stage in CACHED | {"merged-overrides"}), stage
        if enabled:  # a run id in its inputs would change the cache key every run
            assert "parent_run_id" not in every[stage]["inputs"].get("parameters", {}), stage


def test_params_and_bad_param_errors():
    listed = run_oaml("pipeline", "params").stdout
    assert "registered_model" in listed and "'oaml-detector'" in listed
    bad = oaml_in_process("pipeline", "submit", "--host", "http://127.0.0.1:9", "--param", "nope=1")
    assert bad.returncode == 2 and "unknown pipeline parameter 'nope'" in bad.stderr
    # No Kubeflow here: submitting to a closed port fails with one line naming the host.
    closed = oaml_in_process("pipeline", "submit", "--host", "http://127.0.0.1:9")
    assert closed.returncode == 2 and "no Kubeflow Pipelines API answers at" in closed.stderr
    assert "Traceback" not in closed.stderr
    no_local = oaml_in_process("pipeline", "run")
    assert no_local.returncode == 2 and "--local" in no_local.stderr
