from tfp_vae import _env  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae.config import ModelConfig
from tfp_vae.model import VAE

from helpers import one_training_step

tfd = tfp.distributions


def tiny_config(**overrides):
    values = dict(latent_dim=3, hidden_units=(16,), conv_filters=(4, 8))
    values.update(overrides)
    return ModelConfig(**values)


def binary_images(count, shape=(28, 28, 1), seed=0):
    return (np.random.default_rng(seed).random((count, *shape)) < 0.3).astype(np.float32)


def independent_terms(model, x, z):
    posterior = model.encoder(x)
    kl = tfd.kl_divergence(posterior, tfd.MultivariateNormalDiag(loc=tf.zeros(model.config.latent_dim)))
    log_likelihood = model.decoder(z).log_prob(x)
    return log_likelihood.numpy(), kl.numpy(), posterior


@pytest.mark.parametrize("beta", [1.0, 2.5])
@pytest.mark.parametrize("architecture,likelihood,shape,gated", [
    ("mlp", "bernoulli", (28, 28, 1), False),
    ("mlp", "bernoulli", (28, 28, 1), True),
    ("conv", "continuous_bernoulli", (32, 32, 3), False),
    ("resnet", "bernoulli", (28, 28, 1), False),
])
def test_fit_minimises_mean_negative_log_likelihood_plus_beta_kl(beta, architecture, likelihood, shape, gated):
    tf_keras.utils.set_random_seed(1)
    model = VAE(tiny_config(architecture=architecture, likelihood=likelihood, image_shape=shape, gated=gated))
    model.compile(tf_keras.optimizers.SGD(0.0), beta=beta, run_eagerly=True)
    x = binary_images(16, shape) if likelihood == "bernoulli" else \
        np.random.default_rng(0).random((16, *shape)).astype(np.float32)
    logs, z = one_training_step(model, x)
    log_likelihood, kl, _ = independent_terms(model, x, z)
    expected_loss = np.mean(-log_likelihood + beta * kl)
    np.testing.assert_allclose(logs["loss"], expected_loss, rtol=1e-4)
    np.testing.assert_allclose(logs["kl"], np.mean(kl), rtol=1e-4)
    np.testing.assert_allclose(logs["reconstruction"], np.mean(log_likelihood), rtol=1e-4)
    np.testing.assert_allclose(logs["elbo"], np.mean(log_likelihood - kl), rtol=1e-4)


@pytest.mark.parametrize("model_fields", [
    dict(),  # N(0, I)
    dict(prior="vamp", prior_components=3, architecture="resnet"),
    dict(latent_dim=4, top_latent_dim=2, conditional_units=8),  # two levels: q and p of both
])
def test_importance_samples_train_on_the_k_sample_bound(model_fields):
    """loss = -mean_b log (1/k) sum_i p(x_b|z_i) p(z_i) / q(z_i|x_b), over the k * B latents the
    decoder saw, each term recomputed here from the distributions themselves."""
    tf_keras.utils.set_random_seed(2)
    samples, batch = 4, 6
    model = VAE(tiny_config(**model_fields))
    model.compile(tf_keras.optimizers.SGD(0.0), importance_samples=samples, run_eagerly=True)
    x = binary_images(batch, seed=3)
    logs, z = one_training_step(model, x)
    assert z.shape == (samples * batch, model.config.latent_dim)
    latents = tf.reshape(z, [samples, batch, -1])  # sample-major, as the decoder saw them
    reconstruction = model.decoder(z).log_prob(np.tile(x, (samples, 1, 1, 1))).numpy().reshape(samples, batch)
    posterior = model.posterior(x)
    log_weights = reconstruction + model.prior.log_prob(latents).numpy() - posterior.log_prob(latents).numpy()
    bound = np.log(np.mean(np.exp(log_weights - log_weights.max(0)), 0)) + log_weights.max(0)
    np.testing.assert_allclose(logs["iwae"], np.mean(bound), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], -np.mean(bound), rtol=1e-4)
    np.testing.assert_allclose(logs["elbo"], np.mean(log_weights), rtol=1e-4)
    np.testing.assert_allclose(logs["reconstruction"], np.mean(reconstruction), rtol=1e-4)
    assert logs["iwae"] >= logs["elbo"]  # log-mean-exp >= mean, draw by draw


def test_importance_weighted_training_improves_the_bound():
    tf_keras.utils.set_random_seed(4)
    model = VAE(tiny_config())
    model.compile(tf_keras.optimizers.Adam(3e-3), importance_samples=3)
    history = model.fit(binary_images(256), batch_size=32, epochs=5, verbose=0).history
    assert set(history) == {"loss", "elbo", "reconstruction", "kl", "iwae"}
    assert history["iwae"][-1] > history["iwae"][0] + 20, history["iwae"]


@pytest.mark.parametrize("architecture,full_resolution_filters,dtype", [
    ("mlp", 0, "float16"), ("conv", 0, "float16"), ("resnet", 0, "float16"), ("resnet", 4, "float16"),
    ("mlp", 0, "bfloat16"), ("resnet", 0, "bfloat16")])
def test_mixed_precision_keeps_the_float32_loss_identity(architecture, full_resolution_filters, dtype):
    # float16/bfloat16 body, float32 variables; the distributions, the KL and the loss stay float32.
    tf_keras.utils.set_random_seed(5)
    model = VAE(tiny_config(architecture=architecture, full_resolution_filters=full_resolution_filters),
                mixed_precision=True, mixed_precision_dtype=dtype)
    model.compile(tf_keras.optimizers.SGD(0.0), beta=1.5, run_eagerly=True)
    # Loss scaling for float16 only: bfloat16 has float32's exponent range.
    assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer) == (dtype == "float16")
    body = [layer for layer in model.encoder.layers + model.decoder.layers if layer.weights]
    assert {layer.compute_dtype for layer in body} == {dtype}
    assert {variable.dtype for variable in model.trainable_variables} == {tf.float32}
    x = binary_images(16)
    logs, z = one_training_step(model, x)
    log_likelihood, kl, posterior = independent_terms(model, x, z)
    assert z.dtype == posterior.dtype == tf.float32
    assert {value.dtype for value in model.objective(x).values()} == {tf.float32}
    np.testing.assert_allclose(logs["loss"], np.mean(-log_likelihood + 1.5 * kl), rtol=1e-4)
    np.testing.assert_allclose(logs["kl"], np.mean(kl), rtol=1e-4)
    np.testing.assert_allclose(logs["reconstruction"], np.mean(log_likelihood), rtol=1e-4)


def test_an_unknown_mixed_precision_dtype_is_refused():
    with pytest.raises(ValueError, match="mixed_precision_dtype must be one of float16, bfloat16; got 'half'"):
        VAE(tiny_config(), mixed_precision=True, mixed_precision_dtype="half")


def test_kl_layer_adds_the_batch_sum_which_the_model_rescales():
    # The trap this guards: KLDivergenceAddLoss(use_exact_kl=True) adds SUM over the batch.
    model = VAE(tiny_config())
    x = binary_images(16)
    posterior = model.encoder(x)
    kl = tfd.kl_divergence(posterior, model.prior)
    np.testing.assert_allclose(model.encoder.losses[0].numpy(), np.sum(kl), rtol=1e-5)
    terms = model.objective(x)
    np.testing.assert_allclose(terms["kl"].numpy(), np.mean(kl), rtol=1e-5)


def test_warmup_ramps_beta_linearly_from_zero():
    tf_keras.utils.set_random_seed(2)
    model = VAE(tiny_config())
    model.compile(tf_keras.optimizers.SGD(0.0), beta=2.0, warmup_steps=4, run_eagerly=True)
    x = binary_images(16)
    logs, z = one_training_step(model, x)  # step 0: beta_t = 0
    log_likelihood, _, _ = independent_terms(model, x, z)
    np.testing.assert_allclose(logs["loss"], -np.mean(log_likelihood), rtol=1e-4)
    weights = []
    for _ in range(5):
        weights.append(float(model.kl_weight()))
        model.fit(x, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_allclose(weights, [0.5, 1.0, 1.5, 2.0, 2.0], rtol=1e-6)


def test_free_bits_loss_is_sum_of_clamped_per_dimension_kl():
    tf_keras.utils.set_random_seed(3)
    model = VAE(tiny_config(latent_dim=4))
    free_bits = 0.3  # between the per-dimension KLs this seed gives, so both branches count
    model.compile(tf_keras.optimizers.SGD(0.0), beta=1.0, free_bits=free_bits, run_eagerly=True)
    x = binary_images(16)
    logs, z = one_training_step(model, x)
    log_likelihood, kl, posterior = independent_terms(model, x, z)
    per_dimension = tfd.kl_divergence(
        tfd.Normal(posterior.mean(), posterior.stddev()), tfd.Normal(0.0, 1.0)).numpy().mean(axis=0)
    expected = -np.mean(log_likelihood) + np.sum(np.maximum(free_bits, per_dimension))
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4)
    np.testing.assert_allclose(logs["kl"], np.mean(kl), rtol=1e-4)  # reported KL stays the true KL
    assert np.any(per_dimension < free_bits) and np.any(per_dimension > free_bits), per_dimension


def test_epoch_metrics_weigh_a_short_last_batch_by_its_size():
    """20 examples in batches of 16 and 4: the epoch's KL (exact, so free of sampling noise) is
    the mean over the 20 examples, not the mean of the two batch means."""
    model = VAE(tiny_config())
    model.compile("adam")
    x = binary_images(20, seed=5)
    posterior = model.posterior(x)
    per_example = tfd.kl_divergence(posterior, model.prior).numpy()
    batch_means = (per_example[:16].mean() + per_example[16:].mean()) / 2
    assert abs(per_example.mean() - batch_means) > 1e-3  # the two weightings differ here
    logs = model.evaluate(x, batch_size=16, return_dict=True, verbose=0)
    np.testing.assert_allclose(logs["kl"], per_example.mean(), rtol=1e-5)


def test_training_improves_the_elbo():
    tf_keras.utils.set_random_seed(4)
    model = VAE(tiny_config())
    model.compile(tf_keras.optimizers.Adam(3e-3))
    x = binary_images(256)
    history = model.fit(x, batch_size=32, epochs=5, verbose=0).history
    assert history["elbo"][-1] > history["elbo"][0] + 20, history["elbo"]


def test_notebook_helpers_shapes_and_determinism():
    model = VAE(tiny_config(architecture="conv", image_shape=(32, 32, 3)))
    x = binary_images(5, (32, 32, 3))
    loc, scale = model.encode(x)
    assert loc.shape == scale.shape == (5, 3)
    assert np.all(scale.numpy() > 0)
    np.testing.assert_array_equal(model.reconstruct(x).numpy(), model.reconstruct(x).numpy())
    decoded = model.decode(np.zeros((2, 3), np.float32)).numpy()
    assert decoded.shape == (2, 32, 32, 3) and np.all((decoded >= 0) & (decoded <= 1))
    np.testing.assert_array_equal(model.sample(4, seed=7).numpy(), model.sample(4, seed=7).numpy())


@pytest.mark.parametrize("arguments,message", [
    (dict(beta=-1.0), "beta"),
    (dict(free_bits=float("nan")), "free_bits"),
    (dict(loss="mse"), "own loss"),
    (dict(importance_samples=3, beta=0.5), "importance_samples 3.*needs beta 1"),
    (dict(importance_samples=3, warmup_steps=10), "no warm-up"),
    (dict(importance_samples=0), "importance_samples must be a positive integer"),
    (dict(importance_samples=2.5), "importance_samples must be a positive integer"),
])
def test_compile_rejects_bad_objective_settings(arguments, message):
    with pytest.raises(ValueError, match=message):
        VAE(tiny_config()).compile("adam", **arguments)


@pytest.mark.parametrize("model_fields,message", [
    (dict(prior="mixture", prior_components=3), "needs prior 'standard_normal'"),
    (dict(top_latent_dim=2), "two-level model"),
])
def test_compile_refuses_free_bits_where_they_are_undefined(model_fields, message):
    """Free bits measure KL_d to N(0, 1): Config refuses them for a learnt prior or two levels,
    and so does a VAE built directly (the Python API), instead of penalising the wrong KL."""
    model = VAE(tiny_config(**model_fields))
    model.compile("adam")  # without free bits, fine
    with pytest.raises(ValueError, match=message):
        model.compile("adam", free_bits=0.5)


def test_sample_rejects_non_positive_count():
    with pytest.raises(ValueError, match="num_samples"):
        VAE(tiny_config()).sample(0)
