"""Priors p(z) as Keras layers whose `distribution()` is a tfd distribution over the latents.

- `standard_normal`: N(0, I) as a MultivariateNormalDiag (so the KL to the posterior is exact);
- `mixture`: a learnt mixture of diagonal Gaussians, sum_k pi_k N(z; loc_k, scale_k^2);
- `vamp`: the VampPrior (Tomczak & Welling 2018), (1/K) sum_k q(z | u_k), the encoder's own
  posterior at K learnt pseudo-inputs u_k, re-encoded with the current encoder at every use.

    prior = tfp_vae.prior.build_prior(config.model)
    p = prior.distribution()          # tfd.MultivariateNormalDiag or tfd.MixtureSameFamily
    kl = tfp_vae.prior.kl_divergence(posterior, p, samples)

The learnt priors have no closed-form KL(q(z|x) || p(z)); `kl_loss_layer` estimates it by Monte
Carlo at `ModelConfig.kl_samples` reparameterised draws of q(z|x) (1 reuses the decoder's z: the
usual one-sample ELBO, unbiased), on the same per-example scale as the exact KL.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae.config import ModelConfig

__all__ = ["MixturePrior", "SCALE_FLOOR", "StandardNormalPrior", "VampPrior", "build_prior",
           "draw_posterior_samples", "has_exact_kl", "kl_divergence", "kl_loss_layer", "posterior_distribution",
           "standard_normal_prior", "top_prior"]

tfd = tfp.distributions
tfpl = tfp.layers

# Keeps Gaussian scales away from 0, where log-densities and KL blow up.
SCALE_FLOOR = 1e-5
# softplus(x) = 1 at x = log(e - 1): learnt scales start at 1.
_UNIT_SCALE = float(np.log(np.expm1(1.0)))


def posterior_distribution(params: tf.Tensor, latent_dim: int, name: str = "posterior") -> tfd.Distribution:
    """q(z|x) from the encoder's [..., 2 * latent_dim] output: loc, then softplus scale."""
    loc, raw_scale = params[..., :latent_dim], params[..., latent_dim:]
    return tfd.MultivariateNormalDiag(
        loc=loc, scale_diag=tf.nn.softplus(raw_scale) + SCALE_FLOOR, name=name)


def standard_normal_prior(latent_dim: int) -> tfd.Distribution:
    # A MultivariateNormalDiag, not Independent(Normal): only the former has an exact KL
    # registered against a MultivariateNormalDiag posterior.
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]), name="prior")


class StandardNormalPrior(tf_keras.layers.Layer):
    """N(0, I); no weights."""

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim = latent_dim
        self._prior = standard_normal_prior(latent_dim)

    def distribution(self) -> tfd.Distribution:
        return self._prior


class MixturePrior(tf_keras.layers.Layer):
    """sum_k softmax(logits)_k N(loc_k, diag(scale_k^2)), all learnt; scales start at 1."""

    def __init__(self, latent_dim: int, components: int, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim, self.components = latent_dim, components
        self.logits = self.add_weight("logits", [components], initializer="zeros")
        # Spread like N(0, I) draws, so the mixture starts close to a (wider) standard normal.
        self.loc = self.add_weight("loc", [components, latent_dim],
                                   initializer=tf_keras.initializers.RandomNormal(stddev=1.0))
        self.raw_scale = self.add_weight("raw_scale", [components, latent_dim],
                                         initializer=tf_keras.initializers.Constant(_UNIT_SCALE))

    def distribution(self) -> tfd.Distribution:
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=self.logits),
            tfd.MultivariateNormalDiag(self.loc, tf.nn.softplus(self.raw_scale) + SCALE_FLOOR),
            name="prior")


class VampPrior(tf_keras.layers.Layer):
    """(1/K) sum_k q(z | u_k) at learnt pseudo-inputs u_k = sigmoid(raw_k), images in (0, 1).

    `posterior_network` (images -> posterior parameters, the encoder without its distribution
    and KL layers) is set by `model.build_encoder`; the prior follows the encoder as it trains.
    Pseudo-inputs start as noisy mid-grey images unless `initialize_pseudo_inputs` is given real
    ones (training does, with the first K training images).
    """

    def __init__(self, latent_dim: int, components: int, image_shape, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.latent_dim, self.components = latent_dim, components
        self.image_shape = tuple(image_shape)
        self.posterior_network = None
        self.raw_pseudo_inputs = self.add_weight(
            "raw_pseudo_inputs", [components, *self.image_shape],
            initializer=tf_keras.initializers.RandomNormal(stddev=0.1))

    @property
    def pseudo_inputs(self) -> tf.Tensor:
        return tf.sigmoid(self.raw_pseudo_inputs)

    def initialize_pseudo_inputs(self, images) -> None:
        """Sets u_k to `images` (K of them, pixels in [0, 1]), kept off 0 and 1 by 0.05."""
        images = np.asarray(images, np.float32)
        if images.shape != tuple(self.raw_pseudo_inputs.shape):
            raise ValueError(f"initialize_pseudo_inputs needs {self.components} images of shape "
                             f"{self.image_shape}; got an array of shape {images.shape}.")
        clipped = np.clip(images, 0.05, 0.95)
        self.raw_pseudo_inputs.assign(np.log(clipped) - np.log1p(-clipped))

    def distribution(self) -> tfd.Distribution:
        if self.posterior_network is None:
            raise ValueError("this VampPrior has no encoder yet: build it with model.build_encoder "
                             "(or tfp_vae.VAE), which connects the prior to the encoder network.")
        components = posterior_distribution(self.posterior_network(self.pseudo_inputs), self.latent_dim)
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=tf.zeros([self.components])), components, name="prior")


def build_prior(config: ModelConfig) -> tf_keras.layers.Layer:
    if config.top_latent_dim:
        from tfp_vae import hierarchy  # it builds on this module
        return hierarchy.HierarchicalPrior(build_prior(hierarchy.top_config(config)), config, name="prior")
    if config.prior == "standard_normal":
        return StandardNormalPrior(config.latent_dim, name="prior")
    if config.prior == "mixture":
        return MixturePrior(config.latent_dim, config.prior_components, name="prior")
    return VampPrior(config.latent_dim, config.prior_components, config.image_shape, name="prior")


def top_prior(prior: tf_keras.layers.Layer) -> tf_keras.layers.Layer:
    """The layer of p(z_top) of a two-level prior (tfp_vae.hierarchy); any other prior itself."""
    return getattr(prior, "top", prior)


def has_exact_kl(config: ModelConfig) -> bool:
    return config.prior == "standard_normal" and not config.top_latent_dim


def draw_posterior_samples(posterior: tfd.Distribution, sample_shape=()) -> tf.Tensor:
    """Reparameterised z = loc + scale * eps, eps ~ N(0, I), shape sample_shape + [B, latent].

    Same distribution and gradients as `posterior.sample()`, with two differences:

    - eps is drawn per replica: a seeded stateful op (what `sample()` uses) draws the SAME numbers
      on every worker of a MultiWorkerMirroredStrategy (same graph, same seeds), so the workers'
      examples would share their noise. Here a fresh seed from the global-seeded stream is offset
      by the replica's id in the whole cluster.
    - a handful of ops instead of TFP's batch-broadcasting sampler (about 40 shape ops per step),
      which also divides by the batch size and fails ("Integer division by zero") on an empty
      batch: the share of a short last batch that a replica can get under tf.distribute.
    """
    context = tf.distribute.get_replica_context()  # None in a strategy's cross-replica context
    replica = 0 if context is None else context.replica_id_in_sync_group
    seed = tf.random.uniform([2], maxval=2 ** 30, dtype=tf.int32) + tf.stack([0, tf.cast(replica, tf.int32)])
    if not isinstance(getattr(posterior, "tensor_distribution", posterior), tfd.MultivariateNormalDiag):
        # A two-level posterior (tfp_vae.hierarchy): TFP's reparameterised sampler, same seeding.
        return posterior.sample(sample_shape, seed=seed)
    loc = posterior.loc
    shape = tf.concat([tf.constant(sample_shape, tf.int32), tf.shape(loc)], 0)
    noise = tf.random.stateless_normal(shape, seed=seed, dtype=loc.dtype)
    return loc + posterior.scale.diag * noise


def kl_loss_layer(prior: tf_keras.layers.Layer, config: ModelConfig) -> tf_keras.layers.Layer:
    """The KLDivergenceAddLoss that puts the batch SUM of KL(q(z|x) || p(z)) in `encoder.losses`.

    Exact for the standard normal. Otherwise Monte Carlo, reduced per example first (the mean
    over the kl_samples draws), then summed over the batch like the exact KL, so that VAE's
    division by the batch size gives the same per-example scale. (The layer's default reduction
    would average over the batch instead: a KL 1/batch_size too small next to the exact one.)
    """
    if has_exact_kl(config):
        return tfpl.KLDivergenceAddLoss(prior.distribution(), use_exact_kl=True, name="kl_divergence",
                                        dtype="float32")
    if config.kl_samples == 1:
        points, reduce_axis = tf.convert_to_tensor, ()  # the z the decoder also receives
    else:
        def points(posterior):
            return draw_posterior_samples(posterior, [config.kl_samples])
        reduce_axis = 0
    # A callable prior is rebuilt at every call: the mixture reads its current variables, the
    # VampPrior re-encodes its pseudo-inputs with the current encoder.
    return tfpl.KLDivergenceAddLoss(prior.distribution, use_exact_kl=False, test_points_fn=points,
                                    test_points_reduce_axis=reduce_axis, name="kl_divergence",
                                    dtype="float32")


def kl_divergence(posterior: tfd.Distribution, prior: tfd.Distribution, samples=None) -> tf.Tensor:
    """KL(q || p) per example: exact when TFP has it, else the mean of log q(z) - log p(z) over
    `samples` [S, B, latent] drawn from q (required then)."""
    try:
        return tfd.kl_divergence(posterior, prior)
    except (NotImplementedError, ValueError):  # ValueError: joints of dependent parts (tfp_vae.hierarchy)
        if samples is None:
            raise ValueError("this prior has no closed-form KL: pass samples z ~ q(z|x) to estimate it.")
        return tf.reduce_mean(posterior.log_prob(samples) - prior.log_prob(samples), 0)
