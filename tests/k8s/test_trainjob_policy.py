"""The TrainJob admission policy (k8s/base/trainjob-policy.yaml), its CEL evaluated offline by a
real CEL evaluator (cel-python, RE2 regular expressions like the API server's): the TrainJobs
the pipeline builds pass, and each hostile change a compromised step could make is denied by the
rule written for it."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import celpy
import pytest

from oaml.training.scale_out import ScaleOut
from oaml.training.trainjob import TrainJobSpec, trainjob_body
from tests.k8s.test_manifests import KUBECTL, get

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl renders the kustomization")
CEL_WORDS = {"all", "exists", "matches", "has", "name"}  # functions, and a field everywhere


def _pipeline_trainjob() -> dict:
    """The TrainJob of a multi-node teacher stage, as ScaleOut.for_pipeline sets it up."""
    scale = ScaleOut.for_pipeline(num_nodes=4, gpus_per_node=8, image="ghcr.io/oaml/oaml:0.1.0")
    spec = TrainJobSpec(
        name="oaml-teacher-abc12", image=scale.image, train_args=["--out", "/data/t"],
        num_nodes=scale.num_nodes, gpus_per_node=scale.gpus_per_node,
        secret_env=dict(scale.secret_env), node_selector=dict(scale.node_selector),
        service_account=scale.service_account,
    )  # fmt: skip
    return trainjob_body(spec)


def _policy() -> dict:
    return get("base", "ValidatingAdmissionPolicy", "oaml-trainjobs")


def verdicts(body: dict) -> list[bool]:
    """Each validation's value for `body`, as the API server computes them."""
    env, spec = celpy.Environment(), _policy()["spec"]

    def run(expression: str, activation: dict):
        return env.program(env.compile(expression)).evaluate(activation)

    activation = {"object": celpy.json_to_cel(body)}
    variables = {v["name"]: run(v["expression"], activation) for v in spec.get("variables", [])}
    activation["variables"] = celpy.celtypes.MapType(
        {celpy.celtypes.StringType(k): v for k, v in variables.items()}
    )
    return [bool(run(v["expression"], activation)) for v in spec["validations"]]


def _pod(body: dict) -> dict:
    patch = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]
    return patch["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def _secret_env(name: str) -> dict:
    return {"name": "X", "valueFrom": {"secretKeyRef": {"name": name, "key": "password"}}}


HOSTILE: dict[str, tuple[Callable[[dict], None], int]] = {
    "another image": (lambda b: b["spec"]["trainer"].update(image="docker.io/evil/miner:1"), 0),
    "a look-alike registry": (
        lambda b: b["spec"]["trainer"].update(image="ghcr.io/oaml/oaml.evil.io/x:1"), 0
    ),
    "MLflow's admin Secret": (
        lambda b: b["spec"]["trainer"]["env"].append(_secret_env("oaml-mlflow-admin")), 1
    ),
    "the database Secret": (
        lambda b: b["spec"]["trainer"]["env"].append(_secret_env("oaml-mlflow-db")), 1
    ),
    "a dataset initializer": (
        lambda b: b["spec"].update(initializer={"dataset": {"secretRef": {"name": "x"}}}),
        2,
    ),
    "the pipeline's service account": (
        lambda b: _pod(b).update(serviceAccountName="oaml-pipeline-runner"), 3
    ),
    "a Secret volume": (
        lambda b: _pod(b)["volumes"].append({"name": "s", "secret": {"secretName": "oaml-s3"}}),
        3,
    ),
    "another claim": (
        lambda b: _pod(b)["volumes"].append(
            {"name": "p", "persistentVolumeClaim": {"claimName": "postgres-data"}}
        ),
        3,
    ),
    "a Secret in a patched container": (
        lambda b: _pod(b)["containers"][0].update(env=[_secret_env("oaml-mlflow-admin")]), 3
    ),
    "a privileged container": (
        lambda b: _pod(b)["containers"][0].update(securityContext={"privileged": True}), 3
    ),
    "root for the pod": (lambda b: _pod(b).update(securityContext={"runAsUser": 0}), 3),
    "an init container": (
        lambda b: _pod(b).update(initContainers=[{"name": "x", "env": []}]), 3
    ),
}  # fmt: skip


def test_the_trainjobs_oaml_builds_are_admitted():
    body = _pipeline_trainjob()
    assert _pod(body)["serviceAccountName"] == "oaml-trainer"
    assert all(verdicts(body))
    digest = copy.deepcopy(body)
    digest["spec"]["trainer"]["image"] = "ghcr.io/oaml/oaml@sha256:" + "a" * 64
    assert all(verdicts(digest))


@pytest.mark.parametrize("change", list(HOSTILE))
def test_each_hostile_trainjob_is_denied_by_its_rule(change):
    body = _pipeline_trainjob()
    alter, rule = HOSTILE[change]
    alter(body)
    found = verdicts(body)
    assert not found[rule] and sum(not v for v in found) == 1, found


def test_the_policy_binds_to_trainjobs_of_namespace_oaml_and_denies():
    policy = _policy()["spec"]
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["trainer.kubeflow.org"] and rule["resources"] == ["trainjobs"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE"} and policy["failurePolicy"] == "Fail"
    binding = get("base", "ValidatingAdmissionPolicyBinding", "oaml-trainjobs")["spec"]
    assert binding["policyName"] == "oaml-trainjobs" and binding["validationActions"] == ["Deny"]
    selector = binding["matchResources"]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": "oaml"}
    account = get("base", "ServiceAccount", "oaml-trainer")
    assert account["automountServiceAccountToken"] is False


def test_every_field_the_policy_names_is_in_the_trainer_api():
    """The API server compiles the CEL against the CRD's schema: a field it lacks (an older
    Trainer's podTemplateOverrides, a container's image in a patch) fails the policy for all."""
    import kubeflow_trainer_api.models as models

    known = set()
    for name in dir(models):
        model = getattr(models, name)
        for key, field in getattr(model, "model_fields", {}).items():
            known.add(field.alias or key)
    spec = _policy()["spec"]
    expressions = [v["expression"] for v in spec["validations"]]
    fields = {f for e in expressions for f in re.findall(r"\.([A-Za-z_]\w*)", e)}
    fields -= CEL_WORDS | {"spec", "allowedSecrets"}
    assert fields and fields <= known, sorted(fields - known)
