"""Polyak averaging of the weights (`TrainingConfig.ema_momentum`, `--ema-momentum`).

tf_keras's Adam keeps the moving averages (`use_ema`); this module starts them without the bias
towards the initial weights, swaps them into a model for validation and saving, and tells
whether a model keeps them:

    optimizer = AveragingAdam(1e-3, ema_momentum=0.999)     # what training.build_model compiles
    model.fit(..., callbacks=[AveragedValidation(), ...])   # val_* score the average
    with averaged_weights(model):                           # the average inside, raw weights after
        model.save_weights(path)
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import contextlib

import tensorflow as tf
import tf_keras

__all__ = ["AveragedValidation", "AveragingAdam", "averaged_weights", "uses_weight_averaging"]


class AveragingAdam(tf_keras.optimizers.Adam):
    """Adam with a moving average of the weights whose momentum ramps up as
    min(ema_momentum, (1 + t) / (10 + t)) at step t (tf.train.ExponentialMovingAverage's
    `num_updates`). tf_keras's own average starts as a copy of the initial weights at full
    momentum: with 0.999 they would still be 68% of it after 391 steps, so a short run, a tuner
    trial or an early epoch would score and ship mostly untrained weights."""

    def __init__(self, learning_rate=0.001, ema_momentum: float = 0.999, **kwargs):
        super().__init__(learning_rate, use_ema=True, ema_momentum=ema_momentum, **kwargs)

    def _update_model_variables_moving_average(self, var_list):
        # Overrides tf_keras's update (optimizers/optimizer.py), keeping its per-replica path;
        # called before `iterations` is incremented, so t = 0 at the first step.
        step = tf.cast(self.iterations, tf.float32)
        momentum = tf.minimum(tf.constant(self.ema_momentum, tf.float32), (1.0 + step) / (10.0 + step))

        def update_average(average, variable):
            rate = tf.cast(momentum, average.dtype)
            average.assign(rate * average + (1.0 - rate) * variable)

        for variable in var_list:
            average = self._model_variables_moving_average[self._index_dict[self._var_key(variable)]]
            self._distribution_strategy.extended.update(average, update_average, args=(variable,), group=False)


def _averaging_optimizer(model):
    optimizer = model.optimizer
    # mixed precision wraps Adam in a LossScaleOptimizer; the averages live in the inner one.
    return getattr(optimizer, "inner_optimizer", optimizer)


def uses_weight_averaging(model) -> bool:
    """True if `model` was compiled with an optimizer that keeps a moving average of its weights."""
    return bool(getattr(_averaging_optimizer(model), "use_ema", False))


@contextlib.contextmanager
def averaged_weights(model):
    """Inside the block the model's trainable weights are the optimizer's moving averages; on
    leaving (also by an exception) the raw weights are back, so training goes on from them.

    A no-op without averaging, and before the first step (the averages start as the weights)."""
    optimizer = _averaging_optimizer(model)
    # tf_keras has no public accessor for the averages (Keras 3's SwapEMAWeights reads the same
    # attributes); tests/test_averaging.py fails if an upgrade moves them.
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not uses_weight_averaging(model) or not averages:
        yield
        return
    pairs = [(variable, averages[optimizer._index_dict[optimizer._var_key(variable)]])
             for variable in model.trainable_variables]
    raw = [variable.read_value() for variable, _ in pairs]
    for variable, average in pairs:
        variable.assign(average)
    try:
        yield
    finally:
        for (variable, _), value in zip(pairs, raw):
            variable.assign(value)


class AveragedValidation(tf_keras.callbacks.Callback):
    """Validation inside `fit` scores the moving average of the weights, the weights a run with
    `ema_momentum` keeps and ships; training steps go on with the raw ones.

    `fit` itself ends by copying the averages into the model (tf_keras's
    `finalize_variable_values`), so a later `fit` on the same model object starts from them; so
    does one after a validation that raised (fit calls no callback after an exception)."""

    def __init__(self):
        super().__init__()
        self._swap = None

    def on_test_begin(self, logs=None):
        self._swap = averaged_weights(self.model)
        self._swap.__enter__()

    def on_test_end(self, logs=None):
        swap, self._swap = self._swap, None
        if swap is not None:
            swap.__exit__(None, None, None)
