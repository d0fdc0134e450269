"""TF Serving export: what the server would load, checked without a server.

The exported SavedModel is loaded in a fresh process that imports only tensorflow (as the model
server has no tfp, tf_keras or tfp_vae), through `saved_model_cli run` (a TF1 session, the load
path of the C++ server), and its warmup file is replayed; every signature must match the
in-memory model it came from.
"""
from tfp_vae import _env  # noqa: F401

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras
from google.protobuf import text_format

from tfp_vae import checkpoint
from tfp_vae.config import Config, ModelConfig, save_config
from tfp_vae.export import SIGNATURES, existing_versions, export
from tfp_vae.model import VAE

tfd = tfp.distributions
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
NUM_SAMPLES, SEED = 16, 3
INPUT_OF = {"serving_default": "x", "encode": "x", "decode": "z", "reconstruct": "x", "score": "x",
            "sample": "seed"}
SAMPLE_SEEDS = np.array([7, 0, 7, 2**40 + 7], np.int64)


def binary_images(count, shape, seed):
    return (np.random.default_rng(seed).random((count, *shape)) < 0.3).astype(np.float32)


def server_like_environment():
    """The environment of a model server: no legacy-Keras switch, quiet logs."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return environment


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as training leaves it (config.json, weights/, metrics.json) and its model."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = Config(model=ModelConfig(latent_dim=3, hidden_units=(16,)))
    tf_keras.utils.set_random_seed(0)
    model = VAE(config.model)
    model.compile(tf_keras.optimizers.Adam(1e-2))
    # A few real steps, so the exported weights are not the initial ones.
    model.fit(binary_images(64, config.model.image_shape, seed=0), batch_size=32, epochs=1, verbose=0)
    checkpoint.save_weights(model, workdir)
    save_config(config, os.path.join(workdir, "config.json"))
    checkpoint.write_json({"test": {"elbo": -123.0}, "units": "nats per example"},
                        os.path.join(workdir, "metrics.json"))
    return workdir, model


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    workdir, model = run
    base = str(tmp_path_factory.mktemp("saved_models") / "tiny_vae")
    return export(workdir, base, num_samples=NUM_SAMPLES, seed=SEED), model


@pytest.fixture(scope="module")
def exported_conv(tmp_path_factory):
    """The other architecture and likelihood, exported straight from an in-memory VAE."""
    tf_keras.utils.set_random_seed(1)
    model = VAE(ModelConfig(architecture="conv", conv_filters=(4, 8), latent_dim=2,
                            likelihood="continuous_bernoulli", image_shape=(8, 8, 3)))
    base = str(tmp_path_factory.mktemp("saved_models") / "conv_vae")
    return export(model, base, num_samples=NUM_SAMPLES, seed=SEED), model


@pytest.fixture(scope="module")
def exported_autoregressive(tmp_path_factory):
    """An autoregressive (MADE) decoder after a few steps, on 8x8 images: 64 passes per sample."""
    tf_keras.utils.set_random_seed(2)
    model = VAE(ModelConfig(latent_dim=2, hidden_units=(16,), image_shape=(8, 8, 1), autoregressive_units=(32,)))
    model.compile(tf_keras.optimizers.Adam(1e-2))
    model.fit(binary_images(256, (8, 8, 1), seed=2), batch_size=32, epochs=2, verbose=0)
    base = str(tmp_path_factory.mktemp("saved_models") / "ar_vae")
    return export(model, base, num_samples=NUM_SAMPLES, seed=SEED), model


def inputs_for(model, seed=5):
    shape = model.config.image_shape
    images = binary_images(5, shape, seed) if model.config.likelihood == "bernoulli" else \
        np.random.default_rng(seed).random((5, *shape)).astype(np.float32)
    latents = np.random.default_rng(seed).normal(size=(4, model.config.latent_dim)).astype(np.float32)
    return {"x": images, "z": latents, "seed": SAMPLE_SEEDS}


FRESH_PROCESS = r'''
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

report = {"warmup": []}
for export_dir, inputs_path, outputs_path in json.loads(sys.argv[1]):
    loaded = tf.saved_model.load(export_dir)
    inputs = dict(np.load(inputs_path))
    outputs = {}
    for signature, name in json.loads(sys.argv[2]).items():
        for key, value in loaded.signatures[signature](**{name: tf.constant(inputs[name])}).items():
            outputs[f"{signature}/{key}"] = value.numpy()
    # The same images alone and in another order: a score must not depend on its batch.
    outputs["score_alone/elbo"] = loaded.signatures["score"](x=tf.constant(inputs["x"][2:3]))["elbo"].numpy()
    outputs["score_reversed/log_likelihood"] = loaded.signatures["score"](
        x=tf.constant(inputs["x"][::-1]))["log_likelihood"].numpy()
    np.savez(outputs_path, **outputs)
    # Replays the warmup file as TF Serving does at load with --enable_model_warmup.
    for record in tf.data.TFRecordDataset(export_dir + "/assets.extra/tf_serving_warmup_requests"):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        feed = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
        result = loaded.signatures[request.model_spec.signature_name](**feed)
        report["warmup"].append([request.model_spec.name, request.model_spec.signature_name,
                                 {key: list(value.shape) for key, value in result.items()}])
report["modules"] = sorted(name for name in ("tensorflow_probability", "tf_keras", "tfp_vae", "keras")
                           if name in sys.modules)
print(json.dumps(report))
'''


def expected_score(model, x, num_samples, seed):
    """`score` recomputed from the in-memory model with the noise export_metadata.json documents."""
    loc, scale = (value.numpy() for value in model.encode(x))
    noise = tf.random.stateless_normal([num_samples, model.config.latent_dim], seed=[seed, 1],
                                       alg="philox").numpy()
    posterior = tfd.MultivariateNormalDiag(loc, scale)
    log_p_x_given_z, log_weights = [], []
    for epsilon in noise:
        z = loc + scale * epsilon
        log_p_x_given_z.append(model.decoder(z).log_prob(x).numpy())
        log_weights.append(log_p_x_given_z[-1] + model.prior.log_prob(z).numpy() - posterior.log_prob(z).numpy())
    log_weights = np.array(log_weights, np.float64)
    reconstruction = np.mean(log_p_x_given_z, axis=0)
    try:
        kl = tfd.kl_divergence(model.posterior(x), model.prior).numpy()
    except NotImplementedError:  # a learnt prior: Monte Carlo over the same noise
        kl = np.mean([posterior.log_prob(loc + scale * epsilon).numpy() -
                      model.prior.log_prob(loc + scale * epsilon).numpy() for epsilon in noise], axis=0)
    peak = log_weights.max(axis=0)
    iwae = peak + np.log(np.mean(np.exp(log_weights - peak), axis=0))
    return {"kl": kl, "reconstruction": reconstruction, "elbo": reconstruction - kl, "log_likelihood": iwae,
            "mean_log_weight": log_weights.mean(axis=0)}


def test_fresh_tensorflow_only_process_matches_the_in_memory_model(exported, exported_conv,
                                                                   exported_autoregressive, tmp_path):
    jobs, models = [], []
    for index, (path, model) in enumerate((exported, exported_conv, exported_autoregressive)):
        np.savez(tmp_path / f"inputs{index}.npz", **inputs_for(model))
        jobs.append([path, str(tmp_path / f"inputs{index}.npz"), str(tmp_path / f"outputs{index}.npz")])
        models.append(model)
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(jobs), json.dumps(INPUT_OF)],
                            capture_output=True, text=True, timeout=300, env=server_like_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not {"tensorflow_probability", "tf_keras", "tfp_vae"} & set(report["modules"]), report["modules"]
    # One warmup request per signature, each replayed without error and batch-major.
    assert sorted(signature for _, signature, _ in report["warmup"]) == sorted(SIGNATURES * 3)
    assert {name for name, _, _ in report["warmup"]} == {"tiny_vae", "conv_vae", "ar_vae"}
    assert all(shape[0] == 2 for _, _, shapes in report["warmup"] for shape in shapes.values())

    for (path, inputs_path, outputs_path), model in zip(jobs, models):
        inputs, served = dict(np.load(inputs_path)), dict(np.load(outputs_path))
        x, z = inputs["x"], inputs["z"]
        loc, scale = model.encode(x)
        for signature in ("encode", "serving_default"):
            np.testing.assert_allclose(served[f"{signature}/z_mean"], loc, atol=1e-5)
            np.testing.assert_allclose(served[f"{signature}/z_stddev"], scale, atol=1e-5)
        # (The seed only matters to an autoregressive decoder: the noise of its sample path.)
        np.testing.assert_allclose(served["decode/x_mean"], model.decode(z, seed=SEED), atol=1e-5)
        np.testing.assert_allclose(served["reconstruct/x_mean"], model.reconstruct(x), atol=1e-5)

        score = {key: served[f"score/{key}"] for key in ("elbo", "kl", "reconstruction", "log_likelihood")}
        expected = expected_score(model, x, NUM_SAMPLES, SEED)
        np.testing.assert_allclose(score["kl"], expected["kl"], atol=1e-5)
        np.testing.assert_allclose(score["elbo"], score["reconstruction"] - score["kl"], atol=1e-5)
        # Log-densities of whole images are hundreds of nats, where one float32 step is ~3e-5 and
        # summation order differs between the batched graph and this loop: compare relatively.
        for key in ("reconstruction", "elbo", "log_likelihood"):
            np.testing.assert_allclose(score[key], expected[key], rtol=1e-6, atol=1e-5, err_msg=key)
        # IWAE >= the mean log weight of its own samples: Jensen, exact for any noise.
        assert np.all(score["log_likelihood"] >= expected["mean_log_weight"] - 1e-4)
        if model.config.likelihood == "bernoulli":
            # IWAE >= ELBO holds in expectation over the noise; the trained model's gap (about
            # 1-5 nats here) dwarfs the Monte-Carlo error of one fixed noise draw. The untrained
            # conv model's gap is smaller than that error, so it is left out.
            assert score["log_likelihood"].mean() >= score["elbo"].mean()
        # Reproducible per example, whatever batch it arrives in.
        np.testing.assert_allclose(served["score_alone/elbo"], score["elbo"][2:3], rtol=1e-6)
        np.testing.assert_allclose(served["score_reversed/log_likelihood"], score["log_likelihood"][::-1], rtol=1e-6)

        # Same seed, same sample; seed s in [0, 2**31) draws what model.sample(1, seed=s) draws.
        samples, images = served["sample/z"], served["sample/x_mean"]
        assert samples.shape == (4, model.config.latent_dim) and images.shape == (4, *model.config.image_shape)
        np.testing.assert_array_equal(samples[0], samples[2])
        assert not np.allclose(samples[0], samples[1]) and not np.allclose(samples[0], samples[3])
        np.testing.assert_allclose(images[0], model.sample(1, seed=7)[0], atol=1e-5)
        np.testing.assert_allclose(images[1], model.sample(1, seed=0)[0], atol=1e-5)
        if model.config.autoregressive_units:  # each row's pixel noise comes from its own seed
            np.testing.assert_array_equal(images[0], images[2])
            assert not np.allclose(images[0], images[1])
            # decode: the same z gives the same images wherever it sits in a batch.
            np.testing.assert_allclose(served["decode/x_mean"][1], model.decode(z[1:2], seed=SEED)[0], atol=1e-5)
        else:
            np.testing.assert_allclose(images, model.decode(samples), atol=1e-5)


def test_saved_model_cli_tf1_session_runs_encode_and_rejects_nan(exported, tmp_path):
    path, model = exported
    x = inputs_for(model)["x"]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "nan.npy", np.where(x > 0, np.nan, x).astype(np.float32))
    command = [os.path.join(BIN, "saved_model_cli"), "run", "--dir", path, "--tag_set", "serve",
               "--signature_def", "encode"]
    # Both at once: each start-up costs seconds.
    good = subprocess.Popen(command + ["--inputs", f"x={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server_like_environment())
    bad = subprocess.Popen(command + ["--inputs", f"x={tmp_path / 'nan.npy'}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server_like_environment())
    good_out, good_err = good.communicate(timeout=300)
    _, bad_err = bad.communicate(timeout=300)
    assert good.returncode == 0, good_err[-3000:]
    loc, scale = model.encode(x)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "z_mean.npy"), loc, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "z_stddev.npy"), scale, atol=1e-5)
    assert bad.returncode != 0 and "input x must be finite" in bad_err, bad_err[-3000:]


def error_of(call):
    with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError)) as caught:
        call()
    return str(caught.value)


def test_bad_inputs_give_errors_that_name_the_input(exported):
    path, model = exported
    loaded = tf.saved_model.load(path)
    encode, decode, score, sample = (loaded.signatures[name] for name in ("encode", "decode", "score", "sample"))
    images = inputs_for(model)["x"]

    # Wrong shape. NumPy input is bound to the signature's TensorSpec, which names it; a tf.Tensor
    # (and any request to the C++ server) skips that check and meets the in-graph one.
    assert "name='x'" in error_of(lambda: encode(x=np.zeros((2, 28, 28, 2), np.float32)))
    for bad_shape in [(2, 28, 28, 2), (2, 1, 28, 28), (28, 28, 1), (2, 784)]:
        assert "input x must have shape [batch, 28, 28, 1]" in error_of(lambda: encode(x=tf.zeros(bad_shape)))
    assert "input x must have shape" in error_of(lambda: score(x=tf.zeros((2, 28, 28, 2))))
    assert "input z must have shape [batch, 3]" in error_of(lambda: decode(z=tf.zeros((2, 4))))
    assert "input seed must have shape [batch]" in error_of(lambda: sample(seed=tf.zeros((2, 1), tf.int64)))

    # Wrong dtype. The exported functions check it against the TensorSpec and name the input;
    # the signature itself is refused by the TF runtime, which names its only input by position.
    assert "name='x'" in error_of(lambda: loaded.encode(tf.zeros((2, 28, 28, 1), tf.float64)))
    assert "name='z'" in error_of(lambda: loaded.decode(tf.zeros((2, 3), tf.int32)))
    assert "input #0(zero-based) was expected to be a float tensor but is a double tensor" in \
        error_of(lambda: encode(x=tf.zeros((2, 28, 28, 1), tf.float64)))
    assert "was expected to be a int64 tensor" in error_of(lambda: sample(seed=tf.zeros((2,), tf.int32)))

    # NaN / Inf and out-of-range pixels.
    nan_images = images.copy()
    nan_images[1, 3, 3, 0] = np.nan
    assert "input x must be finite" in error_of(lambda: encode(x=tf.constant(nan_images)))
    assert "input x must be finite" in error_of(lambda: score(x=tf.constant(nan_images)))
    assert "input z must be finite" in error_of(lambda: decode(z=tf.constant([[0.0, np.inf, 0.0]])))
    assert "input x must hold pixel values in [0, 1]" in error_of(lambda: encode(x=tf.constant(images * 2)))
    # The valid input still works after all that.
    np.testing.assert_allclose(encode(x=tf.constant(images))["z_mean"], model.encode(images)[0], atol=1e-5)


def test_shape_checks_hold_where_the_server_feeds_tensors_unchecked(exported):
    """TF Serving's C++ server feeds request tensors to a TF1 session without comparing their
    shapes to the signature's; `Session.run` compares them in Python, so feed beneath it."""
    path, _ = exported
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        raw_run = getattr(session, "_call_tf_sessionrun", None)  # private: skip rather than break if it moves
        if raw_run is None:
            pytest.skip("tf.compat.v1.Session._call_tf_sessionrun is gone in this TensorFlow")

        def run(signature_name, value):
            signature = meta_graph.signature_def[signature_name]
            (input_info,) = signature.inputs.values()
            feed = graph.get_tensor_by_name(input_info.name)
            fetches = [graph.get_tensor_by_name(info.name) for info in signature.outputs.values()]
            return raw_run(None, {feed._as_tf_output(): value}, [t._as_tf_output() for t in fetches], [], None)

        assert run("encode", np.zeros((2, 28, 28, 1), np.float32))[0].shape == (2, 3)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"input x must have shape \[batch, 28, 28, 1\]"):
            run("encode", np.zeros((2, 1, 28, 28), np.float32))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"input seed must have shape \[batch\]"):
            run("sample", np.zeros((2, 1), np.int64))


def test_layout_metadata_and_models_config(exported, run):
    from tensorflow_serving.config import model_server_config_pb2

    path, _ = exported
    workdir, _ = run
    base = os.path.dirname(path)
    assert os.path.basename(path) == "1" and sorted(os.listdir(base)) == ["1", "models.config"]
    extra = os.path.join(path, "assets.extra")
    assert sorted(os.listdir(extra)) == ["config.json", "export_metadata.json", "metrics.json",
                                         "tf_serving_warmup_requests"]
    for name in ("config.json", "metrics.json"):
        assert open(os.path.join(extra, name)).read() == open(os.path.join(workdir, name)).read()
    metadata = json.load(open(os.path.join(extra, "export_metadata.json")))
    assert metadata["num_samples"] == NUM_SAMPLES and metadata["seed"] == SEED
    assert metadata["source_workdir"] == os.path.abspath(workdir) and metadata["tfp_vae_version"]
    assert sorted(metadata["signatures"]) == sorted(SIGNATURES)
    assert metadata["signatures"]["encode"]["inputs"] == {"x": {"shape": [None, 28, 28, 1], "dtype": "float32"}}
    assert metadata["signatures"]["score"]["outputs"]["log_likelihood"] == {"shape": [None], "dtype": "float32"}

    config = text_format.Parse(open(os.path.join(base, "models.config")).read(),
                               model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("tiny_vae", "/models/tiny_vae", "tensorflow")


def test_versions_are_never_overwritten_unless_asked(tmp_path):
    model = VAE(ModelConfig(latent_dim=2, hidden_units=(16,), image_shape=(4, 4, 1)))
    base = str(tmp_path / "small_vae")
    os.makedirs(os.path.join(base, ".tmp-export-9-123-abc"))  # a killed export's leftover
    assert export(model, base, num_samples=2) == os.path.join(base, "1")
    assert export(model, base, num_samples=3) == os.path.join(base, "2")
    assert existing_versions(base) == [1, 2]
    metadata_path = os.path.join(base, "1", "assets.extra", "export_metadata.json")
    before = open(metadata_path).read()
    with pytest.raises(FileExistsError, match="overwrite"):
        export(model, base, version=1)
    assert open(metadata_path).read() == before
    export(model, base, version=1, num_samples=5, overwrite=True)
    assert json.load(open(metadata_path))["num_samples"] == 5
    assert sorted(name for name in os.listdir(base) if not name.startswith(".tmp-export-9")) == \
        ["1", "2", "models.config"]  # nothing left aside or half-written
    for bad in [dict(num_samples=0), dict(version=0), dict(seed=-1), dict(num_samples=True)]:
        with pytest.raises(ValueError):
            export(model, base, **bad)
    with pytest.raises(ValueError, match="model's name"):
        export(model, os.path.join(base, "7"))
    with pytest.raises(FileNotFoundError, match="config"):
        export(str(tmp_path / "no_such_run"), base)


KILLED_EXPORT = r'''
import sys, time
from tfp_vae import export as export_lib

publish = export_lib._publish
def publish_after_a_long_pause(staging, final, overwrite):
    with open(sys.argv[3], "w") as handle:  # tells the test the version is fully written, not yet renamed
        handle.write(staging)
    time.sleep(600)
    publish(staging, final, overwrite)
export_lib._publish = publish_after_a_long_pause
export_lib.export(sys.argv[1], sys.argv[2])
'''


def test_killed_export_leaves_no_version_folder(run, tmp_path):
    workdir, model = run
    base, marker = str(tmp_path / "killed_vae"), str(tmp_path / "staged")
    process = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, workdir, base, marker],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not os.path.exists(marker):
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.time() < deadline, "the export did not reach its final rename within 240 s"
            time.sleep(0.05)
        time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    staging = open(marker).read()
    assert os.path.exists(os.path.join(staging, "saved_model.pb"))  # killed with everything but the rename
    assert existing_versions(base) == [] and not os.path.exists(os.path.join(base, "models.config"))
    # The next export ignores the leftover and publishes version 1.
    assert export(model, base, num_samples=2) == os.path.join(base, "1")


def test_export_cli(run, tmp_path):
    workdir, _ = run
    base = str(tmp_path / "saved_models" / "cli_vae")
    command = [sys.executable, os.path.join(ROOT, "trainers", "export.py"), "--workdir", workdir,
               "--export-base", base, "--version", "3", "--num-samples", "4",
               "--serving-base-path", "/srv/cli_vae"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["export"] == os.path.join(base, "3")
    assert json.load(open(os.path.join(base, "3", "assets.extra", "export_metadata.json")))["num_samples"] == 4
    assert 'base_path: "/srv/cli_vae"' in open(os.path.join(base, "models.config")).read()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_a_learnt_prior_is_exported_with_its_weights_and_a_monte_carlo_kl(prior, tmp_path):
    tf_keras.utils.set_random_seed(2)
    model = VAE(ModelConfig(latent_dim=3, hidden_units=(16,), prior=prior, prior_components=5))
    model.compile(tf_keras.optimizers.Adam(1e-2))
    model.fit(binary_images(32, (28, 28, 1), seed=1), batch_size=16, epochs=1, verbose=0)
    loaded = tf.saved_model.load(export(model, str(tmp_path / prior), num_samples=NUM_SAMPLES, seed=SEED))
    x = binary_images(4, (28, 28, 1), seed=9)
    got = loaded.signatures["score"](x=tf.constant(x))
    expected = expected_score(model, x, NUM_SAMPLES, SEED)
    assert set(got) == {"elbo", "kl", "reconstruction", "log_likelihood"}
    for key, value in got.items():
        np.testing.assert_allclose(value.numpy(), expected[key], rtol=1e-4, atol=2e-3, err_msg=key)
    sample = loaded.signatures["sample"](seed=tf.constant([7], tf.int64))
    np.testing.assert_allclose(sample["x_mean"].numpy(), model.sample(1, seed=7).numpy(), atol=1e-5)
