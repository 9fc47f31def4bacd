"""The pipeline's stages as plain functions: each does its work and tracks it in a child run.

The Kubeflow components (components/) are one call into this module each, so a stage run by
Kubeflow, by `kfp.local` or from a test is the same code. Paths in, small results out; no kfp.

`work_dir` (local runs) keeps each stage's output in a folder named by a hash of its settings
and inputs, so a re-run reuses finished stages and a killed training resumes from its last
epoch; on a cluster Kubeflow's caching plays that role and stages write straight to artifacts.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oaml.config import Preset, load_preset, stage_of, to_dict
from oaml.io import atomic_copy, atomic_write_json, files_sha256, sha256_file
from oaml.tracking.runs import StageRun, Tracking, stage_run

if TYPE_CHECKING:
    from oaml.training.scale_out import ScaleOut

CHECKPOINT = "checkpoint.pt"


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _content_sha256(path: Path) -> str:
    """A file's SHA-256, or a folder's (its manifest.json when present, else all its files)."""
    if path.is_file():
        return sha256_file(path)
    manifest = path / "manifest.json"
    if manifest.is_file():
        return sha256_file(manifest)
    return _digest(list(files_sha256(path).items()))


def stable_input(work_dir: Path | None, name: str, path: Path) -> Path:
    """An input artifact at a path that stays the same across local runs (named by its content),
    so a training's recorded settings match when the run is repeated; as is without work_dir."""
    if work_dir is None:
        return path
    target = work_dir / "inputs" / f"{name}-{_content_sha256(path)[:16]}" / path.name
    return target if target.exists() else atomic_copy(path, target)


def _stage_dir(work_dir: Path | None, out: Path, stage: str, *settings: Any) -> Path:
    return out if work_dir is None else work_dir / f"{stage}-{_digest(*settings)[:16]}"


def _publish(folder: Path, out: Path, names: list[str]) -> None:
    """Copy a stage's results from its work folder to its output artifact."""
    if folder.resolve() == out.resolve():
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        atomic_copy(folder / name, out / name)


def data_root_of(path: str | Path) -> Path:
    """Where a data artifact's benchmark lives: the folder itself, or the root its pointer
    file names (data kept on a volume, e.g. the cluster's PVC)."""
    path = Path(path)
    if path.is_file():
        return Path(json.loads(path.read_text())["root"])
    return path


def _log_data(run: StageRun, benchmark: str, root: Path, context: str) -> None:
    from oaml.data.prepare import manifest_sha256

    digest = manifest_sha256(benchmark, root)
    if digest:
        run.dataset(benchmark, str(root), digest, context)


def _log_preset(
    run: StageRun, preset: Preset, overrides: list[str], role: str | None = None
) -> None:
    import yaml

    run.params({"preset": preset.name, "overrides": " ".join(overrides)})
    run.params(to_dict(stage_of(preset, role)) if role else {"benchmark": preset.benchmark})
    run.tags({"preset": preset.name, "benchmark": preset.benchmark})
    text = yaml.safe_dump(to_dict(preset), sort_keys=False)
    import mlflow

    mlflow.log_text(text, "config/preset.yaml")


@dataclass(frozen=True)
class DataResult:
    root: Path
    benchmark: str
    manifest_sha256: str | None


def _import_options(import_options: str) -> dict[str, Any]:
    """A pipeline's `import_options`: a JSON object of `oaml data import` options."""
    options = json.loads(import_options or "{}")
    if not isinstance(options, dict):
        raise ValueError(f"import_options must be a JSON object, got {import_options!r}")
    return options


def import_fingerprint(
    import_from: str, benchmark: str, data_root: str, import_options: str = "{}"
) -> str:
    """What the data stage would import now, as a SHA-256 of the source's listing (no image is
    read; "" without an import). The pipeline caches the data stage on it: changed images behind
    the same `import_from` are imported again, an unchanged folder reuses the cached data."""
    if not import_from:
        return ""
    from oaml.data.import_sources import config_from_options, source_fingerprint

    root = Path(data_root or ".").expanduser().resolve()
    options = _import_options(import_options)
    return source_fingerprint(config_from_options(import_from, benchmark, root, options))


def prepare_data(
    benchmark: str,
    out: str | Path,
    data_root: str,
    tracking: Tracking,
    import_from: str = "",
    import_options: str = "{}",
    fingerprint: str = "",
) -> DataResult:
    """Prepare (or verify) the benchmark; with `import_from` (a folder of class subfolders, a
    path,label CSV or an S3 prefix), import it as `benchmark` first, with `import_options` (a
    JSON object of `oaml data import` options, e.g. {"holdout_classes": ["cat"]}); a re-run
    converts only what changed; `fingerprint` (import_fingerprint's) is recorded. With
    `data_root` (a shared volume) the data stays there and `out` becomes a pointer file to it;
    else it is written into `out`."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.prepare import manifest_sha256, prepare

    out = Path(out)
    root = Path(data_root).expanduser().resolve() if data_root else out
    with stage_run(tracking, "data") as run:
        run.params({"benchmark": benchmark, "root": str(root), "import_from": import_from})
        if import_from:
            from oaml.data.import_sources import config_from_options
            from oaml.data.importer import run_import

            options = _import_options(import_options)
            recorded = {"import_options": json.dumps(options, sort_keys=True)}
            run.params({**recorded, "import_fingerprint": fingerprint})
            imported = run_import(config_from_options(import_from, benchmark, root, options))
            run.artifact(imported.report, "data")
            run.tags({"imported": True, "import_skipped": imported.counts["skipped"]})
        bench = get_benchmark(benchmark, root)
        if bench.preparable:  # built in (an import never takes a built-in name)
            result = prepare(benchmark, root)
            run.artifact(result.manifest, "data")
            run.tags({"reused": result.reused})
        else:
            bench.require(root)
        digest = manifest_sha256(benchmark, root)
        _log_data(run, benchmark, root, "prepared")
        if data_root:
            atomic_write_json(
                out, {"root": str(root), "benchmark": benchmark, "manifest_sha256": digest}
            )
    return DataResult(root, benchmark, digest)


def synthesize_outliers(
    preset_name: str,
    overrides: list[str],
    data: str | Path,
    out: str | Path,
    tracking: Tracking,
    work_dir: str | Path | None = None,
) -> Path:
    """The preset's outliers into `out`: forward-diffused ID images, or, with
    `outliers.sd_checkpoint`, Stable Diffusion generations (latents and images)."""
    from oaml.synthesis.backends import preset_request, request_settings, synthesize
    from oaml.synthesis.outlier_sets import outlier_grid

    preset = load_preset(preset_name, overrides)
    root, out = data_root_of(data), Path(out)
    work = Path(work_dir) if work_dir else None
    with stage_run(tracking, "outliers") as run:
        _log_preset(run, preset, overrides)
        _log_data(run, preset.benchmark, root, "source")
        backend, request = preset_request(preset, root, out)
        settings = request_settings(backend, request)
        run.params(settings)
        folder = _stage_dir(work, out, "outliers", settings, _manifest(preset, root))
        manifest = json.loads(synthesize(backend, replace(request, out=folder)).read_text())
        names = ["manifest.json", *manifest.get("latents", []), *manifest.get("images", [])]
        names += [n for n in ("embeddings.npy", "embeddings.json") if (folder / n).is_file()]
        _publish(folder, out, names)
        run.metrics({"outliers": manifest["count"]})
        run.artifact(out / "manifest.json", "outliers")
        run.artifact(outlier_grid(out, out.parent / f"{out.name}_samples.png"), "plots")
    return out


def _manifest(preset: Preset, root: Path) -> str | None:
    from oaml.data.prepare import manifest_sha256

    return manifest_sha256(preset.benchmark, root)


def _train(
    stage: str,
    role: str,
    method: str,
    preset: Preset,
    overrides: list[str],
    root: Path,
    out: Path,
    tracking: Tracking,
    device: str,
    work: Path | None,
    inputs: dict[str, str],
    scale: ScaleOut | None = None,
) -> Path:
    from oaml.training.scale_out import ScaleOut, train_elsewhere
    from oaml.training.stage import train_stage

    scale = (scale or ScaleOut()).on(root)
    scale.check()
    if scale.trainjob:  # the stage folder on the volume the TrainJob's nodes share
        work = Path(scale.shared_dir)
    with stage_run(tracking, stage) as run:
        _log_preset(run, preset, overrides, role)
        run.params({"method": method, **{f"input.{k}": v for k, v in inputs.items()}})
        _log_data(run, preset.benchmark, root, "training")
        # Named by what the stage trains with (not by every override of the run), so a setting
        # for another stage never invalidates this one.
        folder = _stage_dir(
            work, out, stage, role, method, preset.benchmark, to_dict(stage_of(preset, role)),
            _manifest(preset, root),
        )  # fmt: skip
        started = time.perf_counter()
        run.params({"num_nodes": scale.num_nodes, "gpus_per_node": scale.gpus_per_node})
        if scale.in_process:
            result = train_stage(
                preset, role, root, folder, device=device, method=method,
                callbacks=[run.epoch_callback()],
            )  # fmt: skip
        else:
            result = train_elsewhere(scale, folder, preset, role, method, root, device)
            run.history(result.history)
        if result.reused:
            # The run of a reused stage still shows the curves its checkpoint was trained with.
            run.tags({"reused": True})
            run.history(result.history)
        checkpoint = result.checkpoint
        _publish(checkpoint.parent, out, [checkpoint.name])
        run.metrics({"seconds": time.perf_counter() - started})
        run.artifact(out / CHECKPOINT, "checkpoint")
    return out / CHECKPOINT


# Stages trained from scratch: the stage name -> (preset role, method).
FROM_SCRATCH = {"teacher": ("teacher", "teacher"), "start": ("student", "ce")}


def train_from_scratch(
    stage: str,
    preset_name: str,
    overrides: list[str],
    data: str | Path,
    out: str | Path,
    tracking: Tracking,
    device: str = "auto",
    work_dir: str | Path | None = None,
    scale: ScaleOut | None = None,
) -> Path:
    """`teacher`: the frozen model the student distils from; `start`: the cross-entropy student
    every method fine-tunes from (the paper's starting point). Returns the checkpoint in `out`."""
    if stage not in FROM_SCRATCH:
        raise ValueError(f"stage must be one of {sorted(FROM_SCRATCH)}, got {stage!r}")
    role, method = FROM_SCRATCH[stage]
    preset = load_preset(preset_name, overrides)
    work = Path(work_dir) if work_dir else None
    return _train(
        stage, role, method, preset, overrides, data_root_of(data), Path(out),
        tracking, device, work, {}, scale,
    )  # fmt: skip


def train_student(
    preset_name: str,
    overrides: list[str],
    data: str | Path,
    start: str | Path,
    teacher: str | Path,
    outliers: str | Path,
    out: str | Path,
    tracking: Tracking,
    method: str = "oaml",
    device: str = "auto",
    work_dir: str | Path | None = None,
    scale: ScaleOut | None = None,
) -> Path:
    """Fine-tune the start with `method` (OAML: KD from the teacher, CLUB against k-NN outlier
    embeddings, energy margins on the outliers) for the preset's fine-tuning budget."""
    from oaml.recipe import finetuned, outlier_methods, teacher_methods, with_inputs

    work = Path(work_dir) if work_dir else None
    if scale is not None and scale.trainjob:  # inputs copied where every node reads them
        work = Path(scale.on(data_root_of(data)).shared_dir)
    preset = load_preset(preset_name, overrides)
    start_ckpt = stable_input(work, "start", _checkpoint_in(start))
    inputs = {"start": str(start_ckpt)}
    if method in outlier_methods():
        inputs["outliers"] = str(stable_input(work, "outliers", Path(outliers)))
    if method in teacher_methods():
        inputs["teacher"] = str(stable_input(work, "teacher", _checkpoint_in(teacher)))
    tuned = with_inputs(preset, inputs.get("outliers"), inputs.get("teacher"))
    tuned = finetuned(tuned, method, start_ckpt)
    return _train(
        "student", "student", method, tuned, overrides, data_root_of(data), Path(out),
        tracking, device, work, inputs, scale,
    )  # fmt: skip


def _checkpoint_in(path: str | Path) -> Path:
    """A model artifact is a folder holding checkpoint.pt (or the file itself)."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def export_detector(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    tracking: Tracking,
    preset_name: str | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """The ONNX detector (uint8 pixels in, logits and energy out, plus the preset's score when it
    is another head-only one), parity-checked: what is served is the score that was evaluated."""
    from oaml.export.onnx import export_onnx

    # A pipeline registers the score its detector serves: the preset's evaluation.score.
    ev = load_preset(preset_name, overrides or []).evaluation if preset_name else None
    score = ev.score if ev else "ebo"
    fit = {"knn_k": ev.knn_k, "fit_images": ev.fit_images, "vim_dim": ev.vim_dim} if ev else {}
    ckpt = _checkpoint_in(checkpoint)
    with stage_run(tracking, "export") as run:
        run.params({"checkpoint": str(ckpt), "checkpoint_sha256": sha256_file(ckpt)})
        run.params({"score": score})
        exported = export_onnx(ckpt, out, data_root=data_root_of(data), score=score, **fit)
        run.metrics({f"parity_max_abs_diff.{k}": v for k, v in exported.parity.items()})
        run.metrics({"onnx_bytes": Path(exported.path).stat().st_size})
    return Path(exported.path)


def register_detector(
    onnx_path: str | Path,
    metrics: dict[str, Any],
    registered_model: str,
    tracking: Tracking,
    tags: dict[str, str],
    alias: str = "challenger",
):
    """Log and register the detector, tag the version (metrics, Kubeflow run, commit, data,
    preset), point `alias` at it; the headline metrics go to the parent run too."""
    from oaml.tracking import registry
    from oaml.tracking.runs import git_commit

    version_tags = {"kfp.run_id": tracking.kfp_run_id, "git_commit": git_commit()}
    version_tags |= {"mlflow.parent_run_id": tracking.parent_run_id, **tags}
    import tempfile

    from oaml.export.triton import write_triton_repo

    with stage_run(tracking, "register") as run, tempfile.TemporaryDirectory() as folder:
        run.params({"registered_model": registered_model, "alias": alias})
        repo = Path(folder) / "triton"
        write_triton_repo(onnx_path, repo, registered_model)  # for KServe's Triton runtime
        result = registry.register_detector(
            onnx_path, registered_model, metrics, version_tags, alias, triton_repo=repo
        )
        run.tags({"registered_version": result.version})
        run.metrics(registry.gated_metrics(metrics))
    if tracking.parent_run_id:
        import mlflow

        client = mlflow.MlflowClient(tracking.tracking_uri)
        for key, value in registry.gated_metrics(metrics).items():
            client.log_metric(tracking.parent_run_id, key, value)
        client.set_tag(tracking.parent_run_id, "registered_version", result.version)
    return result
