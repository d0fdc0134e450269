"""Keras callbacks used by training: NaN guard, timers and time budget, best weights, TensorBoard images."""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import csv
import gc
import math
import os
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tfp_vae.averaging import averaged_weights

__all__ = ["BestWeights", "EpochClock", "HistoryCSV", "ImageSummaries", "StopOnNaN", "Throughput",
           "TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


class StopOnNaN(tf_keras.callbacks.Callback):
    """Raises at the first non-finite training loss.

    Raising (rather than Keras's TerminateOnNaN, which sets stop_training) stops `fit` before
    the epoch-end callbacks run, so no checkpoint is written with NaN weights.
    """

    def __init__(self, checkpoint_hint: str = ""):
        super().__init__()
        self.checkpoint_hint = checkpoint_hint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDivergedError(
                f"training loss became {float(loss)} in epoch {self._epoch + 1} (batch {batch + 1}); "
                "training stopped. Try a lower --learning-rate, a KL warm-up (--warmup-epochs) or "
                "check the input data for NaNs." + (f" {self.checkpoint_hint}" if self.checkpoint_hint else ""))


class Throughput(tf_keras.callbacks.Callback):
    """Training examples per second, timed over the training phase of each epoch.

    The first epoch of a process includes tracing and graph building, so it is left out of
    `examples_per_second` whenever a later epoch exists.
    """

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.epoch_seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def _stop(self):
        if self._start is not None:
            self.epoch_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_test_begin(self, logs=None):  # validation inside fit starts: training phase is over
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()

    @property
    def examples_per_second(self):
        seconds = self.epoch_seconds[1:] or self.epoch_seconds
        if not seconds:
            return None
        return self.examples_per_epoch * len(seconds) / sum(seconds)


class ImageSummaries(tf_keras.callbacks.Callback):
    """Writes prior samples and reconstructions of fixed images to TensorBoard every epoch."""

    def __init__(self, log_dir: str, images, num_samples: int = 32, seed: int = 0):
        super().__init__()
        self.images = np.asarray(images, np.float32)
        self.latents = None
        self.num_samples = num_samples
        self.seed = seed
        self.writer = tf.summary.create_file_writer(log_dir)

    def on_epoch_end(self, epoch, logs=None):
        with averaged_weights(self.model):  # with ema_momentum, the weights validated and shipped
            if self.latents is None:  # fixed z, so the pictures show the model change, not the noise
                self.latents = self.model.prior.sample(self.num_samples, seed=self.seed)
            samples = self.model.decode(self.latents)
            reconstructions = self.model.reconstruct(self.images)
        pairs = tf.concat([self.images, reconstructions], axis=2)  # original | reconstruction
        with self.writer.as_default():
            tf.summary.image("samples", samples, step=epoch, max_outputs=self.num_samples)
            tf.summary.image("reconstructions", pairs, step=epoch, max_outputs=len(self.images))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class EpochClock(tf_keras.callbacks.Callback):
    """Appends each epoch's wall time to `path` (a CSV of epoch, seconds, gc_seconds), and with a
    `time_budget` (seconds since `started`) stops `fit` after the last epoch that fits.

    An epoch's time runs from the end of the previous epoch (the first: from its own start) to
    its end, so it holds training, validation, every callback's end-of-epoch work (put the clock
    LAST in the list) and whatever `fit` does between epochs: the wall time a user waits.
    (Timed from on_epoch_begin instead, resnet_vamp's 250 epochs missed about 6 s each of the
    37 s, spent between one epoch's end and the next one's begin.) gc_seconds: the time Python's
    cyclic garbage collector ran within the epoch, one suspect for that gap.

    An epoch is only started when the longest epoch so far would still end within the budget,
    so a budgeted run stops at an epoch boundary, where BackupAndRestore has just saved.
    """

    COLUMNS = ("epoch", "seconds", "gc_seconds")

    def __init__(self, path: str, time_budget: Optional[float] = None, started: Optional[float] = None):
        super().__init__()
        self.path = path
        self.time_budget = time_budget
        self.started = time.time() if started is None else started
        self.longest_epoch = 0.0
        self.stopped_for_time = False
        self._last_end = None
        self._gc_started = None
        self._gc_seconds = 0.0

    def _on_gc(self, phase, info):
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self._gc_seconds += time.perf_counter() - self._gc_started
            self._gc_started = None

    def on_train_begin(self, logs=None):
        self._last_end = None
        gc.callbacks.append(self._on_gc)

    def on_train_end(self, logs=None):
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def on_epoch_begin(self, epoch, logs=None):
        if self._last_end is None:
            self._last_end = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        seconds, self._last_end = now - self._last_end, now
        gc_seconds, self._gc_seconds = self._gc_seconds, 0.0
        if os.path.exists(self.path):
            with open(self.path) as handle:  # a file begun by an older version keeps its columns
                columns = handle.readline().strip().split(",")
            header = ""
        else:
            columns, header = list(self.COLUMNS), ",".join(self.COLUMNS) + "\n"
        values = {"epoch": f"{epoch}", "seconds": f"{seconds:.3f}", "gc_seconds": f"{gc_seconds:.3f}"}
        with open(self.path, "a") as handle:
            handle.write(header + ",".join(values[column] for column in columns) + "\n")
        self.longest_epoch = max(self.longest_epoch, seconds)
        if self.time_budget is not None and now - self.started + self.longest_epoch > self.time_budget:
            self.model.stop_training = True
            self.stopped_for_time = True

    @staticmethod
    def total_seconds(path: str) -> float:
        """The sum over every epoch `path` recorded, in every run that appended to it."""
        if not os.path.exists(path):
            return 0.0
        with open(path) as handle:
            return float(sum(float(row["seconds"]) for row in csv.DictReader(handle)))


class HistoryCSV(tf_keras.callbacks.Callback):
    """Appends each epoch's logs to `path` (epoch, then the logged values), across resumed runs.

    Why not Keras's CSVLogger(append=True): it writes the header once and then the rows in the
    current run's key order, so a resumed run that logs other keys (a new version, a new metric)
    silently shifts every later row under the wrong column (resnet_vamp's epochs 101-249 did).
    Here a row always follows the file's header; a key the header lacks rewrites the file with
    the wider header (atomically: written beside it, then renamed), old rows left blank there.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": str(epoch)}
        row.update({key: repr(float(value)) for key, value in sorted((logs or {}).items())})
        rows, header = [], []
        if os.path.exists(self.path):
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                header = list(reader.fieldnames or [])
                if not set(row) <= set(header):
                    rows = list(reader)
        if header and set(row) <= set(header):
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, header, restval="").writerow(row)
            return
        header = header + [key for key in row if key not in header]
        temporary = f"{self.path}.tmp-{os.getpid()}"
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, header, restval="")
            writer.writeheader()
            writer.writerows(rows + [row])
        os.replace(temporary, self.path)


class BestWeights(tf_keras.callbacks.Callback):
    """Calls `save(record)` whenever `monitor` (default val_elbo, higher is better) beats `best`.

    `record` is {"epoch": e, monitor: value, "logs": the epoch's logs}; `best` carries the best
    value over from a run that this one resumes. NaN never counts as an improvement.
    """

    def __init__(self, save: Callable[[dict], None], best: Optional[float] = None, monitor: str = "val_elbo"):
        super().__init__()
        self.save, self.best, self.monitor = save, best, monitor
        self.saved_any = False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"BestWeights monitors {self.monitor!r}, which fit did not log (is there "
                             "validation data?).")
        value = float(value)
        if math.isfinite(value) and (self.best is None or value > self.best):
            self.best = value
            # The whole logs travel with the weights: a run killed after this save but before
            # the epoch's backup redoes the epoch, and the redone epoch's history row (which may
            # not beat this one) describes other weights.
            self.save({"epoch": int(epoch), self.monitor: value,
                       "logs": {key: float(logged) for key, logged in logs.items()}})
            self.saved_any = True
