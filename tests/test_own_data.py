"""A user's own colour images, end to end: Wesnoth's painted unit sprites (Debian's
wesnoth-1.16-data, 72x72 RGBA, one class per race, frames of a unit grouped) imported with a
held-out race as near-OOD, the whole local pipeline on them, then `oaml serve` and `oaml score`
answering with the race names."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import httpx
import pytest

from oaml.data.benchmarks import get_benchmark
from oaml.data.imglist import parse_imglist
from tests.conftest import TINY_RECIPE, run_oaml
from tests.serving.conftest import running_server

pytestmark = pytest.mark.slow

UNITS = Path("/usr/share/games/wesnoth/1.16/data/core/images/units")
RACES = ("drakes", "dwarves", "elves-wood", "undead")
HELD_OUT = "merfolk"
PER_RACE = 60
UNIT = r"^([a-z]+)"  # a unit's animation frames share the name before the first '-' or '+'
IMPORT_OPTIONS = {"holdout_classes": [HELD_OUT], "group_by": UNIT, "far_count": 100}
# TINY_RECIPE's batch makes 3 steps an epoch of these 160 training sprites: enough steps to learn.
LEARN = ["--set", "student.train.batch_size=16", "--set", "student.train.epochs=3"]


@pytest.fixture(scope="module")
def sprites(tmp_path_factory) -> Path:
    """PER_RACE sprites of each race (and the held-out one) spread over its units, as a user's
    folder."""
    if not UNITS.is_dir():
        pytest.fail("wesnoth-1.16-data is missing: run `make test` (it installs it)")
    folder = tmp_path_factory.mktemp("sprites") / "units"
    for race in (*RACES, HELD_OUT):
        found = sorted((UNITS / race).rglob("*.png"))
        for path in found[:: max(1, len(found) // PER_RACE)][:PER_RACE]:
            target = folder / race / path.relative_to(UNITS / race)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return folder


@pytest.fixture(scope="module")
def pipeline_on_sprites(tmp_path_factory, sprites) -> tuple[Path, dict]:
    """The pipeline's own data step imports the folder (`--import-from`: its fingerprint step
    lists it, the data step imports it into the data root), then trains, exports, registers."""
    data = tmp_path_factory.mktemp("sprite_data")
    cwd = tmp_path_factory.mktemp("sprite_demo")
    out = cwd / "demo"
    run_oaml(
        "demo", "--out", str(out), "--data-root", str(data), "--set", "benchmark=races",
        "--import-from", str(sprites), "--import-options", json.dumps(IMPORT_OPTIONS),
        *TINY_RECIPE, *LEARN, timeout=900, cwd=cwd, unset=("MLFLOW_TRACKING_URI",),
    )  # fmt: skip
    return data, json.loads((out / "summary.json").read_text())


def test_import_groups_frames_of_a_unit_and_holds_out_a_race(pipeline_on_sprites, sprites):
    import mlflow

    from oaml.stages import import_fingerprint

    data, summary = pipeline_on_sprites
    # The data step ran on the fingerprint its uncached step took of the folder (the cache key).
    client = mlflow.MlflowClient(summary["tracking_uri"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    recorded = {r.data.params.get("import_fingerprint") for r in client.search_runs(experiments)}
    key = import_fingerprint(str(sprites), "races", str(data), json.dumps(IMPORT_OPTIONS))
    assert key in recorded
    spec = get_benchmark("races", data)
    assert spec.class_names == RACES and spec.channels == 3 and spec.input_size == 72
    split_of_unit: dict[tuple[str, str], set[str]] = {}
    for split in ("train", "val", "test", "calibration"):
        for entry in parse_imglist(data / "benchmark_imglist/races" / f"{split}_races.txt"):
            race = RACES[entry.label]
            unit = Path(entry.path).name.split("-")[0].split("+")[0].split(".")[0]
            split_of_unit.setdefault((race, unit), set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_unit.values()), split_of_unit
    near = [s for s in spec.ood if s.group == "near"]
    assert [s.name for s in near] == [f"holdout_{HELD_OUT}"]


def test_the_pipeline_serves_a_detector_of_the_races(pipeline_on_sprites, sprites, tmp_path):
    summary = pipeline_on_sprites[1]
    metrics = summary["metrics"]
    assert metrics["benchmark"] == "races"
    assert metrics["ood"][f"holdout_{HELD_OUT}"]["group"] == "near"
    assert {"textures", "photos", "faces", "digits", "clipart", "glyphs"} <= set(metrics["ood"])
    assert metrics["id"]["accuracy"] > 1 / len(RACES)  # better than chance after a tiny run
    sample = (
        sorted((sprites / "dwarves").rglob("*.png"))[:3]
        + sorted((sprites / HELD_OUT).rglob("*.png"))[:2]
    )
    with running_server(summary["onnx"], "--name", "races") as server:
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in sample]
        answers = httpx.post(f"{server.url}/v1/score", files=files, timeout=60).json()
    assert len(answers) == 5 and all(a["class_name"] in RACES for a in answers)
    out = tmp_path / "scores.csv"
    run_oaml("score", *map(str, sample), "--model", summary["onnx"], "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert [r["class_name"] for r in rows] == [a["class_name"] for a in answers]
    assert [float(r["confidence"]) for r in rows] == pytest.approx(
        [a["confidence"] for a in answers], rel=1e-5
    )


def test_the_pipeline_data_step_imports_a_folder(sprites, tmp_path):
    """The data step with `import_from` and `import_options` (the pipeline parameters):
    imported into the data volume, tracked; a second run converts nothing again."""
    import mlflow

    from oaml.stages import import_fingerprint, prepare_data
    from oaml.tracking.runs import Tracking
    from oaml.tracking.store import embedded_uri

    tracking = Tracking(embedded_uri(tmp_path / "mlflow"))
    volume = tmp_path / "volume"
    options = json.dumps({"holdout_classes": [HELD_OUT], "group_by": UNIT, "far_count": 50})
    try:
        for _ in range(2):
            key = import_fingerprint(str(sprites), "sprites", str(volume), options)
            result = prepare_data(
                "sprites", tmp_path / "pointer", str(volume), tracking, str(sprites), options, key
            )
        with pytest.raises(ValueError, match="unknown holdout"):
            prepare_data(
                "sprites", tmp_path / "p2", str(volume), tracking, str(sprites),
                json.dumps({"holdout": ["x"]}),
            )  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)
    assert result.root == volume.resolve() and result.manifest_sha256
    spec = get_benchmark("sprites", volume)
    assert spec.class_names == RACES
    assert [s.name for s in spec.ood if s.group == "near"] == [f"holdout_{HELD_OUT}"]
    report = json.loads((volume / "benchmark_imglist/sprites/import_report.json").read_text())
    assert report["counts"]["reused"] == report["counts"]["imported"] > 0
    client = mlflow.MlflowClient(tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("oaml").experiment_id])
    assert {r.data.params["import_from"] for r in runs} == {str(sprites)}
    assert json.loads(runs[-1].data.params["import_options"])["group_by"] == UNIT
    assert [r.data.params["import_fingerprint"] for r in runs].count(key) == 2
