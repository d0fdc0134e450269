"""log p(x_b | z_(s, b)) over sample-major rows, fused Bernoulli path and general path against tfd."""
from tfp_vae import _env  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_vae import rows

tfd = tfp.distributions


def _tiled_log_prob(likelihood, x, samples):
    # The definition: row s * batch + b holds draw s of example b, so x is tiled sample-major.
    return likelihood.log_prob(np.tile(x, (samples,) + (1,) * (x.ndim - 1))).numpy().reshape(samples, len(x))


@pytest.mark.parametrize("binary", [True, False])
def test_fast_bernoulli_log_likelihood_equals_tfp(binary):
    rng = np.random.default_rng(0)
    samples, batch = 3, 4
    logits = tf.constant(rng.normal(size=(samples * batch, 5, 5, 1)) * 3, tf.float32)
    x = rng.random((batch, 5, 5, 1)).astype(np.float32)
    x = (x < 0.5).astype(np.float32) if binary else x
    likelihood = tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32), 3)
    assert rows._bernoulli_logits(likelihood, 3) is not None  # the fast path is taken
    fast = rows.log_likelihood_rows(likelihood, tf.constant(x), samples)
    np.testing.assert_allclose(fast.numpy(), _tiled_log_prob(likelihood, x, samples), rtol=1e-5, atol=1e-3)


def test_other_likelihoods_take_the_general_path_and_keep_rows_apart():
    rng = np.random.default_rng(1)
    samples, batch = 2, 3
    loc = tf.constant(rng.normal(size=(samples * batch, 4, 4, 1)), tf.float32)
    likelihood = tfd.Independent(tfd.Normal(loc, 0.5), 3)
    x = rng.normal(size=(batch, 4, 4, 1)).astype(np.float32)
    assert rows._bernoulli_logits(likelihood, 3) is None
    general = rows.log_likelihood_rows(likelihood, tf.constant(x), samples).numpy()
    np.testing.assert_allclose(general, _tiled_log_prob(likelihood, x, samples), rtol=1e-5)
    # A Bernoulli over only part of the event is not the whole-image likelihood: no fast path.
    partial = tfd.Independent(tfd.Bernoulli(logits=loc, dtype=tf.float32), 2)
    assert rows._bernoulli_logits(partial, 3) is None
    # Swapping two examples' images must move their values: rows are matched to examples.
    swapped = rows.log_likelihood_rows(likelihood, tf.constant(x[[1, 0, 2]]), samples).numpy()
    assert not np.allclose(general[:, :2], swapped[:, :2])


def test_an_empty_replica_batch_gives_an_empty_result():
    likelihood = tfd.Independent(tfd.Bernoulli(logits=tf.zeros([0, 5, 5, 1]), dtype=tf.float32), 3)
    result = tf.function(lambda x: rows.log_likelihood_rows(likelihood, x, 4))(tf.zeros([0, 5, 5, 1]))
    assert result.shape == (4, 0)
