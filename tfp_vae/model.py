"""The VAE: a tf_keras encoder ending in q(z|x), a decoder ending in p(x|z), trained with `fit`.

    import tfp_vae
    config = tfp_vae.ModelConfig(latent_dim=16)
    model = tfp_vae.VAE(config)
    model.compile(tf_keras.optimizers.Adam(1e-3), beta=1.0)
    model.fit(train_images, validation_data=validation_images, epochs=10)
    loc, scale = model.encode(images)

The loss `fit` minimises is the batch mean of -log p(x|z) + beta * KL(q(z|x) || p(z)) with one
z ~ q(z|x) per example; `fit` also logs `elbo`, `reconstruction` (E_q log p(x|z)) and `kl`.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae.config import ModelConfig

__all__ = ["VAE", "build_decoder", "build_encoder", "standard_normal_prior"]

tfd = tfp.distributions
tfpl = tfp.layers

# Keeps the posterior scale away from 0, where log-densities and KL blow up.
SCALE_FLOOR = 1e-5


def standard_normal_prior(latent_dim: int) -> tfd.Distribution:
    # A MultivariateNormalDiag, not Independent(Normal): only the former has an exact KL
    # registered against a MultivariateNormalDiag posterior.
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]), name="prior")


def _posterior(params: tf.Tensor, latent_dim: int) -> tfd.Distribution:
    loc, raw_scale = params[..., :latent_dim], params[..., latent_dim:]
    return tfd.MultivariateNormalDiag(
        loc=loc, scale_diag=tf.nn.softplus(raw_scale) + SCALE_FLOOR, name="posterior")


def _likelihood(logits: tf.Tensor, config: ModelConfig) -> tfd.Distribution:
    logits = tf.reshape(logits, tf.concat([tf.shape(logits)[:-1], config.image_shape], axis=0))
    if config.likelihood == "bernoulli":
        pixels = tfd.Bernoulli(logits=logits, dtype=tf.float32)
    else:
        # Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a normalised density on [0, 1].
        pixels = tfd.ContinuousBernoulli(logits=logits)
    return tfd.Independent(pixels, reinterpreted_batch_ndims=3, name="likelihood")


def build_encoder(config: ModelConfig) -> tf_keras.Model:
    """Image -> posterior q(z|x), a MultivariateNormalDiag; adds the KL to N(0, I) as a loss.

    `KLDivergenceAddLoss(use_exact_kl=True)` adds the batch SUM of the exact KL; `VAE` divides
    by the batch size so the KL sits on the same per-example scale as the reconstruction term.
    """
    latent_dim = config.latent_dim
    images = tf_keras.Input(shape=config.image_shape, name="x")
    hidden = images
    if config.architecture == "conv":
        for filters in config.conv_filters:
            hidden = tf_keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(hidden)
        hidden = tf_keras.layers.Flatten()(hidden)
    else:
        hidden = tf_keras.layers.Flatten()(hidden)
        for width in config.hidden_units:
            hidden = tf_keras.layers.Dense(width, activation="relu")(hidden)
    params = tf_keras.layers.Dense(2 * latent_dim, name="posterior_params")(hidden)
    posterior = tfpl.DistributionLambda(
        lambda t: _posterior(t, latent_dim), name="posterior")(params)
    posterior = tfpl.KLDivergenceAddLoss(
        standard_normal_prior(latent_dim), use_exact_kl=True, name="kl_divergence")(posterior)
    return tf_keras.Model(images, posterior, name="encoder")


def build_decoder(config: ModelConfig) -> tf_keras.Model:
    """Latent z -> likelihood p(x|z), independent per pixel; its tensor value is the mean."""
    height, width, channels = config.image_shape
    latents = tf_keras.Input(shape=(config.latent_dim,), name="z")
    if config.architecture == "conv":
        factor = 2 ** len(config.conv_filters)
        filters = list(reversed(config.conv_filters))
        hidden = tf_keras.layers.Dense(
            (height // factor) * (width // factor) * filters[0], activation="relu")(latents)
        hidden = tf_keras.layers.Reshape((height // factor, width // factor, filters[0]))(hidden)
        for count in filters:
            hidden = tf_keras.layers.Conv2DTranspose(
                count, 3, strides=2, padding="same", activation="relu")(hidden)
        hidden = tf_keras.layers.Conv2D(channels, 3, padding="same")(hidden)
        logits = tf_keras.layers.Flatten(name="logits")(hidden)
    else:
        hidden = latents
        for units in reversed(config.hidden_units):
            hidden = tf_keras.layers.Dense(units, activation="relu")(hidden)
        logits = tf_keras.layers.Dense(height * width * channels, name="logits")(hidden)
    likelihood = tfpl.DistributionLambda(
        lambda t: _likelihood(t, config), convert_to_tensor_fn=tfd.Distribution.mean,
        name="likelihood")(logits)
    return tf_keras.Model(latents, likelihood, name="decoder")


class VAE(tf_keras.Model):
    """Encoder q(z|x) and decoder p(x|z) under a N(0, I) prior, with a `fit`-able objective."""

    metric_names = ("loss", "elbo", "reconstruction", "kl")

    def __init__(self, config: ModelConfig, name: str = "vae", **kwargs):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.encoder = build_encoder(config)
        self.decoder = build_decoder(config)
        self.prior = standard_normal_prior(config.latent_dim)
        self.beta = 1.0
        self.warmup_steps = 0
        self.free_bits = 0.0
        self._trackers = {name: tf_keras.metrics.Mean(name=name) for name in self.metric_names}

    def compile(self, optimizer="adam", *, beta: float = 1.0, warmup_steps: int = 0,
                free_bits: float = 0.0, **kwargs):
        """Like `Model.compile`; `beta` weighs the KL, which ramps up from 0 over `warmup_steps`
        optimizer steps, and `free_bits` (nats per latent dimension) leaves that much KL unpenalised."""
        if "loss" in kwargs:
            raise ValueError("VAE defines its own loss (negative ELBO with beta); do not pass loss=.")
        for name, value in (("beta", beta), ("warmup_steps", warmup_steps), ("free_bits", free_bits)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        super().compile(optimizer=optimizer, **kwargs)
        self.beta, self.warmup_steps, self.free_bits = float(beta), int(warmup_steps), float(free_bits)

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
        posterior = self.encoder(x, training=training)
        latents = tf.convert_to_tensor(posterior)  # the one sample z ~ q(z|x)
        likelihood = self.decoder(latents, training=training)
        reconstruction = tf.reduce_mean(likelihood.log_prob(x))
        batch_size = tf.cast(tf.shape(latents)[0], tf.float32)
        kl = tf.add_n(self.encoder.losses) / batch_size
        penalty = kl
        if self.free_bits > 0:
            # sum_d max(free_bits, KL_d) = KL + sum_d relu(free_bits - KL_d), KL_d batch-averaged:
            # the correction cancels the KL gradient of dimensions under the free bits.
            loc, scale = posterior.mean(), posterior.stddev()
            kl_per_dim = tf.reduce_mean(0.5 * (tf.square(loc) + tf.square(scale) - 1.0) - tf.math.log(scale), 0)
            penalty = kl + tf.reduce_sum(tf.nn.relu(self.free_bits - kl_per_dim))
        loss = -reconstruction + self.kl_weight() * penalty
        return {"loss": loss, "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}

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
            # Gradients are summed over replicas, so each replica contributes its share.
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
        """Returns the posterior's (loc, scale), each [batch, latent_dim]."""
        posterior = self.posterior(x)
        return posterior.mean(), posterior.stddev()

    def likelihood(self, z) -> tfd.Distribution:
        return self.decoder(tf.convert_to_tensor(z, tf.float32), training=False)

    def decode(self, z) -> tf.Tensor:
        """Mean of p(x|z), [batch, height, width, channels]."""
        return self.likelihood(z).mean()

    def reconstruct(self, x) -> tf.Tensor:
        """Mean of p(x|z) at the posterior mean z = E[q(z|x)]."""
        loc, _ = self.encode(x)
        return self.decode(loc)

    def sample(self, num_samples: int, seed=None) -> tf.Tensor:
        """Means of p(x|z) for z drawn from the prior; an integer `seed` gives the same draw every call."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if isinstance(seed, int):  # TFP treats a lone int as a stateful op seed; a pair is stateless
            seed = tf.constant([seed, 0], tf.int32)
        return self.decode(self.prior.sample(num_samples, seed=seed))
