"""The named models of the likelihood protocol."""
from tfp_vae import registry


def test_registered_models_follow_the_protocol():
    assert "mlp" in registry.MODELS
    for name, model in registry.MODELS.items():
        config = model.config
        assert model.description
        assert config.data.dataset == "fashion_mnist" and config.data.binarization == "dynamic"
        assert config.data.validation_examples == 10_000 and config.data.train_examples is None
        assert config.training.keep_best  # model selection on validation, never on test
        # A learnt prior (one layer) is shown next to N(0, I); a two-level model next to its one-layer network.
        if config.model.prior != "standard_normal" and not config.model.top_latent_dim:
            assert registry.MODELS[model.reference].config.model.prior == "standard_normal"
        if config.model.top_latent_dim:  # next to the same network with one layer
            assert registry.MODELS[model.reference].config.model.architecture == config.model.architecture
        if model.start_from:  # fine-tuning: the weights it starts from must fit
            assert registry.MODELS[model.start_from].config.model == config.model
