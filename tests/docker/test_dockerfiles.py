"""Static checks of the two images' recipes and the lock they install from (the images
themselves are built and run in test_serve_image.py and test_train_image.py).

They hold the Dockerfiles to what the rest of the project assumes: a non-root user, a base that
`make base-images` can build, installs from hashed locks that agree with uv.lock, a serving image
without torch whose locked packages cover every import of the serving code, and tags that agree
with pyproject.toml, the Makefile and the pipeline.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
TRAIN = DOCKER / "Dockerfile"
SERVE = DOCKER / "Dockerfile.serve"
REQUIREMENTS = ROOT / "requirements"
LOCKS = {
    "dev": REQUIREMENTS / "dev.txt",
    "train": REQUIREMENTS / "train-image.txt",
    "serve-gpu": REQUIREMENTS / "serve-gpu.txt",
    "serve-cpu": REQUIREMENTS / "serve-cpu.txt",
}
TORCH_STACK = {"torch", "torchvision", "torchaudio", "timm", "diffusers", "triton"}
# Import name -> the distribution the serving lock installs for it, where they differ.
SERVE_DISTRIBUTIONS = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "multipart": "python-multipart",
    "mlflow": "mlflow-skinny",
}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, f"{dockerfile.name} ends inside a continued line"
    pairs = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def global_arg(dockerfile: Path, name: str) -> str:
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            break
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"{dockerfile.name} has no global ARG {name}=...")


def run_commands(dockerfile: Path) -> list[str]:
    return [rest for keyword, rest in instructions(dockerfile) if keyword == "RUN"]


def locked(lock: Path) -> dict[str, str]:
    """An exported lock as {normalized name: version}; every requirement is pinned and hashed."""
    pins = {}
    text = lock.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[\w,-]+\])?==([\w.+]+)", line)
        assert match, f"{lock.name}: {line[:80]!r} is not pinned as NAME==VERSION"
        assert "--hash=sha256:" in line, f"{lock.name}: {match[1]} has no hash"
        pins[normalize(match[1])] = match[2]
    return pins


def serve_requirements(flavor: str = "gpu") -> dict[str, str]:
    return locked(LOCKS[f"serve-{flavor}"])


# ---- Both images ------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [TRAIN, SERVE], ids=lambda p: p.name)
def test_runs_as_a_numeric_non_root_user(dockerfile):
    users = [rest for keyword, rest in final_stage(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile.name}: the final stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so that Kubernetes can enforce runAsNonRoot without a runAsUser.
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    created = " ".join(run_commands(dockerfile))
    assert f"--uid {uid}" in created, "the user must exist in /etc/passwd (home directory)"
    workdirs = [rest for keyword, rest in final_stage(dockerfile) if keyword == "WORKDIR"]
    assert workdirs and workdirs[-1].startswith("/home/")


@pytest.mark.parametrize("dockerfile", [TRAIN, SERVE], ids=lambda p: p.name)
def test_final_stage_is_lean_and_labelled(dockerfile):
    steps = instructions(dockerfile)
    assert sum(keyword == "FROM" for keyword, _ in steps) >= 2, "multi-stage build expected"
    final = final_stage(dockerfile)
    installs = [rest for keyword, rest in final if keyword == "RUN" and "pip " in rest]
    if dockerfile == SERVE:
        # The runtime stage copies the built virtual environment; it installs nothing.
        assert not installs
        assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    else:
        # Installed in place (copying 8 GB between stages costs minutes): the lock, the project.
        assert len(installs) == 2 and "--require-hashes" in installs[0]
    # The per-build arguments come after the last RUN, so they never invalidate cached layers.
    last_run = max(i for i, (keyword, _) in enumerate(final) if keyword == "RUN")
    for name in ("REVISION", "CREATED"):
        (declared,) = [i for i, (k, rest) in enumerate(final) if k == "ARG" and name in rest]
        assert declared > last_run, f"{dockerfile.name}: ARG {name} before a RUN busts its cache"
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    # No CUDA base image sets it: the GPU runtime would mount no libcuda otherwise.
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "source", "created"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    # apt lists never stay in a layer
    for command in run_commands(dockerfile):
        if "apt-get install" in command:
            assert "rm -rf /var/lib/apt/lists/*" in command
            assert "--no-install-recommends" in command
    python = [c for c in run_commands(dockerfile) if "apt-get install" in c and "python3" in c]
    assert python and "python3.11" in python[0] and "python3.11-venv" in python[0]


# ---- Training image ---------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", [TRAIN, SERVE], ids=lambda p: p.name)
def test_base_is_plain_debian_that_make_base_images_provides(dockerfile):
    base = global_arg(dockerfile, "BASE_IMAGE")
    assert base == "debian:bookworm-slim"  # Debian 12: python3.11 and dataset-fashion-mnist
    makefile = (ROOT / "Makefile").read_text()
    assert f"BASE_IMAGE ?= {base}" in makefile
    assert "docker.io/library/$(BASE_IMAGE)" in makefile  # the name `make base-images` tags
    froms = [rest.split()[0] for keyword, rest in instructions(dockerfile) if keyword == "FROM"]
    assert "${BASE_IMAGE}" in froms and not [f for f in froms if "nvidia/cuda" in f]


def test_training_image_installs_the_hashed_gpu_lock_without_cpu_twins():
    commands = run_commands(TRAIN)
    assert any("pip install --require-hashes --no-deps -r requirements/train-image.txt" in c
               for c in commands)  # fmt: skip
    assert any(re.search(r"pip install --no-deps --no-build-isolation \.(\s|$)", c)
               for c in commands)  # fmt: skip
    pins = locked(LOCKS["train"])
    # The GPU builds alone: their CPU twins install the same Python packages.
    assert {"faiss-gpu-cu12", "onnxruntime-gpu", "torch"} <= pins.keys()
    assert not {"faiss-cpu", "onnxruntime"} & pins.keys()
    # torch's CUDA and cuDNN come as wheels (no CUDA base image), the CUDA 13 build.
    assert {"nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-cuda-runtime"} <= pins.keys()
    # MLflow's server (k8s/base runs it from this image) needs PostgreSQL's drivers.
    assert {"psycopg2-binary", "psycopg"} <= pins.keys()
    assert "setuptools" in pins  # the build backend of --no-build-isolation
    # KFP runs `sh -c ...` in the container: an ENTRYPOINT would swallow it.
    assert not [rest for keyword, rest in instructions(TRAIN) if keyword == "ENTRYPOINT"]


def test_locks_agree_with_each_other_and_the_pins():
    dev, train = locked(LOCKS["dev"]), locked(LOCKS["train"])
    shared = (dev.keys() & train.keys()) - {"faiss-cpu", "onnxruntime"}
    assert {k for k in shared if dev[k] != train[k]} == set()
    assert dev["torch"] == train["torch"] == "2.14.1" and dev["mlflow"] == "3.17.2"
    for flavor in ("gpu", "cpu"):
        serve = serve_requirements(flavor)
        assert {k for k in serve.keys() & dev.keys() if serve[k] != dev[k]} <= {"onnxruntime"}


def test_exported_locks_match_uv_lock(tmp_path):
    """requirements/*.txt are `make lock`'s export of uv.lock: nobody edited them by hand."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.skip("uv is not installed (the dev extra has it)")
    done = subprocess.run(
        ["make", "-s", "lock-export", f"REQUIREMENTS_DIR={tmp_path}", f"UV={uv}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for lock in LOCKS.values():
        fresh = [x for x in (tmp_path / lock.name).read_text().splitlines() if x[:1] != "#"]
        assert fresh == [x for x in lock.read_text().splitlines() if x[:1] != "#"], (
            f"{lock.relative_to(ROOT)} is stale: run `make lock`"
        )


def test_training_image_carries_the_packaged_data_where_oaml_reads_it():
    """Fashion-MNIST and the packaged far-OOD sets' folders, each copied to where oaml reads it."""
    from oaml.data.fashion_mnist import DEBIAN_DIR
    from oaml.data.ood_sources import PACKAGED

    packages = {"dataset-fashion-mnist": DEBIAN_DIR, **dict(PACKAGED.values())}
    installs = " ".join(run_commands(TRAIN))
    assert all(package in installs for package in packages)
    copies = [rest.split() for keyword, rest in final_stage(TRAIN) if keyword == "COPY"]
    copied = {Path(c[1]) for c in copies if c[0] == "--from=datasets" and c[1] == c[2]}
    assert copied == {Path(folder) for folder in packages.values()}


# ---- Serving image ----------------------------------------------------------------------------


def test_serving_image_installs_no_torch():
    for flavor in ("gpu", "cpu"):
        assert not TORCH_STACK & serve_requirements(flavor).keys()
    commands = [c for c in run_commands(SERVE) if "pip install" in c]
    project = [c for c in commands if re.search(r"pip install (--\S+ )*\.(\s|$)", c)]
    assert project, "Dockerfile.serve does not install the project"
    assert all("--no-deps" in c for c in project), "the project's own dependencies pull torch"
    extras = [c for c in commands if re.search(r"\S\[\w", c)]  # .[gpu] or name[extra]
    assert not extras, "no extras in the serving image"
    assert any("--require-hashes --no-deps -r requirements/serve-${FLAVOR}.txt" in c
               for c in commands)  # fmt: skip
    for command in commands:
        for words in shell_commands(command):
            if words[:2] == ["pip", "install"]:
                for word in words[2:]:
                    assert normalize(re.split(r"[=<>~\[]", word)[0]) not in TORCH_STACK, words


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a RUN line, split at `&&`, `||`, `;` and `|` outside quotes."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


@pytest.mark.parametrize("flavor", ["gpu", "cpu"])
def test_serving_locks_match_the_project_and_hold_one_onnxruntime(flavor):
    pins = serve_requirements(flavor)
    deps = pyproject()["project"]["dependencies"]
    mlflow = [d for d in deps if re.match(r"mlflow(\[[\w,]+\])?\s*==", d)]
    assert len(mlflow) == 1, "pyproject.toml pins mlflow==X"
    assert pins["mlflow-skinny"] == mlflow[0].split("==")[1].strip()
    assert "mlflow" not in pins, "the full mlflow package brings the server and its stack"
    builds = {"onnxruntime-gpu", "onnxruntime"} & pins.keys()
    assert builds == {"onnxruntime-gpu" if flavor == "gpu" else "onnxruntime"}
    if flavor == "gpu":  # CUDA 13 runtime and cuDNN 9 from wheels: the image has no CUDA base
        assert {"nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cublas"} <= pins.keys()


def serving_modules() -> set[str]:
    """Top-level names of the third-party modules the serving image's code can import.

    Starting points: oaml.serving.* (every import, also inside functions: that code runs) and
    `oaml`'s CLI modules (module level, plus `_user_errors`, which every command runs on failure).
    Other oaml modules they reach count with their module-level imports; optional imports
    (`try: import x / except ImportError`) never count.
    """
    third_party: set[str] = set()
    seen: set[str] = set()
    todo = [f"oaml.serving.{p.stem}" for p in (ROOT / "oaml" / "serving").glob("*.py")]
    todo += [f"oaml.cli.{p.stem}" for p in (ROOT / "oaml" / "cli").glob("*.py")]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = ROOT / Path(*module.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if module.startswith("oaml.serving."):
            scope = "all"
        elif module.startswith("oaml.cli"):
            scope = "cli"
        else:
            scope = "module"
        for name in imported_names(ast.parse(path.read_text()), scope):
            if name == "oaml" or name.startswith("oaml."):
                parts = name.split(".")
                todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            else:
                third_party.add(name.split(".")[0])
    return third_party


def imported_names(tree: ast.AST, scope: str) -> list[str]:
    """Imported module names: scope "all" = everywhere, "module" = outside functions, "cli" =
    outside functions but inside `_user_errors`. Optional imports are skipped."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
            scope == "module" or (scope == "cli" and node.name != "_user_errors")
        ):
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


@pytest.mark.parametrize("flavor", ["gpu", "cpu"])
def test_serving_locks_cover_every_serving_import(flavor):
    modules = serving_modules() - set(sys.stdlib_module_names) - {"__future__"}
    assert "onnxruntime" in modules and "fastapi" in modules  # the walk found the serving code
    assert not TORCH_STACK & modules, f"serving code imports {TORCH_STACK & modules}"
    pins = serve_requirements(flavor)
    owners = importlib.metadata.packages_distributions()
    for module in sorted(modules):
        wanted = SERVE_DISTRIBUTIONS.get(module)
        if module == "onnxruntime":
            wanted = "onnxruntime-gpu" if flavor == "gpu" else "onnxruntime"
        candidates = {normalize(wanted)} if wanted else {normalize(d) for d in owners[module]}
        assert candidates & pins.keys(), f"{module} is imported; serve-{flavor}.txt lacks it"


def test_serving_image_entrypoint_and_port():
    final = final_stage(SERVE)
    (entrypoint,) = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["oaml", "serve"]
    (cmd,) = [rest for keyword, rest in final if keyword == "CMD"]
    args = json.loads(cmd)
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = args[args.index("--port") + 1]
    assert ("EXPOSE", port) in final and port == "8080"


# ---- Build context and tags -------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Approximately Docker's rule (last match wins, `!` re-includes; a folder's pattern covers
    what is inside it). fnmatch's `*` also crosses `/`, so this errs towards "ignored"."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        alternatives = {glob, glob.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, g) for p in prefixes for g in alternatives):
            result = not negate
    return result


def packaged_folders() -> list[str]:
    """The top-level packages pyproject.toml's setuptools configuration ships."""
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").is_file() and any(fnmatch.fnmatch(path.name, p) for p in include)
    )


def test_training_image_copies_every_packaged_folder():
    folders = packaged_folders()
    assert "oaml" in folders
    copies = [rest.split() for keyword, rest in instructions(TRAIN) if keyword == "COPY"]
    for folder in folders:
        assert [folder, f"./{folder}"] in copies, f"docker/Dockerfile does not COPY {folder}/"


def test_dockerignore_keeps_local_state_out_and_the_build_inputs_in():
    patterns = dockerignore_patterns()
    for path in (".venv", ".venv/bin/python", "runs/demo/summary.json", ".git/HEAD", "data"):
        assert ignored(path, patterns), path
    for path in ("model.onnx", "runs/x/detector.onnx", "ckpt.pt", "tests/test_io.py"):
        assert ignored(path, patterns), path
    needed = ["pyproject.toml", "README.md", "oaml/cli/__init__.py"]
    needed += [f"requirements/{lock.name}" for lock in LOCKS.values()]
    for package in packaged_folders():
        needed += [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*") if p.is_file()]
    for path in needed:
        if "__pycache__" in path:
            continue
        assert not ignored(path, patterns), f".dockerignore drops {path}, which the build needs"


MAKE_SETTINGS = {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "IMAGE_TAG", "IMAGE_REGISTRY", "DOCKER"}


def make_dry_run(*variables: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # The defaults, whatever the calling make or the environment set (`make test DOCKER=podman`).
    env = {k: v for k, v in os.environ.items() if k not in MAKE_SETTINGS}
    defaults = ["DOCKER=docker", "IMAGE_REGISTRY=ghcr.io/oaml", "SERVE_FLAVOR=gpu"]
    done = subprocess.run(
        [make, "-n", "images", "push-images", *defaults, *variables],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # One line per command (continuations joined), without the leading VAR=value settings.
    commands = done.stdout.replace("\\\n", " ").splitlines()
    return [re.sub(r"^(\w+=\S+\s+)+", "", line) for line in commands]


def pushed(lines: list[str]) -> list[str]:
    """The images `make push-images` pushes, each of which it then pins by the pushed digest."""
    images = []
    for line in lines:
        found = re.search(r"docker push +(?:-\S+ +)*(\S+)", line)
        if found:
            image = found.group(1)
            assert f'pin_images.py --component k8s/release-images "{image}@' in line, line
            images.append(image)
    return sorted(images)


def test_makefile_tags_images_with_the_project_version():
    version = pyproject()["project"]["version"]
    lines = make_dry_run()
    builds = [shlex.split(line) for line in lines if line.startswith("docker build")]
    tags = {words[words.index("-f") + 1]: words[words.index("-t") + 1] for words in builds}
    assert tags == {
        "docker/Dockerfile": f"ghcr.io/oaml/oaml:{version}",
        "docker/Dockerfile.serve": f"ghcr.io/oaml/oaml-serve:{version}",
    }
    for words in builds:
        assert words[-1] == ".", "the build context is the repository root"
        assert f"VERSION={version}" in words
    assert pushed(lines) == sorted(tags.values())


def test_makefile_registry_and_tag_can_be_overridden():
    lines = make_dry_run("IMAGE_REGISTRY=registry.example.com/ml", "IMAGE_TAG=dev")
    assert pushed(lines) == [
        "registry.example.com/ml/oaml-serve:dev",
        "registry.example.com/ml/oaml:dev",
    ]


def test_cpu_serving_flavor_is_built_and_pushed_under_its_own_tag():
    lines = make_dry_run("SERVE_FLAVOR=cpu", "IMAGE_TAG=dev")
    builds = [shlex.split(line) for line in lines if line.startswith("docker build")]
    serve = [w for w in builds if w[w.index("-f") + 1] == "docker/Dockerfile.serve"]
    assert serve and serve[0][serve[0].index("-t") + 1] == "ghcr.io/oaml/oaml-serve:dev-cpu"
    assert "FLAVOR=cpu" in serve[0]
    assert pushed(lines) == ["ghcr.io/oaml/oaml-serve:dev-cpu", "ghcr.io/oaml/oaml:dev"]


def test_components_default_image_is_what_make_builds():
    components = pytest.importorskip("components", reason="the Kubeflow components package")
    image = getattr(components, "DEFAULT_IMAGE", None)
    if image is None:
        pytest.skip("components.DEFAULT_IMAGE is not defined")
    builds = [shlex.split(line) for line in make_dry_run() if line.startswith("docker build")]
    tags = {words[words.index("-f") + 1]: words[words.index("-t") + 1] for words in builds}
    assert image == tags["docker/Dockerfile"]


def test_pipeline_default_image_uses_the_same_tag():
    """Wherever the pipeline or its components name the project image literally, the tag is the
    project version, i.e. what `make images` builds by default."""
    version = pyproject()["project"]["version"]
    found = []
    for folder in ("pipelines", "components", "oaml"):
        for path in (ROOT / folder).rglob("*.py"):
            for image in re.findall(r"ghcr\.io/oaml/oaml(?:-serve)?:[\w.-]+", path.read_text()):
                found.append((path.relative_to(ROOT), image))
    for path, image in found:
        assert image.rsplit(":", 1)[1] == version, f"{path}: {image}"
