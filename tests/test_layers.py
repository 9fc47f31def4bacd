"""The import layers of DESIGN.md section 2 hold: every module imports only its own layer or the
ones below it, the library never imports pipelines, components or kfp, and the serving runtime
and the detector contract never import torch.

Imports are read from the source (including those inside functions), so a lazy import that goes
upward fails here too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top; a module may import its own layer and any layer listed before it.
LAYERS: list[set[str]] = [
    {
        "oaml",
        "oaml.io",
        "oaml.registry",
        "oaml.progress",
        "oaml.contract",
        "oaml.config",
        "oaml.imaging",  # numpy + PIL only: resize, channels, layout for every layer above
        "oaml.reproducible",
    },
    {"oaml.device", "oaml.distributed", "oaml.scores"},
    {"oaml.models", "oaml.losses"},
    {"oaml.data"},
    {"oaml.serving", "oaml.tracking"},
    {"oaml.synthesis"},
    {"oaml.training"},
    {"oaml.evaluation"},
    {"oaml.export"},
    {"oaml.recipe", "oaml.stages", "oaml.bench", "oaml.starter"},
    {"oaml.cli"},
    {"components", "pipelines"},
]
TORCH_FREE_MODULES = (
    "oaml.contract",
    "oaml.imaging",
    "oaml.serving.app",
    "oaml.serving.server",
    "oaml.serving.batch_score",
    "oaml.tracking.registry",
)


def _layer_of(module: str) -> int:
    parts = module.split(".")
    for depth in (2, 1):
        unit = ".".join(parts[:depth])
        for number, layer in enumerate(LAYERS):
            if unit in layer:
                return number
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in the file, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _ours(module: str) -> bool:
    return module.split(".")[0] in {"oaml", "pipelines", "components"}


def _upward_imports(modules: list[tuple[str, Path]]) -> list[str]:
    """Every import of one of our modules that sits in a higher layer than the importer."""
    upward = []
    for here, path in modules:
        for line, target in _imports(path):
            if _ours(target) and _layer_of(target) > _layer_of(here):
                upward.append(f"{path}:{line} {here} imports {target}")
    return upward


def test_every_import_goes_down_or_sideways():
    modules = [(_module_name(p), p) for p in _sources("oaml", "components", "pipelines")]
    upward = _upward_imports(modules)
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_layer_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a data module importing the CLI inside a function is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from oaml.cli import app\n")
    assert _upward_imports([("oaml.data.probe", probe)]) == [
        f"{probe}:2 oaml.data.probe imports oaml.cli"
    ]


def test_the_library_never_imports_kfp_or_the_pipelines():
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in _sources("oaml")
        for line, target in _imports(path)
        if target.split(".")[0] in {"kfp", "pipelines", "components"}
    ]
    assert not offending, "\n".join(offending)


def test_serving_side_never_imports_torch():
    """The server, the batch scorer, the registry gate and the contract load without torch
    (the serving image has none)."""
    modules = ", ".join(TORCH_FREE_MODULES)
    heavy = "{'torch', 'torchvision', 'timm'}"
    code = (
        f"import sys, {modules}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def test_modules_and_functions_stay_small():
    """Each module under 400 lines and each function under 80 (decorators included), so a
    reader can hold one in their head. The pipeline's @dsl.pipeline wiring (one declaration of
    which step feeds which) is exempt."""
    too_big = []
    for path in _sources("oaml", "components"):
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{path.relative_to(ROOT)}:{start} {node.name}: {length} lines")
    assert not too_big, "\n".join(too_big)
