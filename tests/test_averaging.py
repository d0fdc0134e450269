"""Weight averaging (ema_momentum): the averages are checked against a moving average computed
here from the raw weights after every step, so a wrong variable, momentum or start shows."""
from tfp_vae import _env  # noqa: F401

import numpy as np
import pytest
import tf_keras

import tfp_vae
from tfp_vae import training
from tfp_vae.averaging import AveragedValidation, AveragingAdam, averaged_weights, uses_weight_averaging


def averaging_model(momentum):
    config = tfp_vae.Config().replace(model={"latent_dim": 2, "hidden_units": (8,), "image_shape": (4, 4, 1)},
                                      training={"learning_rate": 0.05, "ema_momentum": momentum})
    model = training.build_model(config)
    model(images(2))
    return model


def images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 2, size=(count, 4, 4, 1)).astype("float32")


def values(model):
    return [variable.numpy() for variable in model.trainable_variables]


class RecordWeights(tf_keras.callbacks.Callback):
    """The trainable weights at the start, after each step, at each epoch's start and at the
    start of each validation."""

    def __init__(self):
        super().__init__()
        self.initial, self.after_step, self.epoch_start, self.validated = None, [], [], []

    def on_train_begin(self, logs=None):
        self.initial = values(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start.append(values(self.model))

    def on_train_batch_end(self, batch, logs=None):
        self.after_step.append(values(self.model))

    def on_test_begin(self, logs=None):
        self.validated.append(values(self.model))


def expected_average(initial, steps, momentum):
    """tf.train.ExponentialMovingAverage with num_updates: momentum min(m, (1 + t) / (10 + t))."""
    average = initial
    for step, weights in enumerate(steps):
        rate = min(momentum, (1 + step) / (10 + step))
        average = [rate * a + (1 - rate) * w for a, w in zip(average, weights)]
    return average


def assert_close(got, want):
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_average_ramps_up_from_the_first_steps_and_the_raw_weights_come_back():
    model = averaging_model(0.95)
    recorder = RecordWeights()
    seen = {}

    class Probe(tf_keras.callbacks.Callback):  # inside fit, before fit's end copies the averages in
        def on_epoch_end(self, epoch, logs=None):
            seen["raw"] = values(self.model)
            with averaged_weights(self.model):
                seen["inside"] = values(self.model)
            seen["after"] = values(self.model)

    model.fit(images(48), batch_size=8, epochs=1, verbose=0, callbacks=[recorder, Probe()])
    assert isinstance(model.optimizer, AveragingAdam) and uses_weight_averaging(model)
    assert len(recorder.after_step) == 6
    expected = expected_average(recorder.initial, recorder.after_step, 0.95)
    assert_close(seen["inside"], expected)
    # Without the ramp the initial weights would still be 0.95**6 = 74% of the average.
    plain = recorder.initial
    for weights in recorder.after_step:
        plain = [0.95 * a + 0.05 * w for a, w in zip(plain, weights)]
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(seen["inside"], plain))
    for raw, after, last in zip(seen["raw"], seen["after"], recorder.after_step[-1]):
        np.testing.assert_array_equal(raw, last)
        np.testing.assert_array_equal(after, last)
    assert any(not np.allclose(a, b) for a, b in zip(seen["inside"], seen["raw"]))
    # fit itself ends by copying the averages into the model (tf_keras finalize_variable_values).
    assert_close(values(model), expected)


def test_validation_inside_fit_scores_the_average_and_training_goes_on_from_the_raw_weights():
    model = averaging_model(0.5)
    recorder = RecordWeights()
    # AveragedValidation first, as training puts it: the recorder sees what validation sees.
    model.fit(images(24), batch_size=8, epochs=2, verbose=0, validation_data=(images(8, seed=1),),
              callbacks=[AveragedValidation(), recorder])
    assert len(recorder.validated) == 2 and len(recorder.after_step) == 6
    assert_close(recorder.validated[0], expected_average(recorder.initial, recorder.after_step[:3], 0.5))
    assert_close(recorder.validated[1], expected_average(recorder.initial, recorder.after_step, 0.5))
    # The second epoch started from the raw weights of the first's last step, not the average.
    for start, last in zip(recorder.epoch_start[1], recorder.after_step[2]):
        np.testing.assert_array_equal(start, last)
    assert any(not np.allclose(a, b) for a, b in zip(recorder.validated[0], recorder.after_step[2]))


def test_the_swap_restores_the_raw_weights_when_the_block_raises():
    model = averaging_model(0.5)
    model.fit(images(24), batch_size=8, epochs=1, verbose=0)
    before = values(model)  # fit has put the averages in; one more step makes raw and average differ
    model.train_on_batch(images(8, seed=2))
    raw = values(model)
    assert any(not np.allclose(a, b) for a, b in zip(before, raw))
    with pytest.raises(RuntimeError):
        with averaged_weights(model):
            raise RuntimeError("interrupted")
    for variable, value in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_without_averaging_the_swap_is_a_no_op():
    model = averaging_model(0.0)
    model.fit(images(16), batch_size=8, epochs=1, verbose=0)
    before = values(model)
    assert not uses_weight_averaging(model)
    with averaged_weights(model):
        for variable, value in zip(model.trainable_variables, before):
            np.testing.assert_array_equal(variable.numpy(), value)
