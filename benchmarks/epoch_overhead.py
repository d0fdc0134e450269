"""What each epoch costs besides its training steps: the input pipeline's start and end, and fit's epoch boundary.

    python benchmarks/epoch_overhead.py                # about 2 minutes on 2 cores
    python benchmarks/epoch_overhead.py --epochs 6 --iterations 4

On the likelihood protocol's data (50,000 dynamically binarized training images, the whole set
in the shuffle buffer, batch 100), side by side in one run:

1. The training pipeline alone, per iteration (an epoch): the time to its first batch, to its
   last, and to drop the iterator; for the pipeline order before (binarize, then shuffle:
   float32 images in the buffer; rebuilt here as the baseline) and tfp_vae.data's (shuffle the
   cached uint8 images, then binarize).
2. `model.fit` of the likelihood protocol's `mlp` model, with validation, for a few epochs, in
   four variants: either pipeline order, and either a finite dataset (Keras makes a new
   iterator every epoch and drops the old one) or `dataset.repeat()` with `steps_per_epoch` (one
   iterator for the whole fit: what tfp_vae.training does). Printed: the epoch wall time from
   one epoch's end to the next's (the first epoch, with tracing, is left out), the part of it
   between `on_epoch_begin` and `on_epoch_end`, and the time to the first step's end.

Figures are void while anything else runs on the machine: the load average is printed.
"""
import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tfp_vae import _env  # noqa: E402,F401  (must precede tensorflow)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from tfp_vae import data as data_lib  # noqa: E402
from tfp_vae import likelihood, training  # noqa: E402

CONFIG = likelihood.MODELS["mlp"].config
BATCH_SIZE = CONFIG.training.batch_size


def map_then_shuffle(config, batch_size: int, seed: int = 0) -> tf.data.Dataset:
    """The training pipeline as tfp_vae.data built it before: binarize, then shuffle."""
    examples = data_lib.load_examples(config, "train").cache()
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip((examples, draws)).map(
        lambda e, r: data_lib.to_model_input(e["image"], config.dataset, tf.stack([r, tf.constant(0, tf.int64)])),
        num_parallel_calls=tf.data.AUTOTUNE)
    size = int(examples.cardinality())
    dataset = dataset.shuffle(min(config.shuffle_buffer, size), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


PIPELINES = {
    "binarize, then shuffle (before)": map_then_shuffle,
    "shuffle, then binarize (tfp_vae.data)": lambda config, batch_size: data_lib.input_pipeline(
        config, "train", batch_size),
}


def pipeline_iterations(dataset: tf.data.Dataset, iterations: int) -> np.ndarray:
    """[iterations, 3]: seconds to the first batch, to the last, to drop the iterator."""
    rows = []
    for _ in range(iterations):
        started = time.perf_counter()
        iterator = iter(dataset)
        next(iterator)
        first = time.perf_counter()
        for _ in iterator:
            pass
        last = time.perf_counter()
        del iterator
        rows.append((first - started, last - started, time.perf_counter() - last))
    return np.array(rows)


class EpochTimes(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begins, self.ends, self.first_steps = [], [], []
        self._epoch_begin = None

    def on_train_begin(self, logs=None):
        self.ends.append(time.perf_counter())  # the first epoch is timed from fit's start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_begin = time.perf_counter()
        self.begins.append(self._epoch_begin)

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.first_steps.append(time.perf_counter() - self._epoch_begin)

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def fit_epochs(pipeline, repeat: bool, epochs: int) -> dict:
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(0)
    steps = math.ceil(data_lib.num_examples(CONFIG.data, "train") / BATCH_SIZE)
    train = pipeline(CONFIG.data, BATCH_SIZE)
    validation = data_lib.input_pipeline(CONFIG.data, "validation", BATCH_SIZE)
    model = training.build_model(CONFIG, steps)
    clock = EpochTimes()
    model.fit(train.repeat() if repeat else train, steps_per_epoch=steps if repeat else None,
              validation_data=validation, epochs=epochs, callbacks=[clock], verbose=0)
    ends, begins = np.array(clock.ends), np.array(clock.begins)
    wall = np.diff(ends)[1:]  # epoch k's end minus epoch k-1's end, k >= 2
    inside = (ends[1:] - begins)[1:]
    return {"wall": wall.mean(), "inside": inside.mean(), "between": (wall - inside).mean(),
            "first_step": np.mean(clock.first_steps[1:])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit variant (>= 2; the first is not timed)")
    parser.add_argument("--iterations", type=int, default=3, help="iterations of each pipeline alone")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.iterations < 1:
        parser.error("--epochs must be >= 2 and --iterations >= 1.")
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; TF {tf.__version__}")
    print(f"\nThe training pipeline alone ({data_lib.num_examples(CONFIG.data, 'train')} images, batch {BATCH_SIZE}), "
          f"mean of {args.iterations} iterations:")
    print("| pipeline | first batch | whole epoch | drop the iterator |\n|---|---:|---:|---:|")
    for name, pipeline in PIPELINES.items():
        first, last, drop = pipeline_iterations(pipeline(CONFIG.data, BATCH_SIZE), args.iterations).mean(0)
        print(f"| {name} | {first:.2f} s | {last:.2f} s | {drop:.3f} s |", flush=True)

    print(f"\nmodel.fit of the likelihood mlp with validation, epochs 2-{args.epochs} (means):")
    print("| pipeline | iterator | epoch wall time | on_epoch_begin to end | between epochs | first step |\n"
          "|---|---|---:|---:|---:|---:|")
    results = {}
    for name, pipeline in PIPELINES.items():
        for repeat in (False, True):
            row = fit_epochs(pipeline, repeat, args.epochs)
            results[(name, repeat)] = row
            iterator = "one (repeat + steps_per_epoch)" if repeat else "new each epoch"
            print(f"| {name} | {iterator} | {row['wall']:.2f} s | {row['inside']:.2f} s | {row['between']:.2f} s "
                  f"| {row['first_step']:.2f} s |", flush=True)
    before = results[(list(PIPELINES)[0], False)]["wall"]
    after = results[(list(PIPELINES)[1], True)]["wall"]
    print(f"\nepoch wall time, tfp_vae now / before: {after:.2f} s / {before:.2f} s = {after / before:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
