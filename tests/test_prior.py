"""Learnt priors: the loss `fit` minimises, the scale and accuracy of the Monte-Carlo KL, training.

Each expected value is rebuilt here from the layers' weights with tfd directly, not through
tfp_vae.prior, so a wrong mixture, a wrong reduction or a wrong sample would show.
"""
from tfp_vae import _env  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae import prior as prior_lib
from tfp_vae.config import ModelConfig
from tfp_vae.model import VAE, build_encoder

from helpers import one_training_step

tfd = tfp.distributions


def binary_images(count, seed=0):
    return (np.random.default_rng(seed).random((count, 28, 28, 1)) < 0.3).astype(np.float32)


def tiny(prior, **overrides):
    values = dict(latent_dim=3, hidden_units=(16,), prior=prior, prior_components=4)
    values.update(overrides)
    return ModelConfig(**values)


def independent_prior(model):
    """The prior rebuilt from the model's weights with tfd (not with tfp_vae.prior)."""
    layer = model.prior_network
    if isinstance(layer, prior_lib.MixturePrior):
        logits, loc, raw_scale = (variable.numpy() for variable in (layer.logits, layer.loc, layer.raw_scale))
        scale = np.log1p(np.exp(raw_scale)) + prior_lib.SCALE_FLOOR
        return tfd.MixtureSameFamily(tfd.Categorical(logits=logits), tfd.MultivariateNormalDiag(loc, scale))
    pseudo_inputs = 1 / (1 + np.exp(-layer.raw_pseudo_inputs.numpy()))
    components = model.encoder(pseudo_inputs.astype(np.float32))  # q(z|u_k) through the encoder itself
    count = len(pseudo_inputs)
    return tfd.MixtureSameFamily(tfd.Categorical(logits=np.zeros(count, np.float32)),
                                 tfd.MultivariateNormalDiag(components.mean(), components.stddev()))


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_fit_minimises_mean_negative_log_likelihood_plus_beta_monte_carlo_kl(prior, beta):
    # kl_samples = 1: the KL estimate is log q(z|x) - log p(z) at the very z the decoder saw.
    tf_keras.utils.set_random_seed(3)
    model = VAE(tiny(prior))
    model.compile(tf_keras.optimizers.SGD(0.0), beta=beta, run_eagerly=True)
    x = binary_images(16)
    logs, z = one_training_step(model, x)
    z = z.numpy()
    posterior = model.encoder(x)
    kl = posterior.log_prob(z).numpy() - independent_prior(model).log_prob(z).numpy()
    log_likelihood = model.decoder(z).log_prob(x).numpy()
    np.testing.assert_allclose(logs["loss"], np.mean(-log_likelihood + beta * kl), rtol=1e-4)
    np.testing.assert_allclose(logs["kl"], np.mean(kl), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logs["elbo"], np.mean(log_likelihood - kl), rtol=1e-4)


def test_monte_carlo_kl_to_a_one_component_mixture_matches_the_exact_kl_in_scale_and_value():
    # A mixture with a single N(0, I) component IS the standard normal, whose KL is exact: the
    # Monte-Carlo KL the layer adds (batch SUM, many samples) must agree with it. A batch mean
    # instead of a sum would be 16 times too small; a wrong sign or density, far off.
    tf_keras.utils.set_random_seed(4)
    config = tiny("mixture", prior_components=1, kl_samples=4000)
    prior = prior_lib.build_prior(config)
    prior.loc.assign(np.zeros([1, 3], np.float32))
    prior.raw_scale.assign(np.full([1, 3], np.log(np.expm1(1.0 - prior_lib.SCALE_FLOOR)), np.float32))
    encoder = build_encoder(config, prior=prior)
    x = binary_images(16, seed=1)
    posterior = encoder(x)
    exact = tfd.kl_divergence(posterior, tfd.MultivariateNormalDiag(loc=tf.zeros(3))).numpy()
    added = encoder.losses[0].numpy()
    # Monte-Carlo error of the sum: sqrt(sum of per-example variances / 4000), a few hundredths.
    assert added == pytest.approx(np.sum(exact), abs=0.05 * np.sqrt(16) + 0.02 * np.sum(exact))


def test_more_kl_samples_shrink_the_spread_of_the_estimate():
    tf_keras.utils.set_random_seed(5)
    x = binary_images(8, seed=2)
    spreads = {}
    for samples in (1, 64):
        config = tiny("mixture", kl_samples=samples)
        encoder = build_encoder(config, prior=prior_lib.build_prior(config))
        estimates = []
        for _ in range(30):
            encoder(x)
            estimates.append(encoder.losses[0].numpy())
        spreads[samples] = np.std(estimates)
    assert spreads[64] < spreads[1] / 3  # ~ 1/sqrt(64) of it


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_training_moves_the_prior_weights(prior):
    tf_keras.utils.set_random_seed(6)
    model = VAE(tiny(prior))
    model.compile(tf_keras.optimizers.Adam(1e-2))
    x = binary_images(32, seed=3)
    model(x[:2])
    before = [variable.numpy().copy() for variable in model.prior_network.trainable_variables
              if "posterior" not in variable.name]
    assert before, "the learnt prior has weights of its own"
    model.fit(x, batch_size=16, epochs=2, verbose=0)
    after = [variable.numpy() for variable in model.prior_network.trainable_variables
             if "posterior" not in variable.name]
    assert all(np.max(np.abs(a - b)) > 1e-4 for a, b in zip(after, before))
    own = {id(variable) for variable in model.trainable_variables}
    assert all(id(variable) in own for variable in model.prior_network.trainable_variables)


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    tf_keras.utils.set_random_seed(7)
    model = VAE(tiny("vamp"))
    pseudo_inputs = binary_images(4, seed=4)
    model.prior_network.initialize_pseudo_inputs(pseudo_inputs)
    np.testing.assert_allclose(model.prior_network.pseudo_inputs.numpy(), np.clip(pseudo_inputs, 0.05, 0.95),
                               rtol=1e-5)
    z = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_allclose(model.prior.log_prob(z).numpy(), independent_prior(model).log_prob(z).numpy(),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="4 images of shape"):
        model.prior_network.initialize_pseudo_inputs(pseudo_inputs[:3])
    with pytest.raises(ValueError, match="no encoder yet"):
        prior_lib.build_prior(tiny("vamp")).distribution()


def test_samples_from_learnt_priors_decode_and_are_reproducible():
    for prior in ("mixture", "vamp"):
        model = VAE(tiny(prior))
        first, second = model.sample(5, seed=11), model.sample(5, seed=11)
        assert first.shape == (5, 28, 28, 1)
        np.testing.assert_array_equal(first.numpy(), second.numpy())


def test_kl_divergence_helper_is_exact_when_it_can_be_and_asks_for_samples_otherwise():
    posterior = tfd.MultivariateNormalDiag(loc=[[0.5, -0.5]], scale_diag=[[0.7, 1.2]])
    standard = prior_lib.standard_normal_prior(2)
    np.testing.assert_allclose(prior_lib.kl_divergence(posterior, standard).numpy(),
                               tfd.kl_divergence(posterior, standard).numpy())
    mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=[0.0]), tfd.MultivariateNormalDiag(loc=[[0.0, 0.0]]))
    with pytest.raises(ValueError, match="pass samples"):
        prior_lib.kl_divergence(posterior, mixture)
    z = posterior.sample(20000, seed=[1, 2])
    log_ratios = (posterior.log_prob(z) - mixture.log_prob(z)).numpy()
    stderr = np.std(log_ratios) / np.sqrt(len(log_ratios))
    estimate = prior_lib.kl_divergence(posterior, mixture, z).numpy()
    np.testing.assert_allclose(estimate, np.mean(log_ratios, 0), rtol=1e-5)
    assert abs(estimate[0] - tfd.kl_divergence(posterior, standard).numpy()[0]) < 4 * stderr


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_learnt_priors_stay_float32_under_mixed_precision(prior):
    tf_keras.utils.set_random_seed(8)
    model = VAE(tiny(prior, architecture="resnet", conv_filters=(4, 8)), mixed_precision=True)
    model.compile(tf_keras.optimizers.Adam(1e-3))
    history = model.fit(binary_images(16, seed=5), batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][-1]) and np.isfinite(history["kl"][-1])
    assert model.prior.dtype == tf.float32
    assert {variable.dtype for variable in model.prior_network.variables} == {tf.float32}
