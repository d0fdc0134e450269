"""The VAE: a tf_keras encoder ending in q(z|x), a decoder ending in p(x|z), trained with `fit`.

    import tfp_vae
    config = tfp_vae.ModelConfig(latent_dim=16)
    model = tfp_vae.VAE(config)
    model.compile(tf_keras.optimizers.Adam(1e-3), beta=1.0)
    model.fit(train_images, validation_data=validation_images, epochs=10)
    loc, scale = model.encode(images)

The loss `fit` minimises is the batch mean of -log p(x|z) + beta * KL(q(z|x) || p(z)) with one
z ~ q(z|x) per example; `fit` also logs `elbo`, `reconstruction` (E_q log p(x|z)) and `kl`.
`compile(importance_samples=k)` with k > 1 maximises the importance-weighted bound instead (IWAE,
Burda et al. 2016): log (1/k) sum_i p(x, z_i) / q(z_i|x) over k draws, logged as `iwae`, the
estimator evaluation.py uses with k = 5,000; `elbo`, `reconstruction` and `kl` are then the means
over the k draws.
The prior p(z) is `ModelConfig.prior` (tfp_vae.prior): N(0, I) with the exact KL, or a learnt
mixture / VampPrior with a Monte-Carlo KL on the same per-example scale; `model.prior` is the
distribution with the current weights, `model.prior_network` the layer holding them.

Mixed precision (`VAE(config, mixed_precision=True)`): the network body computes in float16, or
in bfloat16 with `mixed_precision_dtype="bfloat16"` (variables stay float32); the posterior
parameters and the likelihood logits are cast to float32 before the tfp layers, so the
distributions, the KL and the loss are float32 (tfp layers fail under a float16 policy, TFP issue
1315).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import math
from typing import Union

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae import autoregressive, hierarchy, network
from tfp_vae import prior as prior_lib
from tfp_vae.config import MIXED_PRECISION_DTYPES, ModelConfig, check_free_bits, check_importance_samples
from tfp_vae.prior import standard_normal_prior
from tfp_vae.rows import log_likelihood_rows

__all__ = ["VAE", "build_decoder", "build_encoder", "build_posterior_network", "standard_normal_prior"]

tfd = tfp.distributions
tfpl = tfp.layers

MIXED_POLICY = "mixed_float16"


def _body_dtype(mixed_precision: Union[bool, str]):
    """dtype policy of the network body layers: None keeps the global policy (float32).

    `mixed_precision`: False, True (float16) or a compute dtype of MIXED_PRECISION_DTYPES."""
    if mixed_precision is False or mixed_precision is None:
        return None
    if mixed_precision is True:
        return tf_keras.mixed_precision.Policy(MIXED_POLICY)
    if mixed_precision not in MIXED_PRECISION_DTYPES:
        raise ValueError(f"mixed_precision must be True, False or one of {', '.join(MIXED_PRECISION_DTYPES)}; "
                         f"got {mixed_precision!r}.")
    return tf_keras.mixed_precision.Policy(f"mixed_{mixed_precision}")


def _to_float32(name: str):
    """A weightless cast to float32 at the body/distribution border; a no-op for float32 input.

    Present in both precisions so that weights checkpoints have the same structure either way.
    """
    return tf_keras.layers.Activation("linear", dtype="float32", name=name)


def _likelihood(logits: tf.Tensor, config: ModelConfig) -> tfd.Distribution:
    logits = tf.reshape(logits, tf.concat([tf.shape(logits)[:-1], config.image_shape], axis=0))
    if config.likelihood == "bernoulli":
        pixels = tfd.Bernoulli(logits=logits, dtype=tf.float32)
    else:
        # Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a normalised density on [0, 1].
        pixels = tfd.ContinuousBernoulli(logits=logits)
    return tfd.Independent(pixels, reinterpreted_batch_ndims=3, name="likelihood")


def build_posterior_network(config: ModelConfig, mixed_precision: Union[bool, str] = False) -> tf_keras.Model:
    """Image -> the posterior's parameters [B, 2 * latent_dim] (float32): loc, raw scale.

    For a two-level model (`top_latent_dim`), the parameters of q(z_top|x) [B, 2 * top_latent_dim]:
    a VampPrior on z_top encodes its pseudo-inputs with this network."""
    body = _body_dtype(mixed_precision)
    images = tf_keras.Input(shape=config.image_shape, name="x")
    features = network.encoder_features(images, config, body)
    params_dim = 2 * (config.top_latent_dim or config.latent_dim)
    params = tf_keras.layers.Dense(params_dim, name="posterior_params", dtype=body)(features)
    params = _to_float32("posterior_params_float32")(params)
    return tf_keras.Model(images, params, name="posterior_network")


def build_encoder(config: ModelConfig, mixed_precision: Union[bool, str] = False, prior=None) -> tf_keras.Model:
    """Image -> posterior q(z|x), a MultivariateNormalDiag; adds the KL to the prior as a loss.

    `prior` is a `tfp_vae.prior` layer (default: `build_prior(config)`); a VampPrior is connected
    to this encoder's network. The KL layer adds the batch SUM of the KL (exact for N(0, I),
    Monte Carlo otherwise); `VAE` divides by the batch size so the KL sits on the same
    per-example scale as the reconstruction term. With `mixed_precision` (True: float16, or
    "bfloat16") the body computes in that dtype and the posterior is float32.
    """
    latent_dim = config.latent_dim
    prior = prior_lib.build_prior(config) if prior is None else prior
    posterior_network = build_posterior_network(config, mixed_precision)
    top_prior = prior_lib.top_prior(prior)
    if isinstance(top_prior, prior_lib.VampPrior):
        top_prior.posterior_network = posterior_network
    # Built on the network's own graph (not calling it as a nested model): the encoder's layers stay
    # flat, e.g. encoder.get_layer("posterior_params").
    images, params = posterior_network.inputs[0], posterior_network.outputs[0]
    if config.top_latent_dim:
        features = posterior_network.get_layer("posterior_params").input
        posterior = hierarchy.HierarchicalPosterior(config, name="posterior")([params, features])
    else:
        posterior = tfpl.DistributionLambda(
            lambda t: prior_lib.posterior_distribution(t, latent_dim),
            convert_to_tensor_fn=prior_lib.draw_posterior_samples, name="posterior", dtype="float32")(params)
    posterior = prior_lib.kl_loss_layer(prior, config)(posterior)
    return tf_keras.Model(images, posterior, name="encoder")


def build_decoder(config: ModelConfig, mixed_precision: Union[bool, str] = False) -> tf_keras.Model:
    """Latent z -> likelihood p(x|z), independent per pixel; its tensor value is the mean.

    With `mixed_precision` (True: float16, or "bfloat16") the body computes in that dtype and the
    likelihood is float32.
    """
    latents = tf_keras.Input(shape=(config.latent_dim,), name="z")
    logits = network.decoder_logits(latents, config, _body_dtype(mixed_precision))
    logits = _to_float32("logits_float32")(logits)
    if config.autoregressive_units:
        likelihood = autoregressive.AutoregressiveBernoulli(config, name="likelihood")([logits, latents])
    else:
        likelihood = tfpl.DistributionLambda(
            lambda t: _likelihood(t, config), convert_to_tensor_fn=tfd.Distribution.mean,
            name="likelihood", dtype="float32")(logits)
    return tf_keras.Model(latents, likelihood, name="decoder")


def _seed_pair(seed) -> tf.Tensor:
    """An int in [0, 2**31) -> the stateless pair [seed, 0]; a pair passes through."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if not 0 <= seed < 2 ** 31:
            raise ValueError(f"seed must be an integer in [0, 2**31) or a stateless pair, got {seed}.")
        return tf.constant([int(seed), 0], tf.int32)
    pair = tf.convert_to_tensor(seed, tf.int32)
    if pair.shape != (2,):
        raise ValueError(f"seed must be an integer in [0, 2**31) or a stateless pair [2], got shape {pair.shape}.")
    return pair


class VAE(tf_keras.Model):
    """Encoder q(z|x) and decoder p(x|z) under the configured prior, with a `fit`-able objective."""

    # Every metric a VAE can log; "iwae" only with importance_samples > 1.
    metric_names = ("loss", "elbo", "reconstruction", "kl", "iwae")

    def __init__(self, config: ModelConfig, name: str = "vae", *, mixed_precision: bool = False,
                 mixed_precision_dtype: str = "float16", **kwargs):
        super().__init__(name=name, **kwargs)
        if mixed_precision_dtype not in MIXED_PRECISION_DTYPES:
            raise ValueError(f"mixed_precision_dtype must be one of {', '.join(MIXED_PRECISION_DTYPES)}; "
                             f"got {mixed_precision_dtype!r}.")
        self.config = config
        self.mixed_precision = bool(mixed_precision)
        self.mixed_precision_dtype = mixed_precision_dtype
        body = mixed_precision_dtype if self.mixed_precision else False
        self.prior_network = prior_lib.build_prior(config)
        self.encoder = build_encoder(config, body, prior=self.prior_network)
        self.decoder = build_decoder(config, body)
        self.beta = 1.0
        self.warmup_steps = 0
        self.free_bits = 0.0
        self.importance_samples = 1
        self._trackers = self._make_trackers()

    def _make_trackers(self) -> dict:
        names = self.metric_names if self.importance_samples > 1 else self.metric_names[:-1]
        return {name: tf_keras.metrics.Mean(name=name) for name in names}

    def compile(self, optimizer="adam", *, beta: float = 1.0, warmup_steps: int = 0,
                free_bits: float = 0.0, importance_samples: int = 1, **kwargs):
        """Like `Model.compile`; `beta` weighs the KL, which ramps up from 0 over `warmup_steps`
        optimizer steps, and `free_bits` (nats per latent dimension) leaves that much KL unpenalised.
        `importance_samples` k > 1 trains on the k-sample importance-weighted bound (no KL term, so
        no beta, warm-up or free bits). A float16 mixed-precision VAE wraps the optimizer in a
        LossScaleOptimizer."""
        if "loss" in kwargs:
            raise ValueError("VAE defines its own loss (negative ELBO with beta); do not pass loss=.")
        for name, value in (("beta", beta), ("warmup_steps", warmup_steps), ("free_bits", free_bits)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        check_free_bits(self.config, free_bits)  # a VAE built from a ModelConfig skips Config's check
        if isinstance(importance_samples, bool) or not isinstance(importance_samples, (int, np.integer)) \
                or importance_samples < 1:
            raise ValueError(f"importance_samples must be a positive integer (1: the ELBO), got {importance_samples!r}.")
        check_importance_samples(importance_samples, beta, warmup_steps, free_bits)
        if self.mixed_precision and self.mixed_precision_dtype == "float16":
            # float16 gradients of the body underflow without loss scaling; the scaling is
            # undone before the float32 variables are updated. bfloat16 has float32's exponent
            # range and needs none.
            optimizer = tf_keras.optimizers.get(optimizer)
            if not isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
                optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
        super().compile(optimizer=optimizer, **kwargs)
        self.beta, self.warmup_steps, self.free_bits = float(beta), int(warmup_steps), float(free_bits)
        if int(importance_samples) != self.importance_samples:
            self.importance_samples = int(importance_samples)
            self._trackers = self._make_trackers()

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) with the current weights (a learnt prior is rebuilt from its variables)."""
        return self.prior_network.distribution()

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, x, training=None):
        """Returns the likelihood p(x|z) for one z ~ q(z|x) per example."""
        return self.decoder(self.encoder(x, training=training), training=training)

    def kl_weight(self) -> tf.Tensor:
        """beta at the current optimizer step, after the linear warm-up."""
        beta = tf.constant(self.beta, tf.float32)
        if self.warmup_steps <= 0 or self.optimizer is None:
            return beta
        progress = tf.cast(self.optimizer.iterations, tf.float32) / float(self.warmup_steps)
        return beta * tf.minimum(1.0, progress)

    def objective(self, x, training=False) -> dict:
        """Per-batch terms of the objective, each a scalar in nats per example."""
        if self.importance_samples > 1:
            return self._importance_weighted(x, training)
        posterior = self.encoder(x, training=training)
        latents = tf.convert_to_tensor(posterior)  # the one sample z ~ q(z|x)
        likelihood = self.decoder(latents, training=training)
        # Means as sum / count with 0 for an empty batch: under tf.distribute a replica can get
        # no examples of a short last batch, and a NaN there would poison the summed gradients.
        batch_size = tf.cast(tf.shape(latents)[0], tf.float32)
        reconstruction = tf.math.divide_no_nan(tf.reduce_sum(likelihood.log_prob(x)), batch_size)
        kl = tf.math.divide_no_nan(tf.add_n(self.encoder.losses), batch_size)
        penalty = kl
        if self.free_bits > 0:
            # sum_d max(free_bits, KL_d) = KL + sum_d relu(free_bits - KL_d), KL_d batch-averaged:
            # the correction cancels the KL gradient of dimensions under the free bits.
            loc, scale = posterior.mean(), posterior.stddev()
            kl_per_dim = tf.math.divide_no_nan(tf.reduce_sum(
                0.5 * (tf.square(loc) + tf.square(scale) - 1.0) - tf.math.log(scale), 0), batch_size)
            penalty = kl + tf.reduce_sum(tf.nn.relu(self.free_bits - kl_per_dim))
        loss = -reconstruction + self.kl_weight() * penalty
        return {"loss": loss, "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}

    def _importance_weighted(self, x, training) -> dict:
        """The k-sample bound, and the ELBO's terms averaged over the same k draws."""
        posterior = self.encoder(x, training=training)  # (its KL layer's loss is not used here)
        samples = self.importance_samples
        latents = prior_lib.draw_posterior_samples(posterior, [samples])  # [k, B, latent], reparameterised
        batch = tf.shape(latents)[1]
        # The latent size spelled out: -1 cannot be inferred for a replica's empty batch.
        likelihood = self.decoder(tf.reshape(latents, [samples * batch, self.config.latent_dim]), training=training)
        reconstruction = log_likelihood_rows(likelihood, x, samples)  # [k, B], rows sample-major
        kl = posterior.log_prob(latents) - self.prior.log_prob(latents)  # log q - log p per draw
        bound = tf.reduce_logsumexp(reconstruction - kl, 0) - math.log(samples)
        count = tf.cast(batch, tf.float32)

        def mean(values):  # over examples; 0 for a replica's empty share of a short batch
            return tf.math.divide_no_nan(tf.reduce_sum(values), count)

        reconstruction, kl, bound = mean(tf.reduce_mean(reconstruction, 0)), mean(tf.reduce_mean(kl, 0)), mean(bound)
        return {"loss": -bound, "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl,
                "iwae": bound}

    def _record(self, terms, x):
        # Weighted by batch size: a short last batch must not count as much as a full one.
        batch_size = tf.cast(tf.shape(x)[0], tf.float32)
        for name, tracker in self._trackers.items():
            tracker.update_state(terms[name], sample_weight=batch_size)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        x, _, _ = tf_keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.objective(x, training=True)
            # Gradients are summed over replicas, so each replica contributes its share: the mean
            # over the global batch when the replicas' batches are equal (as Keras's own losses).
            scaled_loss = terms["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
        self.optimizer.minimize(scaled_loss, self.trainable_variables, tape=tape)
        return self._record(terms, x)

    def test_step(self, data):
        x, _, _ = tf_keras.utils.unpack_x_y_sample_weight(data)
        return self._record(self.objective(x, training=False), x)

    # Notebook helpers: numpy or tensors in, tensors out.

    def posterior(self, x) -> tfd.Distribution:
        return self.encoder(tf.convert_to_tensor(x, tf.float32), training=False)

    def encode(self, x):
        """Returns the posterior's (loc, scale), each [batch, latent_dim]; for a two-level model,
        along its mean (`hierarchy.mean_path`): z_top's, then z_bottom's given z_top's mean."""
        return hierarchy.loc_and_scale(self.posterior(x))

    def likelihood(self, z) -> tfd.Distribution:
        return self.decoder(tf.convert_to_tensor(z, tf.float32), training=False)

    def decode(self, z, seed=0) -> tf.Tensor:
        """Mean of p(x|z), [batch, height, width, channels].

        An autoregressive decoder has no closed-form mean: it returns the pixel probabilities along
        one sample x ~ p(x|z) (one decoder pass per pixel), drawn with the same pixel noise (from
        `seed`) for every row, so a row depends on its z and the seed only."""
        if self.config.autoregressive_units:
            z = tf.convert_to_tensor(z, tf.float32)
            noise = autoregressive.shared_noise(tf.shape(z)[0], self.config.image_shape, _seed_pair(seed))
            return self._autoregressive_path(z, noise)
        return self.likelihood(z).mean()

    @tf.function(reduce_retracing=True)
    def _autoregressive_path(self, z, noise):
        # In a graph: eagerly, the per-pixel loop would be hundreds of Python-level decoder calls.
        return autoregressive.sample_path(self.decoder(z, training=False), noise)[1]

    def reconstruct(self, x) -> tf.Tensor:
        """Mean of p(x|z) at the posterior mean z = E[q(z|x)]; for an autoregressive decoder, the
        teacher-forced p(x_i = 1 | x_<i, z) (each pixel given x's own pixels before it)."""
        loc, _ = self.encode(x)
        if self.config.autoregressive_units:
            return autoregressive.teacher_forced_mean(self.likelihood(loc), x)
        return self.decode(loc)

    def sample(self, num_samples: int, seed=None) -> tf.Tensor:
        """Means of p(x|z) for z drawn from the prior (see `decode`; an autoregressive decoder draws
        each row's pixels from a stream of its own). An integer or a stateless pair `seed` gives the
        same draw every call; None a fresh one."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        # TFP treats a lone int as a stateful op seed; a pair is stateless.
        pair = _seed_pair(np.random.randint(2 ** 31) if seed is None else seed)
        z = self.prior.sample(num_samples, seed=None if seed is None else pair)
        if self.config.autoregressive_units:
            return self._autoregressive_path(z, autoregressive.row_noise(num_samples, self.config.image_shape, pair))
        return self.decode(z)
