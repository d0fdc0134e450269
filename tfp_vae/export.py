"""Export a trained VAE as a versioned SavedModel that TF Serving loads.

    from tfp_vae.export import export
    path = export("runs/default", "saved_models/fashion_vae")   # -> saved_models/fashion_vae/1

EXPORT_BASE/models.config                 model server config naming EXPORT_BASE's model
EXPORT_BASE/N/saved_model.pb, variables/  tag `serve`; signatures listed in SIGNATURES
EXPORT_BASE/N/assets.extra/               tf_serving_warmup_requests, config.json,
                                          metrics.json (when the run has one), export_metadata.json

Why a tf.Module holding only the variables: saving the tf_keras models themselves fails (tracing
the KL layer raises), and `model.export()` turns the output distributions into random samples.
Here every signature calls the encoder/decoder and reads `.mean()`, `.stddev()`, `.log_prob()`
from their distributions explicitly, so the SavedModel holds plain TensorFlow ops and loads in a
process that has neither tfp nor tf_keras installed.

Why the version folder is atomic: the server polls EXPORT_BASE and loads any integer folder it
sees. Everything is written to a hidden `.tmp-export-*` sibling (not an integer, so ignored by
the server) and renamed into place; a killed export leaves no integer folder behind.
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import dataclasses
import datetime
import json
import os
import re
import shutil
import uuid

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_vae
from tfp_vae import autoregressive, hierarchy
from tfp_vae import prior as prior_lib
from tfp_vae import checkpoint, training
from tfp_vae.model import VAE

__all__ = ["DEFAULT_NUM_SAMPLES", "DEFAULT_SEED", "SIGNATURES", "existing_versions", "export",
           "score_noise"]


# Importance samples per example in `score`; fixed at export because a signature's graph is fixed.
DEFAULT_NUM_SAMPLES = 64
DEFAULT_SEED = 0
SIGNATURES = ("serving_default", "encode", "decode", "reconstruct", "score", "sample")
WARMUP_FILE = "tf_serving_warmup_requests"
# Second word of the stateless seed of `score`'s noise, so it never equals a `sample` stream.
_SCORE_STREAM = 1
_VERSION_NAME = re.compile(r"[0-9]+")


def score_noise(latent_dim: int, num_samples: int, seed: int) -> tf.Tensor:
    """The standard-normal noise [num_samples, latent_dim] that `score` uses for every example.

    One noise block is shared by all rows, so an example's score does not depend on the batch
    it arrives in: the same image always gets the same score.
    """
    return tf.random.stateless_normal([num_samples, latent_dim], seed=[seed, _SCORE_STREAM],
                                      alg="philox")


def _checked(tensor: tf.Tensor, name: str, trailing_shape: tuple) -> tf.Tensor:
    """`tensor` after run-time checks whose errors name the input.

    Loaded signatures given a tf.Tensor, and TF Serving's C++ server, do not check shapes against
    the signature (a [2, 28, 28, 2] image would come back as 4 garbage rows), so the shape is
    checked in the graph.
    """
    # Read the shape through an op of unknown static shape: otherwise the rank (known from the
    # TensorSpec) is constant-folded, by Python or by Grappler, and the check always passes.
    actual = tf.shape(tf.compat.v1.placeholder_with_default(tensor, shape=None))
    rank = len(trailing_shape) + 1
    # Padded so that a wrong rank still yields a comparable vector rather than a broadcast error.
    trailing = tf.concat([actual, tf.zeros([rank], tf.int32)], 0)[1:rank]
    shape_ok = tf.logical_and(tf.equal(tf.size(actual), rank),
                              tf.reduce_all(tf.equal(trailing, tf.constant(trailing_shape, tf.int32))))
    expected = ", ".join(["batch", *map(str, trailing_shape)])
    checks = [tf.debugging.Assert(shape_ok, [f"input {name} must have shape [{expected}]; got", actual],
                                  summarize=rank + 2)]
    with tf.control_dependencies(checks):
        tensor = tf.identity(tensor)
    if tensor.dtype.is_floating:
        # CheckNumerics: NaN/Inf fails with the input's name instead of serving garbage.
        tensor = tf.debugging.assert_all_finite(tensor, f"input {name} must be finite (no NaN or Inf)")
    return tensor


def _checked_pixels(x: tf.Tensor, image_shape: tuple) -> tf.Tensor:
    x = _checked(x, "x", image_shape)
    # The likelihoods are defined for pixels in [0, 1]; anything else scores as garbage.
    message = "input x must hold pixel values in [0, 1]"
    with tf.control_dependencies([tf.debugging.assert_greater_equal(x, 0.0, message=message),
                                  tf.debugging.assert_less_equal(x, 1.0, message=message)]):
        return tf.identity(x)


def _serving_functions(model: VAE, num_samples: int, seed: int) -> dict:
    """One tf.function per signature (but serving_default); every output is batch-major."""
    config = model.config
    latent_dim, image_shape = config.latent_dim, tuple(config.image_shape)
    image_spec = tf.TensorSpec([None, *image_shape], tf.float32, name="x")
    latent_spec = tf.TensorSpec([None, latent_dim], tf.float32, name="z")
    seed_spec = tf.TensorSpec([None], tf.int64, name="seed")

    def posterior(x):
        return model.encoder(_checked_pixels(x, image_shape), training=False)

    def likelihood(z):
        return model.decoder(z, training=False)

    def x_mean(z, noise_seeds=None):
        """The mean of p(x|z); for an autoregressive decoder, the pixel probabilities along one
        sample path (VAE.decode): the export seed's pixel noise for every row, or with
        `noise_seeds`, each row's own (VAE.sample's first row for that seed)."""
        if not config.autoregressive_units:
            return likelihood(z).mean()
        if noise_seeds is None:
            noise = autoregressive.shared_noise(tf.shape(z)[0], image_shape, tf.constant([seed, 0], tf.int32))
        else:
            noise = tf.map_fn(
                lambda pair: autoregressive.pixel_noise(image_shape, tf.random.experimental.stateless_fold_in(pair, 0)),
                noise_seeds, fn_output_signature=tf.TensorSpec(image_shape, tf.float32))
        return autoregressive.sample_path(likelihood(z), noise)[1]

    @tf.function(input_signature=[image_spec])
    def encode(x):
        loc, scale = hierarchy.loc_and_scale(posterior(x))  # as VAE.encode
        return {"z_mean": loc, "z_stddev": scale}

    @tf.function(input_signature=[latent_spec])
    def decode(z):
        return {"x_mean": x_mean(_checked(z, "z", (latent_dim,)))}

    @tf.function(input_signature=[image_spec])
    def reconstruct(x):
        z = hierarchy.loc_and_scale(posterior(x))[0]
        if config.autoregressive_units:  # each pixel given x's own pixels before it (VAE.reconstruct)
            return {"x_mean": autoregressive.teacher_forced_mean(likelihood(z), x)}
        return {"x_mean": x_mean(z)}

    @tf.function(input_signature=[image_spec])
    def score(x):
        q, prior = posterior(x), model.prior
        noise = score_noise(latent_dim, num_samples, seed)
        if config.top_latent_dim:
            z = hierarchy.reparameterized(q, noise[:, tf.newaxis, :])  # z_bottom given its own z_top
        else:
            z = q.mean() + q.stddev() * noise[:, tf.newaxis, :]  # [K, batch, latent], reparameterised
        kl = prior_lib.kl_divergence(q, prior, z)  # exact for N(0, I); else over the same K z
        batch = tf.shape(x)[0]
        # One decoder pass over K * batch rows instead of K passes.
        tiled_x = tf.reshape(tf.broadcast_to(x, tf.concat([[num_samples], tf.shape(x)], 0)),
                             [-1, *image_shape])
        log_p_x_given_z = tf.reshape(
            likelihood(tf.reshape(z, [-1, latent_dim])).log_prob(tiled_x), [num_samples, batch])
        log_weights = log_p_x_given_z + prior.log_prob(z) - q.log_prob(z)
        reconstruction = tf.reduce_mean(log_p_x_given_z, axis=0)
        return {
            "elbo": reconstruction - kl,
            "kl": kl,
            "reconstruction": reconstruction,
            # IWAE bound: log (1/K) sum_k p(x, z_k) / q(z_k|x), tighter than the ELBO as K grows.
            "log_likelihood": tf.reduce_logsumexp(log_weights, axis=0) - np.log(num_samples),
        }

    @tf.function(input_signature=[seed_spec])
    def sample(seed):
        # int64 -> its two int32 words, the stateless seed pair (little-endian: [low, high]); a
        # seed s in [0, 2**31) gives the pair [s, 0], the same draw as `model.sample(1, seed=s)`.
        pairs = tf.bitcast(_checked(seed, "seed", ()), tf.int32)
        z = tf.map_fn(lambda pair: model.prior.sample(1, seed=pair)[0], pairs,
                      fn_output_signature=tf.TensorSpec([latent_dim], tf.float32))
        return {"z": z, "x_mean": x_mean(z, noise_seeds=pairs)}

    return {"encode": encode, "decode": decode, "reconstruct": reconstruct, "score": score, "sample": sample}


def _write_warmup(signatures: dict, model_name: str, path: str) -> None:
    """One PredictionLog per signature, batch of 2: zero images/latents, seeds 0 and 1."""
    # Imported here: only exporting needs tensorflow-serving-api.
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for signature, function in signatures.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            for spec in function.structured_input_signature[0]:
                shape = [2 if size is None else size for size in spec.shape.as_list()]
                value = np.zeros(shape, spec.dtype.as_numpy_dtype) if spec.dtype.is_floating else \
                    np.arange(2, dtype=spec.dtype.as_numpy_dtype)
                request.inputs[spec.name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _signature_metadata(signatures: dict) -> dict:
    described = {}
    for name, function in signatures.items():
        inputs = {spec.name: {"shape": spec.shape.as_list(), "dtype": spec.dtype.name}
                  for spec in function.structured_input_signature[0]}
        outputs = {key: {"shape": spec.shape.as_list(), "dtype": spec.dtype.name}
                   for key, spec in function.structured_outputs.items()}
        described[name] = {"inputs": inputs, "outputs": outputs}
    return described


def _write_models_config(export_base: str, model_name: str, serving_base_path: str) -> str:
    path = os.path.join(export_base, "models.config")
    text = (
        "# TF Serving model config (text proto ModelServerConfig), written by tfp_vae.export.\n"
        f"# base_path is where the server sees this folder ({serving_base_path}); pass\n"
        "# --model_config_file=<this file>. The server serves the highest integer version folder.\n"
        "model_config_list {\n"
        "  config {\n"
        f"    name: {json.dumps(model_name)}\n"
        f"    base_path: {json.dumps(serving_base_path)}\n"
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n")
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return path


def existing_versions(export_base: str) -> list:
    """Sorted integer version folders under `export_base` (what TF Serving would load)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base)
                  if _VERSION_NAME.fullmatch(name) and os.path.isdir(os.path.join(export_base, name)))


def _publish(staging: str, final: str, overwrite: bool) -> None:
    """Renames the finished `staging` folder to `final`, the only step the server can observe."""
    if not os.path.exists(final):
        try:
            os.rename(staging, final)
            return
        except OSError as error:  # another export published this version meanwhile
            raise FileExistsError(f"{final} appeared while exporting ({error}); nothing was replaced.") from None
    if not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True (--overwrite) to replace it.")
    # Move the old version aside (to a non-integer name) before renaming the new one in: the
    # version is briefly absent, but never half-written.
    aside = os.path.join(os.path.dirname(final), f".old-{os.path.basename(final)}-{uuid.uuid4().hex[:8]}")
    os.rename(final, aside)
    try:
        os.rename(staging, final)
    except OSError:
        os.rename(aside, final)  # put the old version back rather than leave none
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _write_version(model: VAE, workdir, path: str, model_name: str, version: int, num_samples: int,
                   seed: int) -> None:
    """Writes the whole version folder (SavedModel and assets.extra/) to `path`."""
    functions = _serving_functions(model, num_samples, seed)
    # Tracks only the variables the signatures read; the Keras models stay out of the SavedModel.
    module = tf.Module(name="tfp_vae_serving")
    module.encoder_variables = list(model.encoder.variables)
    module.decoder_variables = list(model.decoder.variables)
    module.prior_variables = list(model.prior_network.variables)  # learnt priors (none for N(0, I))
    signatures = {"serving_default": functions["encode"].get_concrete_function()}
    for name, function in functions.items():
        # Also as attributes: in Python, `loaded.encode(x)` checks dtype and shape against the
        # TensorSpec and names the input; `loaded.signatures[...]` (what TF Serving runs) does not.
        setattr(module, name, function)
        signatures[name] = function.get_concrete_function()
    tf.saved_model.save(module, path, signatures=signatures)

    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    _write_warmup(signatures, model_name, os.path.join(extra, WARMUP_FILE))
    if workdir is not None:
        for name in ("config.json", "metrics.json"):
            if os.path.exists(os.path.join(workdir, name)):
                shutil.copy2(os.path.join(workdir, name), os.path.join(extra, name))
    else:
        # An in-memory model has no run folder: record the model section, which rebuilds it.
        checkpoint.write_json({"model": dataclasses.asdict(model.config)}, os.path.join(extra, "config.json"))
    checkpoint.write_json({
        "model_name": model_name,
        "version": version,
        "num_samples": num_samples,
        "seed": seed,
        "score_noise": f"tf.random.stateless_normal([num_samples, latent_dim], seed=[seed, "
                       f"{_SCORE_STREAM}], alg='philox'), the same for every row",
        "signatures": _signature_metadata(signatures),
        "likelihood": model.config.likelihood,
        "autoregressive_units": list(model.config.autoregressive_units),
        # What x_mean is: the closed-form mean, or (autoregressive decoder) a sample path's pixel
        # probabilities and, in reconstruct, the teacher-forced p(x_i = 1 | x_<i, z).
        "x_mean": ("pixel probabilities along one sample path: decode with the pixel noise of "
                   "tfp_vae.autoregressive.shared_noise(rows, image_shape, [seed, 0]), sample with "
                   "pixel_noise(image_shape, stateless_fold_in(row seed pair, 0)); reconstruct: "
                   "p(x_i = 1 | x_<i, z) given x's own pixels") if model.config.autoregressive_units
                  else "mean of p(x|z)",
        "top_latent_dim": model.config.top_latent_dim,
        # What z_mean / z_stddev are for a two-level model, whose q(z|x) is not one Gaussian.
        "z_mean": ("z_top's posterior mean and scale, then z_bottom's given z_top at that mean "
                   "(tfp_vae.hierarchy.mean_path); score draws z_bottom given its own z_top")
                  if model.config.top_latent_dim else "mean and standard deviation of q(z|x)",
        "source_workdir": workdir,
        "tfp_vae_version": tfp_vae.__version__,
        "tensorflow_version": tf.__version__,
        "tensorflow_probability_version": tfp.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, os.path.join(extra, "export_metadata.json"))


def export(workdir_or_model, export_base: str, version=None, *, num_samples: int = DEFAULT_NUM_SAMPLES,
           seed: int = DEFAULT_SEED, overwrite: bool = False, serving_base_path=None) -> str:
    """Writes EXPORT_BASE/VERSION/ atomically and EXPORT_BASE/models.config; returns the version path.

    workdir_or_model: a run folder (config.json + weights/, see `training.load`) or a `VAE`.
    version: integer folder name; None means one more than the highest existing version (or 1).
    num_samples, seed: the importance samples of `score` and the stateless seed of their noise.
    overwrite: replace an existing version folder instead of raising FileExistsError.
    serving_base_path: base_path written in models.config; default `/models/NAME`, where the
        `tensorflow/serving` docker image expects models (NAME = basename of export_base).
    """
    # seed is one word of a stateless int32 seed pair; versions are TF Serving's folder names.
    for name, value, low, high in (("num_samples", num_samples, 1, None), ("seed", seed, 0, 2**31 - 1),
                                   ("version", 1 if version is None else version, 1, None)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
                or (high is not None and value > high):
            raise ValueError(f"{name} must be an integer in [{low}, {high or 'inf'}], got {value!r}.")
    export_base = os.path.abspath(os.fspath(export_base))
    model_name = os.path.basename(export_base)
    if not model_name or _VERSION_NAME.fullmatch(model_name):
        raise ValueError(f"export_base should end in the model's name, e.g. saved_models/fashion_vae; "
                         f"got {export_base!r}.")

    if not isinstance(workdir_or_model, (VAE, str, os.PathLike)):
        raise ValueError("workdir_or_model must be a run folder or a tfp_vae VAE, "
                         f"got {type(workdir_or_model).__name__}.")
    version = int(version) if version is not None else max(existing_versions(export_base), default=0) + 1
    final = os.path.join(export_base, str(version))
    if os.path.exists(final) and not overwrite:  # fail before the slow part
        raise FileExistsError(f"{final} already exists; pass overwrite=True (--overwrite) to replace it.")

    if isinstance(workdir_or_model, VAE):
        model, workdir = workdir_or_model, None
    else:
        workdir = os.path.abspath(os.fspath(workdir_or_model))
        model = training.load(workdir)

    os.makedirs(export_base, exist_ok=True)
    staging = os.path.join(export_base, f".tmp-export-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _write_version(model, workdir, staging, model_name, version, int(num_samples), int(seed))
        _publish(staging, final, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
    _write_models_config(export_base, model_name, serving_base_path or f"/models/{model_name}")
    return final
