"""Encoder and decoder bodies: gated units, residual blocks, shapes for every architecture."""
from tfp_vae import _env  # noqa: F401

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfp_vae import network
from tfp_vae.config import ModelConfig


def test_gated_dense_is_a_linear_unit_times_a_sigmoid_gate():
    layer = network.GatedDense(3)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    out = layer(x).numpy()
    kernel, bias = layer.dense.get_weights()
    values, gates = np.split(x @ kernel + bias, 2, axis=-1)
    np.testing.assert_allclose(out, values / (1 + np.exp(-gates)), rtol=1e-5, atol=1e-6)


def test_residual_block_starts_as_the_identity_and_then_adds_its_branch():
    block = network.ResidualBlock(4)
    x = np.random.default_rng(1).normal(size=(2, 7, 7, 4)).astype(np.float32)
    np.testing.assert_array_equal(block(x).numpy(), x)
    kernel, bias = block.second.get_weights()
    block.second.set_weights([np.full_like(kernel, 0.1), bias])
    inner = block.second(tf.nn.relu(block.first(tf.nn.relu(x))))
    np.testing.assert_allclose(block(x).numpy(), x + inner.numpy(), rtol=1e-6)
    assert np.max(np.abs(inner.numpy())) > 0


@pytest.mark.parametrize("architecture,shape,gated", [
    ("mlp", (28, 28, 1), False), ("mlp", (28, 28, 1), True), ("conv", (28, 28, 1), False),
    ("resnet", (28, 28, 1), False), ("resnet", (32, 32, 3), False),
])
def test_bodies_map_images_to_features_and_latents_to_one_logit_per_pixel(architecture, shape, gated):
    config = ModelConfig(architecture=architecture, latent_dim=5, hidden_units=(16, 8), conv_filters=(4, 8),
                         residual_blocks=2, gated=gated, image_shape=shape)
    images = tf_keras.Input(shape)
    features = network.encoder_features(images, config)
    assert len(features.shape) == 2
    latents = tf_keras.Input((5,))
    logits = network.decoder_logits(latents, config)
    assert logits.shape[1] == np.prod(shape)
    model = tf_keras.Model(latents, logits)
    assert model(np.zeros((3, 5), np.float32)).shape == (3, np.prod(shape))
    blocks = [layer for layer in model.layers if isinstance(layer, network.ResidualBlock)]
    assert len(blocks) == (2 * len(config.conv_filters) if architecture == "resnet" else 0)


def test_a_full_resolution_stage_runs_blocks_at_image_size_and_a_convolution_writes_the_logits():
    shape = (28, 28, 1)
    config = ModelConfig(architecture="resnet", latent_dim=5, conv_filters=(4, 8), residual_blocks=2,
                         full_resolution_filters=6, image_shape=shape)
    latents = tf_keras.Input((5,))
    model = tf_keras.Model(latents, network.decoder_logits(latents, config))
    assert model(np.zeros((3, 5), np.float32)).shape == (3, np.prod(shape))
    blocks = [layer for layer in model.layers if isinstance(layer, network.ResidualBlock)]
    assert [block.filters for block in blocks] == [8, 8, 4, 4, 6, 6]
    assert blocks[-1].output.shape[1:] == (28, 28, 6)
    last = [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Conv2D)][-1]
    assert type(last) is tf_keras.layers.Conv2D and last.output.shape[1:] == shape
    without = tf_keras.Model(latents, network.decoder_logits(latents, ModelConfig(
        architecture="resnet", latent_dim=5, conv_filters=(4, 8), residual_blocks=2, image_shape=shape)))
    assert model.count_params() > without.count_params()
