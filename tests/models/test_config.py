"""Typed configs: YAML/JSON round trips and errors naming the field, value and allowed values."""

from __future__ import annotations

import pytest
import torch

from factories import make_batch, model_config
from medfusion.models import ModelConfig, build_model, load_config, save_config


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trip(tmp_path, suffix: str) -> None:
    config = ModelConfig.model_validate(model_config("late-weighted", ("text", "image")) | {"modality_dropout": 0.2})
    path = tmp_path / f"model{suffix}"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    assert loaded.fusion.params["weights"] == {"image": 1.0, "text": 2.0}
    assert not list(tmp_path.glob(".*.tmp"))


def test_model_built_from_yaml_file_matches_dict(tmp_path) -> None:
    config = model_config("cross_attention", ("text", "image"))
    save_config(ModelConfig.model_validate(config), tmp_path / "m.yaml")
    torch.manual_seed(0)
    from_file = build_model(tmp_path / "m.yaml").eval()
    torch.manual_seed(0)
    from_dict = build_model(config).eval()
    batch = make_batch(("text", "image"))
    with torch.no_grad():
        torch.testing.assert_close(from_file(batch).logits, from_dict(batch).logits)


def test_default_encoder_when_none_is_named() -> None:
    config = ModelConfig.model_validate({"modalities": {"vitals": {}, "signal": {}}, "fusion": {"name": "late"}})
    assert config.encoder_for("vitals").name == "mlp"
    assert config.encoder_for("signal").name == "resnet1d"


def test_unknown_encoder_lists_known_names() -> None:
    config = model_config("intermediate", ("text", "image"))
    config["modalities"]["image"]["encoder"] = {"name": "resnet50"}
    known = "cnn, densenet121, efficientnet_lite0, patch_cnn, vit"
    with pytest.raises(ValueError, match=rf"unknown image encoder 'resnet50'; known: {known}"):
        build_model(config)


def test_unknown_fusion_lists_known_names() -> None:
    config = model_config("intermediate", ("text", "image")) | {"fusion": {"name": "mid"}}
    with pytest.raises(ValueError, match=r"unknown fusion 'mid'; known: cross_attention, early, intermediate, joint_embedding, late"):
        build_model(config)


def test_unknown_parameter_lists_accepted_ones() -> None:
    config = model_config("intermediate", ("text", "image"))
    config["modalities"]["image"]["encoder"]["params"]["depth"] = 3
    with pytest.raises(ValueError, match=r"image encoder 'cnn' got unknown parameter\(s\) \['depth'\]; accepted: .*in_channels"):
        build_model(config)


def test_unknown_field_and_bad_values_name_the_field(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("num_classes: 1\nmodalities: {text: {}}\nfusion: {name: late}\nlearning_rate: 3\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "num_classes" in message and "greater than or equal to 2" in message
    assert "learning_rate" in message and "Extra inputs are not permitted" in message


def test_unknown_modality_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown modality 'xray'; expected one of \['text', 'image'"):
        ModelConfig.model_validate({"modalities": {"xray": {}}, "fusion": {"name": "late"}})


def test_missing_and_unparsable_files(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"config file .*nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("modalities: [unclosed\n")
    with pytest.raises(ValueError, match=r"broken.yaml could not be parsed"):
        load_config(broken)
