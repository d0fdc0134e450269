"""keras-tuner on tfp_vae VAEs: the three tuners, resuming, distributed tuning.

Real Fashion-MNIST (offline IDX files), tiny models, 512 training and 256 validation examples.
"""
import glob
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import tfp_vae
from tfp_vae import data as data_lib
from tfp_vae import scoring, tuning
from tfp_vae.averaging import uses_weight_averaging
from tfp_vae.config import load_config, save_config

# keras-tuner 1.4.8 calls threading.currentThread(), deprecated since Python 3.10.
pytestmark = pytest.mark.filterwarnings("ignore:currentThread:DeprecationWarning",
                                        "ignore:getName:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNE = os.path.join(ROOT, "trainers", "tune.py")
BASE = tfp_vae.Config().replace(
    model={"architecture": "mlp", "latent_dim": 2, "hidden_units": (16,)},
    data={"train_examples": 512, "validation_examples": 256},
    training={"epochs": 1, "batch_size": 64, "seed": 0})
TINY_FLAGS = ["--train-examples", "512", "--validation-examples", "256", "--batch-size", "64",
              "--architecture", "mlp", "--hidden-units", "16", "--range", "latent_dim=2,4", "--verbose", "0"]


def tiny_hypermodel(config=BASE):
    return tuning.VAEHyperModel(config, fixed={"architecture": "mlp"},
                                ranges={"latent_dim": [2, 4], "hidden_units": [(16,), (32,)],
                                        "learning_rate": (1e-3, 1e-2)})


def trials_on_disk(project, while_running=False):
    """trial.json of every trial folder, read back from disk (not from the tuner in memory).
    `while_running`: skip a file that a running search is rewriting at this instant."""
    trials = {}
    for path in glob.glob(os.path.join(project, "trial_*", "trial.json")):
        try:
            with open(path) as handle:
                trial = json.load(handle)
        except ValueError:
            if while_running:
                continue
            raise
        trials[trial["trial_id"]] = trial
    return trials


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


# The three tuners, in process.

@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_tuner_finds_scores_and_reloads_the_best_model(kind, tmp_path, capsys, monkeypatch):
    project = str(tmp_path / kind)
    first_epochs, seeds = [], []
    train_pipeline, set_random_seed = data_lib.train_pipeline, tuning.tf_keras.utils.set_random_seed

    def recording_pipeline(config, **kwargs):
        first_epochs.append(kwargs.get("first_epoch", 0))
        return train_pipeline(config, **kwargs)

    def recording_seed(seed):
        seeds.append(seed)
        set_random_seed(seed)

    monkeypatch.setattr(tuning.data_lib, "train_pipeline", recording_pipeline)
    monkeypatch.setattr(tuning.tf_keras.utils, "set_random_seed", recording_seed)
    options = dict(directory=str(tmp_path), project_name=kind)
    if kind == "hyperband":
        # max_epochs 2, factor 2: two 1-epoch trials, then the better one continues to epoch 2.
        tuner = tuning.Hyperband(tiny_hypermodel(), max_epochs=2, factor=2, max_trials=3, **options)
    elif kind == "bayesian":
        tuner = tuning.BayesianOptimization(tiny_hypermodel(), max_trials=3, num_initial_points=2, **options)
    else:
        tuner = tuning.RandomSearch(tiny_hypermodel(), max_trials=3, **options)
    tuner.search(verbose=0)
    # A training pipeline of its own per trial (the tuner's cached datasets build one more, unused).
    trial_pipelines, search_seeds = first_epochs[-3:], list(seeds)
    trial_seed = tiny_hypermodel().base_config.training.seed

    trials = trials_on_disk(project)
    assert sorted(t["status"] for t in trials.values()) == ["COMPLETED"] * 3
    scores = {trial_id: t["score"] for trial_id, t in trials.items()}
    best_id = max(scores, key=scores.get)  # val_elbo: larger is better
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best_trial.trial_id == best_id and best_trial.score == scores[best_id]
    assert tuner.get_best_hyperparameters()[0].values == best_trial.hyperparameters.values
    assert tuner.trial_results()[0]["trial_id"] == best_id

    # Every trial folder is a run folder; its metrics are the trial's reported score.
    for trial_id, score in scores.items():
        metrics = read_json(os.path.join(project, f"trial_{trial_id}", "metrics.json"))
        assert metrics["validation"]["elbo"] == pytest.approx(score, rel=1e-7)
        assert os.path.exists(os.path.join(project, f"trial_{trial_id}", "weights", "checkpoint.index"))

    # The best model reloads as a trained tfp_vae VAE and scores exactly what the search recorded:
    # the score draws z from a fixed seed, so equality is exact, not within Monte Carlo noise.
    model = tuner.get_best_models(1)[0]
    assert isinstance(model, tfp_vae.VAE)
    best_config = tuner.get_best_configs(1)[0]
    assert model.config.latent_dim == best_config.model.latent_dim == best_trial.hyperparameters.values["latent_dim"]
    validation = data_lib.make_datasets(best_config).validation
    rescored = tuning.score(model, validation)
    best_metrics = read_json(os.path.join(project, f"trial_{best_id}", "metrics.json"))["validation"]
    assert rescored["elbo"] == pytest.approx(best_trial.score, rel=1e-6)
    assert rescored["kl"] == pytest.approx(best_metrics["kl"], rel=1e-6)
    assert rescored["reconstruction"] == pytest.approx(best_metrics["reconstruction"], rel=1e-6)
    # The check has teeth: another draw of z moves the ELBO (the analytic KL stays), and the
    # other trials' models score differently.
    other_draw = tuning.score(model, validation, seed=tuning.SCORE_SEED + 1)
    assert other_draw["elbo"] != pytest.approx(rescored["elbo"], rel=1e-6)
    assert other_draw["kl"] == pytest.approx(rescored["kl"], rel=1e-6)
    others = [tfp_vae.load(os.path.join(project, f"trial_{trial_id}")) for trial_id in scores if trial_id != best_id]
    for other in others:
        assert tuning.score(other, validation)["elbo"] < rescored["elbo"]

    capsys.readouterr()
    tuner.results_summary()
    summary = capsys.readouterr().out
    assert 'Objective(name="val_elbo", direction="max")' in summary
    assert summary.index(f"Trial {best_id} summary") < min(
        summary.index(f"Trial {trial_id} summary") for trial_id in scores if trial_id != best_id)
    assert f"Score: {best_trial.score}" in summary

    if kind == "hyperband":
        # The last round continued the best first-round model: weights and optimizer state.
        continued = [t for t in tuner.oracle.trials.values() if "tuner/trial_id" in t.hyperparameters.values]
        assert len(continued) == 1
        continued = continued[0]
        parent = continued.hyperparameters.values["tuner/trial_id"]
        first_round = {trial_id: s for trial_id, s in scores.items() if trial_id != continued.trial_id}
        assert parent == max(first_round, key=first_round.get)
        metrics = read_json(os.path.join(project, f"trial_{continued.trial_id}", "metrics.json"))
        steps_per_epoch = 512 // 64
        assert metrics["epochs_run"] == [2, 2] and len(metrics["history"]) == 1
        # Adam's step counter went on from the first epoch: the model was resumed, not restarted.
        assert metrics["optimizer_steps"] == 2 * steps_per_epoch
        assert read_json(os.path.join(project, f"trial_{parent}", "metrics.json"))["optimizer_steps"] == steps_per_epoch
        # ...and drew its second epoch's data and sampling noise from the epoch it continues at,
        # not the first epoch's again.
        assert trial_pipelines == [0, 0, 1] and data_lib.train_seed(trial_seed, 1) in search_seeds
    else:
        assert trial_pipelines == [0, 0, 0] and data_lib.train_seed(trial_seed, 1) not in search_seeds
    assert search_seeds.count(trial_seed) >= 2  # first-round trials: the config's own seed


def test_a_best_run_of_another_config_is_moved_aside_not_lost(tmp_path):
    """A restarted search can pick another best config than the one `best/` trained: that run
    cannot be resumed, so it moves aside (kept); the same config, or more epochs, resumes it."""
    project = str(tmp_path)
    best = os.path.join(project, "best")
    os.makedirs(best)
    save_config(BASE, os.path.join(best, "config.json"))
    assert tuning.best_workdir(project, BASE.replace(training={"epochs": 3})) == (best, None)
    assert os.listdir(best) == ["config.json"]

    other = BASE.replace(model={"latent_dim": 4})
    workdir, aside = tuning.best_workdir(project, other)
    assert workdir == best and not os.path.exists(best)
    assert os.path.basename(aside).startswith("best.replaced-")
    assert load_config(os.path.join(aside, "config.json")) == BASE

    # Fewer epochs than the run in best/ trained is another run too.
    os.makedirs(best)
    save_config(BASE.replace(training={"epochs": 3}), os.path.join(best, "config.json"))
    with open(os.path.join(best, "history.csv"), "w") as handle:
        handle.write("epoch,loss\n0,1.0\n1,1.0\n2,1.0\n")
    assert tuning.best_workdir(project, BASE)[1] is not None and not os.path.exists(best)


def test_restart_with_other_settings_is_refused(tmp_path):
    options = dict(directory=str(tmp_path), project_name="p", max_trials=1)
    tuning.RandomSearch(tiny_hypermodel(), **options)
    with pytest.raises(ValueError, match="different settings"):
        tuning.RandomSearch(tiny_hypermodel(BASE.replace(training={"batch_size": 32})), **options)
    tuning.RandomSearch(tiny_hypermodel(BASE.replace(training={"batch_size": 32})), overwrite=True, **options)


def test_an_iwae_objective_without_importance_samples_is_refused_before_any_trial(tmp_path):
    options = dict(directory=str(tmp_path), max_trials=1)
    with pytest.raises(ValueError, match="importance_samples > 1"):
        tuning.RandomSearch(tiny_hypermodel(), objective=tuning.make_objective("val_iwae"), project_name="a", **options)
    assert not os.path.exists(os.path.join(tmp_path, "a", "trial_0"))
    iwae = tuning.VAEHyperModel(BASE.replace(training={"importance_samples": 2}), search=("latent_dim",),
                                ranges={"latent_dim": [2, 4]})
    # The same project: the refusal left no state behind that a corrected search would trip on.
    tuner = tuning.RandomSearch(iwae, objective=tuning.make_objective("val_iwae"), project_name="a", **options)
    assert tuner.oracle.objective.direction == "max"


def test_step_counted_schedules_need_a_training_set_of_known_length(tmp_path):
    """A warm-up or cosine schedule in epochs becomes optimizer steps through the epoch's length;
    a dataset of unknown length would make an epoch one step and the schedule collapse."""
    unknown = tf.data.Dataset.from_tensor_slices(np.zeros((8, 28, 28, 1), np.float32)).filter(lambda x: True).batch(4)
    for training in ({"learning_rate_schedule": "cosine"}, {"warmup_epochs": 1.0}):
        tuner = tuning.RandomSearch(tiny_hypermodel(BASE.replace(training=training)), max_trials=1,
                                    directory=str(tmp_path), project_name=str(training), overwrite=True)
        with pytest.raises(ValueError, match="length is unknown"):
            tuner._data(tuner.hypermodel.base_config, unknown, None)
    tuner = tuning.RandomSearch(tiny_hypermodel(), max_trials=1, directory=str(tmp_path), project_name="constant")
    assert tuner._data(tuner.hypermodel.base_config, unknown, None)[2:] == (1, None)


# The reloaded trial already holds its metrics, so keras-tuner skips its update (and says so).
@pytest.mark.filterwarnings("ignore:The use case of calling:DeprecationWarning")
def test_trial_that_finished_just_before_a_kill_is_not_retrained(tmp_path, capsys):
    # keras-tuner saves oracle.json in end_trial while the trial still counts as ongoing, and
    # clears that only in the next save: a kill in between makes the reloaded oracle queue the
    # finished trial again. Recreate that state and check the trial is reported, not retrained.
    options = dict(directory=str(tmp_path), project_name="p", max_trials=1)
    tuner = tuning.RandomSearch(tiny_hypermodel(), **options)
    tuner.search(verbose=0)
    project = os.path.join(str(tmp_path), "p")
    (trial_id, trial), = trials_on_disk(project).items()
    oracle_path = os.path.join(project, "oracle.json")
    state = read_json(oracle_path)
    state["ongoing_trials"] = {"tuner0": trial_id}
    with open(oracle_path, "w") as handle:
        json.dump(state, handle)
    stamp = os.stat(os.path.join(project, f"trial_{trial_id}", "metrics.json")).st_mtime_ns
    capsys.readouterr()

    tuner = tuning.RandomSearch(tiny_hypermodel(), **options)
    tuner.search(verbose=0)
    assert "had finished training before a restart" in capsys.readouterr().out
    assert os.stat(os.path.join(project, f"trial_{trial_id}", "metrics.json")).st_mtime_ns == stamp
    (again,) = trials_on_disk(project).values()
    assert again["status"] == "COMPLETED" and again["score"] == trial["score"]


# The command line: kill -9 mid-search, resume, train the best.

def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    directory = str(tmp_path)
    project = os.path.join(directory, "p")
    command = [sys.executable, TUNE, "--tuner", "random", "--max-trials", "3", "--epochs", "2",
               "--directory", directory, "--project-name", "p", *TINY_FLAGS]
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    # The time limits here only catch hangs: beside a long training the suite runs several times
    # slower (the resume below took over 150 s there).
    deadline = time.time() + 300
    try:
        while not any(t["status"] == "COMPLETED" for t in trials_on_disk(project, while_running=True).values()):
            if process.poll() is not None:
                pytest.fail(f"the search ended before it could be killed:\n{open(tmp_path / 'first.log').read()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("no trial finished within 300 s")
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    finished = {i: t for i, t in trials_on_disk(project).items() if t["status"] == "COMPLETED"}
    assert 1 <= len(finished) < 3, trials_on_disk(project)
    stamps = {i: os.stat(os.path.join(project, f"trial_{i}", "metrics.json")).st_mtime_ns for i in finished}

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"resuming: {len(finished)} finished trial(s) kept" in result.stdout
    trials = trials_on_disk(project)
    assert len(trials) == 3 and all(t["status"] == "COMPLETED" for t in trials.values()), trials
    for trial_id, stamp in stamps.items():  # finished trials were not run again
        assert os.stat(os.path.join(project, f"trial_{trial_id}", "metrics.json")).st_mtime_ns == stamp
        assert f"trial {trial_id} done" not in result.stdout
    ran_now = [i for i in trials if f"trial {i} done" in result.stdout]
    assert sorted(ran_now) == sorted(set(trials) - set(finished))

    # Results, best config and the best model trained as a normal run folder.
    results = read_json(os.path.join(project, "results.json"))["trials"]
    assert results[0]["score"] == max(t["score"] for t in trials.values())
    best_config = tfp_vae.load_config(os.path.join(project, "best_config.json"))
    best_hp = results[0]["hyperparameters"]
    assert best_config.model.latent_dim == best_hp["latent_dim"]
    assert best_config.training.learning_rate == pytest.approx(best_hp["learning_rate"])
    assert best_config.training.epochs == 2
    workdir = os.path.join(project, "best")
    assert tfp_vae.load_config(os.path.join(workdir, "config.json")) == best_config
    assert read_json(os.path.join(workdir, "metrics.json"))["epochs"] == 2
    assert isinstance(tfp_vae.load(workdir), tfp_vae.VAE)


def load_tune_script():
    # As `python trainers/tune.py` would, put trainers/ on the path (for trainers/_flags.py).
    if os.path.dirname(TUNE) not in sys.path:
        sys.path.insert(0, os.path.dirname(TUNE))
    spec = importlib.util.spec_from_file_location("tune_script", TUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_rejects_bad_ranges_before_searching(tmp_path, capsys):
    tune = load_tune_script()
    base = ["--directory", str(tmp_path), "--max-trials", "1"]
    for arguments, message in [
            (["--range", "latent_dim"], "expected NAME=SPEC"),
            (["--latent-dim", "4", "--range", "latent_dim=2,4"], "a range is given for latent_dim, but latent_dim is fixed"),
            (["--latent-dim", "4", "--search", "latent_dim"], "both pinned by a flag and listed in --search"),
            (["--objective", "val_accuracy"], "not a metric the VAE logs")]:
        with pytest.raises(SystemExit) as exit_info:
            tune.main(base + arguments)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not glob.glob(os.path.join(str(tmp_path), "*", "trial_*"))
    assert tune.parse_range("hidden_units=64,32|128") == ("hidden_units", [(64, 32), (128,)])
    assert tune.parse_range("learning_rate=1e-4:1e-2") == ("learning_rate", (1e-4, 1e-2))


# Distributed: keras-tuner's chief/worker protocol on 127.0.0.1.

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_chief_and_two_workers_share_the_search(tmp_path):
    directory = str(tmp_path)
    project = os.path.join(directory, "p")
    command = [sys.executable, TUNE, "--tuner", "random", "--max-trials", "4", "--epochs", "1",
               "--directory", directory, "--project-name", "p", "--skip-final", *TINY_FLAGS]
    base_env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(free_port()))
    processes, logs = {}, {}
    try:
        for role in ("chief", "tuner0", "tuner1"):
            logs[role] = open(tmp_path / f"{role}.log", "w")
            processes[role] = subprocess.Popen(command, cwd=ROOT, env=dict(base_env, KERASTUNER_TUNER_ID=role),
                                               stdout=logs[role], stderr=subprocess.STDOUT)
        # The chief polls for the end every 20 s once a worker has been told to stop.
        deadline = time.time() + 150
        for role, process in processes.items():
            process.wait(timeout=max(1, deadline - time.time()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        for log in logs.values():
            log.close()
    output = {role: open(tmp_path / f"{role}.log").read() for role in processes}
    for role, process in processes.items():
        assert process.returncode == 0, f"{role}:\n{output[role][-3000:]}"

    trials = trials_on_disk(project)
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials.values()), trials
    ran_by = {}
    for trial_id in trials:
        metrics = read_json(os.path.join(project, f"trial_{trial_id}", "metrics.json"))
        assert metrics["validation"]["elbo"] == pytest.approx(trials[trial_id]["score"], rel=1e-7)
        ran_by[trial_id] = metrics["tuner_id"]
        assert f"[{metrics['tuner_id']}] trial {trial_id} done" in output[metrics["tuner_id"]]
    assert set(ran_by.values()) == {"tuner0", "tuner1"}, ran_by  # both workers trained
    assert "no trials left" in output["tuner0"] and "no trials left" in output["tuner1"]
    # The chief held the oracle and wrote the results once every trial was in.
    results = read_json(os.path.join(project, "results.json"))["trials"]
    assert len(results) == 4 and results[0]["score"] == max(t["score"] for t in trials.values())
    assert os.path.exists(os.path.join(project, "best_config.json"))
    assert "Results summary" in output["chief"]


def test_with_weight_averaging_a_trial_scores_and_keeps_the_average(tmp_path, monkeypatch):
    swaps = []
    real = scoring.averaged_weights

    def recording(model):  # tests/test_averaging.py checks what the swap does; this, that it is used
        swaps.append(uses_weight_averaging(model))
        return real(model)

    monkeypatch.setattr(scoring, "averaged_weights", recording)
    config = BASE.replace(training={"ema_momentum": 0.9, "epochs": 2})
    tuner = tuning.RandomSearch(tiny_hypermodel(config), max_trials=1, directory=str(tmp_path), project_name="ema")
    tuner.search(verbose=0)
    assert swaps == [True, True]  # each epoch's scoring and saving
    trial = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    # The kept weights score exactly what the trial recorded (fixed z seed): both saw the average.
    validation = data_lib.make_datasets(tuner.get_best_configs(1)[0]).validation
    assert tuning.score(model, validation)["elbo"] == pytest.approx(trial.score, rel=1e-6)
