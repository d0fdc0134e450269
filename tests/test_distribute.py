"""tf.distribute: strategies, chief-only outputs, multi-worker on 127.0.0.1, mixed precision.

The strategy tests run in subprocesses: MultiWorkerMirroredStrategy and logical CPU devices must
be set up before TensorFlow initialises, which this pytest process has long done. Every
subprocess is bounded by a timeout and killed in a `finally`.
"""
from tfp_vae import _env  # noqa: F401

import argparse
import csv
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
import tf_keras

import tfp_vae
from tfp_vae import checkpoint, cli, distribute, training
from tfp_vae.averaging import averaged_weights, uses_weight_averaging
from tfp_vae.config import ModelConfig, TrainingConfig
from tfp_vae.model import VAE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "trainers", "train.py")
TINY = ["--train-examples", "512", "--validation-examples", "256", "--latent-dim", "4",
        "--hidden-units", "32", "--batch-size", "64", "--verbose", "0"]
STEPS_PER_EPOCH = 512 // 64


# ---------------------------------------------------------------- helpers


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for one in sockets:
            one.bind(("127.0.0.1", 0))
        return [one.getsockname()[1] for one in sockets]
    finally:
        for one in sockets:
            one.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def start(arguments, log_path, **environment):
    env = dict(os.environ, **environment)
    with open(log_path, "w") as log:  # a file, not a pipe: a full pipe would block the worker
        return subprocess.Popen([sys.executable, TRAIN, *arguments], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)


def stop_all(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def wait_all(processes, timeout):
    deadline = time.time() + timeout
    for process in processes:
        process.wait(timeout=max(1.0, deadline - time.time()))
    return [process.returncode for process in processes]


def printed_metrics(log_path):
    """The JSON block trainers/train.py prints at the end."""
    text = open(log_path).read()
    start_, end = text.index("{\n"), text.index("\n}\n") + 2
    return json.loads(text[start_:end])


def history_epochs(workdir):
    path = os.path.join(workdir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def tail(path, characters=3000):
    return open(path).read()[-characters:] if os.path.exists(path) else "(no log)"


def run_workers(tmp_path, workdirs, extra, timeout=240, name="run"):
    """Starts one trainer per workdir as a 2-worker cluster on 127.0.0.1 and waits for both."""
    ports = free_ports(2)
    scratch = tmp_path / f"{name}-tmp"  # the workers' TMPDIR: where a non-chief writes
    scratch.mkdir()
    logs = [str(tmp_path / f"{name}-worker{index}.log") for index in range(2)]
    processes = []
    try:
        for index, workdir in enumerate(workdirs):
            processes.append(start(["--workdir", workdir, "--strategy", "multi_worker", *TINY, *extra],
                                   logs[index], TF_CONFIG=tf_config(ports, index), TMPDIR=str(scratch)))
        codes = wait_all(processes, timeout)
    finally:
        stop_all(processes)
    return codes, logs, scratch


# ---------------------------------------------------------------- configuration and flags


def test_chief_is_the_chief_task_or_worker_zero():
    workers = {"worker": ["a:1", "b:1"]}
    assert distribute.is_chief_task({}, None, None)
    assert distribute.is_chief_task(workers, "worker", 0)
    assert not distribute.is_chief_task(workers, "worker", 1)
    with_chief = {"chief": ["c:1"], "worker": ["a:1"]}
    assert distribute.is_chief_task(with_chief, "chief", 0)
    assert not distribute.is_chief_task(with_chief, "worker", 0)
    multi = TrainingConfig(strategy="multi_worker")
    assert distribute.is_chief_process(multi, {"TF_CONFIG": tf_config([1, 2], 0)})
    assert not distribute.is_chief_process(multi, {"TF_CONFIG": tf_config([1, 2], 1)})
    # Without multi_worker, TF_CONFIG does not matter: this process is the only writer.
    assert distribute.is_chief_process(TrainingConfig(), {"TF_CONFIG": tf_config([1, 2], 1)})


@pytest.mark.parametrize("value,message", [
    (None, "needs TF_CONFIG with a cluster of workers"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}), "must name a task type"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}), "out of range"),
])
def test_multi_worker_without_a_usable_tf_config_fails_before_touching_tensorflow(monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=message):
        distribute.create_strategy(TrainingConfig(strategy="multi_worker"))


@pytest.mark.parametrize("values,message", [
    ({"strategy": "mirrored", "jit_compile": True}, r"jit_compile \(--jit-compile\) does not work with strategy 'mirrored'"),
    ({"strategy": "multi_worker", "jit_compile": True}, r"--strategy multi_worker"),
    ({"num_cpu_devices": 2}, r"num_cpu_devices \(--num-cpu-devices\) needs strategy 'mirrored'"),
    ({"strategy": "parameter_server"}, "strategy must be one of default, mirrored, multi_worker"),
    ({"mixed_precision": "yes"}, "mixed_precision must be true or false"),
    ({"num_cpu_devices": -1, "strategy": "mirrored"}, "num_cpu_devices must be an integer >= 0"),
])
def test_unsupported_combinations_fail_at_configuration(values, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**values)


def test_flags_set_the_distribution_fields():
    parser = argparse.ArgumentParser()
    cli.add_config_flags(parser)
    config = cli.config_from_flags(parser.parse_args(
        ["--strategy", "mirrored", "--num-cpu-devices", "2", "--mixed-precision", "--steps-per-execution", "8"]))
    assert (config.training.strategy, config.training.num_cpu_devices) == ("mirrored", 2)
    assert config.training.mixed_precision and not config.training.jit_compile
    assert config.training.steps_per_execution == 8
    config = cli.config_from_flags(parser.parse_args(["--jit-compile", "--no-mixed-precision"]))
    assert config.training.jit_compile and not config.training.mixed_precision
    with pytest.raises(ValueError, match="--jit-compile"):
        cli.config_from_flags(parser.parse_args(["--jit-compile", "--strategy", "multi_worker"]))


def test_trainer_rejects_jit_compile_with_a_strategy_before_training(tmp_path):
    result = subprocess.run([sys.executable, TRAIN, "--workdir", str(tmp_path / "run"), "--strategy",
                             "mirrored", "--jit-compile"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "--jit-compile" in result.stderr and "keras issue 19005" in result.stderr
    assert not os.path.exists(tmp_path / "run")


def test_resuming_may_change_the_strategy_but_not_the_precision(tmp_path):
    base = tfp_vae.Config().replace(model={"latent_dim": 4, "hidden_units": (32,)},
                                    data={"train_examples": 512, "validation_examples": 256})
    workdir = str(tmp_path)
    tfp_vae.save_config(base, os.path.join(workdir, "config.json"))
    checkpoint.check_resumable(base.replace(training={"strategy": "mirrored", "steps_per_execution": 4,
                                                      "epochs": 3}), workdir)
    with pytest.raises(ValueError, match="training.mixed_precision"):
        checkpoint.check_resumable(base.replace(training={"mixed_precision": True}), workdir)
    mixed = base.replace(training={"mixed_precision": True})
    tfp_vae.save_config(mixed, os.path.join(workdir, "config.json"))
    with pytest.raises(ValueError, match="changed: training.mixed_precision_dtype"):
        checkpoint.check_resumable(mixed.replace(training={"mixed_precision_dtype": "bfloat16"}), workdir)


@pytest.mark.parametrize("objective", [dict(free_bits=0.5), dict(importance_samples=3)])
def test_an_empty_replica_batch_gives_zero_terms_not_nan(objective):
    # Under tf.distribute a short last batch can leave a replica with no examples.
    model = VAE(ModelConfig(latent_dim=3, hidden_units=(8,)))
    model.compile("adam", **objective)
    terms = model.objective(np.zeros((0, 28, 28, 1), np.float32))
    for name in ("reconstruction", "kl", "elbo", "iwae"):
        assert float(terms.get(name, 0.0)) == 0.0, name
    assert np.isfinite(float(terms["loss"]))


# ---------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("autoregressive_units,dtype", [((), "float16"), ((32,), "float16"), ((), "bfloat16")],
                         ids=["factorised", "autoregressive_decoder", "bfloat16"])
def test_mixed_precision_trains_on_cpu_and_loads_as_float32(tmp_path, autoregressive_units, dtype):
    config = tfp_vae.Config().replace(
        model={"latent_dim": 4, "hidden_units": (32,), "autoregressive_units": autoregressive_units},
        data={"train_examples": 512, "validation_examples": 256},
        training={"epochs": 2, "batch_size": 64, "mixed_precision": True, "mixed_precision_dtype": dtype,
                  "steps_per_execution": 4})
    metrics = training.train(config, str(tmp_path), verbose=0)
    for split in ("train", "validation", "test"):
        assert all(np.isfinite(value) for value in metrics[split].values()), metrics[split]
        assert -800 < metrics[split]["elbo"] < -100
    with open(tmp_path / "history.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[1] < losses[0]
    model = tfp_vae.load(str(tmp_path))  # inference model: float32 throughout
    assert {layer.compute_dtype for layer in model.encoder.layers + model.decoder.layers} == {"float32"}
    if autoregressive_units:
        # The MADE's masks survived the loss-scaled float16 updates: pixel i's logit has zero
        # gradient with respect to pixel i and every later pixel.
        conditionals = model.likelihood(tf.zeros((1, 4))).tensor_distribution.distribution_fn
        x = tf.constant((np.random.default_rng(0).random((1, 28, 28, 1)) < 0.3).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.reshape(conditionals(x).distribution.logits, [784])
        jacobian = tf.reshape(tape.jacobian(logits, x), [784, 784]).numpy()
        assert np.all(np.triu(jacobian) == 0.0) and np.abs(np.tril(jacobian, -1)).max() > 0


def test_weight_averaging_reaches_through_the_loss_scale_optimizer():
    config = tfp_vae.Config().replace(model={"latent_dim": 2, "hidden_units": (8,), "image_shape": (4, 4, 1)},
                                      training={"mixed_precision": True, "ema_momentum": 0.5, "learning_rate": 0.05})
    model = training.build_model(config)
    assert hasattr(model.optimizer, "inner_optimizer") and uses_weight_averaging(model)
    seen = {}

    class Probe(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["raw"] = [variable.numpy() for variable in self.model.trainable_variables]
            with averaged_weights(self.model):
                seen["averaged"] = [variable.numpy() for variable in self.model.trainable_variables]

    images = np.random.default_rng(0).integers(0, 2, size=(24, 4, 4, 1)).astype("float32")
    model.fit(images, batch_size=8, epochs=1, verbose=0, callbacks=[Probe()])
    assert any(not np.allclose(a, b) for a, b in zip(seen["raw"], seen["averaged"]))
    for variable, average in zip(model.trainable_variables, seen["averaged"]):  # fit ends on the average
        np.testing.assert_array_equal(variable.numpy(), average)


# ---------------------------------------------------------------- mirrored over 2 logical CPUs

MIRRORED_CHECK = r'''
import json
from tfp_vae import _env
import numpy as np
from tfp_vae import distribute
from tfp_vae.config import DataConfig, ModelConfig, TrainingConfig
mirrored = distribute.create_strategy(TrainingConfig(strategy="mirrored", num_cpu_devices=2))
import tensorflow as tf, tf_keras
from tfp_vae import data
from tfp_vae.model import VAE

# Real images, binarized once (fixed seeds), in a fixed order: the same global batches each run.
source = DataConfig(binarization="static", train_examples=256, validation_examples=256)
batches = data.input_pipeline(source, "train", 64, shuffle=False)
config = ModelConfig(latent_dim=4, hidden_units=(32,))
tf_keras.utils.set_random_seed(0)
reference = VAE(config)
# Posterior scale softplus(-20) + 1e-5: z = loc up to 1e-5, so the one-sample loss is the same
# function of the weights on both strategies (their random streams differ).
kernel, bias = reference.encoder.get_layer("posterior_params").get_weights()
kernel[:, config.latent_dim:] = 0.0
bias[config.latent_dim:] = -20.0
reference.encoder.get_layer("posterior_params").set_weights([kernel, bias])
initial = reference.get_weights()
initial_trainable = [v.numpy() for v in reference.trainable_weights]

def run(strategy, optimizer, dataset, epochs):
    with strategy.scope():
        model = VAE(config)
        model.set_weights(initial)
        model.compile(optimizer)
    history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False).history
    return history["loss"], [v.numpy() for v in model.trainable_weights], model.optimizer.iterations.numpy()

result = {"replicas": mirrored.num_replicas_in_sync}
for name, make in (("sgd", lambda: tf_keras.optimizers.SGD(0.05)), ("adam", lambda: tf_keras.optimizers.Adam(1e-3))):
    one_loss, one_weights, one_steps = run(tf.distribute.get_strategy(), make(), batches, 2)
    two_loss, two_weights, two_steps = run(mirrored, make(), batches, 2)
    result[name] = {
        "one_device_loss": [float(v) for v in one_loss], "mirrored_loss": [float(v) for v in two_loss],
        "steps": [int(one_steps), int(two_steps)],
        "max_weight_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights)),
        "max_weight_change": max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, initial_trainable)),
    }
# A global batch of one example: one replica gets it, the other gets an empty batch.
single = batches.unbatch().take(1).batch(1)
loss, weights, _ = run(mirrored, tf_keras.optimizers.SGD(0.05), single, 1)
result["single_example"] = {"loss": float(loss[0]), "finite": bool(all(np.all(np.isfinite(w)) for w in weights))}
# Each replica draws its own posterior noise: the same images on both replicas, different z.
with mirrored.scope():
    model = VAE(config)
images = next(iter(batches))[:8]
draws = mirrored.experimental_local_results(mirrored.run(tf.function(lambda: tf.convert_to_tensor(model.encoder(images)))))
result["replica_draws_differ"] = bool(np.max(np.abs(draws[0].numpy() - draws[1].numpy())) > 1e-3)
print("RESULT " + json.dumps(result))
'''


def test_mirrored_over_two_cpu_devices_matches_one_device():
    result = subprocess.run([sys.executable, "-c", MIRRORED_CHECK], capture_output=True, text=True,
                            timeout=240, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    values = json.loads(lines[-1][len("RESULT "):])
    assert values["replicas"] == 2
    for name in ("sgd", "adam"):
        run = values[name]
        assert run["steps"] == [8, 8], run  # batch_size is the global batch: same steps per epoch
        np.testing.assert_allclose(run["mirrored_loss"], run["one_device_loss"], rtol=1e-5)
        # Same updates: the replicas' gradients add up to the one-device gradient. (A missing or
        # doubled 1/replicas factor would put the SGD weights apart by about half their change.)
        assert run["max_weight_difference"] < 0.02 * run["max_weight_change"], run
    assert values["single_example"]["finite"] and np.isfinite(values["single_example"]["loss"])
    assert values["replica_draws_differ"]


@pytest.mark.parametrize("prior", [[], ["--prior", "vamp", "--prior-components", "8"], ["--autoregressive-units", "32"],
                                   ["--latent-dim", "4", "--top-latent-dim", "2", "--conditional-units", "8"],
                                   ["--ema-momentum", "0.9", "--keep-best"]],
                         ids=["n01", "vamp", "autoregressive_decoder", "two_level", "weight_averaging"])
def test_mirrored_trainer_agrees_with_the_default_trainer(tmp_path, prior):
    arguments = [*TINY, "--epochs", "2", "--seed", "3", *prior]
    logs = [str(tmp_path / "default.log"), str(tmp_path / "mirrored.log")]
    processes = []
    try:
        processes.append(start(["--workdir", str(tmp_path / "default"), *arguments], logs[0]))
        processes.append(start(["--workdir", str(tmp_path / "mirrored"), *arguments, "--strategy", "mirrored",
                                "--num-cpu-devices", "2"], logs[1]))
        codes = wait_all(processes, 240)
    finally:
        stop_all(processes)
    assert codes == [0, 0], tail(logs[0]) + tail(logs[1])
    one, two = (json.load(open(tmp_path / name / "metrics.json")) for name in ("default", "mirrored"))
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["optimizer_steps"] == two["optimizer_steps"] == 2 * STEPS_PER_EPOCH
    # Same data, seed and initial weights; only the z draws differ (each replica has its own
    # random stream), so the losses agree within Monte-Carlo noise.
    for split in ("train", "validation", "test"):
        assert two[split]["loss"] == pytest.approx(one[split]["loss"], rel=0.01), (split, one, two)


# ---------------------------------------------------------------- multi-worker on 127.0.0.1


def test_multi_worker_training_only_the_chief_writes_and_losses_agree(tmp_path):
    chief_dir, worker_dir = str(tmp_path / "chief"), str(tmp_path / "worker")
    codes, logs, scratch = run_workers(tmp_path, [chief_dir, worker_dir], ["--epochs", "2"])
    assert codes == [0, 0], tail(logs[0]) + tail(logs[1])
    assert "outputs in" in open(logs[0]).read() and "not the chief" in open(logs[1]).read()
    for name in ("metrics.json", "config.json", "history.csv", "samples.png", "reconstructions.png"):
        assert os.path.isfile(os.path.join(chief_dir, name)), name
    assert os.path.isfile(os.path.join(chief_dir, "weights", "checkpoint.index"))
    assert os.listdir(os.path.join(chief_dir, "backup")) == ["chief"]
    # The other worker wrote nothing to its --workdir, and its temporary folder is gone.
    assert not os.path.exists(worker_dir)
    assert not [name for name in os.listdir(scratch) if name.startswith("tfp_vae-")], os.listdir(scratch)
    chief, worker = printed_metrics(logs[0]), printed_metrics(logs[1])
    assert chief["replicas"] == worker["replicas"] == 2
    assert chief["optimizer_steps"] == worker["optimizer_steps"] == 2 * STEPS_PER_EPOCH
    for split in ("train", "validation", "test"):
        # Metrics are all-reduced over the workers and the weights are mirrored: equal, not close.
        assert chief[split] == pytest.approx(worker[split], rel=1e-6), split
        assert -800 < chief[split]["elbo"] < -100
    on_disk = json.load(open(os.path.join(chief_dir, "metrics.json")))
    assert on_disk["test"] == pytest.approx(chief["test"]) and on_disk["strategy"] == "multi_worker"


def test_multi_worker_resumes_after_a_worker_is_killed(tmp_path):
    # One workdir for both workers (as on a shared filesystem): the non-chief restores from the
    # chief's backup when the cluster is restarted.
    workdir, epochs = str(tmp_path / "run"), 6
    arguments = ["--workdir", workdir, "--strategy", "multi_worker", *TINY, "--epochs", str(epochs)]
    ports = free_ports(2)
    logs = [str(tmp_path / f"first-worker{index}.log") for index in range(2)]
    processes = []
    try:
        for index in range(2):
            processes.append(start(arguments, logs[index], TF_CONFIG=tf_config(ports, index),
                                   TMPDIR=str(tmp_path)))
        deadline = time.time() + 180
        while len(history_epochs(workdir)) < 2:
            if any(process.poll() is not None for process in processes):
                pytest.fail("a worker ended before the kill: " + tail(logs[0]) + tail(logs[1]))
            if time.time() > deadline:
                pytest.fail("the cluster did not complete 2 epochs within 180 s")
            time.sleep(0.05)
        processes[1].send_signal(signal.SIGKILL)
        processes[1].wait(timeout=30)
        # The chief's next collective op fails once the dead worker's heartbeats stop.
        try:
            processes[0].wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the chief did not notice the lost worker within 90 s: " + tail(logs[0]))
    finally:
        stop_all(processes)
    killed_after = history_epochs(workdir)
    assert 2 <= len(killed_after) < epochs, killed_after
    assert processes[0].returncode == 1 and "lost a worker" in open(logs[0]).read(), tail(logs[0])

    codes, logs, _ = run_workers(tmp_path, [workdir, workdir], ["--epochs", str(epochs)], name="restart")
    assert codes == [0, 0], tail(logs[0]) + tail(logs[1])
    assert history_epochs(workdir) == list(range(epochs))  # no epoch lost or repeated
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    # Weights and optimizer state came back: the step counter covers every epoch exactly once.
    assert metrics["epochs"] == epochs and metrics["optimizer_steps"] == epochs * STEPS_PER_EPOCH
    assert sorted(os.listdir(os.path.join(workdir, "backup"))) == ["chief"]  # no worker temp left
    with open(os.path.join(workdir, "history.csv")) as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    first_resumed = len(killed_after)
    assert losses[first_resumed] < losses[0] - 0.5 * (losses[0] - losses[first_resumed - 1]), losses


NOISE_CHECK = r'''
import json, os
from tfp_vae import _env
from tfp_vae import distribute
from tfp_vae.config import ModelConfig, TrainingConfig
strategy = distribute.create_strategy(TrainingConfig(strategy="multi_worker"))
import tensorflow as tf, tf_keras
from tfp_vae.model import VAE
tf_keras.utils.set_random_seed(0)  # the same seed on both workers, as in training
with strategy.scope():
    model = VAE(ModelConfig(latent_dim=4, hidden_units=(8,)))
images = tf.ones([4, 28, 28, 1])
draw = tf.function(lambda: strategy.run(lambda: tf.convert_to_tensor(model.encoder(images))))
print("DRAWS " + json.dumps([strategy.experimental_local_results(draw())[0].numpy().tolist() for _ in range(2)]))
'''


def test_each_worker_draws_its_own_posterior_noise(tmp_path):
    # A seeded stateful random op draws the same numbers on every worker (same graph, same seeds):
    # without the replica offset in the posterior sampler, both workers would print equal draws.
    ports, logs, processes = free_ports(2), [str(tmp_path / f"worker{index}.log") for index in range(2)], []
    try:
        for index in range(2):
            with open(logs[index], "w") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", NOISE_CHECK], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    env=dict(os.environ, TF_CONFIG=tf_config(ports, index))))
        codes = wait_all(processes, 120)
    finally:
        stop_all(processes)
    assert codes == [0, 0], tail(logs[0]) + tail(logs[1])
    draws = [np.array(json.loads(next(line for line in open(path) if line.startswith("DRAWS "))[6:]))
             for path in logs]
    assert np.all(np.isfinite(draws[0])) and draws[0].shape == (2, 4, 4)
    assert np.min(np.abs(draws[0] - draws[1])) > 1e-6  # no shared noise between the workers
    assert np.min(np.abs(draws[0][0] - draws[0][1])) > 1e-6  # and fresh noise every step
