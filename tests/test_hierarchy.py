"""Two stochastic layers: the densities against hand-written Gaussians, the loss, the KL estimate,
training, reloading, importance sampling, and the clear refusals."""
from tfp_vae import _env  # noqa: F401

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_vae
from tfp_vae import diagnosis, evaluation, export, hierarchy, training
from tfp_vae import prior as prior_lib
from tfp_vae.config import Config, ModelConfig
from tfp_vae.model import VAE

from helpers import one_training_step

tfd = tfp.distributions
TOP, LATENT = 2, 5


def binary_images(count, seed=0):
    return (np.random.default_rng(seed).random((count, 28, 28, 1)) < 0.3).astype(np.float32)


def tiny(prior="standard_normal", **overrides):
    values = dict(latent_dim=LATENT, top_latent_dim=TOP, hidden_units=(16,), conditional_units=8, prior=prior,
                  prior_components=3)
    values.update(overrides)
    return ModelConfig(**values)


def gaussian_log_density(z, loc, scale):
    return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi), -1)


def split_params(params, dim):
    params = np.asarray(params, np.float64)
    return params[..., :dim], np.log1p(np.exp(params[..., dim:])) + prior_lib.SCALE_FLOOR


def by_hand(model, x, z):
    """log q(z|x) and log p(z) written out from the layers' outputs, in float64."""
    encoder = model.encoder
    features = tf_keras.Model(encoder.inputs, encoder.get_layer("posterior_params").input)(x).numpy()
    top_loc, top_scale = split_params(encoder.get_layer("posterior_params")(features), TOP)
    z_top, z_bottom = z[..., :TOP], z[..., TOP:]
    # q(z_bottom | x, z_top): one ReLU layer on [features, z_top], then loc and softplus scale.
    conditional = encoder.get_layer("posterior").conditional
    kernel = np.concatenate([conditional.context.kernel.numpy(), conditional.hidden.kernel.numpy()]).astype(np.float64)
    tiled = np.broadcast_to(features, z.shape[:-1] + features.shape[-1:])
    hidden = np.maximum(np.concatenate([tiled, z_top], -1) @ kernel + conditional.hidden.bias.numpy(), 0)
    bottom_loc, bottom_scale = split_params(
        hidden @ conditional.params.kernel.numpy() + conditional.params.bias.numpy(), LATENT - TOP)
    log_q = gaussian_log_density(z_top, top_loc, top_scale) + gaussian_log_density(z_bottom, bottom_loc, bottom_scale)
    prior_loc, prior_scale = split_params(model.prior_network.conditional(z_top.astype(np.float32)), LATENT - TOP)
    log_p = gaussian_log_density(z_top, 0.0, 1.0) + gaussian_log_density(z_bottom, prior_loc, prior_scale)
    return log_q, log_p


def test_posterior_and_prior_densities_are_the_two_gaussian_levels():
    tf_keras.utils.set_random_seed(0)
    model = VAE(tiny())
    x = binary_images(4)
    posterior = model.posterior(x)
    z = posterior.sample(3, seed=tf.constant([1, 2])).numpy()  # [S, B, latent]
    assert z.shape == (3, 4, LATENT)
    log_q, log_p = by_hand(model, x, z.astype(np.float64))
    np.testing.assert_allclose(posterior.log_prob(z).numpy(), log_q, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(model.prior.log_prob(z).numpy(), log_p, rtol=1e-5, atol=1e-4)


def test_fit_minimises_negative_log_likelihood_plus_log_q_minus_log_p_at_the_decoders_z():
    tf_keras.utils.set_random_seed(1)
    model = VAE(tiny())
    model.compile(tf_keras.optimizers.SGD(0.0), run_eagerly=True)
    x = binary_images(8)
    logs, z = one_training_step(model, x)
    z = z.numpy()
    log_q, log_p = by_hand(model, x, z.astype(np.float64))
    log_likelihood = model.decoder(z).log_prob(x).numpy()
    np.testing.assert_allclose(logs["kl"], np.mean(log_q - log_p), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logs["loss"], np.mean(-log_likelihood + log_q - log_p), rtol=1e-4)


def test_monte_carlo_kl_agrees_with_the_exact_kl_of_each_level():
    # KL(q || p) = KL(q(z_top|x) || N(0, I)) + E_q(z_top|x) KL(q(z_bottom|x, z_top) || p(z_bottom|z_top)):
    # exact per level (TFP's Gaussian KL), against the model's log q - log p averaged over draws.
    tf_keras.utils.set_random_seed(2)
    model = VAE(tiny())
    x = binary_images(3)
    posterior = model.posterior(x)
    draws = 4000
    z = posterior.sample(draws, seed=tf.constant([5, 6]))
    monte_carlo = (posterior.log_prob(z) - model.prior.log_prob(z)).numpy()  # [draws, B]
    top, bottom = hierarchy._levels(posterior)
    z_top = z[..., :TOP]
    prior_bottom = model.prior_network.conditional.distribution(z_top)
    per_level = (tfd.kl_divergence(top, tfd.MultivariateNormalDiag(tf.zeros(TOP))).numpy()
                 + tfd.kl_divergence(bottom(z_top), prior_bottom).numpy().mean(0))
    stderr = monte_carlo.std(0) / math.sqrt(draws)
    assert np.all(np.abs(monte_carlo.mean(0) - per_level) < 4 * stderr + 1e-3), (monte_carlo.mean(0), per_level)
    assert np.all(per_level > 0)


def test_encode_is_the_mean_path_and_sampling_decodes():
    tf_keras.utils.set_random_seed(3)
    model = VAE(tiny())
    x = binary_images(4)
    loc, scale = model.encode(x)
    top, bottom = hierarchy._levels(model.posterior(x))
    np.testing.assert_allclose(loc[:, :TOP], top.mean())
    np.testing.assert_allclose(loc[:, TOP:], bottom(top.mean()).mean(), rtol=1e-6)
    np.testing.assert_allclose(scale[:, TOP:], bottom(top.mean()).stddev(), rtol=1e-6)
    samples = model.sample(3, seed=7)
    assert samples.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(samples, model.sample(3, seed=7))


@pytest.mark.parametrize("prior", ["vamp", "mixture"])
def test_learnt_priors_sit_on_the_top_layer(prior):
    tf_keras.utils.set_random_seed(4)
    model = VAE(tiny(prior))
    top = model.prior_network.top
    assert top.latent_dim == TOP
    if prior == "vamp":
        # p(z_top) is the mixture of q(z_top | u_k) through the encoder's own network.
        params = top.posterior_network(top.pseudo_inputs)
        assert params.shape == (3, 2 * TOP)
    z = model.prior.sample(6, seed=tf.constant([0, 1]))
    expected = top.distribution().log_prob(z[:, :TOP]) + \
        model.prior_network.conditional.distribution(z[:, :TOP]).log_prob(z[:, TOP:])
    np.testing.assert_allclose(model.prior.log_prob(z), expected, rtol=1e-5)


def test_trains_reloads_and_estimates_log_likelihood(tmp_path):
    config = Config().replace(model=dict(tiny("vamp").__dict__, image_shape=(28, 28, 1)),
                              data={"train_examples": 256, "validation_examples": 128},
                              training={"epochs": 1, "batch_size": 64})
    training.train(config, str(tmp_path), verbose=0)
    model = training.load(str(tmp_path))
    x = binary_images(4)
    reloaded_loc, _ = model.encode(x)
    again_loc, _ = training.load(str(tmp_path)).encode(x)
    np.testing.assert_allclose(reloaded_loc, again_loc)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)
    summary = evaluation.evaluate(model.encoder, model.decoder, model.prior, dataset, num_samples=50)
    assert np.isfinite(summary["log_likelihood"]) and summary["log_likelihood"] >= summary["elbo"]


def test_trained_weights_of_both_conditional_networks_are_saved_and_restored(tmp_path):
    tf_keras.utils.set_random_seed(5)
    model = VAE(tiny())
    model.compile(tf_keras.optimizers.Adam(1e-2))
    model.fit(binary_images(32), epochs=2, batch_size=16, verbose=0)
    path = str(tmp_path / "weights")
    model.save_weights(path)
    fresh = VAE(tiny())
    fresh(binary_images(1))
    fresh.load_weights(path)
    z = np.random.default_rng(0).normal(size=(4, LATENT)).astype(np.float32)
    np.testing.assert_allclose(fresh.prior.log_prob(z), model.prior.log_prob(z), rtol=1e-6)
    x = binary_images(4)
    np.testing.assert_allclose(fresh.encode(x)[0], model.encode(x)[0], rtol=1e-6)


def test_mixed_precision_keeps_the_distributions_float32():
    model = VAE(tiny(), mixed_precision=True)
    terms = model.objective(binary_images(4))
    assert all(value.dtype == tf.float32 and np.isfinite(value.numpy()) for value in terms.values())


def test_config_refuses_what_a_two_level_model_cannot_do():
    with pytest.raises(ValueError, match="top_latent_dim must be an integer from 0"):
        tiny(top_latent_dim=LATENT)
    with pytest.raises(ValueError, match="top_latent_dim"):
        tiny(top_latent_dim=-1)
    with pytest.raises(ValueError, match="free_bits"):
        Config().replace(model={"latent_dim": 4, "top_latent_dim": 2}, training={"free_bits": 0.1})
    with pytest.raises(ValueError, match="conditional_units"):
        tiny(conditional_units=0)
    assert not prior_lib.has_exact_kl(tiny())


def test_the_report_reads_the_top_layer():
    tf_keras.utils.set_random_seed(6)
    model = VAE(tiny("vamp"))
    x = binary_images(6)
    level = hierarchy.TopLevel(model)
    top = level.encoder(x)
    assert isinstance(top, tfd.MultivariateNormalDiag) and top.event_shape == (TOP,)
    np.testing.assert_allclose(top.mean(), model.encode(x)[0][:, :TOP])
    z_top = level.prior.sample(3, seed=tf.constant([1, 1]))
    # p(z_top) is the VampPrior of the model's own encoder: the mean over the pseudo-inputs u_k of
    # q(z_top | u_k), recomputed here from the encoder's top means and scales.
    loc, scale = model.encode(model.prior_network.top.pseudo_inputs)
    components = tfd.Normal(loc[:, :TOP], scale[:, :TOP]).log_prob(z_top[:, None, :])  # [3, K, TOP]
    expected = tf.reduce_logsumexp(tf.reduce_sum(components, -1), -1) - np.log(3)
    np.testing.assert_allclose(level.prior.log_prob(z_top), expected, rtol=1e-5)
    z_bottom = model.prior_network.conditional.distribution(z_top).mean()
    np.testing.assert_allclose(level.decode(z_top), model.decode(tf.concat([z_top, z_bottom], -1)))
    result = diagnosis.diagnose(level.encoder, level.prior, tf.data.Dataset.from_tensor_slices(x).batch(3))
    assert result.summary["latent_dim"] == TOP and np.isfinite(result.summary["marginal_kl"])
    with pytest.raises(ValueError, match="two-level"):
        hierarchy.TopLevel(VAE(tiny(top_latent_dim=0)))


def test_diagnosing_the_whole_posterior_refuses_a_two_level_model_with_a_clear_error():
    model = VAE(tiny())
    model(binary_images(1))
    dataset = tf.data.Dataset.from_tensor_slices(binary_images(4)).batch(4)
    with pytest.raises(ValueError, match="two-level"):
        diagnosis.collect_posteriors(model.encoder, model.prior, dataset)


def test_reparameterized_noise_is_a_draw_of_the_posterior():
    # Change of variables: log q(z) = log N(noise; 0, I) - sum log scale of each level at z.
    tf_keras.utils.set_random_seed(7)
    model = VAE(tiny())
    x = binary_images(3)
    posterior = model.posterior(x)
    noise = np.random.default_rng(1).normal(size=(6, 1, LATENT)).astype(np.float32)
    z = hierarchy.reparameterized(posterior, noise)
    assert z.shape == (6, 3, LATENT)
    top, bottom = hierarchy._levels(posterior)
    scale = np.concatenate([np.broadcast_to(top.stddev(), (6, 3, TOP)), bottom(z[..., :TOP]).stddev()], -1)
    expected = gaussian_log_density(np.broadcast_to(noise, z.shape), 0.0, 1.0) - np.log(scale).sum(-1)
    np.testing.assert_allclose(posterior.log_prob(z), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(z[..., :TOP], top.mean() + top.stddev() * noise[..., :TOP], rtol=1e-6)


def test_exported_signatures_match_the_in_memory_two_level_model(tmp_path):
    tf_keras.utils.set_random_seed(8)
    model = VAE(tiny("vamp"))
    model.compile(tf_keras.optimizers.Adam(1e-2))
    model.fit(binary_images(32), batch_size=16, epochs=1, verbose=0)
    num_samples, seed = 16, 5
    loaded = tf.saved_model.load(export.export(model, str(tmp_path / "two_level"), num_samples=num_samples, seed=seed))
    x = binary_images(3, seed=4)
    encoded = loaded.signatures["encode"](x=tf.constant(x))
    loc, scale = model.encode(x)
    np.testing.assert_allclose(encoded["z_mean"], loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoded["z_stddev"], scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.signatures["reconstruct"](x=tf.constant(x))["x_mean"], model.decode(loc),
                               atol=1e-5)
    # score: K draws z_k from the documented noise, then the IWAE bound and the ELBO over them.
    noise = export.score_noise(LATENT, num_samples, seed)
    posterior = model.posterior(x)
    z = hierarchy.reparameterized(posterior, noise[:, None, :]).numpy()  # [K, B, latent]
    log_p_x_given_z = np.stack([model.decoder(z_k).log_prob(x).numpy() for z_k in z])
    log_q, log_p = posterior.log_prob(z).numpy(), model.prior.log_prob(z).numpy()
    log_weights = (log_p_x_given_z + log_p - log_q).astype(np.float64)
    got = loaded.signatures["score"](x=tf.constant(x))
    np.testing.assert_allclose(got["kl"], np.mean(log_q - log_p, 0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["log_likelihood"], np.logaddexp.reduce(log_weights, 0) - math.log(num_samples),
                               rtol=1e-4, atol=1e-3)
    sample = loaded.signatures["sample"](seed=tf.constant([7], tf.int64))
    np.testing.assert_allclose(sample["x_mean"], model.sample(1, seed=7), atol=1e-5)


def test_cli_flags_reach_the_config():
    import argparse
    from tfp_vae import cli
    parser = argparse.ArgumentParser()
    cli.add_config_flags(parser)
    config = cli.config_from_flags(parser.parse_args(["--latent-dim", "8", "--top-latent-dim", "3",
                                                      "--conditional-units", "20"]))
    assert (config.model.top_latent_dim, config.model.conditional_units) == (3, 20)
    assert tfp_vae.likelihood.MODELS["resnet_hvamp"].config.model.top_latent_dim == 40
