"""A run folder on disk: atomic weights and JSON, and reading them back after a kill."""
from tfp_vae import _env  # noqa: F401

import glob
import json
import os

import numpy as np

from tfp_vae import checkpoint, training
from tfp_vae.config import save_config
from test_training import tiny_config  # tests/ is on sys.path under pytest


def test_a_kill_between_the_renames_of_a_weights_save_loses_nothing(tmp_path):
    """save_weights moves the old folder aside, then renames the new one in: a kill between the
    two leaves no folder of that name, the old one as NAME.old-PID. Readers read that one; the
    next save cleans up."""
    workdir = str(tmp_path)
    config = tiny_config()
    save_config(config, os.path.join(workdir, "config.json"))
    model = training.build_model(config)
    model(np.zeros((1, 28, 28, 1), np.float32))
    for folder, record in ((checkpoint.WEIGHTS, None), (checkpoint.BEST, {"epoch": 3, "val_elbo": -300.0})):
        checkpoint.save_weights(model, workdir, folder, record)
        os.rename(os.path.join(workdir, folder), os.path.join(workdir, f"{folder}.old-999"))
        os.makedirs(os.path.join(workdir, f"{folder}.tmp-999"))  # the new version, cut short
        # Another leftover, older and incomplete (a removal cut short), is not taken for it.
        os.makedirs(os.path.join(workdir, f"{folder}.old-1"))
    assert checkpoint.read_best(workdir) == {"epoch": 3, "val_elbo": -300.0}
    loaded = training.load(workdir)
    for saved, restored in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(saved, restored)
    checkpoint.save_weights(model, workdir, checkpoint.BEST, {"epoch": 4, "val_elbo": -299.0})
    assert checkpoint.read_best(workdir) == {"epoch": 4, "val_elbo": -299.0}
    assert not glob.glob(os.path.join(workdir, f"{checkpoint.BEST}.old-*"))


def _refuse_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def test_write_json_writes_undefined_figures_as_null_not_nan(tmp_path):
    path = str(tmp_path / "summary.json")
    checkpoint.write_json({"stderr": float("nan"), "nested": {"values": [1.5, np.float64("inf"), -np.inf]},
                           "kept": 2.0}, path)
    with open(path) as handle:
        values = json.load(handle, parse_constant=_refuse_constant)
    assert values == {"stderr": None, "nested": {"values": [1.5, None, None]}, "kept": 2.0}
    assert os.listdir(tmp_path) == ["summary.json"]  # no temporary file left behind
