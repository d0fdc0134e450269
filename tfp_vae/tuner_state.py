"""keras-tuner's project state (oracle.json, tuner0.json, trial.json) written atomically, and an
unreadable state file named in the error.

keras-tuner 1.4.8 rewrites its state files in place; `make_state_writes_atomic` reroutes those
writes, and `named_state_errors` wraps a tuner's construction (where keras-tuner reloads a project).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow and keras_tuner)

import contextlib
import glob
import json
import os

import tensorflow as tf

__all__ = ["make_state_writes_atomic", "named_state_errors", "save_json_atomically"]


def save_json_atomically(path, obj):
    """keras_tuner's utils.save_json, written beside the file and renamed into place.

    keras-tuner rewrites oracle.json, trial.json and tuner0.json in place: a kill during a write
    left an empty file, and the restart stopped on it with "Expecting value: line 1 column 1"
    (a killed search's resume test hit it on a loaded machine). tf.io.gfile, as keras-tuner uses,
    so remote directories still work (where a rename is a copy, not atomic)."""
    text = json.dumps(obj)
    temporary = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)
    return text


def make_state_writes_atomic() -> None:
    """Routes keras-tuner's state writes through save_json_atomically, process-wide: every
    keras-tuner state file goes through that one function (Stateful.save, the build configs)."""
    from keras_tuner.src import utils as keras_tuner_utils  # keras-tuner==1.4.8 (setup.py)
    keras_tuner_utils.save_json = save_json_atomically


def _parses(path: str) -> bool:
    try:
        with open(path) as handle:
            json.load(handle)
        return True
    except ValueError:
        return False


@contextlib.contextmanager
def named_state_errors(kwargs: dict):
    """keras-tuner's reload stops on an unreadable state file with a bare JSON error: name the file."""
    try:
        yield
    except json.JSONDecodeError as error:
        project = os.path.join(kwargs.get("directory") or ".", kwargs.get("project_name") or "untitled_project")
        files = glob.glob(os.path.join(project, "*.json")) + glob.glob(os.path.join(project, "trial_*", "trial.json"))
        broken = [path for path in sorted(files) if not _parses(path)]
        raise ValueError(
            f"the keras-tuner project {project} cannot be resumed: {', '.join(broken) or 'a state file'} is not "
            f"valid JSON ({error}). A search killed while keras-tuner wrote it in place (before tfp_vae made those "
            "writes atomic, 2026-11-30) leaves one: put back a copy of the file, or start over with "
            "overwrite=True (--overwrite).") from error
