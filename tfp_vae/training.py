"""train(config, workdir): fit a VAE on real data, resumable, with metrics and pictures.

    import tfp_vae
    config = tfp_vae.Config().replace(training={"epochs": 5}, data={"train_examples": 5000})
    metrics = tfp_vae.train(config, "runs/quick")
    model = tfp_vae.load("runs/quick")

WORKDIR layout: config.json, metrics.json, history.csv, weights/ (final weights),
backup/ (per-epoch checkpoint with optimizer state: resume after a kill, or extend --epochs),
logs/ (TensorBoard), samples.png, reconstructions.png.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import csv
import json
import math
import os
import shutil
import time

import numpy as np
import tf_keras

from tfp_vae import data as data_lib
from tfp_vae import plots
from tfp_vae.callbacks import ImageSummaries, StopOnNaN, Throughput
from tfp_vae.config import Config, load_config, save_config
from tfp_vae.model import VAE

__all__ = ["build_model", "load", "save_weights", "train", "write_json"]

WEIGHTS = "weights"
CHECKPOINT_PREFIX = "checkpoint"


def write_json(values: dict, path: str) -> None:
    """Writes JSON atomically: readers see the old file or the new one, never half of one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(values, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def build_model(config: Config, steps_per_epoch: int = 1) -> VAE:
    """A compiled VAE for `config`; warm-up is counted in optimizer steps."""
    model = VAE(config.model)
    training = config.training
    model.compile(
        tf_keras.optimizers.Adam(training.learning_rate),
        beta=training.beta,
        warmup_steps=int(round(training.warmup_epochs * steps_per_epoch)),
        free_bits=training.free_bits,
        steps_per_execution=training.steps_per_execution,
    )
    return model


def save_weights(model: VAE, workdir: str) -> str:
    """Writes WORKDIR/weights/ whole or not at all: written beside it, then renamed into place."""
    final = os.path.join(workdir, WEIGHTS)
    staging = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_weights(os.path.join(staging, CHECKPOINT_PREFIX))
    previous = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.rename(final, previous)
    os.rename(staging, final)
    shutil.rmtree(previous, ignore_errors=True)
    return final


def load(workdir: str) -> VAE:
    """Rebuilds the trained model of a run folder from its config.json and weights/."""
    config = load_config(os.path.join(workdir, "config.json"))
    prefix = os.path.join(workdir, WEIGHTS, CHECKPOINT_PREFIX)
    if not os.path.exists(prefix + ".index"):
        raise FileNotFoundError(
            f"no trained weights in {os.path.join(workdir, WEIGHTS)}: training in {workdir} has not "
            "finished; run trainers/train.py with the same --workdir to resume it.")
    model = build_model(config)
    model.load_weights(prefix).expect_partial()  # the optimizer state is not needed to use it
    return model


def _check_resumable(config: Config, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    previous = load_config(path).to_dict()
    current = config.to_dict()
    # Only the number of epochs may change between runs in one workdir.
    previous["training"].pop("epochs")
    current["training"].pop("epochs")
    if previous != current:
        changed = [f"{section}.{key}" for section in current for key in current[section]
                   if current[section][key] != previous[section].get(key)]
        raise ValueError(
            f"{workdir} holds a run with a different config (changed: {', '.join(changed)}); "
            "use a new --workdir, or the same settings to resume it.")


def _last_row(history_csv: str) -> dict:
    if not os.path.exists(history_csv):
        return {}
    with open(history_csv) as handle:
        rows = list(csv.DictReader(handle))
    return {key: float(value) for key, value in rows[-1].items()} if rows else {}


def _split_logs(row: dict) -> tuple:
    train = {name: row[name] for name in VAE.metric_names if name in row}
    validation = {name: row[f"val_{name}"] for name in VAE.metric_names if f"val_{name}" in row}
    return train, validation


def train(config: Config, workdir: str, verbose: int = 1) -> dict:
    """Trains (or resumes) the run in `workdir` and returns the metrics written to metrics.json."""
    started = time.time()
    os.makedirs(workdir, exist_ok=True)
    config = config.replace(model={"image_shape": data_lib.image_shape(config.data)})
    _check_resumable(config, workdir)
    save_config(config, os.path.join(workdir, "config.json"))
    tf_keras.utils.set_random_seed(config.training.seed)

    datasets = data_lib.make_datasets(config)
    steps_per_epoch = math.ceil(datasets.train_examples / config.training.batch_size)
    model = build_model(config, steps_per_epoch)

    backup_dir = os.path.join(workdir, "backup")
    history_csv = os.path.join(workdir, "history.csv")
    throughput = Throughput(datasets.train_examples)
    preview = next(iter(datasets.validation or datasets.test))[:16]
    model(preview)  # builds the variables, so BackupAndRestore can restore into them
    callbacks = [
        StopOnNaN(checkpoint_hint=f"The last completed epoch stays saved in {backup_dir}."),
        # Restores weights, optimizer state and the epoch counter after a crash or kill. Kept
        # after the last epoch, so a later run with a larger --epochs continues from there.
        tf_keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        tf_keras.callbacks.CSVLogger(history_csv, append=True),
        tf_keras.callbacks.TensorBoard(os.path.join(workdir, "logs")),
        ImageSummaries(os.path.join(workdir, "logs", "images"), preview, seed=config.training.seed),
        throughput,
    ]
    model.fit(datasets.train, validation_data=datasets.validation, epochs=config.training.epochs,
              callbacks=callbacks, verbose=verbose)
    save_weights(model, workdir)

    test = model.evaluate(datasets.test, return_dict=True, verbose=verbose)
    train_metrics, validation_metrics = _split_logs(_last_row(history_csv))
    metrics = {
        "train": train_metrics,
        "validation": validation_metrics,
        "test": {name: float(value) for name, value in test.items()},
        "epochs": int(_last_row(history_csv).get("epoch", -1)) + 1,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "examples_per_second": throughput.examples_per_second,
        "train_examples": datasets.train_examples,
        "seconds_this_run": time.time() - started,
        "units": "nats per example",
    }
    write_json(metrics, os.path.join(workdir, "metrics.json"))

    test_images = next(iter(datasets.test))[:32]
    plots.save_image_grid(model.sample(64, seed=config.training.seed), os.path.join(workdir, "samples.png"),
                          "samples: mean of p(x|z), z ~ N(0, I)")
    originals_and_reconstructions = np.concatenate(
        [np.asarray(test_images), np.asarray(model.reconstruct(test_images))], axis=0)
    plots.save_image_grid(originals_and_reconstructions, os.path.join(workdir, "reconstructions.png"),
                          "test images (top 4 rows) and their reconstructions (bottom 4 rows)")
    return metrics
