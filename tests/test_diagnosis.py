"""Aggregate-posterior estimators against closed forms, quadrature and known extremes."""
from tfp_vae import _env  # noqa: F401

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae import diagnosis
from tfp_vae.config import ModelConfig
from tfp_vae.model import VAE
from tfp_vae.prior import SCALE_FLOOR
from test_evaluation import LinearGaussian  # tests/ is on sys.path under pytest

tfd = tfp.distributions


def dataset(x, labels=None, batch_size=64):
    items = x if labels is None else (x, np.asarray(labels, np.int64))
    return tf.data.Dataset.from_tensor_slices(items).batch(batch_size)


def quadrature(loc, variance, half_width=8.0, points=801):
    """Independent high-precision (I_q, KL(q(z) || N(0, I)), total mass) of the finite mixture
    q(z) = mean_n N(loc_n, diag variance_n) in 2-D, on a grid: a diagonal Gaussian factorises per
    dimension, so the mixture density on the grid is one matrix product."""
    grid = np.linspace(-half_width, half_width, points)
    step = grid[1] - grid[0]
    factors = [np.exp(-0.5 * (grid[None] - loc[:, [d]]) ** 2 / variance[:, [d]])
               / np.sqrt(2 * np.pi * variance[:, [d]]) for d in range(2)]
    density = factors[0].T @ factors[1] / len(loc)
    entropy = -np.sum(density * np.log(np.maximum(density, 1e-300))) * step ** 2
    own_entropy = np.mean(0.5 * np.sum(np.log(2 * np.pi * math.e * variance), 1))
    log_prior = -math.log(2 * math.pi) - 0.5 * np.mean(np.sum(loc ** 2 + variance, 1))
    return entropy - own_entropy, -entropy - log_prior, np.sum(density) * step ** 2


def closed_form_mean_kl(loc, variance):
    return np.mean(0.5 * np.sum(loc ** 2 + variance - 1 - np.log(variance), 1))


def within(estimate, stderr, truth, bias=0.0):
    return abs(estimate - truth) <= 4 * stderr + bias


@pytest.mark.parametrize("loc_factor,scale_factor", [(1.3, 0.7), (0.3, 0.5)])
def test_finite_mixture_estimates_match_quadrature_and_catch_mistakes(loc_factor, scale_factor):
    model = LinearGaussian()
    x = model.sample_data(200)
    loc, variance = model.posterior_moments(x, loc_factor, scale_factor)
    information, marginal, mass = quadrature(loc, variance)
    assert mass == pytest.approx(1.0, abs=1e-6)  # the grid holds the whole mixture
    encoder = model.encoder(loc_factor, scale_factor)
    result = diagnosis.diagnose(encoder, model.prior, dataset(x, batch_size=64), samples_per_example=20)
    summary = result.summary

    assert summary["kl_is_exact"]
    assert summary["mean_kl"] == pytest.approx(closed_form_mean_kl(loc, variance), rel=1e-5)
    assert within(summary["mutual_information"], summary["mutual_information_stderr"], information)
    assert within(summary["marginal_kl"], summary["marginal_kl_stderr"], marginal)
    identity = summary["identity"]
    assert identity["within_4_stderr"] and identity["mean_kl"] == summary["mean_kl"]
    assert summary["mutual_information"] <= summary["mutual_information_upper_bound"] == math.log(200)

    # An off-by-log-N mixture (log-sum-exp without -log N) is far outside the tolerance.
    tolerance = 4 * summary["mutual_information_stderr"]
    assert abs(summary["mutual_information"] + math.log(200) - information) > 20 * tolerance
    assert abs(summary["marginal_kl"] - math.log(200) - marginal) > 20 * tolerance
    # So is the batch-local mistake: q(z) as the mixture of the 5 posteriors in z's own batch.
    posteriors = result.posteriors
    batch = posteriors.owner // 5
    pairwise = -0.5 * np.sum((posteriors.latents[:, None] - loc[None]) ** 2 / variance[None]
                             + np.log(2 * np.pi * variance[None]), -1)
    in_batch = batch[:, None] == (np.arange(200) // 5)[None]
    local = np.logaddexp.reduce(np.where(in_batch, pairwise, -np.inf), 1) - math.log(5)
    assert abs(np.mean(posteriors.log_posterior - local) - information) > 2 * tolerance


@pytest.mark.parametrize("loc_factor,scale_factor", [(1.0, 1.0), (1.3, 0.7)])
def test_population_closed_forms(loc_factor, scale_factor):
    # x ~ p(x): the aggregate posterior of a linear-Gaussian encoder is Gaussian,
    # N(0, loc_factor^2 (I - V) + scale_factor^2 V) with V the exact posterior variance, so
    # I_q = 0.5 log det Cov(z) / det Var(z|x) and KL(q(z) || p(z)) is a Gaussian KL (0 when exact).
    model = LinearGaussian()
    exact_variance = model.posterior_variance
    covariance = loc_factor ** 2 * (1 - exact_variance) + scale_factor ** 2 * exact_variance
    information = 0.5 * np.sum(np.log(covariance / (scale_factor ** 2 * exact_variance)))
    marginal = 0.5 * np.sum(covariance - 1 - np.log(covariance))
    x = model.sample_data(2000, seed=5)
    summary = diagnosis.diagnose(model.encoder(loc_factor, scale_factor), model.prior,
                                 dataset(x, batch_size=500)).summary
    # The mixture of N = 2000 posteriors estimates I_q with an O(1/N) bias (about -0.02 here).
    assert within(summary["mutual_information"], summary["mutual_information_stderr"], information, 0.03)
    assert within(summary["marginal_kl"], summary["marginal_kl_stderr"], marginal, 0.01)
    # Leaving each z's own posterior out: a lower estimate, here (N large, wide posteriors) close too.
    assert within(summary["marginal_kl_leave_one_out"], summary["marginal_kl_leave_one_out_stderr"], marginal, 0.03)
    assert summary["marginal_kl_leave_one_out"] <= summary["marginal_kl"]
    assert within(summary["mean_kl"], summary["mean_kl_stderr"], information + marginal)
    assert summary["fitted_gaussian_kl"] == pytest.approx(marginal, abs=0.02)
    np.testing.assert_allclose(np.diag(summary["covariance"]), covariance, atol=0.1)
    assert summary["active_units"] == 2
    if loc_factor == 1.0:  # q(z) = p(z): no holes, 1% below the 1st percentile by construction
        assert summary["prior_holes"]["fraction_below_threshold"] < 0.03


def test_with_narrow_posteriors_the_two_marginal_kl_estimates_bracket_the_population_value():
    # Posteriors 20x narrower than exact, N = 200: the true I_q (about 7.3 nats) exceeds log N = 5.3,
    # so the estimate with each z's own component reads the marginal KL far too high, and the
    # leave-one-out one reads it low; the population's closed form lies between them.
    model = LinearGaussian()
    loc_factor, scale_factor = 1.0, 0.05
    exact_variance = model.posterior_variance
    covariance = loc_factor ** 2 * (1 - exact_variance) + scale_factor ** 2 * exact_variance
    information = 0.5 * np.sum(np.log(covariance / (scale_factor ** 2 * exact_variance)))
    marginal = 0.5 * np.sum(covariance - 1 - np.log(covariance))
    assert information > math.log(200) + 1
    summary = diagnosis.diagnose(model.encoder(loc_factor, scale_factor), model.prior,
                                 dataset(model.sample_data(200, seed=6))).summary
    low, high = summary["marginal_kl_leave_one_out"], summary["marginal_kl"]
    assert low - 4 * summary["marginal_kl_leave_one_out_stderr"] <= marginal
    assert high - 4 * summary["marginal_kl_stderr"] >= marginal + 1.0  # inflated by the capped I_q
    assert summary["mutual_information"] <= math.log(200)
    assert summary["mutual_information_leave_one_out"] > math.log(200)  # not capped


def test_mixture_densities_are_batching_invariant_and_match_brute_force():
    rng = np.random.default_rng(0)
    model = LinearGaussian()
    x = model.sample_data(37)
    labels = rng.integers(0, 3, 37)
    latents = rng.normal(size=(50, 2)).astype(np.float32)
    owners = np.where(np.arange(50) < 40, rng.integers(0, 37, 50), -1)
    latent_labels = np.where(owners >= 0, labels[np.maximum(owners, 0)], -1)
    loc, variance = model.posterior_moments(x)
    pairwise = -0.5 * np.sum((latents[:, None] - loc[None]) ** 2 / variance + np.log(2 * np.pi * variance), -1)
    expected_all = np.logaddexp.reduce(pairwise, 1) - math.log(37)
    leave_out = np.where(owners[:, None] == np.arange(37)[None], -np.inf, pairwise)
    expected_leave_one_out = np.logaddexp.reduce(leave_out, 1) - np.log(37 - (owners >= 0))
    same = np.where(latent_labels[:, None] == labels[None], pairwise, -np.inf)
    class_size = np.sum(latent_labels[:, None] == labels[None], 1)
    expected_same = np.logaddexp.reduce(same, 1) - np.log(np.maximum(class_size, 1))
    for batch_size, pair_budget in [(37, 10 ** 6), (5, 11), (1, 1)]:
        got = diagnosis.mixture_log_densities(
            model.encoder(), x, latents, owners=owners, latent_labels=latent_labels,
            component_labels=labels, batch_size=batch_size, pair_budget=pair_budget)
        np.testing.assert_allclose(got["all"], expected_all, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got["leave_one_out"], expected_leave_one_out, rtol=1e-5, atol=1e-4)
        labelled = latent_labels >= 0
        np.testing.assert_allclose(got["same_label"][labelled], expected_same[labelled], rtol=1e-5, atol=1e-4)
        assert np.all(np.isnan(got["same_label"][~labelled]))


def test_moments_per_dimension_and_per_class():
    model = LinearGaussian()
    x = model.sample_data(300)
    loc, variance = model.posterior_moments(x)
    labels = (loc[:, 0] > 0).astype(np.int64)  # the class is what z_1 encodes
    summary = diagnosis.diagnose(model.encoder(), model.prior, dataset(x, labels),
                                 samples_per_example=10).summary
    covariance = np.cov(loc.T, bias=True) + np.diag(variance.mean(0))
    np.testing.assert_allclose(summary["covariance"], covariance, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(summary["mean"], loc.mean(0), atol=1e-5)
    mean = loc.mean(0)
    fitted = 0.5 * (np.trace(covariance) + mean @ mean - 2 - np.linalg.slogdet(covariance)[1])
    assert summary["fitted_gaussian_kl"] == pytest.approx(fitted, rel=1e-4)
    # Diagonal Gaussians: the per-dimension KLs add up to the total.
    assert sum(summary["per_dimension"]["mean_kl"]) == pytest.approx(summary["mean_kl"], rel=1e-5)
    np.testing.assert_allclose(summary["posterior_mean_variance"], loc.var(0), rtol=1e-4)

    # Per class: each class's mixture against quadrature; classes split along z_1, so the
    # code carries about log 2 nats of class information and each class is far from N(0, I).
    assert set(summary["per_class"]) == {"0", "1"}
    for label, group in summary["per_class"].items():
        chosen = labels == int(label)
        information, marginal, _ = quadrature(loc[chosen], variance[chosen])
        assert group["examples"] == int(chosen.sum()) and group["identity"]["within_4_stderr"]
        assert within(group["mutual_information"], group["mutual_information_stderr"], information)
        assert within(group["marginal_kl"], group["marginal_kl_stderr"], marginal)
        assert group["marginal_kl"] > summary["marginal_kl"] + 0.3
    assert summary["class_information_upper_bound"] == pytest.approx(math.log(2))
    assert 0.3 < summary["class_information"] <= math.log(2)


def test_deterministic_encoder_reaches_the_log_n_bound():
    model = LinearGaussian()
    x = model.sample_data(100)
    summary = diagnosis.diagnose(model.encoder(1.0, 0.001), model.prior, dataset(x)).summary
    assert summary["mutual_information"] == pytest.approx(math.log(100), abs=1e-3)


def test_posterior_equal_to_prior_gives_zero_information():
    def encoder(x):
        return tfd.MultivariateNormalDiag(loc=tf.zeros([tf.shape(x)[0], 3]))
    x = np.random.default_rng(0).normal(size=(120, 4)).astype(np.float32)
    summary = diagnosis.diagnose(encoder, tfd.MultivariateNormalDiag(loc=tf.zeros(3)),
                                 dataset(x, np.arange(120) % 3)).summary
    for name in ("mean_kl", "mutual_information", "marginal_kl", "fitted_gaussian_kl"):
        assert abs(summary[name]) < 1e-5, name
    assert summary["active_units"] == 0 and summary["class_information"] == pytest.approx(0, abs=1e-5)
    assert summary["prior_holes"]["fraction_below_threshold"] < 0.05


def random_images(count, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((count, 28, 28, 1)) < rng.random((count, 1, 1, 1))).astype(np.float32)


def test_vae_with_large_beta_collapses_and_untrained_vae_obeys_the_identity():
    tf_keras.utils.set_random_seed(0)
    images, labels = random_images(512), np.arange(512) % 4
    untrained = VAE(ModelConfig(latent_dim=4, hidden_units=(16,)))
    held_out = dataset(images[:256], labels[:256])
    summary = diagnosis.diagnose(untrained.encoder, untrained.prior, held_out).summary
    # An untrained encoder is a random function of x, not a collapsed one: it carries information
    # (all units active on these images); the identity and the bound hold all the same.
    assert summary["identity"]["within_4_stderr"]
    assert 0 < summary["mutual_information"] <= math.log(256)

    collapsed = VAE(ModelConfig(latent_dim=4, hidden_units=(16,)))
    collapsed.compile(tf_keras.optimizers.Adam(1e-2), beta=100.0)
    collapsed.fit(images, batch_size=64, epochs=8, verbose=0)
    summary = diagnosis.diagnose(collapsed.encoder, collapsed.prior, held_out).summary
    assert summary["active_units"] == 0
    assert abs(summary["mutual_information"]) < 0.01
    # Every posterior is the same distribution: all the KL left is the marginal KL.
    assert summary["marginal_kl"] == pytest.approx(summary["mean_kl"], abs=0.01)


def test_vae_whose_posterior_is_the_prior():
    model = VAE(ModelConfig(latent_dim=3, hidden_units=(8,)))
    model(random_images(1))
    layer = model.encoder.get_layer("posterior_params")
    kernel, bias = layer.get_weights()
    scale_one = np.log(np.expm1(1.0 - SCALE_FLOOR))  # softplus^-1, so scale = 1 exactly
    layer.set_weights([np.zeros_like(kernel), np.concatenate([np.zeros(3), np.full(3, scale_one)])])
    summary = diagnosis.diagnose(model.encoder, model.prior, dataset(random_images(64))).summary
    assert abs(summary["mutual_information"]) < 1e-5 and abs(summary["mean_kl"]) < 1e-5
    assert summary["active_units"] == 0


def test_a_non_gaussian_prior_works_with_monte_carlo_kl():
    # A mixture prior (what learnable priors will look like): no closed-form KL, no fitted KL.
    model = LinearGaussian()
    prior = tfd.MixtureSameFamily(tfd.Categorical(logits=[0.0, 0.0]),
                                  tfd.MultivariateNormalDiag(loc=[[-1.0, 0.0], [1.0, 0.0]]))
    summary = diagnosis.diagnose(model.encoder(), prior, dataset(model.sample_data(300)),
                                 samples_per_example=4).summary
    assert not summary["kl_is_exact"] and summary["fitted_gaussian_kl"] is None
    assert summary["identity"]["within_4_stderr"]
    assert summary["per_dimension"]["active"] == [True, True]


def test_prior_holes_found_when_q_is_too_narrow():
    model = LinearGaussian()
    summary = diagnosis.diagnose(model.encoder(0.3, 0.5), model.prior, dataset(model.sample_data(400))).summary
    holes = summary["prior_holes"]
    assert holes["fraction_below_threshold"] > 0.3 and holes["prior_to_aggregate_kl"] > 1.0


def test_bad_arguments_are_rejected():
    model = LinearGaussian()
    with pytest.raises(ValueError, match="samples_per_example"):
        diagnosis.diagnose(model.encoder(), model.prior, dataset(model.sample_data(8)), samples_per_example=0)
    with pytest.raises(ValueError, match="no examples"):
        diagnosis.diagnose(model.encoder(), model.prior, dataset(model.sample_data(8)[:0]))
