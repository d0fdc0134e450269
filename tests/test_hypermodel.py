"""The keras-tuner search space: pins, ranges, defaults and argument errors (no training)."""
import keras_tuner
import pytest

import tfp_vae
from tfp_vae import hypermodel as hypermodel_lib
from tfp_vae import tuning

BASE = tfp_vae.Config().replace(
    model={"architecture": "mlp", "latent_dim": 2, "hidden_units": (16,)},
    data={"train_examples": 512, "validation_examples": 256},
    training={"epochs": 1, "batch_size": 64, "seed": 0})


def tiny_hypermodel(config=BASE):
    return hypermodel_lib.VAEHyperModel(config, fixed={"architecture": "mlp"},
                                        ranges={"latent_dim": [2, 4], "hidden_units": [(16,), (32,)],
                                                "learning_rate": (1e-3, 1e-2)})


def test_tuning_re_exports_the_search_space():
    assert tuning.VAEHyperModel is hypermodel_lib.VAEHyperModel
    assert tuning.default_ranges is hypermodel_lib.default_ranges


def test_space_pins_ranges_and_defaults():
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    config = hypermodel.trial_config(hp)
    # Defaults come from the base config where they lie in range.
    assert config.model.latent_dim == 2 and config.model.hidden_units == (16,)
    assert config.training.learning_rate == pytest.approx(1e-3)
    assert hp.values["architecture"] == "mlp" and hp.values["hidden_units"] == "16"
    # A point of the space becomes a whole Config.
    hp.values.update({"latent_dim": 4, "hidden_units": "32", "learning_rate": 0.005, "beta": 0.7,
                      "warmup_epochs": 0.25})
    config = hypermodel.trial_config(hp)
    assert (config.model.latent_dim, config.model.hidden_units) == (4, (32,))
    assert (config.training.learning_rate, config.training.beta, config.training.warmup_epochs) == (0.005, 0.7, 0.25)
    assert config.data == BASE.data

    # The default space: both architectures, depth x first width for the MLP, conv capped at
    # two stride-2 layers for 28 x 28 images.
    full = hypermodel_lib.VAEHyperModel(tfp_vae.Config())
    hp = keras_tuner.HyperParameters()
    full.trial_config(hp)
    names = {p.name for p in hp.space}
    assert {"architecture", "latent_dim", "mlp_layers", "mlp_units", "learning_rate", "beta",
            "warmup_epochs"} <= names
    hp.values.update({"architecture": "conv", "conv_layers": 2, "conv_base_filters": 16})
    full.trial_config(hp)
    assert {"conv_layers", "conv_base_filters"} <= {p.name for p in hp.space}
    assert full.trial_config(hp).model.conv_filters == (16, 32)
    assert next(p for p in hp.space if p.name == "conv_layers").max_value == 2
    hp.values.update({"architecture": "mlp", "mlp_layers": 3, "mlp_units": 256})
    assert full.trial_config(hp).model.hidden_units == (256, 128, 64)

    # `search` limits what is searched: the rest is pinned to the base config.
    narrow = hypermodel_lib.VAEHyperModel(BASE, search=["learning_rate"])
    hp = keras_tuner.HyperParameters()
    narrow.trial_config(hp)
    searched = {p.name for p in hp.space if type(p).__name__ != "Fixed"}
    assert searched == {"learning_rate"}


def test_the_default_space_keeps_to_what_the_base_config_allows():
    """Gated units are MLP-only and a two-level model needs latent_dim > top_latent_dim: the
    default ranges leave out the rest, so such a base config searches without --range."""
    gated = hypermodel_lib.VAEHyperModel(tfp_vae.Config().replace(model={"gated": True}))
    assert hypermodel_lib.default_ranges(gated.base_config)["architecture"] == ["mlp"]
    two_level = hypermodel_lib.VAEHyperModel(tfp_vae.Config().replace(model={"latent_dim": 16, "top_latent_dim": 4}))
    assert hypermodel_lib.default_ranges(two_level.base_config)["latent_dim"] == [8, 16, 32, 64]


@pytest.mark.parametrize("arguments, message", [
    (dict(search=["latent_dims"]), "cannot search"),
    (dict(fixed={"dropout": 0.1}), "cannot fix"),
    (dict(ranges={"latent_dim": []}), "empty list"),
    (dict(ranges={"learning_rate": (0.0, 1e-2)}), "log-scaled"),
    (dict(fixed={"latent_dim": 4}, ranges={"latent_dim": [2, 4]}), "fixed"),
    (dict(search=["learning_rate"], ranges={"beta": (0.5, 1.0)}), "not searched"),
    (dict(ranges={"conv_layers": (1, 3)}), "at most 2"),
    (dict(fixed={"latent_dim": 0}), "latent_dim must be a positive integer"),
    # Every value the search can reach is built as a Config before any training.
    (dict(ranges={"latent_dim": [8, 0]}), "latent_dim = 0 in the search space"),
    (dict(ranges={"conv_layers": [1, 3]}), "conv_layers = 3 in the search space"),
    (dict(ranges={"mlp_layers": [0, 2]}), "mlp_layers = 0 in the search space"),
    (dict(ranges={"warmup_epochs": (-1.0, 2.0)}), "warmup_epochs = -1.0 in the search space"),
    (dict(ranges={"beta": [1.0, float("inf")]}), "beta = inf in the search space"),
    (dict(ranges={"hidden_units": [(64,), (0, 8)]}), r"hidden_units = \(0, 8\) in the search space"),
])
def test_bad_space_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        hypermodel_lib.VAEHyperModel(tfp_vae.Config(), **arguments)


def test_importance_weighted_and_fine_tuning_bases_are_checked_before_any_trial():
    iwae = tfp_vae.Config().replace(training={"importance_samples": 4})
    with pytest.raises(ValueError, match="no KL term for beta or warmup_epochs to act on: leave beta and "
                                         "warmup_epochs out of --search"):
        hypermodel_lib.VAEHyperModel(iwae)
    hypermodel_lib.VAEHyperModel(iwae, search=["latent_dim", "learning_rate"])  # fine without them
    with pytest.raises(ValueError, match="initial_weights .--initial-weights. is not supported in a search"):
        hypermodel_lib.VAEHyperModel(tfp_vae.Config().replace(training={"initial_weights": "runs/x"}))
