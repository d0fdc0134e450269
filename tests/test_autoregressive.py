from tfp_vae import _env  # noqa: F401

import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_vae
from tfp_vae import autoregressive, data, evaluation, likelihood
from tfp_vae.config import ModelConfig
from tfp_vae.model import VAE

from helpers import one_training_step

tfd = tfp.distributions
SHAPE = (2, 2, 1)
EVERY_IMAGE = np.array(list(itertools.product([0.0, 1.0], repeat=4)), np.float32).reshape(16, *SHAPE)


def small_model(seed=0, **overrides):
    tf_keras.utils.set_random_seed(seed)
    values = dict(image_shape=SHAPE, latent_dim=2, hidden_units=(8,), autoregressive_units=(12, 12))
    values.update(overrides)
    return VAE(ModelConfig(**values))


def trained_small_model():
    """A model after real Adam steps, so that the MADE weights have moved away from their init."""
    model = small_model()
    model.compile(tf_keras.optimizers.Adam(5e-2))
    data = EVERY_IMAGE[np.random.default_rng(0).integers(0, 16, 256)]
    model.fit(data, batch_size=32, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained():
    return trained_small_model()


def total_probability(model, z):
    """sum over all 16 binary 2x2 images of p(x|z), for each z."""
    rows = tf.repeat(z, len(EVERY_IMAGE), axis=0)
    log_prob = model.likelihood(rows).log_prob(np.tile(EVERY_IMAGE, (len(z), 1, 1, 1)))
    return tf.reduce_sum(tf.reshape(tf.exp(log_prob), [len(z), len(EVERY_IMAGE)]), 1).numpy()


def test_p_x_given_z_sums_to_one_over_every_image_after_training(trained):
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32) * 2
    np.testing.assert_allclose(total_probability(trained, z), 1.0, atol=1e-5)


@pytest.mark.parametrize("architecture", ["conv", "resnet"])
def test_a_conv_body_feeds_the_made_the_same_way(architecture):
    model = small_model(seed=1, architecture=architecture, conv_filters=(4,))
    z = np.random.default_rng(2).normal(size=(3, 2)).astype(np.float32)
    np.testing.assert_allclose(total_probability(model, z), 1.0, atol=1e-5)


def test_each_pixel_depends_only_on_the_pixels_before_it_after_training(trained):
    likelihood = trained.likelihood(tf.repeat(tf.constant([[0.3, -1.0]]), 16, axis=0))
    conditionals = likelihood.tensor_distribution.distribution_fn
    x = tf.constant(EVERY_IMAGE)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.reshape(conditionals(x).distribution.logits, [16, 4])
    jacobians = tf.reshape(tape.batch_jacobian(logits, x), [16, 4, 4]).numpy()  # [image, pixel, input pixel]
    upper = np.triu_indices(4)
    assert np.all(jacobians[:, upper[0], upper[1]] == 0.0), jacobians
    # ...and the network does look at earlier pixels (for some image: ReLUs switch off for others).
    lower = np.tril_indices(4, -1)
    assert np.abs(jacobians[:, lower[0], lower[1]]).max() > 1e-3, jacobians


def test_fit_minimises_minus_the_autoregressive_log_prob_plus_the_kl():
    model = small_model(seed=4)
    model.compile(tf_keras.optimizers.SGD(0.0), run_eagerly=True)
    x = EVERY_IMAGE[[1, 6, 9, 15, 0, 3]]
    logs, z = one_training_step(model, x)
    log_prob = model.likelihood(z).log_prob(x).numpy()
    posterior = model.posterior(x)
    kl = tfd.kl_divergence(posterior, tfd.MultivariateNormalDiag(loc=tf.zeros(2))).numpy()
    assert logs["reconstruction"] == pytest.approx(log_prob.mean(), rel=1e-5)
    assert logs["loss"] == pytest.approx(-log_prob.mean() + kl.mean(), rel=1e-5)


def test_decode_sample_and_reconstruct_semantics(trained):
    z = np.random.default_rng(3).normal(size=(5, 2)).astype(np.float32)
    decoded = trained.decode(z, seed=3).numpy()
    assert decoded.shape == (5, *SHAPE) and np.all((decoded >= 0) & (decoded <= 1))
    np.testing.assert_array_equal(decoded, trained.decode(z, seed=3).numpy())
    # A row depends on its z and the seed only, not on its place in the batch.
    np.testing.assert_allclose(trained.decode(z[::-1], seed=3).numpy()[::-1], decoded, atol=1e-6)
    np.testing.assert_allclose(trained.decode(z[2:3], seed=3).numpy()[0], decoded[2], atol=1e-6)

    first = trained.sample(6, seed=3).numpy()
    np.testing.assert_array_equal(first, trained.sample(6, seed=3).numpy())
    assert not np.array_equal(first, trained.sample(6, seed=4).numpy())
    np.testing.assert_allclose(trained.sample(1, seed=3).numpy()[0], first[0], atol=1e-6)  # row 0's stream
    np.testing.assert_array_equal(trained.sample(2, seed=tf.constant([3, 0])).numpy(), first[:2])
    with pytest.raises(ValueError, match="seed"):
        trained.decode(z, seed=-1)

    # reconstruct: teacher-forced p(x_i = 1 | x_<i, z), whose Bernoulli factors are log p(x|z).
    x = EVERY_IMAGE[[3, 9, 14]]
    probabilities = trained.reconstruct(x).numpy().astype(np.float64)
    factors = np.where(x == 1, np.log(probabilities), np.log1p(-probabilities)).reshape(3, -1).sum(1)
    loc, _ = trained.encode(x)
    np.testing.assert_allclose(factors, trained.likelihood(loc).log_prob(x).numpy(), rtol=1e-5)


@pytest.fixture(scope="module")
def correlated():
    """Data of two images only, 0000 and 1111, and a KL weight that keeps z from telling them
    apart: the MADE alone must carry that all four pixels agree, so p(x|z) is far from factorised."""
    model = small_model(seed=5)
    model.compile(tf_keras.optimizers.Adam(3e-2), beta=20.0)
    data = EVERY_IMAGE[np.random.default_rng(5).choice([0, 15], 512)]
    model.fit(data, batch_size=64, epochs=8, verbose=0)
    return model


def test_sample_path_draws_from_p_x_given_z(correlated):
    z = tf.constant([[0.5, 0.5]])
    expected = np.exp(correlated.likelihood(tf.repeat(z, 16, axis=0)).log_prob(EVERY_IMAGE).numpy())
    bits = EVERY_IMAGE.reshape(16, 4)
    marginals = expected @ bits  # p(x_i = 1)
    factorised = np.prod(np.where(bits == 1, marginals, 1 - marginals), axis=1)
    # The test has power: a sampler that ignored earlier pixels would draw `factorised`.
    assert 0.5 * np.abs(expected - factorised).sum() > 0.2, (expected, factorised)
    likelihood = correlated.likelihood(tf.repeat(z, 4000, axis=0))
    noise = autoregressive.pixel_noise([4000, *SHAPE], [7, 7])
    x, _ = autoregressive.sample_path(likelihood, noise)
    codes = (x.numpy().reshape(-1, 4) @ np.array([8, 4, 2, 1])).astype(int)
    frequencies = np.bincount(codes, minlength=16) / len(codes)
    assert np.abs(frequencies - expected).max() < 0.03, (frequencies, expected)  # one pass: 0.47 off
    # Every pixel is final: one more pass over the path changes nothing.
    again = tf.cast(noise < likelihood.tensor_distribution.distribution_fn(x).mean(), tf.float32)
    np.testing.assert_array_equal(again.numpy(), x.numpy())


def test_importance_sampled_log_likelihood_bounds_the_elbo(trained):
    dataset = tf.data.Dataset.from_tensor_slices(EVERY_IMAGE).batch(8)
    summary = evaluation.evaluate(trained.encoder, trained.decoder, trained.prior, dataset, 64, verbose=0)
    assert np.isfinite(summary["log_likelihood"])
    assert summary["elbo"] <= summary["log_likelihood"] < 0


@pytest.mark.parametrize("overrides,message", [
    (dict(autoregressive_units=(0,)), "autoregressive_units"),
    (dict(likelihood="continuous_bernoulli"), "bernoulli"),
])
def test_config_rejects_bad_autoregressive_settings(overrides, message):
    values = dict(autoregressive_units=(8,))
    values.update(overrides)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**values)


def test_the_registered_model_runs_the_protocol_and_reloads_with_its_made_weights(tmp_path):
    # mlp_made shrunk: train, evaluate by importance sampling, the aggregate-posterior report.
    config = likelihood.MODELS["mlp_made"].config.replace(
        model={"latent_dim": 4, "hidden_units": (32,), "autoregressive_units": (32,)},
        data={"train_examples": 512, "validation_examples": 128},
        training={"epochs": 2, "batch_size": 64, "warmup_epochs": 0.5})
    workdir = str(tmp_path / "run")
    row = likelihood.run("tiny_made", workdir, config=config, num_samples=8, examples=200, verbose=0)
    assert row["status"] == "done" and row["test_examples"] == 200
    assert 100 < row["test_nll"] <= -row["test_elbo"] + 1e-3
    assert os.path.exists(os.path.join(workdir, "report.md"))
    assert json.load(open(os.path.join(workdir, "config.json")))["model"]["autoregressive_units"] == [32]

    model, fresh = tfp_vae.load(workdir), VAE(config.model)
    x = next(iter(data.input_pipeline(config.data, "test", 64, shuffle=False)))
    z = model.encode(x)[0]
    trained_log_prob = model.likelihood(z).log_prob(x).numpy().mean()
    # The reloaded MADE and decoder are the trained ones (2 short epochs: ~20 nats better than the
    # initial ~784 log 2 = 543 nats).
    assert trained_log_prob > fresh.likelihood(fresh.encode(x)[0]).log_prob(x).numpy().mean() + 10
