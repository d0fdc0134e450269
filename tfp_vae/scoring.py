"""Reproducible validation scores for a tuning trial, and keeping its best epoch.

    from tfp_vae import scoring
    scoring.score(model, validation)   # the same numbers for the same weights, in any process

A tuner trial scores its validation split after every epoch with a fixed draw of z ~ q(z|x)
(`score`), so the best trial's score can be recomputed from its saved weights;
`ScoreAndKeepBest` is the callback that does it each epoch and writes the best epoch's weights.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import math
from typing import Dict

import numpy as np
import tensorflow as tf
import tf_keras

from tfp_vae import checkpoint
from tfp_vae.averaging import averaged_weights
from tfp_vae.model import VAE

__all__ = ["SCORE_SEED", "ScoreAndKeepBest", "score"]

# Seed of the per-epoch validation scoring: fixed, so a score can be recomputed from the weights.
SCORE_SEED = 20240


def score(model: VAE, dataset, seed: int = SCORE_SEED) -> Dict[str, float]:
    """The VAE's metrics on `dataset` with a fixed draw of z ~ q(z|x): the same weights, data and
    seed give the same numbers, in any process. The global random seed is left as it was."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
    test_step = model.test_step

    def seeded_test_step(data):
        # Runs while the test function is traced, where tf.random.set_seed seeds that graph only.
        # The eager tf.random.set_seed (what tf_keras.utils.set_random_seed calls) would clear
        # TensorFlow's kernel caches, and with them the state of the training function's random
        # ops: every epoch scored that way would replay the first epoch's sampling noise.
        tf.random.set_seed(int(seed))
        return test_step(data)

    # A fresh trace and fresh kernels: the graph's random streams start at the same place.
    model.test_step = seeded_test_step
    model.test_function = None
    try:
        results = model.evaluate(dataset, return_dict=True, verbose=0)
    finally:
        del model.test_step  # the class's test_step again
        model.test_function = None  # later evaluations do not inherit the fixed seed
    return {name: float(value) for name, value in results.items()}


class ScoreAndKeepBest(tf_keras.callbacks.Callback):
    """Each epoch: scores the validation data (seeded), adds val_* to the logs, and writes the
    weights of the best epoch so far to the trial folder, atomically."""

    def __init__(self, objective, validation, trial_dir, verbose):
        super().__init__()
        self.objective = objective
        self.validation = validation
        self.trial_dir = trial_dir
        self.verbose = verbose
        self.best = None
        self.best_epoch = None
        self.best_logs = None
        self.best_optimizer_steps = None
        self.history = []

    def _better(self, value):
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.objective.direction == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        # With ema_momentum the moving average is scored and saved (the weights training ships);
        # a Hyperband round that continues this trial starts from it.
        with averaged_weights(self.model):
            self._score_and_keep(epoch, logs)

    def _score_and_keep(self, epoch, logs):
        if self.validation is not None:
            logs.update({f"val_{name}": value for name, value in score(self.model, self.validation).items()})
        logs_now = {name: float(value) for name, value in logs.items()}
        if self.objective.name not in logs_now:
            raise ValueError(f"objective {self.objective.name!r} is not among this epoch's metrics "
                             f"{sorted(logs_now)}.")
        value = logs_now[self.objective.name]
        self.history.append({"epoch": epoch + 1, **logs_now})
        if self.verbose:
            shown = ", ".join(f"{name} {logs_now[name]:.3f}" for name in sorted(logs_now) if name.startswith("val_"))
            print(f"  epoch {epoch + 1}: {shown or 'no validation data'}", flush=True)
        if self._better(value):
            self.best, self.best_epoch, self.best_logs = value, epoch, logs_now
            self.best_optimizer_steps = int(self.model.optimizer.iterations.numpy())
            checkpoint.save_weights(self.model, self.trial_dir)
