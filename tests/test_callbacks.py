"""The epoch clock (what an epoch's time includes, the garbage-collector column, old files) and
weight averaging (the averages swapped in for validation and saving)."""
from tfp_vae import _env  # noqa: F401

import csv
import gc
import time

import numpy as np
import tf_keras

from tfp_vae.callbacks import AveragedValidation, EpochClock, averaged_weights, uses_weight_averaging


class FakeModel:
    stop_training = False


def read(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_an_epoch_includes_the_gap_before_it_and_the_collector_time(tmp_path):
    path = str(tmp_path / "epoch_times.csv")
    clock = EpochClock(path)
    clock.set_model(FakeModel())
    clock.on_train_begin()
    clock.on_epoch_begin(0)
    time.sleep(0.05)
    clock.on_epoch_end(0)
    time.sleep(0.3)  # what fit does between epochs: not inside on_epoch_begin..on_epoch_end
    clock.on_epoch_begin(1)
    garbage = [[] for _ in range(100_000)]
    for item in garbage:
        item.append(item)  # cycles, so the collector has work
    del garbage
    gc.collect()
    clock.on_epoch_end(1)
    clock.on_train_end()
    rows = read(path)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert 0.05 <= float(rows[0]["seconds"]) < 0.3
    assert float(rows[1]["seconds"]) >= 0.3  # the gap counts, in the next epoch
    assert float(rows[1]["gc_seconds"]) > 0
    assert clock._on_gc not in gc.callbacks
    assert EpochClock.total_seconds(path) == sum(float(row["seconds"]) for row in rows)


def test_a_file_begun_by_an_older_version_keeps_its_two_columns(tmp_path):
    path = tmp_path / "epoch_times.csv"
    path.write_text("epoch,seconds\n0,31.500\n")
    clock = EpochClock(str(path))
    clock.set_model(FakeModel())
    clock.on_train_begin()
    clock.on_epoch_begin(1)
    clock.on_epoch_end(1)
    clock.on_train_end()
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,seconds" and len(lines) == 3 and lines[2].count(",") == 1
    assert EpochClock.total_seconds(str(path)) >= 31.5


def test_history_rows_follow_the_header_when_a_resumed_run_logs_other_keys(tmp_path):
    from tfp_vae.callbacks import HistoryCSV

    path = str(tmp_path / "history.csv")
    first = HistoryCSV(path)  # a first run that logged one more key than the second
    first.on_epoch_end(0, {"loss": 2.0, "epoch_seconds": 30.0, "val_loss": 2.5})
    second = HistoryCSV(path)
    second.on_epoch_end(1, {"loss": 1.5, "val_loss": 2.25})
    third = HistoryCSV(path)  # and a third with a new one
    third.on_epoch_end(2, {"loss": 1.25, "val_loss": 2.0, "kl": 3.0})
    rows = read(path)
    assert [row["loss"] for row in rows] == ["2.0", "1.5", "1.25"]
    assert [row["val_loss"] for row in rows] == ["2.5", "2.25", "2.0"]
    assert [row["epoch_seconds"] for row in rows] == ["30.0", "", ""]
    assert [row["kl"] for row in rows] == ["", "", "3.0"]
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert not [name for name in (tmp_path.iterdir()) if ".tmp-" in name.name]


# Weight averaging (ema_momentum): the averages are checked against an EMA computed here from
# the raw weights after every step, so a wrong variable mapping or momentum shows.

def _averaging_model(momentum):
    import tfp_vae
    from tfp_vae import training
    config = tfp_vae.Config().replace(model={"latent_dim": 2, "hidden_units": (8,), "image_shape": (4, 4, 1)},
                                      training={"learning_rate": 0.05, "ema_momentum": momentum})
    model = training.build_model(config)
    return model


class _RecordWeights(tf_keras.callbacks.Callback):
    """Keeps the trainable weights after each training step and at the start of each validation."""

    def __init__(self):
        super().__init__()
        self.initial, self.after_step, self.validated = None, [], []

    def on_train_begin(self, logs=None):
        self.initial = [variable.numpy() for variable in self.model.trainable_variables]

    def on_train_batch_end(self, batch, logs=None):
        self.after_step.append([variable.numpy() for variable in self.model.trainable_variables])

    def on_test_begin(self, logs=None):
        self.validated.append([variable.numpy() for variable in self.model.trainable_variables])


def _expected_average(recorder, momentum):
    average = recorder.initial
    for weights in recorder.after_step:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    return average


def _images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 2, size=(count, 4, 4, 1)).astype("float32")


def test_averaged_weights_are_the_moving_average_and_the_raw_weights_come_back():
    model = _averaging_model(0.5)
    model(_images(2))
    recorder = _RecordWeights()
    seen = {}

    class Probe(tf_keras.callbacks.Callback):  # inside fit, before fit's end copies the averages in
        def on_epoch_end(self, epoch, logs=None):
            seen["raw"] = [variable.numpy() for variable in self.model.trainable_variables]
            with averaged_weights(self.model):
                seen["inside"] = [variable.numpy() for variable in self.model.trainable_variables]
            seen["after"] = [variable.numpy() for variable in self.model.trainable_variables]

    model.fit(_images(24), batch_size=8, epochs=1, verbose=0, callbacks=[recorder, Probe()])
    assert uses_weight_averaging(model) and len(recorder.after_step) == 3
    expected = _expected_average(recorder, 0.5)
    for inside, want, raw, after, last in zip(seen["inside"], expected, seen["raw"], seen["after"],
                                              recorder.after_step[-1]):
        np.testing.assert_allclose(inside, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(raw, last)
        np.testing.assert_array_equal(after, last)
    assert any(not np.allclose(inside, raw) for inside, raw in zip(seen["inside"], seen["raw"]))
    # fit itself ends by copying the averages into the model (tf_keras finalize_variable_values).
    for variable, want in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=1e-6)


def test_validation_inside_fit_scores_the_average_and_training_goes_on_from_the_raw_weights():
    model = _averaging_model(0.5)
    model(_images(2))
    recorder = _RecordWeights()
    # AveragedValidation first, as training puts it: the recorder sees what validation sees.
    model.fit(_images(24), batch_size=8, epochs=2, verbose=0, validation_data=(_images(8, seed=1),),
              callbacks=[AveragedValidation(), recorder])
    assert len(recorder.validated) == 2 and len(recorder.after_step) == 6
    steps, recorder.after_step = recorder.after_step, recorder.after_step[:3]
    for got, want in zip(recorder.validated[0], _expected_average(recorder, 0.5)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    recorder.after_step = steps
    for got, want in zip(recorder.validated[1], _expected_average(recorder, 0.5)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_without_averaging_the_swap_is_a_no_op():
    model = _averaging_model(0.0)
    model(_images(2))
    model.fit(_images(16), batch_size=8, epochs=1, verbose=0)
    before = [variable.numpy() for variable in model.trainable_variables]
    assert not uses_weight_averaging(model)
    with averaged_weights(model):
        for variable, value in zip(model.trainable_variables, before):
            np.testing.assert_array_equal(variable.numpy(), value)
