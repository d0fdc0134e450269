"""Importance-weighted log-likelihood: log p(x) ~ log mean_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x).

    from tfp_vae import evaluation
    summary = evaluation.evaluate(model.encoder, model.decoder, model.prior, test_batches,
                                  num_samples=5000)
    summary["log_likelihood"], summary["log_likelihood_stderr"], summary["elbo"]

With K samples this is the IWAE bound (Burda et al. 2016): a lower bound on log p(x) in
expectation, tightening as K grows; K = 1 gives the ELBO. The work is laid out for throughput: the
encoder runs once per batch of examples, then the K samples are drawn in chunks and each chunk's
[samples * batch, latent] latents go through the decoder in ONE call (a few large matrix
products), with the K log-weights combined by a streaming log-sum-exp, so memory depends on the
chunk, never on K. `encoder`, `decoder` and `prior` may be anything returning / being tfd
distributions (a VAE's Keras models, or linear-Gaussian functions in tests).
"""
from tfp_vae import _env  # noqa: F401  (must precede tensorflow)

import math
import os
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfp_vae import data as data_lib
from tfp_vae.config import load_config
from tfp_vae.rows import log_likelihood_rows  # re-exported: part of the public evaluation API
from tfp_vae.checkpoint import write_json
from tfp_vae.training import load

__all__ = ["DEFAULT_ROWS_PER_CALL", "PER_EXAMPLE_FILE", "evaluate", "evaluate_run", "importance_sampling_fn",
           "log_likelihood_rows", "summarize", "write_npz"]

# evaluate_run's per-example values, beside evaluation.json: what a paired comparison of two runs
# on the same images needs (comparison.paired_difference).
PER_EXAMPLE_FILE = "evaluation_per_example.npz"

tfd = tfp.distributions

# Rows (samples x examples) per decoder call: each layer is one [rows, width] matrix product.
# Measured on 2 cores with a 784-512-256 MLP decoder: 2048 to 8192 rows run at about 0.6-0.65 of
# NumPy's matmul peak; 16384 and more get slower (activations fall out of cache). Memory per call
# is a few rows * pixels float32 arrays: about 100 MB here.
DEFAULT_ROWS_PER_CALL = 8192


def _samples_per_chunk(num_samples: int, batch_size: int, rows_per_call: int):
    """(chunks, samples per chunk): equal chunks covering num_samples, wasting < chunks samples."""
    most = max(1, min(num_samples, rows_per_call // max(1, batch_size)))
    chunks = math.ceil(num_samples / most)
    return chunks, math.ceil(num_samples / chunks)


def importance_sampling_fn(encoder: Callable, decoder: Callable, prior, num_samples: int, *,
                           batch_size: int, rows_per_call: int = DEFAULT_ROWS_PER_CALL,
                           jit_compile: bool = True) -> Callable:
    """A tf.function (x, seed[2]) -> per-example tensors [B] for batches of up to `batch_size`:

    `log_likelihood` (log mean_k w_k over all K), `log_likelihood_half` (over the first K // 2
    samples: a convergence check), `elbo` (mean_k log w_k) and `reconstruction`
    (mean_k log p(x|z_k)). Chunk c uses the stateless seed fold (seed, c): same seed, same result.
    `jit_compile` (XLA) fuses the element-wise likelihood into one pass; turn it off for an
    encoder or decoder with ops XLA cannot compile.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
    if isinstance(rows_per_call, bool) or not isinstance(rows_per_call, int) or rows_per_call < 1:
        raise ValueError(f"rows_per_call must be a positive integer, got {rows_per_call!r}.")
    chunks, per_chunk = _samples_per_chunk(num_samples, batch_size, rows_per_call)
    half = num_samples // 2

    def combine(log_sum, log_weights, keep):
        chunk_sum = tf.reduce_logsumexp(tf.where(keep, log_weights, -np.inf), 0)
        return tf.reduce_logsumexp(tf.stack([log_sum, chunk_sum]), 0)

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def estimate(x, seed):
        x = tf.convert_to_tensor(x, tf.float32)
        batch = tf.shape(x)[0]
        posterior = encoder(x)  # once per batch: the chunks reuse it
        log_sum = log_sum_half = tf.fill([batch], tf.constant(-np.inf, tf.float32))
        sum_log_weights = sum_reconstruction = tf.zeros([batch])
        for chunk in tf.range(chunks):
            latents = posterior.sample(
                per_chunk, seed=tf.random.experimental.stateless_fold_in(seed, chunk))  # [S, B, L]
            # Sample-major rows: row s * batch + b is sample s of example b.
            likelihood = decoder(tf.reshape(latents, [per_chunk * batch, -1]))
            reconstruction = log_likelihood_rows(likelihood, x, per_chunk)
            log_weights = reconstruction + prior.log_prob(latents) - posterior.log_prob(latents)
            # Samples past K (padding: all chunks share one shape, one trace) get weight 0.
            index = chunk * per_chunk + tf.range(per_chunk)
            keep = (index < num_samples)[:, None]
            log_sum = combine(log_sum, log_weights, keep)
            log_sum_half = combine(log_sum_half, log_weights, (index < half)[:, None])
            sum_log_weights += tf.reduce_sum(tf.where(keep, log_weights, 0.0), 0)
            sum_reconstruction += tf.reduce_sum(tf.where(keep, reconstruction, 0.0), 0)
        return {
            # The -log K makes it a mean of the weights, not their sum: log p(x), not log K p(x).
            "log_likelihood": log_sum - math.log(num_samples),
            "log_likelihood_half": log_sum_half - math.log(max(half, 1)),
            "elbo": sum_log_weights / num_samples,
            "reconstruction": sum_reconstruction / num_samples,
        }

    return estimate


def summarize(per_example: dict, num_samples: int, num_dims: int, continuous: bool) -> dict:
    """Means over examples with standard errors (of the mean over examples), in nats per example.

    For `continuous` likelihoods (a density on [0, 1]^D, e.g. the continuous Bernoulli) bits/dim
    follows the uniform-dequantization convention for 8-bit data: -log p(x) / (D ln 2) + 8, since
    a density on [0, 1] becomes a probability of a 1/256-wide bin by multiplying by 256^-D.
    """
    log_likelihood = np.asarray(per_example["log_likelihood"], np.float64)
    count = len(log_likelihood)
    if count == 0:
        raise ValueError("no examples to summarize: the split (or --examples) is empty.")

    def stderr(values):
        return float(np.std(values, ddof=1) / math.sqrt(count)) if count > 1 else float("nan")

    summary = {"num_samples": num_samples, "examples": count, "units": "nats per example"}
    for name in ("log_likelihood", "log_likelihood_half", "elbo", "reconstruction"):
        if name == "log_likelihood_half" and num_samples < 2:
            # No K/2 bound: null, not the -Infinity of an empty log-sum-exp.
            summary[name] = summary[f"{name}_stderr"] = None
            continue
        values = np.asarray(per_example[name], np.float64)
        summary[name] = float(np.mean(values))
        summary[f"{name}_stderr"] = stderr(values)
    summary["negative_log_likelihood"] = -summary["log_likelihood"]
    summary["kl"] = summary["reconstruction"] - summary["elbo"]
    # Gap between the K-sample bound and the ELBO, paired per example (its stderr is small).
    summary["bound_gap"] = float(np.mean(log_likelihood - np.asarray(per_example["elbo"])))
    summary["bound_gap_stderr"] = stderr(log_likelihood - np.asarray(per_example["elbo"]))
    if continuous:
        summary["bits_per_dim"] = summary["negative_log_likelihood"] / (num_dims * math.log(2)) + 8.0
        summary["bits_per_dim_convention"] = (
            "-log p(x) / (D ln 2) + 8: the continuous density on [0, 1]^D read as a model of 8-bit "
            "pixels under uniform dequantization (evaluated at x = k/255, without dequantization noise)")
    return summary


def evaluate(encoder: Callable, decoder: Callable, prior, dataset, num_samples: int = 5000, *,
             seed: int = 0, examples: Optional[int] = None, continuous: bool = False,
             rows_per_call: int = DEFAULT_ROWS_PER_CALL, jit_compile: bool = True,
             verbose: int = 1, batch_offset: int = 0, per_example: bool = False) -> dict:
    """Estimates log p(x) over `dataset` (batches x, or (x, label)) and returns `summarize`'s dict.

    `examples` caps how many examples are used (the first ones, in the dataset's order).
    `batch_offset`: the index of the dataset's first batch in a larger one, so that evaluating a
    split in pieces (`dataset.skip(n)`, batch_offset=n) draws the same samples as in one go.
    `per_example` adds the per-example arrays under "per_example".
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 1):
        raise ValueError(f"examples must be a positive integer or None, got {examples!r}.")
    started = time.time()
    estimate, batch_capacity = None, 0
    results, seen, num_dims = {}, 0, None
    progress = tf_keras.utils.Progbar(examples, unit_name="example", verbose=verbose) if verbose else None
    for index, batch in enumerate(dataset):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if examples is not None:
            x = x[:examples - seen]
        size = int(x.shape[0])
        if size == 0:
            break
        if estimate is None or size > batch_capacity:  # chunks sized from the largest batch seen
            batch_capacity = size
            estimate = importance_sampling_fn(encoder, decoder, prior, num_samples, batch_size=size,
                                              rows_per_call=rows_per_call, jit_compile=jit_compile)
        num_dims = int(np.prod(x.shape[1:]))
        # Batch index in the stateless seed: each batch draws its own, reproducible samples.
        values = estimate(x, tf.constant([seed, batch_offset + index], tf.int32))
        for name, value in values.items():
            results.setdefault(name, []).append(value.numpy())
        seen += size
        if progress is not None:
            progress.add(size, [("log_likelihood", float(np.mean(values["log_likelihood"])))])
        if examples is not None and seen >= examples:
            break
    if not results:
        raise ValueError("the dataset yielded no examples to evaluate.")
    values = {name: np.concatenate(parts) for name, parts in results.items()}
    summary = summarize(values, num_samples, num_dims, continuous)
    if per_example:
        summary["per_example"] = values
    summary["seconds"] = time.time() - started
    summary["examples_per_second"] = summary["examples"] / summary["seconds"]
    summary["seed"] = seed
    return summary


def write_npz(values: dict, path: str) -> None:
    """np.savez, atomically: readers see the old file or the whole new one."""
    temporary = f"{path}.tmp-{os.getpid()}.npz"  # np.savez appends .npz to other names
    np.savez(temporary, **values)
    os.replace(temporary, path)


def evaluate_run(workdir: str, *, split: str = "test", num_samples: int = 5000,
                 examples: Optional[int] = None, batch_size: int = 100, seed: int = 0,
                 rows_per_call: int = DEFAULT_ROWS_PER_CALL, verbose: int = 1) -> dict:
    """Evaluates the trained model of a run folder; writes WORKDIR/evaluation.json (the summary)
    and WORKDIR/evaluation_per_example.npz (each example's log_likelihood, elbo, ...)."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir} does not exist: pass the --workdir of a finished "
                                "trainers/train.py run.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    run_config = load_config(os.path.join(workdir, "config.json"))
    model = load(workdir)
    available = data_lib.num_examples(run_config.data, split)
    used = available if examples is None else min(examples, available)
    dataset = data_lib.input_pipeline(run_config.data, split, batch_size, seed=seed, shuffle=False)
    summary = evaluate(model.encoder, model.decoder, model.prior, dataset, num_samples, seed=seed,
                       examples=used, continuous=run_config.model.likelihood != "bernoulli",
                       rows_per_call=rows_per_call, verbose=verbose, per_example=True)
    summary.update(split=split, likelihood=run_config.model.likelihood, batch_size=batch_size)
    # The split goes with the values: validation and test arrays of one length must not be paired.
    write_npz({**summary.pop("per_example"), "split": split}, os.path.join(workdir, PER_EXAMPLE_FILE))
    write_json(summary, os.path.join(workdir, "evaluation.json"))
    return summary
