"""Shared by the test modules (pytest puts tests/ on sys.path: `from helpers import ...`)."""
from tfp_vae import _env  # noqa: F401

import tensorflow as tf
import tf_keras

__all__ = ["RecordingDecoder", "one_training_step"]


class RecordingDecoder(tf_keras.Model):
    """Wraps the decoder to keep the z it was given, so a test can recompute the loss."""

    def __init__(self, decoder):
        super().__init__()
        self.inner = decoder
        self.seen = []

    def call(self, z, training=None):
        self.seen.append(tf.identity(z))
        return self.inner(z, training=training)


def one_training_step(model, x):
    """Runs one real `fit` step on all of x (compile with run_eagerly=True and, to keep the
    weights, learning rate 0) and returns its logs and the z the decoder saw."""
    recorder = RecordingDecoder(model.decoder)
    model.decoder = recorder
    logs = model.fit(x, batch_size=len(x), epochs=1, verbose=0, shuffle=False).history
    model.decoder = recorder.inner
    return {name: values[-1] for name, values in logs.items()}, recorder.seen[-1]
