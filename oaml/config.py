"""Frozen configuration dataclasses and YAML presets (one file per experiment, no stacking).

A preset is read into `Preset`; unknown keys and wrong types are errors that name the key, so a
typo never silently falls back to a default. `--set a.b=value` overrides apply on top.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A preset or override that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build: a registered architecture name plus its arguments."""

    arch: str = "resnet18_32x32"
    width: float = 1.0
    # Extra keyword arguments for the factory (e.g. timm's img_size, patch_size, depth).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Local weights to start from (timm checkpoint file or an oaml checkpoint); never downloaded.
    pretrained_file: str | None = None
    # Input side length; None means the benchmark's native size.
    input_size: int | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and per-step cosine schedule (the paper: SGD Nesterov, momentum 0.9, wd 5e-4)."""

    name: str = "sgd"  # sgd | adam
    lr: float = 0.1
    # Learning rate of all but the final classifier; None = lr (fine-tuning uses less).
    backbone_lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # Cosine decays to lr * min_lr_ratio at the last step.
    min_lr_ratio: float = 1e-6
    warmup_epochs: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one model with one method."""

    method: str = "ce"
    epochs: int = 100
    batch_size: int = 128
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: tuple[str, ...] = ("crop", "flip")
    # Stratified subset of the ID training list (CPU runs); None = all of it.
    train_subset: int | None = None
    num_workers: int = 0
    amp: bool = True
    seed: int = 0
    # Checkpoint to start from (the paper starts OAML from a cross-entropy checkpoint).
    init_checkpoint: str | None = None
    # Folder of a finished `oaml synthesize` run: outlier images for methods that use them.
    outliers: str | None = None
    # Outlier images per step; None = batch_size.
    outlier_batch_size: int | None = None
    # The method's own parameters (loss weights, margins); unknown names are an error.
    loss: dict[str, Any] = field(default_factory=dict)
    # Frozen teacher checkpoint (from `oaml train --method teacher`) for distilling methods.
    teacher_checkpoint: str | None = None
    # k-NN outlier embeddings (DreamOOD) in the teacher's feature space, for the oaml method.
    knn_features_per_class: int = 500
    knn_outliers_per_class: int = 1000


@dataclass(frozen=True)
class StageConfig:
    """A model and how to train it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class EvalConfig:
    """How OOD scores are computed and batched at evaluation."""

    score: str = "ebo"
    temperature: float = 1.0
    batch_size: int = 256
    num_workers: int = 0


@dataclass(frozen=True)
class QualityBenchConfig:
    """`oaml bench quality`: every method fine-tunes the same cross-entropy start for the same
    budget (the paper starts OAML from a CE checkpoint; `ce` simply continues training)."""

    finetune_epochs: int = 2
    finetune_lr: float = 0.01
    # Forward-diffused outlier images shared by the methods that use them.
    outliers: int = 10000
    t_min: int = 300
    t_max: int = 700
    # Per-method loss parameters (method name -> its `train.loss` mapping).
    losses: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """A whole experiment: benchmark, student, teacher, evaluation."""

    name: str = "custom"
    description: str = ""
    benchmark: str = "fmnist"
    # Where the OpenOOD-layout data lives; None = the command's --data-root (required for CIFAR).
    data_root: str | None = None
    student: StageConfig = field(default_factory=StageConfig)
    teacher: StageConfig = field(default_factory=StageConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    bench: QualityBenchConfig = field(default_factory=QualityBenchConfig)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type, _ellipsis) = typing.get_args(tp)
        return tuple(_convert(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `5e-4` (no dot) as a string; accept any numeric spelling.
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs = {
        key: _convert(hints[key], value, f"{where}.{key}" if where else key)
        for key, value in data.items()
    }
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A plain dict/list form of a config (for YAML, JSON and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def preset_names() -> list[str]:
    """Names of the presets that ship with the package."""
    folder = resources.files("oaml") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_preset_text(name_or_path: str) -> str:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or "/" in name_or_path:
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        return path.read_text()
    resource = resources.files("oaml") / "presets" / f"{name_or_path}.yaml"
    if not resource.is_file():
        raise ConfigError(
            f"unknown preset {name_or_path!r}; shipped presets: {', '.join(preset_names())} "
            "(or pass a path to a .yaml file)"
        )
    return resource.read_text()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into a key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {text!r} has an empty key")
    return keys, yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of the raw preset mapping with `key.path=value` overrides applied."""
    import copy

    result = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return result


def load_preset(name_or_path: str, overrides: list[str] | None = None) -> Preset:
    """Load a shipped preset by name (or a YAML file by path) and apply overrides."""
    data = yaml.safe_load(_read_preset_text(name_or_path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name_or_path!r} must be a YAML mapping")
    data = apply_overrides(data, overrides or [])
    return build(Preset, data)


def stage_of(preset: Preset, role: str) -> StageConfig:
    """The student or teacher stage of a preset."""
    if role not in {"student", "teacher"}:
        raise ConfigError(f"role must be 'student' or 'teacher', got {role!r}")
    return getattr(preset, role)


def merged_overrides(benchmark: str, overrides_json: str) -> str:
    """A pipeline's preset overrides as one JSON list: the user's (checked to parse), then the
    benchmark's when given."""
    import json

    try:
        items = json.loads(overrides_json or "[]")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"overrides must be a JSON list of 'key=value' strings: {exc}") from None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"overrides must be a JSON list of 'key=value' strings, got {items!r}")
    for item in items:
        parse_override(item)
    return json.dumps([*items, f"benchmark={benchmark}"] if benchmark else items)
