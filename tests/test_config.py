import pytest

from oaml.config import ConfigError, load_preset, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_loads(name):
    preset = load_preset(name)
    assert preset.name == name
    assert preset.student.train.epochs >= 1


def test_presets_cover_the_paper_benchmarks():
    assert {"quick", "fmnist", "cifar10", "cifar100", "imagenet1k"} <= set(preset_names())


def test_override_is_typed_and_applied():
    preset = load_preset("quick", ["student.train.epochs=7", "student.model.width=0.5"])
    assert preset.student.train.epochs == 7
    assert preset.student.model.width == 0.5


def test_exponent_without_a_dot_is_a_number():
    # YAML 1.1 reads 5e-4 as a string; a user writing it means the number.
    preset = load_preset("quick", ["student.train.optim.weight_decay=5e-4"])
    assert preset.student.train.optim.weight_decay == pytest.approx(5e-4)
    with pytest.raises(ConfigError, match="expected a number"):
        load_preset("quick", ["student.train.optim.lr=fast"])


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"student\.train\.epochz"):
        load_preset("quick", ["student.train.epochz=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"student\.train\.epochs: expected an integer"):
        load_preset("quick", ["student.train.epochs=three"])


def test_unknown_preset_lists_shipped_ones():
    with pytest.raises(ConfigError, match="shipped presets: .*quick"):
        load_preset("nope")


def test_preset_from_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nbenchmark: fmnist6\nstudent: {train: {epochs: 2}}\n")
    preset = load_preset(str(path))
    assert (preset.name, preset.benchmark, preset.student.train.epochs) == ("mine", "fmnist6", 2)


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").mkdir()  # e.g. left by `oaml train --out quick`
    assert load_preset("quick").name == "quick"


def test_the_former_bench_section_says_where_its_keys_moved(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("name: old\nbench: {finetune_epochs: 1, outliers: 300, sd_steps: 2, nope: 1}\n")
    with pytest.raises(ConfigError) as error:
        load_preset(str(path))
    message = str(error.value)
    for old, new in [("finetune_epochs", "finetune.epochs"), ("outliers", "outliers.count"),
                     ("sd_steps", "outliers.sd_steps")]:  # fmt: skip
        assert f"bench.{old} to {new}" in message
    assert "unknown key(s) bench.nope" in message
    with pytest.raises(ConfigError, match=r"bench\.finetune_lr to finetune\.lr"):
        load_preset("quick", ["bench.finetune_lr=0.5"])  # an old override, too


def test_outliers_and_finetune_sections_are_typed():
    preset = load_preset("quick", ["outliers.count=300", "finetune.epochs=1"])
    assert (preset.outliers.count, preset.finetune.epochs) == (300, 1)
    assert preset.finetune.losses["oaml"]["m_in"] == -10.0
    with pytest.raises(ConfigError, match=r"finetune\.lr: expected a number"):
        load_preset("quick", ["finetune.lr=fast"])


def test_finetuned_replaces_typed_fields_and_leaves_the_rest():
    from oaml.recipe import finetuned, with_inputs

    preset = load_preset("quick", ["student.train.optim.warmup_epochs=1"])
    tuned = finetuned(with_inputs(preset, "/o", "/t.pt"), "oaml", "/start.pt")
    train = tuned.student.train
    assert (train.method, train.init_checkpoint, train.epochs) == ("oaml", "/start.pt", 2)
    assert (train.optim.lr, train.optim.warmup_epochs) == (0.01, 0.0)
    assert train.optim.momentum == preset.student.train.optim.momentum
    assert (
        train.loss == preset.finetune.losses["oaml"]
        and train.loss is not preset.finetune.losses["oaml"]
    )
    assert (train.outliers, train.teacher_checkpoint) == ("/o", "/t.pt")
    assert tuned.teacher == preset.teacher and preset.student.train.method == "ce"
    assert finetuned(preset, "ce", "/start.pt").student.train.loss == {}
