"""The importance-weighted log-likelihood, checked against a linear-Gaussian model's closed forms."""
from tfp_vae import _env  # noqa: F401

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae import evaluation
from tfp_vae.config import Config, ModelConfig, save_config
from tfp_vae.model import VAE
from tfp_vae.checkpoint import save_weights
from tfp_vae.training import build_model

tfd = tfp.distributions
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class LinearGaussian:
    """Probabilistic PCA: p(z) = N(0, I), p(x|z) = N(W z + b, noise^2 I).

    W = U diag(scales) with orthonormal U, so the exact posterior
    q(z|x) = N(gain (x - b), diag(noise^2 / (scales^2 + noise^2))), gain = Var W^T / noise^2,
    is diagonal: a MultivariateNormalDiag like the VAE's. `encoder(loc_factor, scale_factor)`
    distorts it to a still-Gaussian, no longer exact, posterior.
    """

    def __init__(self, data_dim=5, scales=(1.0, 0.6), noise=0.5, seed=0):
        rng = np.random.default_rng(seed)
        self.scales = np.asarray(scales, np.float64)
        self.latent_dim = len(scales)
        basis = np.linalg.qr(rng.normal(size=(data_dim, self.latent_dim)))[0]
        self.weights = basis * self.scales
        self.bias = rng.normal(size=data_dim)
        self.noise = noise
        self.posterior_variance = noise ** 2 / (self.scales ** 2 + noise ** 2)
        self.gain = self.posterior_variance[:, None] * self.weights.T / noise ** 2
        self.prior = tfd.MultivariateNormalDiag(loc=tf.zeros(self.latent_dim))

    def posterior_moments(self, x, loc_factor=1.0, scale_factor=1.0):
        loc = loc_factor * (np.asarray(x, np.float64) - self.bias) @ self.gain.T
        return loc, np.broadcast_to(scale_factor ** 2 * self.posterior_variance, loc.shape)

    def encoder(self, loc_factor=1.0, scale_factor=1.0):
        gain = tf.constant(loc_factor * self.gain.T, tf.float32)
        bias = tf.constant(self.bias, tf.float32)
        scale = tf.constant(scale_factor * np.sqrt(self.posterior_variance), tf.float32)

        def encode(x):
            loc = (tf.convert_to_tensor(x, tf.float32) - bias) @ gain
            return tfd.MultivariateNormalDiag(loc=loc, scale_diag=tf.broadcast_to(scale, tf.shape(loc)))
        return encode

    def decoder(self, z):
        loc = z @ tf.constant(self.weights.T, tf.float32) + tf.constant(self.bias, tf.float32)
        return tfd.Independent(tfd.Normal(loc, self.noise), reinterpreted_batch_ndims=1)

    def sample_data(self, count, seed=1):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(count, self.latent_dim))
        noise = self.noise * rng.normal(size=(count, len(self.bias)))
        return (z @ self.weights.T + self.bias + noise).astype(np.float32)

    def log_marginal(self, x):
        """log p(x) = log N(x; b, W W^T + noise^2 I)."""
        covariance = self.weights @ self.weights.T + self.noise ** 2 * np.eye(len(self.bias))
        centred = np.asarray(x, np.float64) - self.bias
        solved = np.linalg.solve(covariance, centred.T).T
        return -0.5 * (np.sum(centred * solved, 1) + np.linalg.slogdet(covariance)[1]
                       + len(self.bias) * math.log(2 * math.pi))

    def elbo(self, x, loc_factor=1.0, scale_factor=1.0):
        """log p(x) - KL(q(z|x) || p(z|x)): exact for the distorted Gaussian posterior."""
        loc, variance = self.posterior_moments(x, loc_factor, scale_factor)
        exact_loc, exact_variance = self.posterior_moments(x)
        kl = 0.5 * np.sum(variance / exact_variance + (loc - exact_loc) ** 2 / exact_variance - 1
                          + np.log(exact_variance / variance), 1)
        return self.log_marginal(x) - kl


def per_example(model, encoder, x, num_samples, batch_size, seed=0, rows_per_call=4096):
    estimate = evaluation.importance_sampling_fn(
        encoder, model.decoder, model.prior, num_samples, batch_size=batch_size, rows_per_call=rows_per_call)
    parts = [estimate(x[start:start + batch_size], tf.constant([seed, start], tf.int32))
             for start in range(0, len(x), batch_size)]
    return {name: np.concatenate([part[name].numpy() for part in parts]).astype(np.float64) for name in parts[0]}


def mean_stderr(values):
    return np.mean(values), np.std(values, ddof=1) / math.sqrt(len(values))


# (37, 10, 50): 5 samples per chunk, 8 chunks, 3 padding samples that must carry no weight.
@pytest.mark.parametrize("num_samples,batch_size,rows_per_call",
                         [(1, 64, 4096), (37, 10, 7), (37, 10, 50), (500, 64, 8192)])
def test_exact_posterior_makes_every_weight_equal_to_p_x(num_samples, batch_size, rows_per_call):
    # With q(z|x) = p(z|x), every importance weight is p(x) exactly: any K, chunking or batching
    # must return log p(x) to float precision, which pins down the row bookkeeping.
    model = LinearGaussian()
    x = model.sample_data(64)
    values = per_example(model, model.encoder(), x, num_samples, batch_size, rows_per_call=rows_per_call)
    truth = model.log_marginal(x)
    np.testing.assert_allclose(values["log_likelihood"], truth, atol=2e-3)
    np.testing.assert_allclose(values["elbo"], truth, atol=2e-3)


def test_distorted_posterior_elbo_and_iwae_match_closed_forms_and_catch_mistakes():
    model = LinearGaussian()
    x = model.sample_data(200)
    distortion = dict(loc_factor=0.8, scale_factor=1.6)
    num_samples = 2000
    values = per_example(model, model.encoder(**distortion), x, num_samples, batch_size=50)
    truth, true_elbo = model.log_marginal(x), model.elbo(x, **distortion)

    # The ELBO estimate (mean of K log-weights) is unbiased: within 4 standard errors.
    elbo_error, elbo_stderr = mean_stderr(values["elbo"] - true_elbo)
    assert abs(elbo_error) < 4 * elbo_stderr, (elbo_error, elbo_stderr)
    assert np.mean(truth - true_elbo) > 0.2  # the distortion costs a clearly visible KL gap

    # IWAE with K = 2000: converged to log p(x) (its bias is O(1/K)) and far above the ELBO.
    iwae_error, iwae_stderr = mean_stderr(values["log_likelihood"] - truth)
    tolerance = 4 * iwae_stderr + 0.01
    assert abs(iwae_error) < tolerance, (iwae_error, iwae_stderr)
    assert np.mean(values["log_likelihood"] - values["elbo"]) > 20 * tolerance
    # Half the samples: a slightly looser bound, converged too.
    assert np.mean(values["log_likelihood_half"]) <= np.mean(values["log_likelihood"]) + tolerance

    # Mistakes the tolerance catches: log-sum-exp without -log K, and the log-mean-exp taken
    # over the batch (log of the mean p(x)) instead of per example then averaged.
    assert abs(iwae_error + math.log(num_samples)) > 50 * tolerance
    batch_mean = np.logaddexp.reduce(values["log_likelihood"]) - math.log(len(x))
    assert abs(batch_mean - np.mean(truth)) > 10 * tolerance


def test_batching_and_chunking_agree_and_seeds_reproduce():
    model = LinearGaussian()
    x = model.sample_data(96)
    encoder = model.encoder(loc_factor=0.8, scale_factor=1.6)
    one_batch = per_example(model, encoder, x, 300, batch_size=96, rows_per_call=100_000)
    small = per_example(model, encoder, x, 300, batch_size=7, rows_per_call=50, seed=3)
    difference, stderr = mean_stderr(one_batch["log_likelihood"] - small["log_likelihood"])
    assert abs(difference) < 4 * stderr
    again = per_example(model, encoder, x, 300, batch_size=7, rows_per_call=50, seed=3)
    np.testing.assert_array_equal(small["log_likelihood"], again["log_likelihood"])
    assert not np.array_equal(small["log_likelihood"], one_batch["log_likelihood"])


def test_evaluate_summary_over_a_dataset_with_examples_cap():
    model = LinearGaussian()
    x = model.sample_data(50)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(50, np.int64))).batch(16)
    summary = evaluation.evaluate(model.encoder(), model.decoder, model.prior, dataset, 20,
                                  examples=40, verbose=0)
    assert summary["examples"] == 40 and summary["num_samples"] == 20
    assert summary["log_likelihood"] == pytest.approx(np.mean(model.log_marginal(x[:40])), abs=2e-3)
    assert summary["negative_log_likelihood"] == pytest.approx(-summary["log_likelihood"])
    assert summary["log_likelihood_stderr"] == pytest.approx(
        np.std(model.log_marginal(x[:40]), ddof=1) / math.sqrt(40), rel=1e-3)
    assert "bits_per_dim" not in summary
    with pytest.raises(ValueError, match="num_samples"):
        evaluation.evaluate(model.encoder(), model.decoder, model.prior, dataset, 0)
    with pytest.raises(ValueError, match="examples"):
        evaluation.evaluate(model.encoder(), model.decoder, model.prior, dataset, 5, examples=0)


def test_one_sample_has_no_half_sample_bound():
    """K = 1 has no K/2 bound: null in evaluation.json, not the -Infinity of an empty
    log-sum-exp (which is not JSON either)."""
    values = {name: np.array([-500.0, -510.0]) for name in
              ("log_likelihood", "log_likelihood_half", "elbo", "reconstruction")}
    values["log_likelihood_half"] = np.array([-np.inf, -np.inf])  # what estimate() returns for K = 1
    summary = evaluation.summarize(values, 1, 784, continuous=False)
    assert summary["log_likelihood_half"] is None and summary["log_likelihood_half_stderr"] is None
    assert summary["log_likelihood"] == -505.0
    json.loads(json.dumps(summary, allow_nan=False))


def test_bits_per_dim_uses_the_dequantization_convention():
    values = {name: np.array([-500.0, -600.0]) for name in
              ("log_likelihood", "log_likelihood_half", "elbo", "reconstruction")}
    summary = evaluation.summarize(values, 10, 784, continuous=True)
    assert summary["bits_per_dim"] == pytest.approx(550.0 / (784 * math.log(2)) + 8.0)
    assert "dequantization" in summary["bits_per_dim_convention"]


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli"])
def test_untrained_vae_bound_is_above_its_elbo(likelihood):
    tf_keras.utils.set_random_seed(0)
    model = VAE(ModelConfig(latent_dim=4, hidden_units=(16,), likelihood=likelihood))
    rng = np.random.default_rng(0)
    x = rng.random((24, 28, 28, 1)).astype(np.float32)
    x = (x < 0.3).astype(np.float32) if likelihood == "bernoulli" else x
    summary = evaluation.evaluate(model.encoder, model.decoder, model.prior,
                                  tf.data.Dataset.from_tensor_slices(x).batch(8), 64, verbose=0,
                                  continuous=likelihood != "bernoulli")
    assert np.isfinite(summary["log_likelihood"])
    # log mean exp >= mean log per example, so the bound sits above the ELBO estimate.
    assert summary["bound_gap"] >= 0 and summary["log_likelihood"] >= summary["elbo"]
    assert ("bits_per_dim" in summary) == (likelihood != "bernoulli")


def run_evaluate(*arguments):
    return subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "evaluate.py"), *arguments],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("arguments,message", [
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--split", "holdout"], "invalid choice: 'holdout'"),
    (["--examples", "-3"], "--examples must be >= 1"),
])
def test_evaluate_cli_rejects_bad_flags(tmp_path, arguments, message):
    result = run_evaluate("--workdir", str(tmp_path), *arguments)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_evaluate_cli_rejects_missing_workdir(tmp_path):
    result = run_evaluate("--workdir", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr


def make_run(workdir):
    """A run folder as trainers/train.py leaves it (untrained weights): config.json + weights/."""
    config = Config().replace(model={"latent_dim": 4, "hidden_units": (16,)})
    os.makedirs(workdir, exist_ok=True)
    save_config(config, os.path.join(workdir, "config.json"))
    model = build_model(config)
    model(np.zeros((1, 28, 28, 1), np.float32))
    save_weights(model, workdir)
    return config


def test_evaluate_cli_writes_evaluation_json(tmp_path):
    workdir = str(tmp_path / "run")
    make_run(workdir)
    result = run_evaluate("--workdir", workdir, "--num-samples", "8", "--examples", "30",
                          "--batch-size", "16", "--verbose", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "evaluation.json")) as handle:
        written = json.load(handle)
    for key in ("split", "num_samples", "examples", "log_likelihood", "log_likelihood_stderr",
                "elbo", "seconds"):
        assert key in written
    assert written["split"] == "test" and written["examples"] == 30 and written["num_samples"] == 8
    # The per-example values beside it: what comparison.paired_difference pairs.
    with np.load(os.path.join(workdir, "evaluation_per_example.npz")) as per_example:
        assert str(per_example["split"]) == "test" and per_example["log_likelihood"].shape == (30,)
        assert np.mean(per_example["log_likelihood"]) == pytest.approx(written["log_likelihood"], rel=1e-6)
        assert np.mean(per_example["elbo"]) == pytest.approx(written["elbo"], rel=1e-6)
