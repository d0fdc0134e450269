import argparse
import dataclasses
import typing

import pytest

from tfp_vae import cli
from tfp_vae.config import Config, save_config

# Fields deliberately left to --config (a run's config.json): fixed by the data or the protocol.
CONFIG_FILE_ONLY = {("model", "image_shape"), ("data", "test_binarization_seed"), ("data", "shuffle_buffer")}


def parser():
    result = argparse.ArgumentParser()
    cli.add_config_flags(result)
    return result


def test_every_flag_names_a_config_field_and_every_field_has_a_flag_or_a_reason():
    fields = {(section, field.name): field for section in ("data", "model", "training")
              for field in dataclasses.fields(getattr(Config(), section))}
    flagged = {(section, field) for section, field, _, _ in cli.FLAGS.values()}
    assert flagged <= set(fields), flagged - set(fields)
    assert set(fields) - flagged == CONFIG_FILE_ONLY
    for flag, (section, field, kind, text) in cli.FLAGS.items():
        assert flag == "--" + field.replace("_", "-"), flag  # config_from_flags relies on the spelling
        assert text, flag
        hints = typing.get_type_hints(type(getattr(Config(), section)))
        if kind is bool:
            assert hints[field] is bool, flag


def test_flags_override_config_file(tmp_path):
    base = tmp_path / "base.json"
    save_config(Config().replace(model={"latent_dim": 5}, training={"epochs": 3}), str(base))
    args = parser().parse_args(["--config", str(base), "--epochs", "9", "--hidden-units", "64,32",
                                "--likelihood", "continuous_bernoulli", "--binarization", "none",
                                "--ema-momentum", "0.999"])
    config = cli.config_from_flags(args)
    assert config.model.latent_dim == 5  # from the file
    assert config.training.epochs == 9  # from the flag
    assert config.model.hidden_units == (64, 32)
    assert config.model.likelihood == "continuous_bernoulli"
    assert config.training.ema_momentum == 0.999


def test_no_flags_keep_every_value_of_the_file_and_bool_pairs_set_both_ways(tmp_path):
    base = tmp_path / "base.json"
    saved = Config().replace(model={"gated": True, "latent_dim": 3}, training={"keep_best": True})
    save_config(saved, str(base))
    assert cli.config_from_flags(parser().parse_args(["--config", str(base)])) == saved
    assert cli.config_from_flags(parser().parse_args([])) == Config()
    config = cli.config_from_flags(parser().parse_args(["--config", str(base), "--no-gated", "--mixed-precision"]))
    assert config.model.gated is False and config.training.mixed_precision is True
    assert config.training.keep_best is True
    config = cli.config_from_flags(parser().parse_args(["--mixed-precision", "--mixed-precision-dtype", "bfloat16"]))
    assert config.training.mixed_precision and config.training.mixed_precision_dtype == "bfloat16"


def test_flags_with_bad_values_raise():
    with pytest.raises(ValueError, match="latent_dim"):
        cli.config_from_flags(parser().parse_args(["--latent-dim", "-3"]))


def test_a_malformed_integer_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--hidden-units", "64,big"])
    assert exit_info.value.code == 2
    assert "expected comma-separated integers such as 512,256; got '64,big'" in capsys.readouterr().err
