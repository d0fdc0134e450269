"""The epoch clock: what an epoch's time includes, the garbage-collector column, old files."""
from tfp_vae import _env  # noqa: F401

import csv
import gc
import time

from tfp_vae.callbacks import EpochClock


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
