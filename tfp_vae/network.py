"""The deterministic bodies of the encoder and decoder: images -> features, latents -> logits.

Three architectures (`ModelConfig.architecture`):

- `mlp`: dense layers of `hidden_units` (ReLU, or gated linear units with `gated`);
- `conv`: one stride-2 3x3 convolution per entry of `conv_filters`, mirrored by transposed
  convolutions in the decoder;
- `resnet`: the same stride-2 layers, each followed by `residual_blocks` residual blocks (two 3x3
  convolutions and a skip). The decoder runs the blocks at 7x7 and 14x14 for 28x28 images and its
  last transposed convolution writes the logits directly, so a decoder pass stays cheap: the
  decoder runs once per importance sample when log p(x) is estimated (5,000 per test image).
  `full_resolution_filters` adds a stage at 28x28 (blocks, then a 3x3 convolution to the logits),
  as the published ConvHVAE decoders have, at several times the cost of a decoder pass.

`dtype` is the layers' dtype policy (None: float32; mixed precision passes "mixed_float16").
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import tensorflow as tf
import tf_keras

from tfp_vae.config import ModelConfig

__all__ = ["GatedDense", "ResidualBlock", "decoder_logits", "encoder_features"]


class GatedDense(tf_keras.layers.Layer):
    """h = (W x + b) * sigmoid(V x + c): one [in, 2 * units] matrix product, then the gate."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = tf_keras.layers.Dense(2 * units, dtype=self.dtype_policy)

    def call(self, inputs):
        values, gates = tf.split(self.dense(inputs), 2, axis=-1)
        return values * tf.sigmoid(gates)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ResidualBlock(tf_keras.layers.Layer):
    """x + conv(relu(conv(relu(x)))), 3x3 convolutions keeping the shape.

    The second convolution starts at zero, so every block starts as the identity: a deep stack
    trains as stably as a shallow one (no normalisation layers, which would make a VampPrior's
    pseudo-inputs depend on the batch they are encoded with).
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.first = tf_keras.layers.Conv2D(filters, 3, padding="same", dtype=self.dtype_policy)
        self.second = tf_keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="zeros",
                                             dtype=self.dtype_policy)

    def call(self, inputs):
        return inputs + self.second(tf.nn.relu(self.first(tf.nn.relu(inputs))))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _dense(units: int, config: ModelConfig, dtype):
    if config.gated:
        return GatedDense(units, dtype=dtype)
    return tf_keras.layers.Dense(units, activation="relu", dtype=dtype)


def encoder_features(images: tf.Tensor, config: ModelConfig, dtype=None) -> tf.Tensor:
    """Images [B, H, W, C] -> features [B, F] (the posterior parameters are a dense layer on them)."""
    hidden = images
    if config.architecture == "mlp":
        hidden = tf_keras.layers.Flatten(dtype=dtype)(hidden)
        for width in config.hidden_units:
            hidden = _dense(width, config, dtype)(hidden)
        return hidden
    for filters in config.conv_filters:
        hidden = tf_keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                        dtype=dtype)(hidden)
        if config.architecture == "resnet":
            for _ in range(config.residual_blocks):
                hidden = ResidualBlock(filters, dtype=dtype)(hidden)
    if config.architecture == "resnet":
        hidden = tf_keras.layers.ReLU(dtype=dtype)(hidden)  # the blocks end on a linear skip sum
    return tf_keras.layers.Flatten(dtype=dtype)(hidden)


def decoder_logits(latents: tf.Tensor, config: ModelConfig, dtype=None) -> tf.Tensor:
    """Latents [B, latent_dim] -> logits [B, H * W * C] of the per-pixel likelihood."""
    height, width, channels = config.image_shape
    if config.architecture == "mlp":
        hidden = latents
        for units in reversed(config.hidden_units):
            hidden = _dense(units, config, dtype)(hidden)
        return tf_keras.layers.Dense(height * width * channels, name="logits", dtype=dtype)(hidden)
    factor = 2 ** len(config.conv_filters)
    filters = list(reversed(config.conv_filters))
    hidden = tf_keras.layers.Dense(
        (height // factor) * (width // factor) * filters[0], activation="relu", dtype=dtype)(latents)
    hidden = tf_keras.layers.Reshape((height // factor, width // factor, filters[0]), dtype=dtype)(hidden)
    if config.architecture == "conv":
        for count in filters:
            hidden = tf_keras.layers.Conv2DTranspose(
                count, 3, strides=2, padding="same", activation="relu", dtype=dtype)(hidden)
        hidden = tf_keras.layers.Conv2D(channels, 3, padding="same", dtype=dtype)(hidden)
    else:
        # Each resolution: residual blocks, then a stride-2 transposed convolution up to the next
        # one's filters. Without a full-resolution stage the last goes straight to the logits.
        full = config.full_resolution_filters
        for index, count in enumerate(filters):
            for _ in range(config.residual_blocks):
                hidden = ResidualBlock(count, dtype=dtype)(hidden)
            last = index == len(filters) - 1
            hidden = tf_keras.layers.ReLU(dtype=dtype)(hidden)
            out = (full or channels) if last else filters[index + 1]
            hidden = tf_keras.layers.Conv2DTranspose(
                out, 3, strides=2, padding="same", activation=None if last and not full else "relu",
                dtype=dtype)(hidden)
        if full:
            for _ in range(config.residual_blocks):
                hidden = ResidualBlock(full, dtype=dtype)(hidden)
            hidden = tf_keras.layers.ReLU(dtype=dtype)(hidden)
            hidden = tf_keras.layers.Conv2D(channels, 3, padding="same", dtype=dtype)(hidden)
    return tf_keras.layers.Flatten(name="logits", dtype=dtype)(hidden)
