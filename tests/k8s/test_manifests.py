"""The Kubernetes manifests as `kubectl apply -k` would send them.

Each kustomization is rendered offline by kubectl's built-in kustomize, every object of a built-in
kind is validated against the Kubernetes API schema (kubernetes-validate, strict: unknown fields
fail), KServe's InferenceService is checked structurally, and the properties users rely on are
asserted: GPU scheduling, probes, autoscaling, no secret values, network policies, RBAC.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tomllib
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TARGETS = ("base", "overlays/dev", "overlays/prod", "kserve")
PLAIN_DETECTOR = ("base", "overlays/dev", "overlays/prod")  # the detector as a Deployment
TRITON = "kserve-triton"  # the detector's ONNX graph on KServe's Triton runtime
ALL_TARGETS = (*TARGETS, TRITON)
NAMESPACE = "oaml"
# The oldest Kubernetes the manifests are meant for, and the newest schema bundled.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
KSERVE_API = "serving.kserve.io/v1beta1"
SERVE_IMAGE = "ghcr.io/oaml/oaml-serve"
TRAIN_IMAGE = "ghcr.io/oaml/oaml"
CREDENTIAL_HINTS = ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY", "CREDENTIAL")

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not on PATH: it renders the kustomizations offline"
)


def repository(image: str) -> str:
    """An image reference without its tag or digest."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}"


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@functools.cache
def render(target: str) -> tuple[dict, ...]:
    """`kubectl kustomize k8s/TARGET` parsed into objects."""
    done = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize k8s/{target} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@functools.cache
def rendered_text(target: str) -> str:
    return yaml.safe_dump_all(render(target))


def objects(target: str, kind: str) -> list[dict]:
    return [obj for obj in render(target) if obj["kind"] == kind]


def get(target: str, kind: str, name: str) -> dict:
    found = [obj for obj in objects(target, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"k8s/{target} renders {len(found)} {kind} named {name!r}"
    return found[0]


def only_container(pod_spec: dict) -> dict:
    assert len(pod_spec["containers"]) == 1
    return pod_spec["containers"][0]


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def expand(value: str, env: dict[str, dict]) -> str:
    """Kubernetes' $(VAR) expansion of command/args, for variables with literal values."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m[1]].get("value", m[0]), value)


def port_number(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    return named[port]


def http_probe(container: dict, kind: str) -> tuple[str, int]:
    probe = container[kind]["httpGet"]
    return probe["path"], port_number(container, probe["port"])


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (cpu or memory) as a number: "500m" -> 0.5, "4Gi" -> 4 * 2**30."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def arg_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def detector_pod(target: str) -> dict:
    if target == "kserve":
        return get(target, "InferenceService", "oaml-detector")["spec"]["predictor"]
    return get(target, "Deployment", "oaml-detector")["spec"]["template"]["spec"]


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}


def detector_pod_labels(target: str) -> dict[str, str]:
    if target == "kserve":  # KServe labels the predictor pods with the InferenceService's name
        return {"serving.kserve.io/inferenceservice": "oaml-detector"}
    return get(target, "Deployment", "oaml-detector")["spec"]["template"]["metadata"]["labels"]


# ---- Rendering and schema validation ----------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_renders_in_namespace_oaml(target):
    rendered = render(target)
    assert rendered, f"k8s/{target} renders nothing"
    for obj in rendered:
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], obj["metadata"]
            continue
        assert obj["metadata"].get("namespace") == NAMESPACE, (obj["kind"], obj["metadata"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_builtin_kinds_validate_against_the_api_schema(target, version):
    checked = 0
    for obj in render(target):
        if obj["apiVersion"] == KSERVE_API:
            continue  # a CRD: no bundled schema (test_kserve_inference_service checks it)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"k8s/{target} {name} is invalid for Kubernetes {version}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"k8s/{target} {name}: {exc.message}")
        checked += 1
    assert checked >= 10


# ---- The detector -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_detector_runs_the_serving_image_on_a_gpu_node(target):
    pod = detector_pod(target)
    container = only_container(pod)
    assert repository(container["image"]) == SERVE_IMAGE
    args = container["args"]
    assert arg_value(args, "--model") == "$(MODEL_URI)"
    assert arg_value(args, "--name") == "oaml-detector"
    assert arg_value(args, "--host") == "0.0.0.0"
    assert arg_value(args, "--device") == "cuda"
    port = int(arg_value(args, "--port"))
    assert port == 8080
    assert port in [p["containerPort"] for p in container["ports"]]

    resources = container["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[bound].keys(), bound
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]

    assert http_probe(container, "readinessProbe") == ("/v2/health/ready", port)
    assert http_probe(container, "livenessProbe") == ("/v2/health/live", port)


@pytest.mark.parametrize("target", TARGETS)
def test_detector_is_locked_down(target):
    pod = detector_pod(target)
    container = only_container(pod)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The model download (tempfile) and caches need a writable /tmp on a read-only root.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = env_of(container)
    assert env["TMPDIR"]["value"] == "/tmp"
    assert env["HOME"]["value"].startswith("/tmp")


@pytest.mark.parametrize("target", TARGETS)
def test_detector_credentials_come_from_secrets_and_config(target):
    """The bearer token and the detector's own read-only MLflow user; no S3 credentials at all
    (MLflow proxies the model's artifacts)."""
    env = env_of(only_container(detector_pod(target)))
    assert env["OAML_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "oaml-serve-token",
        "key": "token",
    }
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "oaml-mlflow-detector", "key": key}  # required, not optional
    assert not set(env) & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"}


@pytest.mark.parametrize("target", TARGETS)
def test_detector_reaches_the_mlflow_service(target):
    """MLFLOW_TRACKING_URI names the rendered MLflow Service, its namespace and port."""
    uri = urlparse(env_of(only_container(detector_pod(target)))["MLFLOW_TRACKING_URI"]["value"])
    service = get(target, "Service", "mlflow")
    assert uri.hostname in (
        "mlflow",
        f"mlflow.{NAMESPACE}",
        f"mlflow.{NAMESPACE}.svc",
        f"mlflow.{NAMESPACE}.svc.cluster.local",
    )
    assert uri.port in [p["port"] for p in service["spec"]["ports"]]


@pytest.mark.parametrize("target", PLAIN_DETECTOR)
def test_detector_service_and_metrics_scraping(target):
    deployment = get(target, "Deployment", "oaml-detector")
    template = deployment["spec"]["template"]
    service = get(target, "Service", "oaml-detector")
    selector = service["spec"]["selector"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert selector.items() <= deployment["spec"]["selector"]["matchLabels"].items()
    container = only_container(template["spec"])
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8080
    assert port_number(container, port["targetPort"]) == 8080
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == 8080


@pytest.mark.parametrize("target", PLAIN_DETECTOR)
def test_hpa_scales_the_detector_on_cpu(target):
    hpa = get(target, "HorizontalPodAutoscaler", "oaml-detector")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    deployment = get(target, "Deployment", ref["name"])
    assert only_container(deployment["spec"]["template"]["spec"])["name"] == "detector"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert 1 <= low <= high
    # `kubectl apply` must not scale the Deployment below what the HPA keeps.
    assert deployment["spec"]["replicas"] == low


def test_dev_overlay_is_small_and_pulls_dev_images():
    deployment = get("overlays/dev", "Deployment", "oaml-detector")
    hpa = get("overlays/dev", "HorizontalPodAutoscaler", "oaml-detector")
    assert deployment["spec"]["replicas"] == 1
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    for kind_name in (("Deployment", "oaml-detector"), ("Deployment", "mlflow")):
        obj = get("overlays/dev", *kind_name)
        container = only_container(obj["spec"]["template"]["spec"])
        assert container["image"].endswith(":dev")
        assert container["imagePullPolicy"] == "Always"  # a moving tag
        assert obj["metadata"]["labels"]["env"] == "dev"
    base = only_container(get("base", "Deployment", "oaml-detector")["spec"]["template"]["spec"])
    dev = only_container(deployment["spec"]["template"]["spec"])
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            smaller = quantity(dev["resources"][bound][resource])
            assert smaller <= quantity(base["resources"][bound][resource]), (bound, resource)
    assert quantity(dev["resources"]["requests"]["cpu"]) < quantity(
        base["resources"]["requests"]["cpu"]
    )


def test_prod_overlay_is_redundant_and_guaranteed():
    deployment = get("overlays/prod", "Deployment", "oaml-detector")
    hpa = get("overlays/prod", "HorizontalPodAutoscaler", "oaml-detector")
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] == 10
    assert deployment["metadata"]["labels"]["env"] == "prod"
    pdbs = objects("overlays/prod", "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    covering = [
        pdb for pdb in pdbs if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(covering) == 1, "one PodDisruptionBudget must select the detector pods"
    # At least one pod stays up, and a drain can still evict one.
    assert 1 <= covering[0]["spec"]["minAvailable"] < replicas
    # Guaranteed QoS: requests equal limits for cpu and memory, in both Deployments.
    for name in ("oaml-detector", "mlflow"):
        container = only_container(
            get("overlays/prod", "Deployment", name)["spec"]["template"]["spec"]
        )
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            assert resources["requests"][resource] == resources["limits"][resource], name


def test_base_image_tags_are_the_project_version():
    """The same tag `make images` builds by default and the pipeline uses by default."""
    images = re.findall(r"image: (\S+)", rendered_text("base"))
    assert images
    for image in images:
        assert repository(image) in (TRAIN_IMAGE, SERVE_IMAGE)
        assert image.rsplit(":", 1)[1] == project_version(), image


PINNED = ("overlays/prod", "kserve", TRITON)


def release_pins() -> dict[str, dict]:
    """k8s/release-images' entries by image name: what `make push-images` pinned."""
    component = yaml.safe_load((K8S / "release-images" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    return {entry["name"]: entry for entry in component["images"]}


@pytest.mark.parametrize("target", PINNED)
def test_release_targets_run_images_by_digest_only(target):
    """A re-pushed tag changes nothing in production: every container (init containers too)
    names the pinned digest of one of the project's images, and no tag."""
    pins = release_pins()
    assert set(pins) == {TRAIN_IMAGE, SERVE_IMAGE}
    for entry in pins.values():
        # A registry's sha256, or the placeholder that keeps pods from starting until a push.
        assert re.fullmatch(r"sha256:([0-9a-f]{64}|unpinned-run-make-push-images)", entry["digest"])
    images = re.findall(r"image: (\S+)", rendered_text(target))
    assert images
    for image in images:
        name, at, digest = image.partition("@")
        pin = pins[repository(image)]
        assert at and ":" not in name.rsplit("/", 1)[1], f"{image} is not pinned by digest"
        assert (name, digest) == (pin.get("newName", pin["name"]), pin["digest"])


# ---- MLflow -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_server_command(target):
    deployment = get(target, "Deployment", "mlflow")
    container = only_container(deployment["spec"]["template"]["spec"])
    assert repository(container["image"]) == TRAIN_IMAGE
    env = env_of(container)
    command = [expand(word, env) for word in container["command"] + container["args"]]
    assert command[:2] == ["mlflow", "server"]
    assert arg_value(command, "--app-name") == "basic-auth"
    assert arg_value(command, "--host") == "0.0.0.0"
    port = int(arg_value(command, "--port"))
    assert port == 5000
    assert arg_value(command, "--artifacts-destination") == "s3://oaml-mlflow"
    assert http_probe(container, "readinessProbe") == ("/health", port)
    assert http_probe(container, "livenessProbe") == ("/health", port)
    service = get(target, "Service", "mlflow")
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert port_number(container, service["spec"]["ports"][0]["targetPort"]) == port


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_backend_store_auth_and_s3_come_from_secrets(target):
    """The database URI reaches `mlflow server` through its environment, never its argv (ps
    shows argv to anyone on the node); auth's admin and database come from Secrets."""
    spec = get(target, "Deployment", "mlflow")["spec"]["template"]["spec"]
    container = only_container(spec)
    env = env_of(container)
    assert "--backend-store-uri" not in container["args"]
    for word in container["command"] + container["args"]:  # $(VAR) puts VAR's value in argv
        for variable in re.findall(r"\$\((\w+)\)", word):
            assert "secretKeyRef" not in env[variable].get("valueFrom", {}), variable
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "oaml-mlflow-db",
        "key": "uri",
    }
    for key in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "oaml-mlflow-admin", "key": key}
    secret_key = env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret_key["name"] == "oaml-mlflow-admin"
    # basic_auth.ini (with the auth database's URI) is a file from the database Secret.
    config = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config.parent)]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "oaml-mlflow-db" and mount["readOnly"]
    assert [i["path"] for i in volume["secret"]["items"]] == [config.name]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "oaml-s3", "key": key}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["configMapKeyRef"] == {
        "name": "oaml-s3-config",
        "key": "MLFLOW_S3_ENDPOINT_URL",
    }
    assert "postgresql://" not in rendered_text(target)
    assert "sqlite://" not in rendered_text(target)


def test_the_auth_template_reads_every_user_and_refuses_writes_by_default():
    """The template of basic_auth.ini is a config MLflow's own reader accepts, with READ and
    a credential cache whose staleness is bounded."""
    import configparser

    text = secret_templates()["oaml-mlflow-db"]["stringData"]["basic_auth.ini"]
    config = configparser.ConfigParser()
    config.read_string(text)
    assert config["mlflow"]["default_permission"] == "READ"
    assert config["mlflow"]["authorization_function"].endswith("authenticate_request_basic_auth")
    assert "admin_password" not in config["mlflow"]  # the admin comes from oaml-mlflow-admin
    # One PBKDF2 check per credential a minute, not per request; a rotated password dies in 60 s.
    assert 0 < config.getint("mlflow", "auth_cache_ttl_seconds") <= 60


@pytest.mark.parametrize("target", TARGETS)
def test_the_users_job_takes_every_credential_from_secrets(target):
    job = get(target, "Job", "mlflow-users")
    container = only_container(job["spec"]["template"]["spec"])
    assert repository(container["image"]) == TRAIN_IMAGE
    assert container["command"] == ["oaml", "registry", "ensure-users"]
    env, args = env_of(container), container["args"]
    prefixes = [v for flag, v in pairwise(args) if flag in ("--from-env", "--promoter")]
    for prefix in prefixes:
        for key in ("USERNAME", "PASSWORD"):
            assert "secretKeyRef" in env[f"{prefix}_{key}"]["valueFrom"]
    users = {env[f"{p}_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] for p in prefixes}
    assert users == {"oaml-mlflow-auth", "oaml-mlflow-detector", "oaml-mlflow-promoter"}
    # The promoter (not the pipeline's user) writes the promotion records and moves the alias
    # of the model the detector serves.
    promoter = env[f"{arg_value(args, '--promoter')}_USERNAME"]["valueFrom"]["secretKeyRef"]
    assert promoter["name"] == "oaml-mlflow-promoter"
    served = arg_value(only_container(detector_pod(target))["args"], "--name")
    assert arg_value(args, "--model") == served
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "oaml-mlflow-admin"
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, on importing mlflow
@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_allowed_hosts_admit_in_cluster_clients(target):
    """MLflow's own host check accepts the Host header the detector (and pipeline steps) send."""
    from mlflow.server.security_utils import is_allowed_host_header

    container = only_container(get(target, "Deployment", "mlflow")["spec"]["template"]["spec"])
    env = env_of(container)
    allowed = expand(arg_value(container["args"], "--allowed-hosts"), env).split(",")
    assert "*" not in allowed  # DNS rebinding protection stays on
    detector_uri = env_of(only_container(detector_pod(target)))["MLFLOW_TRACKING_URI"]["value"]
    service = f"mlflow.{NAMESPACE}.svc.cluster.local"
    for host in (urlparse(detector_uri).netloc, f"{service}:5000", f"mlflow.{NAMESPACE}:5000"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")
    if target == "overlays/dev":  # kubectl port-forward svc/mlflow PORT:5000
        assert is_allowed_host_header(allowed, "localhost:5000")
        assert is_allowed_host_header(allowed, "127.0.0.1:15000")


# ---- No secrets in the manifests --------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_no_secret_values_are_rendered(target):
    secrets = objects(target, "Secret")
    for secret in secrets:  # only placeholders could ever be acceptable here
        for value in (secret.get("stringData") or {}).values():
            assert "REPLACE_ME" in value
        assert not secret.get("data"), f"Secret {secret['metadata']['name']} carries data"
    assert not secrets, "Secrets are created by hand (k8s/README.md), never rendered"
    for pod in pod_specs(target):
        for container in pod.get("containers", []):
            for item in container.get("env", []):
                if "value" not in item:
                    continue  # valueFrom: a Secret or ConfigMap reference
                name, value = item["name"], item["value"]
                assert not any(hint in name for hint in CREDENTIAL_HINTS), f"literal {name}"
                if "://" in value:  # e.g. MLFLOW_TRACKING_URI: no user:password@ in it
                    assert urlparse(value).password is None, f"credentials in {name}"


def pod_specs(target: str) -> list[dict]:
    specs = [obj["spec"]["template"]["spec"] for obj in objects(target, "Deployment")]
    specs += [obj["spec"]["template"]["spec"] for obj in objects(target, "Job")]
    specs += [isvc["spec"]["predictor"] for isvc in objects(target, "InferenceService")]
    return specs


# ---- Secret templates -------------------------------------------------------------------------


def secret_templates() -> dict[str, dict]:
    templates = {}
    for path in sorted((K8S / "secrets").glob("*.example.yaml")):
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        templates[doc["metadata"]["name"]] = doc
    return templates


def test_secret_templates_hold_placeholders_only():
    templates = secret_templates()
    assert templates
    for name, secret in templates.items():
        assert secret["kind"] == "Secret"
        assert "data" not in secret, f"{name}: use stringData placeholders, not data"
        assert secret["stringData"]
        for key, value in secret["stringData"].items():
            if key.endswith(".ini"):  # a config file: its one secret setting is a placeholder
                assert "database_uri = REPLACE_ME" in value and "://" not in value, key
                continue
            assert value == "REPLACE_ME", f"{name}.{key} must be the placeholder REPLACE_ME"
        kubernetes_validate.validate(secret, K8S_VERSIONS[-1], strict=True)


def test_secret_templates_are_not_part_of_any_kustomization():
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    # Every target, the Triton predictor's inner step, and the release-images component.
    assert len(kustomizations) == len(ALL_TARGETS) + 2
    for path in kustomizations:
        spec = yaml.safe_load(path.read_text())
        files = [*spec.get("resources", []), *spec.get("components", [])]
        files += [patch["path"] for patch in spec.get("patches", []) if "path" in patch]
        for file in files:
            assert not (path.parent / file).resolve().is_relative_to(K8S / "secrets"), path
    for target in ALL_TARGETS:  # and, rendered, nothing of kind Secret appears
        assert not objects(target, "Secret")


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_referenced_secret_key_has_a_template(target):
    """What the manifests read from Secrets is exactly what the templates tell users to create."""
    templates = secret_templates()
    for pod in pod_specs(target):
        for container in pod.get("containers", []):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in templates, f"no k8s/secrets/{ref['name']}.example.yaml"
                    assert ref["key"] in templates[ref["name"]]["stringData"], ref


# ---- Network policies -------------------------------------------------------------------------


def selects(policy: dict, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert not selector.get("matchExpressions")  # keep the policies simple to audit
    return selector.get("matchLabels", {}).items() <= labels.items()


def ingress_rules(target: str, labels: dict[str, str]) -> list[dict]:
    rules = []
    for policy in objects(target, "NetworkPolicy"):
        if selects(policy, labels) and "Ingress" in policy["spec"]["policyTypes"]:
            rules += policy["spec"].get("ingress", [])
    return rules


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_ingress_is_denied_by_default(target):
    deny = [
        p
        for p in objects(target, "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and p["spec"]["policyTypes"] == ["Ingress"]
        and not p["spec"].get("ingress")
    ]
    assert len(deny) == 1
    # Pods nobody opened a door for (e.g. PVC helpers, debug pods) get no ingress at all.
    assert ingress_rules(target, {"app.kubernetes.io/name": "something-else"}) == []


@pytest.mark.parametrize("target", TARGETS)
def test_detector_accepts_ingress_on_8080_only(target):
    rules = ingress_rules(target, detector_pod_labels(target))
    assert rules, "no NetworkPolicy opens the detector"
    ports = {(p["protocol"], p["port"]) for rule in rules for p in rule["ports"]}
    assert ports == {("TCP", 8080)}


def admitted(
    rules: list[dict],
    labels: dict[str, str],
    namespace: str = NAMESPACE,
    namespace_labels: dict[str, str] | None = None,
) -> bool:
    """Whether a pod with `labels` in `namespace` (labelled `namespace_labels`) may connect, by
    any of the ingress rules."""

    def matches(selector: dict | None, values: dict[str, str]) -> bool:
        if selector is None:
            return True
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In"
            if values.get(expression["key"]) not in expression["values"]:
                return False
        return selector.get("matchLabels", {}).items() <= values.items()

    for rule in rules:
        for peer in rule["from"]:
            same_namespace = "namespaceSelector" not in peer and namespace == NAMESPACE
            in_namespace = same_namespace or (
                "namespaceSelector" in peer
                and matches(
                    peer["namespaceSelector"],
                    {"kubernetes.io/metadata.name": namespace, **(namespace_labels or {})},
                )
            )
            if in_namespace and matches(peer.get("podSelector"), labels):
                return True
    return False


@pytest.mark.parametrize("target", TARGETS)
def test_detector_admits_its_namespace_and_labelled_callers_only(target):
    """One compromised pod elsewhere in the cluster cannot reach the detector; a caller's
    namespace opts in with a label."""
    rules = ingress_rules(target, detector_pod_labels(target))
    assert rules and all(rule.get("from") for rule in rules), "the detector open to everyone"
    caller = {"app": "shop"}
    assert admitted(rules, caller)  # a pod of namespace oaml
    assert admitted(rules, caller, "shop", {"oaml.io/detector-client": "true"})
    assert not admitted(rules, caller, "shop")
    assert not admitted(rules, caller, "shop", {"oaml.io/detector-client": "false"})


@pytest.mark.parametrize("target", TARGETS)
def test_detector_serves_a_pinned_version_that_rolls_out_together(target):
    """Every pod loads the version pinned in the generated ConfigMap (never an alias read at
    start); its name carries a hash of the content, so a new version changes the pod template."""
    container = only_container(detector_pod(target))
    ref = env_of(container)["MODEL_URI"]["valueFrom"]["configMapKeyRef"]
    assert ref["key"] == "MODEL_URI"
    config = get(target, "ConfigMap", ref["name"])
    assert re.fullmatch(r"oaml-detector-model-[a-z0-9]{10}", ref["name"])
    assert re.fullmatch(r"models:/oaml-detector/\d+", config["data"]["MODEL_URI"])
    assert "@" not in config["data"]["MODEL_URI"]
    # ...and only the file of the digest the promotion printed, from the same ConfigMap.
    assert arg_value(container["args"], "--model-sha256") == "$(MODEL_SHA256)"
    digest = env_of(container)["MODEL_SHA256"]["valueFrom"]["configMapKeyRef"]
    assert digest == {"name": ref["name"], "key": "MODEL_SHA256"}
    assert config["data"]["MODEL_SHA256"]  # a placeholder until the first promotion


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_admits_only_the_pods_that_need_it(target):
    labels = get(target, "Deployment", "mlflow")["spec"]["template"]["metadata"]["labels"]
    rules = ingress_rules(target, labels)
    assert rules and all(rule.get("from") for rule in rules), "MLflow open to everyone"
    for rule in rules:
        assert [(p["protocol"], p["port"]) for p in rule["ports"]] == [("TCP", 5000)]
    step = {"oaml.io/mlflow-client": "true"}  # what the pipeline puts on its step pods
    job = get(target, "Job", "mlflow-users")["spec"]["template"]["metadata"]["labels"]
    assert admitted(rules, detector_pod_labels(target))
    assert admitted(rules, job)
    assert admitted(rules, step) and admitted(rules, step, "kubeflow")
    assert not admitted(rules, {"app.kubernetes.io/name": "debug"})  # any other pod here
    assert not admitted(rules, step, "default")  # a labelled pod in another namespace
    assert not admitted(rules, detector_pod_labels(target), "default")


# ---- Pipeline runner, data volume -------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_pipeline_runner_has_least_privilege(target):
    get(target, "ServiceAccount", "oaml-pipeline-runner")
    role = get(target, "Role", "oaml-pipeline-runner")
    binding = get(target, "RoleBinding", "oaml-pipeline-runner")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "oaml-pipeline-runner",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "oaml-pipeline-runner", "namespace": NAMESPACE}
    ]
    # Cluster-wide: only reading the Trainer's ClusterTrainingRuntimes, bound to this account.
    (cluster_role,) = objects(target, "ClusterRole")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["clustertrainingruntimes"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    (cluster_binding,) = objects(target, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert cluster_binding["subjects"] == binding["subjects"]
    secret_names = set()
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"], "secrets: get by name only (no list/watch)"
            assert rule["resourceNames"], "secrets must be named"
            secret_names |= set(rule["resourceNames"])
        writes = set(rule["verbs"]) - {"get", "list", "watch"}
        if writes and rule["apiGroups"] == ["trainer.kubeflow.org"]:  # multi-node training
            assert rule["resources"] == ["trainjobs"] and writes == {"create", "delete"}
        elif writes:  # else the only write: Argo's executor reporting a step's outputs
            assert rule["apiGroups"] == ["argoproj.io"]
            assert rule["resources"] == ["workflowtaskresults"]
            assert writes <= {"create", "patch"}
    assert {"oaml-s3", "oaml-mlflow-auth"} <= secret_names


@pytest.mark.parametrize("target", TARGETS)
def test_data_volume_is_shared(target):
    pvc = get(target, "PersistentVolumeClaim", "oaml-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"]


# ---- KServe alternative -----------------------------------------------------------------------


def test_kserve_inference_service():
    """Structural check of the CRD object, and parity with the plain detector Deployment."""
    isvc = get("kserve", "InferenceService", "oaml-detector")
    assert isvc["apiVersion"] == KSERVE_API
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert set(predictor) <= {
        # ComponentExtensionSpec + the PodSpec fields KServe inlines into the predictor
        "minReplicas",
        "maxReplicas",
        "scaleMetric",
        "scaleTarget",
        "containers",
        "volumes",
        "nodeSelector",
        "tolerations",
        "securityContext",
        "serviceAccountName",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "terminationGracePeriodSeconds",
    }
    assert predictor["scaleMetric"] == "cpu"
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    container = only_container(predictor)
    assert container["name"] == "kserve-container"
    assert container["ports"][0]["containerPort"] == 8080

    base_pod = detector_pod("base")
    base = only_container(base_pod)
    assert repository(container["image"]) == repository(base["image"])
    assert container["args"] == base["args"]
    assert env_of(container) == env_of(base)
    assert container["resources"] == base["resources"]
    assert container["securityContext"] == base["securityContext"]
    for field in ("nodeSelector", "tolerations", "securityContext", "volumes"):
        assert predictor[field] == base_pod[field], field

    # The plain detector is replaced, not duplicated: one GPU consumer per replica.
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        names = [obj["metadata"]["name"] for obj in objects("kserve", kind)]
        assert "oaml-detector" not in names, kind
    # The rest of the platform is there.
    get("kserve", "Deployment", "mlflow")
    get("kserve", "ConfigMap", "oaml-s3-config")


def test_triton_inference_service_serves_the_registered_repository():
    """KServe's Triton runtime on the pinned version's Triton repository, on a GPU node: an init
    container fetches it through MLflow as the detector's read-only user and verifies the pinned
    digest before Triton reads it; no storage initializer and no bucket credentials."""
    isvc = get(TRITON, "InferenceService", "oaml-detector")
    predictor = isvc["spec"]["predictor"]
    assert "containers" not in predictor and "serviceAccountName" not in predictor
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "onnx"}
    assert (model["protocolVersion"], model["runtime"]) == ("v2", "kserve-tritonserver")
    assert "storageUri" not in model
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert predictor["nodeSelector"] == detector_pod("base")["nodeSelector"]
    (fetch,) = predictor["initContainers"]
    assert repository(fetch["image"]) == SERVE_IMAGE
    assert fetch["command"] == ["oaml", "registry", "fetch-triton"]
    assert fetch["args"][0] == "$(MODEL_URI)"
    assert arg_value(fetch["args"], "--sha256") == "$(TRITON_SHA256)"
    env = env_of(fetch)
    pinned = {env[k]["valueFrom"]["configMapKeyRef"]["key"] for k in ("MODEL_URI", "TRITON_SHA256")}
    assert pinned == {"MODEL_URI", "TRITON_SHA256"}
    config = env["MODEL_URI"]["valueFrom"]["configMapKeyRef"]["name"]
    assert get(TRITON, "ConfigMap", config)["data"]["TRITON_SHA256"]
    assert env["MLFLOW_TRACKING_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == (
        "oaml-mlflow-detector"
    )
    secrets_read = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in env.values()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secrets_read == {"oaml-mlflow-detector"}  # no S3 key anywhere in the pod
    mounts = {m["name"]: m for m in fetch["volumeMounts"]}
    folder = mounts["model-repository"]["mountPath"]
    (served,) = [m for m in model["volumeMounts"] if m["name"] == "model-repository"]
    assert arg_value(fetch["args"], "--out") == folder == served["mountPath"] == "/mnt/models"
    assert served["readOnly"] is True
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        assert "oaml-detector" not in [o["metadata"]["name"] for o in objects(TRITON, kind)]
    labels = {"serving.kserve.io/inferenceservice": "oaml-detector"}
    ports = {(p["protocol"], p["port"]) for r in ingress_rules(TRITON, labels) for p in r["ports"]}
    assert ("TCP", 8080) in ports
