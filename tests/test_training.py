from tfp_vae import _env  # noqa: F401

import csv
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfp_vae
from tfp_vae import checkpoint, training
from tfp_vae.averaging import averaged_weights
from tfp_vae.callbacks import BestWeights, StopOnNaN, TrainingDivergedError
from tfp_vae.model import VAE


def tiny_config(**training_values):
    values = {"epochs": 1, "batch_size": 64}
    values.update(training_values)
    return tfp_vae.Config().replace(
        model={"latent_dim": 4, "hidden_units": (32,)},
        data={"train_examples": 512, "validation_examples": 256},
        training=values,
    )


def history_epochs(workdir):
    with open(os.path.join(workdir, "history.csv")) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    metrics = training.train(tiny_config(epochs=2), workdir, verbose=0)
    return workdir, metrics


def test_train_writes_metrics_config_pictures_and_logs(trained_run):
    workdir, metrics = trained_run
    on_disk = json.load(open(os.path.join(workdir, "metrics.json")))
    assert on_disk == json.loads(json.dumps(metrics))
    assert set(on_disk) >= {"train", "validation", "test", "epochs", "examples_per_second"}
    for split in ("train", "validation", "test"):
        terms = on_disk[split]
        assert set(terms) >= {"elbo", "reconstruction", "kl"}
        assert terms["elbo"] == pytest.approx(terms["reconstruction"] - terms["kl"], rel=1e-5)
        assert -800 < terms["elbo"] < -100  # nats per 28x28 binary image
    assert on_disk["epochs"] == 2 and on_disk["optimizer_steps"] == 2 * 8
    assert on_disk["examples_per_second"] > 0
    saved = tfp_vae.load_config(os.path.join(workdir, "config.json"))
    assert saved.model.image_shape == (28, 28, 1) and saved.model.latent_dim == 4
    for picture in ("samples.png", "reconstructions.png"):
        with open(os.path.join(workdir, picture), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert history_epochs(workdir) == [0, 1]


def test_tensorboard_has_scalars_and_images(trained_run):
    workdir, _ = trained_run
    tags = set()
    for path in glob.glob(os.path.join(workdir, "logs", "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_elbo", "epoch_kl", "epoch_reconstruction", "samples", "reconstructions"} <= tags


def test_load_rebuilds_the_trained_model(trained_run):
    workdir, metrics = trained_run
    model = tfp_vae.load(workdir)
    config = tfp_vae.load_config(os.path.join(workdir, "config.json"))
    from tfp_vae import data
    test_set = data.input_pipeline(config.data, "test", 500)
    result = model.evaluate(test_set, return_dict=True, verbose=0)
    # One z sample per example: the reloaded model's test ELBO matches within Monte-Carlo noise.
    assert result["kl"] == pytest.approx(metrics["test"]["kl"], rel=1e-4)  # exact KL: no noise
    assert result["elbo"] == pytest.approx(metrics["test"]["elbo"], abs=1.0)


def test_initial_weights_start_a_fine_tuning_run_from_a_finished_one(tmp_path):
    vamp = {"prior": "vamp", "prior_components": 4}  # its pseudo-inputs are weights too
    source, workdir = str(tmp_path / "source"), str(tmp_path / "fine_tuned")
    training.train(tiny_config().replace(model=vamp), source, verbose=0)
    # A learning rate of 1e-12 keeps the weights where they started, to compare them. (Loading the
    # source's checkpoint whole would also restore its optimizer's learning rate: 1e-3.)
    config = tiny_config(epochs=1, importance_samples=3, initial_weights=source, learning_rate=1e-12,
                         keep_best=True).replace(model=vamp)
    metrics = training.train(config, workdir, verbose=0)
    tuned, started = training.load(workdir), training.load(source)
    _assert_same(_trainable_values(tuned), _trainable_values(started), atol=1e-6)
    assert len(tuned.trainable_variables) == len(tuned.encoder.trainable_variables) + len(
        tuned.decoder.trainable_variables) + 1  # the pseudo-inputs: compared above
    # Trained and selected on the 3-sample bound, which is at least the ELBO of the same draws.
    assert metrics["validation"]["iwae"] >= metrics["validation"]["elbo"]
    with open(os.path.join(workdir, "best", "best.json")) as handle:
        assert "val_iwae" in json.load(handle)
    assert training.load(workdir).importance_samples == 3


def test_a_fine_tune_that_never_beats_its_start_keeps_the_start(trained_run, tmp_path):
    source, _ = trained_run
    # Adam steps of 1.0 wreck every weight: no epoch of this fine-tune can validate better.
    config = tiny_config(epochs=1, initial_weights=source, learning_rate=1.0, keep_best=True)
    metrics = training.train(config, str(tmp_path / "wrecked"), verbose=0)
    assert history_epochs(str(tmp_path / "wrecked")) == [0]  # the epoch ran
    assert metrics["best_epoch"] == 0 and metrics["train"] == {}  # 0: the weights it started from
    _assert_same(_trainable_values(training.load(str(tmp_path / "wrecked"))),
                 _trainable_values(training.load(source)), atol=0)
    with open(os.path.join(str(tmp_path / "wrecked"), "best", "best.json")) as handle:
        record = json.load(handle)
    assert record["epoch"] == -1 and record["val_elbo"] == metrics["validation"]["elbo"]


def test_initial_weights_must_be_a_trained_run_of_the_same_model(trained_run, tmp_path):
    source, _ = trained_run
    with pytest.raises(FileNotFoundError, match="is not a run folder: it has no config.json"):
        training.train(tiny_config(initial_weights=str(tmp_path / "nothing")), str(tmp_path / "a"), verbose=0)
    other = tiny_config(initial_weights=source).replace(model={"latent_dim": 5})
    with pytest.raises(ValueError, match=r"different config \(model.latent_dim\)"):
        training.train(other, str(tmp_path / "b"), verbose=0)


def test_more_epochs_on_the_same_workdir_continue_training(tmp_path):
    workdir = str(tmp_path / "run")
    training.train(tiny_config(epochs=1), workdir, verbose=0)
    metrics = training.train(tiny_config(epochs=3), workdir, verbose=0)
    assert history_epochs(workdir) == [0, 1, 2]
    assert metrics["epochs"] == 3 and metrics["optimizer_steps"] == 3 * 8


def test_a_resumed_run_gets_training_draws_of_its_own(tmp_path, monkeypatch):
    seen = []
    make_datasets = training.data_lib.make_datasets

    def recording(config, **kwargs):
        seen.append(kwargs.get("first_epoch", 0))
        return make_datasets(config, **kwargs)

    seeds = []
    set_random_seed = tf_keras.utils.set_random_seed

    def recording_seed(seed):
        seeds.append(seed)
        set_random_seed(seed)

    monkeypatch.setattr(training.data_lib, "make_datasets", recording)
    monkeypatch.setattr(training.tf_keras.utils, "set_random_seed", recording_seed)
    workdir = str(tmp_path / "run")
    training.train(tiny_config(epochs=1, seed=5), workdir, verbose=0)
    training.train(tiny_config(epochs=3, seed=5), workdir, verbose=0)
    assert seen == [0, 1]  # the second run resumed after one epoch (tests/test_data.py: what that changes)
    # The global generator too (the reparameterization's noise), from the same derived seed.
    assert seeds == [5, training.data_lib.train_seed(5, 1)] and seeds[1] != 5


def test_fewer_epochs_than_trained_are_refused_not_ignored(tmp_path):
    workdir = str(tmp_path / "run")
    training.train(tiny_config(epochs=2), workdir, verbose=0)
    with pytest.raises(ValueError, match="already trained 2 epochs, more than the 1 asked for.*epochs=2 or more"):
        training.train(tiny_config(epochs=1), workdir, verbose=0)
    assert history_epochs(workdir) == [0, 1]
    # A kill between the epoch's backup and its history row: the backup's counter still counts.
    path = os.path.join(workdir, "history.csv")
    with open(path) as handle:
        lines = handle.readlines()
    with open(path, "w") as handle:
        handle.writelines(lines[:2])
    assert checkpoint.epochs_trained(workdir) == 2
    with pytest.raises(ValueError, match="already trained 2 epochs"):
        training.train(tiny_config(epochs=1), workdir, verbose=0)


def test_a_different_config_in_the_same_workdir_is_refused(tmp_path):
    workdir = str(tmp_path / "run")
    training.train(tiny_config(), workdir, verbose=0)
    with pytest.raises(ValueError, match="training.learning_rate"):
        training.train(tiny_config(learning_rate=0.1), workdir, verbose=0)


def test_load_of_an_unfinished_run_says_what_to_do(tmp_path):
    tfp_vae.save_config(tiny_config(), str(tmp_path / "config.json"))
    with pytest.raises(FileNotFoundError, match="resume"):
        tfp_vae.load(str(tmp_path))


def test_nan_loss_stops_before_any_checkpoint_is_written(tmp_path):
    model = VAE(tiny_config().model)
    model.compile("adam")
    images = np.zeros((64, 28, 28, 1), np.float32)
    images[40:] = np.nan  # the second batch of 32 has NaNs
    backup = str(tmp_path / "backup")
    callbacks = [StopOnNaN(), tf_keras.callbacks.BackupAndRestore(backup)]
    with pytest.raises(TrainingDivergedError, match="epoch 1 \\(batch 2\\).*learning-rate"):
        model.fit(images, batch_size=32, epochs=2, verbose=0, callbacks=callbacks, shuffle=False)
    assert not glob.glob(os.path.join(backup, "**", "*.index"), recursive=True)


def read_history(workdir):
    with open(os.path.join(workdir, "history.csv")) as handle:
        return list(csv.DictReader(handle))


def test_a_time_budget_stops_at_an_epoch_boundary_and_the_next_call_finishes(tmp_path):
    workdir = str(tmp_path / "run")
    # Any budget shorter than one epoch: the first epoch runs, then no other one fits.
    partial = training.train(tiny_config(epochs=3), workdir, verbose=0, time_budget=1e-3)
    assert partial["epochs"] == 1 and not partial["finished"] and partial["stopped_for_time_budget"]
    assert os.path.exists(os.path.join(workdir, "weights", "checkpoint.index"))
    done = training.train(tiny_config(epochs=3), workdir, verbose=0)
    assert done["finished"] and done["epochs"] == 3 and not done["stopped_for_time_budget"]
    assert history_epochs(workdir) == [0, 1, 2]
    with open(os.path.join(workdir, "epoch_times.csv")) as handle:
        times = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in times] == [0, 1, 2]  # both runs, each epoch once
    seconds = [float(row["seconds"]) for row in times]
    assert all(value > 0 for value in seconds)
    assert done["training_seconds"] == pytest.approx(sum(seconds), abs=1e-3)
    with pytest.raises(ValueError, match="time_budget"):
        training.train(tiny_config(), workdir, time_budget=0)


def test_keep_best_keeps_the_weights_and_metrics_of_the_best_validation_epoch(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")

    class SpoilTheLastEpoch(training.Throughput):
        """Zeroes the decoder as the last epoch starts: that epoch validates far worse."""

        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            if epoch == 3:
                for variable in self.model.decoder.trainable_weights:
                    variable.assign(tf.zeros_like(variable))

    monkeypatch.setattr(training, "Throughput", SpoilTheLastEpoch)
    metrics = training.train(tiny_config(epochs=4, keep_best=True, learning_rate=0.03), workdir, verbose=0)
    rows = read_history(workdir)
    best = max(range(len(rows)), key=lambda index: float(rows[index]["val_elbo"]))
    # The kept epoch is not the last one, so the final weights below can only equal the kept ones
    # if training reloaded them.
    assert best < len(rows) - 1, [row["val_elbo"] for row in rows]
    assert metrics["best_epoch"] == best + 1
    assert metrics["optimizer_steps"] == 4 * 8  # steps trained, not those of the kept epoch
    assert metrics["validation"]["elbo"] == pytest.approx(float(rows[best]["val_elbo"]))
    with open(os.path.join(workdir, "best", "best.json")) as handle:
        record = json.load(handle)
    assert record["epoch"] == best and record["val_elbo"] == pytest.approx(float(rows[best]["val_elbo"]))
    assert record["logs"] == pytest.approx({key: float(value) for key, value in rows[best].items() if key != "epoch"})
    final = tf.train.load_checkpoint(os.path.join(workdir, "weights", "checkpoint"))
    kept = tf.train.load_checkpoint(os.path.join(workdir, "best", "checkpoint"))
    names = [name for name in final.get_variable_to_shape_map() if "kernel" in name]
    assert names
    for name in names:
        np.testing.assert_array_equal(final.get_tensor(name), kept.get_tensor(name))


def test_a_kill_after_the_best_save_keeps_metrics_of_the_weights_kept(tmp_path, monkeypatch):
    """best/ is saved before the epoch's backup: a kill between the two redoes the epoch, whose
    new history row describes other weights than best/ holds when it does not beat them."""
    workdir = str(tmp_path / "run")
    config = tiny_config(epochs=2, keep_best=True, learning_rate=0.03)

    class KilledBeforeTheSecondBackup(tf_keras.callbacks.BackupAndRestore):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("killed")
            super().on_epoch_end(epoch, logs)

    with monkeypatch.context() as patch:
        patch.setattr(tf_keras.callbacks, "BackupAndRestore", KilledBeforeTheSecondBackup)
        with pytest.raises(KeyboardInterrupt):
            training.train(config, workdir, verbose=0)
    with open(os.path.join(workdir, "best", "best.json")) as handle:
        abandoned = json.load(handle)
    assert abandoned["epoch"] == 1  # the killed attempt at epoch 1 was the best so far

    class SpoilTheRedoneEpoch(training.Throughput):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            for variable in self.model.decoder.trainable_weights:
                variable.assign(tf.zeros_like(variable))

    monkeypatch.setattr(training, "Throughput", SpoilTheRedoneEpoch)
    metrics = training.train(config, workdir, verbose=0)
    rows = read_history(workdir)
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert float(rows[1]["val_elbo"]) < abandoned["val_elbo"]  # the redone epoch did not replace best/
    assert metrics["best_epoch"] == 2
    assert metrics["validation"]["elbo"] == pytest.approx(abandoned["val_elbo"])
    assert metrics["train"]["elbo"] == pytest.approx(abandoned["logs"]["elbo"])


def test_best_weights_saves_only_on_improvement_and_never_on_nan():
    records = []
    callback = BestWeights(records.append, best=-4.5)
    for epoch, value in enumerate([-5.0, -3.0, -4.0, float("nan"), -2.5]):
        callback.on_epoch_end(epoch, {"val_elbo": value})
    assert records == [{"epoch": 1, "val_elbo": -3.0, "logs": {"val_elbo": -3.0}},
                       {"epoch": 4, "val_elbo": -2.5, "logs": {"val_elbo": -2.5}}]
    with pytest.raises(ValueError, match="validation data"):
        callback.on_epoch_end(5, {"elbo": -1.0})


def test_cosine_schedule_decays_to_one_percent_over_the_planned_epochs():
    config = tiny_config(epochs=5, learning_rate=0.01, learning_rate_schedule="cosine")
    model = training.build_model(config, steps_per_epoch=4)
    schedule = model.optimizer._learning_rate  # the schedule object, called with a step
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(10)) == pytest.approx(0.01 * (0.01 + 0.99 * 0.5), rel=1e-5)
    assert float(schedule(20)) == pytest.approx(0.0001, rel=1e-4)


def test_vamp_prior_starts_from_the_first_training_images(tmp_path):
    config = tiny_config().replace(model={"prior": "vamp", "prior_components": 6})
    model = training.build_model(config)
    training._initialize_prior(model, config)
    from tfp_vae import data
    first = next(iter(data.load_examples(config.data, "train").batch(6)))["image"].numpy() / 255.0
    np.testing.assert_allclose(model.prior_network.pseudo_inputs.numpy(), np.clip(first, 0.05, 0.95), atol=1e-5)


def _trainable_values(model):
    return [variable.numpy() for variable in model.trainable_variables]


def _backup_raw_and_averaged(config, workdir):
    """The raw weights and their averages from a run's backup (weights and Adam's state)."""
    model = training.build_model(config, steps_per_epoch=8)
    model(np.zeros((2, 28, 28, 1), "float32"))
    model.optimizer.build(model.trainable_variables)
    backup = tf.train.latest_checkpoint(os.path.join(workdir, "backup", "chief"))
    tf.train.Checkpoint(model=model).restore(backup).expect_partial()
    raw = _trainable_values(model)
    with averaged_weights(model):
        return raw, _trainable_values(model)


def _assert_same(values, others, atol=1e-7):
    for got, want in zip(values, others, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol)


def test_weight_averaging_ships_the_average_and_the_backup_keeps_both(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(epochs=2, ema_momentum=0.9, learning_rate=0.01)
    training.train(config, workdir, verbose=0)
    shipped = _trainable_values(tfp_vae.load(workdir))
    raw, averaged = _backup_raw_and_averaged(config, workdir)
    _assert_same(shipped, averaged)
    assert any(not np.allclose(got, other) for got, other in zip(shipped, raw))

    # Called again on the finished run, fit steps no more; the weights written are still the average.
    training.train(config, workdir, verbose=0)
    _assert_same(_trainable_values(tfp_vae.load(workdir)), shipped)


def test_keep_best_with_averaging_keeps_the_average_of_the_best_epoch(tmp_path):
    workdir = str(tmp_path / "run")
    config = tiny_config(epochs=1, keep_best=True, ema_momentum=0.9, learning_rate=0.01)
    metrics = training.train(config, workdir, verbose=0)
    assert metrics["best_epoch"] == 1  # the only epoch, so the backup's averages are the kept ones
    model = training.build_model(config)
    model(np.zeros((2, 28, 28, 1), "float32"))
    model.load_weights(os.path.join(workdir, "best", "checkpoint")).expect_partial()
    raw, averaged = _backup_raw_and_averaged(config, workdir)
    _assert_same(_trainable_values(model), averaged)
    assert any(not np.allclose(got, other) for got, other in zip(averaged, raw))


def test_train_validates_the_average(tmp_path, monkeypatch):
    seen = []

    class Recording(training.AveragedValidation):
        def on_test_begin(self, logs=None):
            super().on_test_begin(logs)
            seen.append(_trainable_values(self.model))

    monkeypatch.setattr(training, "AveragedValidation", Recording)
    workdir = str(tmp_path / "run")
    config = tiny_config(epochs=2, ema_momentum=0.9, learning_rate=0.01)
    training.train(config, workdir, verbose=0)
    assert len(seen) == 2  # one validation per epoch, each on the average of its moment
    raw, averaged = _backup_raw_and_averaged(config, workdir)
    _assert_same(seen[-1], averaged)
    assert any(not np.allclose(got, other) for got, other in zip(seen[-1], raw))
