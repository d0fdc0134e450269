"""A run folder on disk: JSON and weights written atomically, read back, and whether a config
may resume it. tfp_vae.training writes run folders; evaluation, reports, the likelihood runner,
the tuner and the export read them. The folder's layout is described once, in tfp_vae.training.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import csv
import glob
import json
import math
import os
import shutil
from typing import Optional

import tensorflow as tf

from tfp_vae.config import Config, load_config

__all__ = ["BACKUP", "BEST", "BEST_RECORD", "CHECKPOINT_PREFIX", "EPOCH_TIMES", "RESUMABLE_CHANGES", "WEIGHTS",
           "check_not_shortened", "check_resumable", "epochs_trained", "history_rows", "read_best",
           "save_weights", "saved_folder", "write_json"]

WEIGHTS = "weights"
BEST = "best"
BEST_RECORD = "best.json"
EPOCH_TIMES = "epoch_times.csv"
CHECKPOINT_PREFIX = "checkpoint"
BACKUP = "backup"
# Training fields that may change when a run is resumed: how it runs, not what it computes.
# (mixed_precision and its dtype are not among them: float16 wraps the optimizer, whose checkpoint
# then differs.)
# initial_weights is read only when a run starts, so a resume may name the source differently.
RESUMABLE_CHANGES = ("epochs", "strategy", "num_cpu_devices", "steps_per_execution", "jit_compile", "initial_weights")


def _strict_json(value):
    # NaN and Infinity are not JSON: Python writes them, but jq, JavaScript and most other readers
    # reject the whole file. An undefined figure (a standard error from one example) becomes null.
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(values: dict, path: str) -> None:
    """Writes strict JSON atomically: readers see the old file or the new one, never half of one.

    Non-finite floats are written as null."""
    text = json.dumps(_strict_json(values), indent=2, sort_keys=True, allow_nan=False)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        handle.write(text + "\n")
    os.replace(temporary, path)


def save_weights(model, workdir: str, folder: str = WEIGHTS, record: Optional[dict] = None) -> str:
    """Writes WORKDIR/FOLDER/ whole or not at all: written beside it, then renamed into place.

    `record`, if given, is written into the folder as best.json, so it always names the weights
    it sits next to."""
    final = os.path.join(workdir, folder)
    staging = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_weights(os.path.join(staging, CHECKPOINT_PREFIX))
    if record is not None:
        write_json(record, os.path.join(staging, BEST_RECORD))
    previous = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.rename(final, previous)
    os.rename(staging, final)  # a kill just before this leaves only `previous`: see saved_folder
    for old in glob.glob(f"{glob.escape(final)}.old-*"):  # `previous`, and what such a kill left
        shutil.rmtree(old, ignore_errors=True)
    return final


def saved_folder(final: str) -> str:
    """The folder save_weights last completed as `final`: `final` itself, or, after a kill between
    its two renames (no `final`; the previous version beside it as FINAL.old-PID), that previous
    version. For best/ the newer version's epoch had not been backed up yet, so a resumed run
    trains that epoch again. Read only: the next save_weights cleans up."""
    if os.path.exists(final):
        return final
    candidates = []
    for folder in glob.glob(f"{glob.escape(final)}.old-*"):
        try:  # a complete version has its index; the newest written wins
            candidates.append((os.path.getmtime(os.path.join(folder, CHECKPOINT_PREFIX + ".index")), folder))
        except FileNotFoundError:
            continue
    return max(candidates)[1] if candidates else final


def epochs_trained(workdir: str) -> int:
    """Epochs the run in `workdir` has completed (0 for a new folder): its history.csv, or its
    backup's epoch counter if a kill fell between the backup and the history row."""
    rows = history_rows(os.path.join(workdir, "history.csv"))
    trained = int(rows[-1]["epoch"]) + 1 if rows else 0
    # BackupAndRestore writes the chief's checkpoint under backup/chief.
    checkpoint = tf.train.latest_checkpoint(os.path.join(workdir, BACKUP, "chief"))
    if checkpoint is not None:
        saved_epoch = tf.train.load_checkpoint(checkpoint).get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")
        trained = max(trained, int(saved_epoch) + 1)
    return trained


def check_not_shortened(workdir: str, epochs: int) -> None:
    """Raises ValueError if the run in `workdir` has trained more than `epochs` epochs: a run is
    extended, never shortened (Keras would restore the backup, train nothing and report the
    longer run as if it were the one asked for)."""
    trained = epochs_trained(workdir)
    if trained > epochs:
        raise ValueError(f"{workdir} has already trained {trained} epochs, more than the {epochs} asked "
                         f"for; a run can be extended, not shortened: pass epochs={trained} or more "
                         "(--epochs on the command line) to go on with it, or use a new workdir.")


def check_resumable(config: Config, workdir: str) -> None:
    """Raises ValueError unless `config` can start or resume the run in `workdir`: the same config
    up to the epochs and how training runs (RESUMABLE_CHANGES), and not fewer epochs."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    previous = load_config(path).to_dict()
    current = config.to_dict()
    # Only the number of epochs and how training runs may change between runs in one workdir.
    for name in RESUMABLE_CHANGES:
        previous["training"].pop(name, None)
        current["training"].pop(name, None)
    if previous != current:
        changed = [f"{section}.{key}" for section in current for key in current[section]
                   if current[section][key] != previous[section].get(key)]
        raise ValueError(
            f"{workdir} holds a run with a different config (changed: {', '.join(changed)}); "
            "use a new --workdir, or the same settings to resume it.")
    check_not_shortened(workdir, config.training.epochs)


def history_rows(history_csv: str) -> list:
    """The rows of a run's history.csv as {column: float}, one per completed epoch; [] if none."""
    if not os.path.exists(history_csv):
        return []
    with open(history_csv) as handle:
        return [{key: float(value) for key, value in row.items() if value not in (None, "")}
                for row in csv.DictReader(handle)]


def read_best(folder: str) -> Optional[dict]:
    """best.json of FOLDER/best/ (epoch, monitored value, logs), or None before a best was saved."""
    path = os.path.join(saved_folder(os.path.join(folder, BEST)), BEST_RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)
