"""The training config: loading, path resolution, and a clear error for every bad field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medfusion.train import TrainConfig, load_train_config, save_train_config

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def load_error(tmp_path: Path, config: dict) -> str:
    path = write(tmp_path / "bad.yaml", config)
    with pytest.raises(ValueError) as error:
        load_train_config(path)
    message = str(error.value)
    assert str(path) in message
    return message


def test_the_real_late_config_loads_with_paths_resolved_against_its_folder() -> None:
    path = REPO / "configs" / "triage" / "late.yaml"
    config = load_train_config(path)
    assert config.model.fusion.name == "late"
    assert config.data.manifest == (REPO / "data" / "triage" / "manifest.parquet").resolve()
    assert config.run.out == (REPO / "runs" / "triage" / "late").resolve()


def test_a_valid_yaml_loads_and_relative_paths_resolve_against_the_config_folder(tmp_path, tiny_config) -> None:
    folder = tmp_path / "configs" / "deep"
    folder.mkdir(parents=True)
    path = write(folder / "run.yaml", tiny_config("../data/manifest.parquet", "../runs/x", "late"))
    config = load_train_config(path)
    assert isinstance(config, TrainConfig)
    assert config.data.manifest == (tmp_path / "configs" / "data" / "manifest.parquet").resolve()
    assert config.run.out == (tmp_path / "configs" / "runs" / "x").resolve()
    assert config.optim.batch_size == 16 and config.balance.modality == "none" and config.run.threads == 1


def test_absolute_paths_are_kept_and_overrides_replace_nested_values(tmp_path, tiny_config) -> None:
    manifest = tmp_path / "m.parquet"
    path = write(tmp_path / "run.yaml", tiny_config(manifest, tmp_path / "out"))
    config = load_train_config(path, {"optim": {"max_epochs": 7}, "seed": 3, "run": {"out": "rel/out"}})
    assert config.data.manifest == manifest
    assert config.optim.max_epochs == 7 and config.optim.batch_size == 16 and config.seed == 3
    # a path given as an override (the command line) is relative to the working directory, not the file
    assert config.run.out == Path("rel/out")


def test_save_and_load_round_trip(tmp_path, tiny_config) -> None:
    config = load_train_config(write(tmp_path / "a.yaml", tiny_config(tmp_path / "m.parquet", tmp_path / "o")))
    save_train_config(config, tmp_path / "b.yaml")
    assert load_train_config(tmp_path / "b.yaml") == config


@pytest.mark.parametrize(("section", "field", "value", "expected"), [
    ("balance", "modality", "foo", ["balance.modality", "'none'", "'ogm_ge'", "foo"]),
    ("balance", "class_weights", "balanced", ["balance.class_weights", "'auto'", "'none'", "balanced"]),
    ("data", "on_error", "ignore", ["data.on_error", "'raise'", "'skip'"]),
    ("optim", "batch_size", 1, ["optim.batch_size", "greater than or equal to 2"]),
    ("optim", "lr", 0.0, ["optim.lr", "greater than 0"]),
    ("data", "train_fraction", 1.5, ["data.train_fraction", "less than or equal to 1"]),
    ("run", "threads", 0, ["run.threads", "greater than or equal to 1"]),
])
def test_a_bad_field_names_the_field_and_the_allowed_values(tmp_path, tiny_config, section, field, value,
                                                             expected) -> None:
    config = tiny_config("m.parquet", "out")
    config[section][field] = value
    message = load_error(tmp_path, config)
    for text in expected:
        assert text in message, (text, message)


@pytest.mark.parametrize("where", ["top", "optim", "balance", "run"])
def test_an_unknown_field_is_rejected_by_name(tmp_path, tiny_config, where) -> None:
    config = tiny_config("m.parquet", "out")
    (config if where == "top" else config[where])["surprise"] = 1
    message = load_error(tmp_path, config)
    assert "surprise" in message and "Extra inputs are not permitted" in message
    if where != "top":
        assert f"{where}.surprise" in message


def test_a_missing_required_field_is_named(tmp_path, tiny_config) -> None:
    config = tiny_config("m.parquet", "out")
    del config["data"]["label"]
    message = load_error(tmp_path, config)
    assert "data.label" in message and "Field required" in message


def test_data_and_model_modalities_must_agree(tmp_path, tiny_config) -> None:
    config = tiny_config("m.parquet", "out")
    del config["model"]["modalities"]["vitals"]
    message = load_error(tmp_path, config)
    assert "['image', 'text', 'vitals']" in message and "['image', 'text']" in message
    assert "model.modalities" in message

    config = tiny_config("m.parquet", "out")
    config["data"]["vitals_columns"] = []
    assert "model.modalities" in load_error(tmp_path, config)


def test_ogm_ge_with_early_fusion_is_rejected(tmp_path, tiny_config) -> None:
    config = tiny_config("m.parquet", "out", "early")
    config["balance"]["modality"] = "ogm_ge"
    message = load_error(tmp_path, config)
    assert "balance.modality" in message and "'ogm_ge'" in message and "early" in message and "'none'" in message
    config["balance"]["modality"] = "none"
    load_train_config(write(tmp_path / "ok.yaml", config))  # early without OGM-GE is fine
    config = tiny_config("m.parquet", "out", "late")
    config["balance"]["modality"] = "ogm_ge"
    assert load_train_config(write(tmp_path / "ok.yaml", config)).balance.modality == "ogm_ge"


def test_more_than_two_classes_is_rejected(tmp_path, tiny_config) -> None:
    config = tiny_config("m.parquet", "out")
    config["model"]["num_classes"] = 3
    message = load_error(tmp_path, config)
    assert "model.num_classes" in message and "expected 2" in message and "3" in message


def test_a_missing_file_names_the_path(tmp_path) -> None:
    path = tmp_path / "nowhere" / "missing.yaml"
    with pytest.raises(ValueError, match="no such config file") as error:
        load_train_config(path)
    assert str(path) in str(error.value)


def test_invalid_yaml_names_the_path(tmp_path) -> None:
    path = write(tmp_path / "broken.yaml", "seed: 0\ndata: {manifest: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML") as error:
        load_train_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_a_file_that_is_not_a_mapping_names_the_path(tmp_path, text) -> None:
    path = write(tmp_path / "list.yaml", text)
    with pytest.raises(ValueError, match="expected a mapping") as error:
        load_train_config(path)
    assert str(path) in str(error.value)
