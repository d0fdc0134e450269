"""keras-tuner's state files: written atomically, and a broken one named in the error."""
import json
import os

import pytest
import tensorflow as tf

import tfp_vae
from tfp_vae import tuning

# keras-tuner 1.4.8 calls threading.currentThread(), deprecated since Python 3.10.
pytestmark = pytest.mark.filterwarnings("ignore:currentThread:DeprecationWarning",
                                        "ignore:getName:DeprecationWarning")


def hypermodel():
    config = tfp_vae.Config().replace(model={"architecture": "mlp", "latent_dim": 2, "hidden_units": (16,)},
                                      data={"train_examples": 512, "validation_examples": 256},
                                      training={"epochs": 1, "batch_size": 64})
    return tuning.VAEHyperModel(config, fixed={"architecture": "mlp"}, ranges={"latent_dim": [2, 4]})


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def test_a_kill_while_keras_tuner_writes_its_state_leaves_a_resumable_search(tmp_path, monkeypatch):
    """keras-tuner rewrites oracle.json and tuner0.json in place; here a kill halfway through a
    write is simulated, and the search must still reload (the files are renamed into place)."""
    options = {"max_trials": 2, "directory": str(tmp_path), "project_name": "p"}
    tuner = tuning.RandomSearch(hypermodel(), **options)
    tuner.save()
    oracle_file = os.path.join(str(tmp_path), "p", "oracle.json")
    saved = read_json(oracle_file)

    class KilledMidWrite(tf.io.gfile.GFile):
        def write(self, text):
            super().write(text[:len(text) // 2])
            raise KeyboardInterrupt("killed during the write")

    with monkeypatch.context() as patch:
        patch.setattr(tf.io.gfile, "GFile", KilledMidWrite)
        with pytest.raises(KeyboardInterrupt):
            tuner.save()
    assert read_json(oracle_file) == saved
    reloaded = tuning.RandomSearch(hypermodel(), **options)  # keras-tuner reloads the project
    assert reloaded.oracle.get_state()["seed"] == tuner.oracle.get_state()["seed"]

    # A file left half-written by an older version: the error names it and what to do.
    with open(oracle_file, "w") as handle:
        handle.write(json.dumps(saved)[:100])
    with pytest.raises(ValueError, match=r"oracle\.json is not valid JSON .*--overwrite"):
        tuning.RandomSearch(hypermodel(), **options)
