"""train(config, workdir): fit a VAE on real data, resumable, with metrics and pictures.

    import tfp_vae
    config = tfp_vae.Config().replace(training={"epochs": 5}, data={"train_examples": 5000})
    metrics = tfp_vae.train(config, "runs/quick")
    model = tfp_vae.load("runs/quick")

WORKDIR layout: config.json, metrics.json, history.csv, epoch_times.csv (wall time of each
epoch, all runs), weights/ (final weights),
backup/ (per-epoch checkpoint with optimizer state: resume after a kill, or extend --epochs),
best/ (with `keep_best`: the weights of the best validation ELBO so far, and best.json),
logs/ (TensorBoard), samples.png, reconstructions.png.

`train(config, workdir, time_budget=seconds)` stops at the last epoch boundary that fits in the
budget; calling it again with the same workdir continues (metrics.json says `finished`).

Under tf.distribute (`training.strategy`; README section "Several devices and machines") the model
is built and compiled in the strategy's scope; `batch_size` is the global batch. With `multi_worker`
every worker runs this whole function (fit, evaluate and saving are collective), but only the chief writes WORKDIR;
each other worker writes to a temporary folder of its own, removed when it returns, and restores
from the chief's WORKDIR/backup (so resuming needs WORKDIR on storage all workers see).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import dataclasses
import math
import os
import shutil
import time
from typing import Optional

import numpy as np
import tf_keras

from tfp_vae import data as data_lib
from tfp_vae import distribute
from tfp_vae import plots
from tfp_vae.averaging import AveragedValidation, AveragingAdam, averaged_weights, uses_weight_averaging
from tfp_vae.callbacks import BestWeights, EpochClock, HistoryCSV, ImageSummaries, StopOnNaN, Throughput
from tfp_vae.checkpoint import (BACKUP, BEST, CHECKPOINT_PREFIX, EPOCH_TIMES, WEIGHTS, check_resumable,
                                epochs_trained, history_rows, read_best, save_weights, saved_folder, write_json)
from tfp_vae.config import Config, load_config, save_config
from tfp_vae.model import VAE
from tfp_vae.prior import VampPrior, top_prior

__all__ = ["build_model", "load", "train"]


def build_model(config: Config, steps_per_epoch: int = 1) -> VAE:
    """A compiled VAE for `config`; warm-up is counted in optimizer steps.

    Call it inside `strategy.scope()` to train under tf.distribute."""
    training = config.training
    model = VAE(config.model, mixed_precision=training.mixed_precision,
                mixed_precision_dtype=training.mixed_precision_dtype)
    learning_rate = training.learning_rate
    if training.learning_rate_schedule == "cosine":
        # Counted in optimizer steps, which BackupAndRestore restores: a resumed run continues
        # the same curve.
        learning_rate = tf_keras.optimizers.schedules.CosineDecay(
            training.learning_rate, decay_steps=max(1, training.epochs * steps_per_epoch), alpha=0.01)
    if training.ema_momentum > 0:
        optimizer = AveragingAdam(learning_rate, ema_momentum=training.ema_momentum)
    else:
        optimizer = tf_keras.optimizers.Adam(learning_rate)
    model.compile(
        optimizer,
        beta=training.beta,
        warmup_steps=int(round(training.warmup_epochs * steps_per_epoch)),
        free_bits=training.free_bits,
        importance_samples=training.importance_samples,
        steps_per_execution=training.steps_per_execution,
        jit_compile=training.jit_compile,
    )
    return model


def load(workdir: str) -> VAE:
    """Rebuilds the trained model of a run folder from its config.json and weights/."""
    config = load_config(os.path.join(workdir, "config.json"))
    prefix = os.path.join(saved_folder(os.path.join(workdir, WEIGHTS)), CHECKPOINT_PREFIX)
    if not os.path.exists(prefix + ".index"):
        raise FileNotFoundError(
            f"no trained weights in {os.path.join(workdir, WEIGHTS)}: training in {workdir} has not "
            "finished; run trainers/train.py with the same --workdir to resume it.")
    # Inference in float32 whatever the training precision: the variables are float32 either way.
    model = build_model(config.replace(training={"mixed_precision": False, "mixed_precision_dtype": "float16",
                                                 "jit_compile": False}))
    model.load_weights(prefix).expect_partial()  # the optimizer state is not needed to use it
    return model


def _split_logs(row: dict) -> tuple:
    train = {name: row[name] for name in VAE.metric_names if name in row}
    validation = {name: row[f"val_{name}"] for name in VAE.metric_names if f"val_{name}" in row}
    return train, validation


def _backup_dir(workdir: str, output_dir: str, chief: bool) -> str:
    """The chief backs up into WORKDIR/backup. Keras's BackupAndRestore reads BACKUP/chief on
    every worker and has the others write BACKUP/workertemp_<id>: for them BACKUP is a folder in
    their temporary output_dir whose `chief` links to WORKDIR/backup/chief, so they read the
    chief's checkpoint and write nothing into WORKDIR."""
    if chief:
        return os.path.join(workdir, BACKUP)
    backup_dir = os.path.join(output_dir, BACKUP)
    os.makedirs(backup_dir, exist_ok=True)
    os.symlink(os.path.abspath(os.path.join(workdir, BACKUP, "chief")), os.path.join(backup_dir, "chief"))
    return backup_dir


def train(config: Config, workdir: str, verbose: int = 1, time_budget: Optional[float] = None) -> dict:
    """Trains (or resumes) the run in `workdir` and returns the metrics written to metrics.json.

    `time_budget` (seconds, whole call) stops training at the last epoch boundary that fits; the
    weights, test metrics and pictures are then those of the model so far, metrics.json says
    `"finished": false`, and calling `train` again on `workdir` continues the run.

    Under `multi_worker` it runs on every worker and returns the same metrics on each; only the
    chief (`distribute.is_chief_process`) writes `workdir`."""
    started = time.time()
    if time_budget is not None:
        if isinstance(time_budget, bool) or not isinstance(time_budget, (int, float)) or not time_budget > 0:
            raise ValueError(f"time_budget must be a number of seconds > 0, got {time_budget!r}.")
        if config.training.strategy == "multi_worker":
            # Each worker would read its own clock and could stop an epoch before the others,
            # leaving them blocked in a collective op.
            raise ValueError("time_budget is not supported with strategy 'multi_worker': stop the "
                             "workers yourself and restart them with the same command to resume.")
    # First TensorFlow work of the process: MultiWorkerMirroredStrategy and logical CPU devices
    # must be set up before anything else initialises the runtime.
    strategy = distribute.create_strategy(config.training)
    chief = distribute.is_chief(strategy)
    config = config.replace(model={"image_shape": data_lib.image_shape(config.data)})
    check_resumable(config, workdir)
    output_dir = workdir if chief else distribute.worker_temp_dir(strategy)
    try:
        metrics = _train(config, workdir, output_dir, strategy, chief, verbose, started, time_budget)
    finally:
        if not chief:
            shutil.rmtree(output_dir, ignore_errors=True)  # removes the backup link, not its target
    return metrics


def _initialize_prior(model: VAE, config: Config) -> None:
    """A VampPrior's pseudo-inputs start as the first K training images (grey levels, not
    binarized), which trains faster than noise; a resumed run then restores its own."""
    prior = top_prior(model.prior_network)
    if not isinstance(prior, VampPrior):
        return
    components = config.model.prior_components
    images = data_lib.load_examples(config.data, "train").take(components).batch(components)
    images = next(iter(images))["image"].numpy()
    pixels = np.asarray(data_lib.to_model_input(images, config.data.dataset))
    prior.initialize_pseudo_inputs(np.resize(pixels, (components, *pixels.shape[1:])))


def _load_initial_weights(model: VAE, config: Config) -> None:
    """Starts from the final weights of the run in `config.training.initial_weights` (fine-tuning);
    the optimizer starts afresh."""
    source = config.training.initial_weights
    path = os.path.join(source, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"initial_weights (--initial-weights) {source!r} is not a run folder: it has no "
                                "config.json. Give the --workdir of a finished training run.")
    prefix = os.path.join(saved_folder(os.path.join(source, WEIGHTS)), CHECKPOINT_PREFIX)
    if not os.path.exists(prefix + ".index"):
        raise FileNotFoundError(f"initial_weights (--initial-weights) {source!r} has no weights/ yet: train that "
                                "run first (trainers/train.py or benchmarks/likelihood.py with its --workdir).")
    theirs, ours = dataclasses.asdict(load_config(path).model), dataclasses.asdict(config.model)
    if theirs != ours:
        changed = sorted(key for key in ours if ours[key] != theirs.get(key))
        raise ValueError(f"initial_weights (--initial-weights) {source!r} holds a model with a different config "
                         f"(model.{', model.'.join(changed)}); its weights would not fit. Start from a run of "
                         "the same model, or give this run that run's model settings.")
    # Through a separate model: the checkpoint also holds that run's optimizer, whose learning rate
    # and step count model.load_weights would restore into this run's fresh one. Part by part: the
    # VAE's own weights include its metrics', which differ with importance_samples.
    trained = load(source)
    for part in ("encoder", "decoder", "prior_network"):
        getattr(model, part).set_weights(getattr(trained, part).get_weights())


def _score_the_start(model, validation, best) -> None:
    """A fine-tune's starting weights compete for best/ as epoch -1 (best_epoch 0): a converged
    run given a fresh optimizer may never beat where it started, and keep-best must not then
    return something worse. A fresh optimizer's moving averages are the weights themselves."""
    if validation is None:
        return  # BestWeights names the missing validation data at the first epoch's end
    logs = {f"val_{name}": float(value)
            for name, value in model.evaluate(validation, return_dict=True, verbose=0).items()}
    best.on_epoch_end(-1, logs)


def _train(config: Config, workdir: str, output_dir: str, strategy, chief: bool, verbose: int,
           started: float, time_budget: Optional[float]) -> dict:
    os.makedirs(output_dir, exist_ok=True)
    save_config(config, os.path.join(output_dir, "config.json"))
    # A resumed run reseeds everything (the sampling noise of the reparameterization as well as
    # the data) from the epoch it resumes at, or it would replay the first epochs' random numbers.
    # Read from the run's own folder (the chief's backup, which every worker sees), so all
    # workers of a resumed multi-worker run agree on the seed their DATA shards assume.
    first_epoch = epochs_trained(workdir)
    tf_keras.utils.set_random_seed(data_lib.train_seed(config.training.seed, first_epoch))
    datasets = data_lib.make_datasets(config, first_epoch=first_epoch)
    if config.training.strategy == "multi_worker":
        datasets = dataclasses.replace(datasets, **{
            split: distribute.shard_by_data(getattr(datasets, split))
            for split in ("train", "validation", "test") if getattr(datasets, split) is not None})
    steps_per_epoch = math.ceil(datasets.train_examples / config.training.batch_size)
    preview = next(iter(datasets.validation or datasets.test))[:16]
    with strategy.scope():
        model = build_model(config, steps_per_epoch)
        model(preview)  # builds the variables, so BackupAndRestore can restore into them
        if config.training.initial_weights and first_epoch == 0:
            _load_initial_weights(model, config)
        else:
            _initialize_prior(model, config)

    backup_dir = _backup_dir(workdir, output_dir, chief)
    history_csv = os.path.join(output_dir, "history.csv")
    throughput = Throughput(datasets.train_examples)
    clock = EpochClock(os.path.join(output_dir, EPOCH_TIMES), time_budget, started)
    callbacks = [
        StopOnNaN(checkpoint_hint=f"The last completed epoch stays saved in {os.path.join(workdir, BACKUP)}."),
        # Restores weights, optimizer state and the epoch counter after a crash or kill. Kept
        # after the last epoch, so a later run with a larger --epochs continues from there.
        tf_keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
        HistoryCSV(history_csv),
        tf_keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")),
        ImageSummaries(os.path.join(output_dir, "logs", "images"), preview, seed=config.training.seed),
        throughput,
    ]
    best = None
    if config.training.keep_best:
        # Carried over from the run this one resumes (the chief's, on storage all workers see).
        def save_best(record):
            with averaged_weights(model):  # the weights that were validated
                save_weights(model, output_dir, BEST, record)

        # The bound being trained: an importance-weighted run can trade ELBO for log p(x).
        monitor = "val_iwae" if config.training.importance_samples > 1 else "val_elbo"
        best = BestWeights(save_best, (read_best(workdir) or {}).get(monitor), monitor=monitor)
        callbacks.insert(1, best)  # before the backup: a resumed epoch re-saves if it was best
        if config.training.initial_weights and first_epoch == 0:
            _score_the_start(model, datasets.validation, best)
    if uses_weight_averaging(model):
        callbacks.insert(0, AveragedValidation())
    callbacks.append(clock)  # last: its epoch times include every other callback's work
    # One iterator for the whole fit (repeat, with the epoch's length given): with a finite
    # dataset Keras makes a new iterator every epoch, and dropping the old one waits for
    # tf.data's autotuning thread, up to seconds an epoch (benchmarks/epoch_overhead.py).
    # Batching precedes the repeat, so each epoch is still one pass with its own short batch.
    model.fit(datasets.train.repeat(), steps_per_epoch=steps_per_epoch, validation_data=datasets.validation,
              epochs=config.training.epochs, callbacks=callbacks, verbose=verbose)
    # With ema_momentum, fit has copied the averages into the model as it returned
    # (finalize_variable_values): the weights written below are the average.

    # Read before the best epoch's checkpoint (which holds its own step count) is loaded.
    optimizer_steps = int(model.optimizer.iterations.numpy())
    best_record = None
    if best is not None:
        folder = output_dir if best.saved_any or chief else workdir
        best_record = read_best(folder)
        if best_record is not None:
            kept = saved_folder(os.path.join(folder, BEST))
            model.load_weights(os.path.join(kept, CHECKPOINT_PREFIX)).expect_partial()
    save_weights(model, output_dir)  # on every worker: reading synced variables is collective

    test = model.evaluate(datasets.test, return_dict=True, verbose=verbose)
    rows = history_rows(history_csv)
    chosen = rows[-1] if rows else {}
    if best_record is not None:  # the metrics of the weights kept
        # Their own logs (best.json) rather than the history row of their epoch: after a kill
        # between the best save and the epoch's backup, that row is the redone epoch's. Records
        # written before the logs were added fall back to the row.
        chosen = best_record.get("logs") or next(
            (row for row in rows if int(row["epoch"]) == best_record["epoch"]), chosen)
    train_metrics, validation_metrics = _split_logs(chosen)
    epochs = int(rows[-1]["epoch"]) + 1 if rows else 0
    metrics = {
        "train": train_metrics,
        "validation": validation_metrics,
        "test": {name: float(value) for name, value in test.items()},
        "epochs": epochs,
        "epochs_planned": config.training.epochs,
        "finished": epochs >= config.training.epochs,
        "stopped_for_time_budget": clock.stopped_for_time,
        "best_epoch": None if best_record is None else best_record["epoch"] + 1,
        "parameters": int(sum(np.prod(variable.shape) for variable in model.trainable_variables)),
        # Wall time of every completed epoch of every run of this workdir (training, validation,
        # checkpoints and pictures; not start-up, nor an epoch cut short by a kill).
        "training_seconds": EpochClock.total_seconds(os.path.join(output_dir, EPOCH_TIMES)),
        "optimizer_steps": optimizer_steps,  # trained so far, over all runs of the workdir
        "examples_per_second": throughput.examples_per_second,
        "train_examples": datasets.train_examples,
        "strategy": config.training.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "seconds_this_run": time.time() - started,
        "units": "nats per example",
    }
    write_json(metrics, os.path.join(output_dir, "metrics.json"))

    test_images = next(iter(datasets.test))[:32]
    plots.save_image_grid(model.sample(64, seed=config.training.seed), os.path.join(output_dir, "samples.png"),
                          f"samples: mean of p(x|z), z ~ p(z) ({config.model.prior})")
    originals_and_reconstructions = np.concatenate(
        [np.asarray(test_images), np.asarray(model.reconstruct(test_images))], axis=0)
    plots.save_image_grid(originals_and_reconstructions, os.path.join(output_dir, "reconstructions.png"),
                          "test images (top 4 rows) and their reconstructions (bottom 4 rows)")
    return metrics
