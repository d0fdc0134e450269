"""A second stochastic layer: z = [z_top, z_bottom], generated and inferred top-down.

    config = tfp_vae.ModelConfig(architecture="resnet", latent_dim=80, top_latent_dim=40, prior="vamp")
    model = tfp_vae.VAE(config)

The two-level model of the ConvHVAE (Tomczak & Welling 2018), the published rows at 225.38 (N(0, I)
on z_top) and 224.67 (VampPrior on z_top):

- generative: p(z_top) p(z_bottom | z_top) p(x | z_top, z_bottom); p(z_top) is the configured prior
  (N(0, I), a learnt mixture or a VampPrior of q(z_top | x) at pseudo-inputs), p(z_bottom | z_top) a
  diagonal Gaussian from a small learnt network;
- inference: q(z_top | x) q(z_bottom | x, z_top), the second a diagonal Gaussian from a small network
  on the image's features and the sampled z_top.

Both the posterior and the prior are distributions over the concatenated z of `latent_dim`
dimensions (a JointDistributionSequential of the two levels, through tfb.Invert(tfb.Split)): the
decoder, the KLDivergenceAddLoss and the importance-sampling estimate of log p(x) see one latent
vector, as with one layer. The KL has no closed form: it is estimated by Monte Carlo at the z the
decoder sees (ModelConfig.kl_samples), like the learnt priors' KL of one layer.

q(z|x) is not one diagonal Gaussian, so what needs that is defined here or refused: `mean_path`
gives VAE.encode's (loc, scale): z_top's posterior mean and scale, then z_bottom's at z_top =
that mean; `reparameterized` turns fixed standard-normal noise into z ~ q(z|x) (the serving
export's `score`). The aggregate-posterior report covers z_top, the layer under the configured
prior (`TopLevel`: q(z_top|x) is one diagonal Gaussian).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import dataclasses

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae import prior as prior_lib
from tfp_vae.config import ModelConfig

__all__ = ["HierarchicalPosterior", "HierarchicalPrior", "TopLevel", "loc_and_scale", "mean_path", "reparameterized", "top_config",
           "top_posterior"]

tfd = tfp.distributions
tfb = tfp.bijectors
tfpl = tfp.layers


def top_config(config: ModelConfig) -> ModelConfig:
    """The one-layer config of z_top alone: what its prior (and a VampPrior's encoder) is built from."""
    return dataclasses.replace(config, latent_dim=config.top_latent_dim, top_latent_dim=0)


class _ConditionalGaussian(tf_keras.layers.Layer):
    """z_top [..., T] (and a per-example context [B, F]) -> a diagonal Gaussian over `dim` latents:
    hidden = relu(z_top W + context V + b), then loc and softplus scale. Float32 whatever the body's
    precision: it is small and feeds a distribution.

    The context's product is taken once per example and broadcast over the draws of z_top in front
    of the batch: importance sampling draws thousands per example, and with a resnet's features
    (F = 3,136) as context, multiplying them once per draw would cost about 8% of a decoder pass.
    """

    def __init__(self, units: int, dim: int, with_context: bool = False, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.dim, self.units = dim, units
        self.hidden = tf_keras.layers.Dense(units, dtype="float32")
        self.context = tf_keras.layers.Dense(units, use_bias=False, dtype="float32") if with_context else None
        self.params = tf_keras.layers.Dense(2 * dim, dtype="float32")

    def call(self, z_top, context=None):
        # Any leading shape: [n] (TFP traces the joint distribution with one unbatched draw),
        # [B, n], or [S, B, n] under importance sampling; the dense layers see [rows, n].
        z_top = tf.cast(z_top, tf.float32)
        leading = tf.shape(z_top)[:-1]
        hidden = self.hidden(tf.reshape(z_top, [-1, z_top.shape[-1]]))
        hidden = tf.reshape(hidden, tf.concat([leading, [self.units]], 0))
        if context is not None:
            hidden = hidden + self.context(tf.cast(context, tf.float32))  # [B, units], broadcast over draws
        params = self.params(tf.reshape(tf.nn.relu(hidden), [-1, self.units]))
        return tf.reshape(params, tf.concat([tf.shape(hidden)[:-1], [2 * self.dim]], 0))

    def distribution(self, z_top, context=None) -> tfd.Distribution:
        return prior_lib.posterior_distribution(self(z_top, context), self.dim, name="z_bottom")


def _concatenated(levels: tfd.Distribution, top_dim: int, bottom_dim: int) -> tfd.Distribution:
    # [z_top, z_bottom] -> one vector: Split's inverse concatenates, with a zero log-determinant.
    return tfd.TransformedDistribution(levels, tfb.Invert(tfb.Split([top_dim, bottom_dim])))


class HierarchicalPrior(tf_keras.layers.Layer):
    """p(z) = p(z_top) p(z_bottom | z_top) over the concatenated z; `top` is a one-layer prior layer."""

    def __init__(self, top: tf_keras.layers.Layer, config: ModelConfig, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.top = top
        self.top_dim, self.bottom_dim = config.top_latent_dim, config.latent_dim - config.top_latent_dim
        self.conditional = _ConditionalGaussian(config.conditional_units, self.bottom_dim, name="bottom_prior")

    def distribution(self) -> tfd.Distribution:
        conditional = self.conditional
        # A lambda, not the bound method: the joint distribution reads the arity of what it is given.
        # The joint distribution matches argument names to its parts' names: the top is "z_top".
        levels = tfd.JointDistributionSequential([self.top.distribution().copy(name="z_top"),
                                                  lambda z_top: conditional.distribution(z_top)])
        return _concatenated(levels, self.top_dim, self.bottom_dim)


class HierarchicalPosterior(tfpl.DistributionLambda):
    """[top parameters [B, 2 * top_dim], features [B, F]] -> q(z|x) over the concatenated z [B, latent_dim]."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(make_distribution_fn=self._distribution,
                         convert_to_tensor_fn=prior_lib.draw_posterior_samples, dtype="float32", **kwargs)
        self.top_dim, self.bottom_dim = config.top_latent_dim, config.latent_dim - config.top_latent_dim
        self.conditional = _ConditionalGaussian(config.conditional_units, self.bottom_dim, with_context=True,
                                                name="bottom_posterior")

    def _distribution(self, inputs) -> tfd.Distribution:
        top_params, features = inputs
        conditional = self.conditional

        def bottom(z_top):
            return conditional.distribution(z_top, features)

        top = prior_lib.posterior_distribution(top_params, self.top_dim, name="z_top")
        levels = tfd.JointDistributionSequential([top, bottom])
        return _concatenated(levels, self.top_dim, self.bottom_dim)


def _levels(posterior):
    posterior = getattr(posterior, "tensor_distribution", posterior)
    return posterior.distribution.model  # [q(z_top|x), z_top -> q(z_bottom|x, z_top)]


def loc_and_scale(posterior):
    """(loc, scale) [B, latent_dim] of a posterior: its mean and standard deviation, or for a
    two-level posterior its `mean_path`."""
    # (Not a TransformedDistribution check: MultivariateNormalDiag is one too.)
    if isinstance(getattr(posterior, "tensor_distribution", posterior), tfd.MultivariateNormalDiag):
        return posterior.mean(), posterior.stddev()
    return mean_path(posterior)


def mean_path(posterior):
    """(loc, scale) [B, latent_dim] of a two-level posterior along its mean: z_top's posterior mean
    and scale, then z_bottom's posterior mean and scale given z_top = that mean."""
    top, bottom = _levels(posterior)
    loc_top = top.mean()
    conditional = bottom(loc_top)
    return (tf.concat([loc_top, conditional.mean()], -1), tf.concat([top.stddev(), conditional.stddev()], -1))


def reparameterized(posterior, noise) -> tf.Tensor:
    """z = [z_top, z_bottom] from standard-normal `noise` [..., latent_dim] (broadcast against the
    batch): z_top = loc + scale * noise_top, then z_bottom from q(z_bottom | x, z_top) the same way."""
    top, bottom = _levels(posterior)
    top_dim = top.event_shape[-1]
    z_top = top.mean() + top.stddev() * noise[..., :top_dim]
    conditional = bottom(z_top)
    return tf.concat([z_top, conditional.mean() + conditional.stddev() * noise[..., top_dim:]], -1)


def top_posterior(posterior) -> tfd.Distribution:
    """q(z_top|x) of a two-level posterior: one diagonal Gaussian per example."""
    return _levels(posterior)[0]


class TopLevel:
    """What the aggregate-posterior report reads of a two-level VAE: its top layer.

    `encoder(x)` is q(z_top|x), `prior` is p(z_top) (the configured prior, learnt or N(0, I)), and
    `decode(z_top)` decodes [z_top, E[p(z_bottom|z_top)]]: z_bottom at its prior mean, for pictures.
    """

    def __init__(self, model):
        if not model.config.top_latent_dim:
            raise ValueError("TopLevel needs a two-level model (top_latent_dim > 0).")
        self.model = model

    def encoder(self, x) -> tfd.Distribution:
        return top_posterior(self.model.encoder(x))

    @property
    def prior(self) -> tfd.Distribution:
        return self.model.prior_network.top.distribution()

    def decode(self, z_top, seed=0):
        z_top = tf.convert_to_tensor(z_top, tf.float32)
        z_bottom = self.model.prior_network.conditional.distribution(z_top).mean()
        return self.model.decode(tf.concat([z_top, z_bottom], -1), seed=seed)

