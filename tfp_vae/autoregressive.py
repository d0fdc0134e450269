"""An autoregressive Bernoulli likelihood: p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i(z) + m_i(x_<i, z))).

`l(z)` are the decoder body's logits (the factorised decoder) and `m` a MADE (Germain et al.
2015; `tfp.bijectors.AutoregressiveNetwork`, conditioned on z at every layer) over the pixels in
raster order, so each pixel also sees the pixels before it. The distribution is a
`tfd.Autoregressive`: `log_prob(x)` is one pass of the MADE over x (for 500 units, about twice
the matrix work of the gated 300-300 MLP decoder), sampling is one pass per pixel (`sample_path`).
Any decoder body works (mlp, conv, resnet): its logits arrive flat, [B, H * W * C].

There is no closed-form mean. What tfp_vae returns instead (VAE.decode / reconstruct / sample and
the serving signatures): `sample_path`'s pixel probabilities along one sample, whose uniform
noise comes from a seed (`shared_noise`: the same for every row, so a row depends only on its z;
`row_noise`: a stream per row, for independent samples), and for a reconstruction of a known x
the teacher-forced conditionals p(x_i = 1 | x_<i, z) (`teacher_forced_mean`: one pass, exact).

The MADE keeps its masks through Keras kernel constraints (applied after every optimizer step)
and masked initial kernels; `tests/test_autoregressive.py` checks the Jacobian of the logits
after training steps and that p(x|z) sums to 1 over every image of a small shape.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_vae.config import ModelConfig

__all__ = ["AutoregressiveBernoulli", "pixel_noise", "row_noise", "sample_path", "shared_noise",
           "teacher_forced_mean"]

# Folded into a seed pair for the pixel noise: a stream apart from the prior's draw z.
_PIXEL_STREAM = 2

tfd = tfp.distributions
tfb = tfp.bijectors
tfpl = tfp.layers


def _first_conditionals(distribution):
    # The Keras graph needs a tensor for the layer's output (and it is what model.predict or
    # tf.convert_to_tensor(decoder(z)) return): p(x_i = 1 | x_<i = 0, z), one deterministic
    # pass. It is NOT a mean of p(x|z); nothing in tfp_vae reads it.
    return distribution.distribution_fn(distribution.sample0).mean()


class AutoregressiveBernoulli(tfpl.DistributionLambda):
    """[base logits [B, D], latents [B, L]] -> tfd.Autoregressive over [B, H, W, C] binary images."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(make_distribution_fn=self._distribution, convert_to_tensor_fn=_first_conditionals,
                         dtype="float32", **kwargs)
        self.image_shape = tuple(config.image_shape)
        self.size = int(np.prod(self.image_shape))
        self.made = tfb.AutoregressiveNetwork(
            params=1, event_shape=[self.size], conditional=True, conditional_event_shape=[config.latent_dim],
            hidden_units=list(config.autoregressive_units), activation="relu", dtype="float32", name="made")

    def _distribution(self, inputs) -> tfd.Distribution:
        base, latents = inputs
        image_shape, size, made = self.image_shape, self.size, self.made

        def conditionals(x):
            batch = tf.shape(x)[:-len(image_shape)]
            flat = tf.reshape(x, tf.concat([batch, [size]], 0))
            logits = base + made(flat, conditional_input=latents)[..., 0]
            logits = tf.reshape(logits, tf.concat([tf.shape(logits)[:-1], image_shape], 0))
            return tfd.Independent(tfd.Bernoulli(logits=logits, dtype=tf.float32),
                                   reinterpreted_batch_ndims=len(image_shape))

        sample0 = tf.zeros(tf.concat([tf.shape(base)[:-1], image_shape], 0))
        return tfd.Autoregressive(conditionals, sample0=sample0, num_steps=size, name="likelihood")


def pixel_noise(shape, seed) -> tf.Tensor:
    """Uniform noise of `shape` ([batch, H, W, C]) for `sample_path`, from a stateless seed pair.

    The stream is folded in, so it never equals the prior's draw from the same pair, and it is
    counter-based: row 0 of a [n, ...] draw equals a [...] draw, so a one-image sample reproduces
    in a signature that draws one image per seed.
    """
    seed = tf.random.experimental.stateless_fold_in(tf.convert_to_tensor(seed, tf.int32), _PIXEL_STREAM)
    return tf.random.stateless_uniform(shape, seed=seed)


def shared_noise(rows, image_shape, seed) -> tf.Tensor:
    """`pixel_noise` of one image, the same for all `rows`: each row's path depends on its z only."""
    noise = pixel_noise(tuple(image_shape), seed)
    return tf.broadcast_to(noise, tf.concat([[rows], tf.shape(noise)], 0))


def row_noise(rows: int, image_shape, seed) -> tf.Tensor:
    """`pixel_noise` with a stream per row (row r: the seed folded with r), for independent samples.
    Row r equals `pixel_noise(image_shape, stateless_fold_in(seed, r))`."""
    seed = tf.convert_to_tensor(seed, tf.int32)
    return tf.map_fn(lambda row: pixel_noise(tuple(image_shape), tf.random.experimental.stateless_fold_in(seed, row)),
                     tf.range(rows), fn_output_signature=tf.TensorSpec(tuple(image_shape), tf.float32))


def teacher_forced_mean(likelihood, x) -> tf.Tensor:
    """p(x_i = 1 | x_<i, z) for the given x: each pixel's probability given the true pixels
    before it (one pass; the per-pixel factors of log p(x|z))."""
    likelihood = getattr(likelihood, "tensor_distribution", likelihood)
    return likelihood.distribution_fn(tf.convert_to_tensor(x, tf.float32)).mean()


def sample_path(likelihood, noise) -> tuple:
    """(x ~ p(x|z), the pixel probabilities along it) for a tfd.Autoregressive likelihood.

    `noise`: uniform in [0, 1), the shape of x (`pixel_noise`); pixel i is 1 where noise_i is
    below its probability given the pixels before it. One pass per pixel in a tf.while_loop (TFP's
    own sampler unrolls the D passes into the graph): pass i recomputes every pixel from the
    previous draw, and pixel i is final from then on, since it depends only on pixels before it.
    Each image depends on its own row of noise only, never on the rest of the batch.
    """
    likelihood = getattr(likelihood, "tensor_distribution", likelihood)
    conditionals = likelihood.distribution_fn
    steps = likelihood.num_steps  # the pixel count: the layer sets it (event_shape is not static)

    def step(index, x):
        return index + 1, tf.cast(noise < conditionals(x).mean(), tf.float32)

    _, x = tf.while_loop(lambda index, _: index < steps, step, [tf.constant(0), tf.zeros_like(noise)])
    return x, conditionals(x).mean()
