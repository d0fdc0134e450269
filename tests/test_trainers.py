"""Runs the real CLIs in trainers/ as subprocesses, as a user would."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--latent-dim", "4", "--hidden-units", "32", "--validation-examples", "256", "--batch-size", "64"]


def run_trainer(script, *arguments, timeout=300):
    return subprocess.run([sys.executable, os.path.join(ROOT, "trainers", script), *arguments],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def completed_epochs(workdir):
    path = os.path.join(workdir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_train_cli_end_to_end(tmp_path):
    workdir = str(tmp_path / "run")
    result = run_trainer("train.py", "--workdir", workdir, "--epochs", "1", "--train-examples", "256", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "outputs in" in result.stdout
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert metrics["epochs"] == 1 and metrics["train_examples"] == 256
    assert json.load(open(os.path.join(workdir, "config.json")))["model"]["hidden_units"] == [32]


def test_killed_training_resumes_without_lost_or_repeated_epochs(tmp_path):
    workdir = str(tmp_path / "run")
    arguments = ["--workdir", workdir, "--epochs", "8", "--train-examples", "4096", "--verbose", "0", *TINY]
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "trainers", "train.py"), *arguments],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    try:
        while len(completed_epochs(workdir)) < 2:
            if process.poll() is not None:
                pytest.fail(f"training ended before it could be killed: {process.stderr.read()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("training did not complete 2 epochs within 240 s")
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_after = completed_epochs(workdir)
    assert 2 <= len(killed_after) < 8, killed_after

    result = run_trainer("train.py", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert completed_epochs(workdir) == list(range(8))
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    # Optimizer state came back too: the step counter covers all 8 epochs exactly once.
    assert metrics["epochs"] == 8 and metrics["optimizer_steps"] == 8 * (4096 // 64)
    with open(os.path.join(workdir, "history.csv")) as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    first_resumed = len(killed_after)
    # A restart from scratch would put the first resumed epoch's loss near epoch 0's.
    assert losses[first_resumed] < losses[0] - 0.5 * (losses[0] - losses[first_resumed - 1]), losses


def test_bad_flags_are_rejected_with_a_message(tmp_path):
    result = run_trainer("train.py", "--workdir", str(tmp_path), "--latent-dim", "0")
    assert result.returncode == 2 and "latent_dim must be a positive integer" in result.stderr
    result = run_trainer("train.py", "--workdir", str(tmp_path), "--likelihood", "gaussian")
    assert result.returncode == 2 and "likelihood must be one of" in result.stderr


def test_missing_data_files_give_a_clear_error(tmp_path):
    result = run_trainer("train.py", "--workdir", str(tmp_path / "run"), "--idx-dir", str(tmp_path / "nowhere"),
                         "--epochs", "1", *TINY)
    assert result.returncode == 1
    assert "nowhere" in result.stderr and "dataset-fashion-mnist" in result.stderr


def test_diverging_training_stops_with_a_clear_message(tmp_path):
    result = run_trainer("train.py", "--workdir", str(tmp_path / "run"), "--epochs", "2", "--train-examples", "512",
                         "--learning-rate", "1e12", *TINY)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "training loss became nan" in result.stderr.lower() or "became inf" in result.stderr.lower()
    assert not os.path.exists(tmp_path / "run" / "metrics.json")


def test_train_cli_with_a_time_budget_stops_early_and_says_so(tmp_path):
    workdir = str(tmp_path / "run")
    arguments = ["--workdir", workdir, "--epochs", "3", "--train-examples", "256", "--prior", "mixture",
                 "--prior-components", "3", "--keep-best", "--learning-rate-schedule", "cosine", "--verbose", "0",
                 *TINY]
    result = run_trainer("train.py", *arguments, "--time-budget", "0.0001")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
    assert printed["epochs"] == 1 and printed["finished"] is False and printed["epochs_planned"] == 3
    result = run_trainer("train.py", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert completed_epochs(workdir) == [0, 1, 2]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["model"]["prior"] == "mixture" and config["training"]["keep_best"] is True
    result = run_trainer("train.py", "--workdir", workdir, "--time-budget", "-1")
    assert result.returncode == 2 and "--time-budget" in result.stderr


def test_training_speed_benchmark_rejects_bad_flags_naming_them():
    script = os.path.join(ROOT, "benchmarks", "training_speed.py")
    for flags, message in ((["--model", "mlp", "--precision", "float8"], "--precision: cannot parse 'float8'"),
                           (["--model", "nope"], "--model must be one of"),
                           (["--model", "mlp", "--steps", "500"], "must fit in one epoch (500 steps)")):
        result = subprocess.run([sys.executable, script, *flags], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr, (flags, result.stderr[-500:])


def test_benchmark_precisions_map_to_valid_training_configs():
    sys.path.insert(0, os.path.join(ROOT, "trainers"))
    try:
        from _flags import PRECISIONS, precision_fields
    finally:
        sys.path.remove(os.path.join(ROOT, "trainers"))
    from tfp_vae.config import MIXED_PRECISION_DTYPES, Config
    # Every dtype the config accepts can be benchmarked, and float32 on top.
    assert set(PRECISIONS) == {"float32", *MIXED_PRECISION_DTYPES}
    # Start from a mixed-precision config: the fields must switch it either way.
    start = Config().replace(training={"mixed_precision": True, "mixed_precision_dtype": "bfloat16"})
    for name in PRECISIONS:
        training = start.replace(training=precision_fields(name)).training  # validates
        assert training.mixed_precision == (name != "float32"), name
        if training.mixed_precision:
            assert training.mixed_precision_dtype == name


def test_likelihood_benchmark_lists_models_and_rejects_unknown_ones():
    script = os.path.join(ROOT, "benchmarks", "likelihood.py")
    listed = subprocess.run([sys.executable, script, "--list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.startswith("mlp")
    wrong = subprocess.run([sys.executable, script, "--model", "nope"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--model must be one of" in wrong.stderr
    wrong = subprocess.run([sys.executable, script, "--model", "mlp", "--num-samples", "0"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--num-samples must be >= 1" in wrong.stderr
    wrong = subprocess.run([sys.executable, script, "--model", "mlp", "--jit-compile", "maybe"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--jit-compile must be yes or no, got 'maybe'" in wrong.stderr
    wrong = subprocess.run([sys.executable, script, "--model", "mlp", "--epochs", "0"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--epochs must be >= 1, got 0" in wrong.stderr
    wrong = subprocess.run([sys.executable, script, "--model", "mlp_vamp", "--reference", "/nonexistent/mlp"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "--reference /nonexistent/mlp has no diagnosis.json" in wrong.stderr
