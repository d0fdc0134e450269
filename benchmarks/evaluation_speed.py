"""How fast the importance-sampling estimate of log p(x) runs, per registered model and variant.

    python benchmarks/evaluation_speed.py --model resnet_hvamp
    python benchmarks/evaluation_speed.py --model mlp --jit-compile no,yes --rows-per-call 2048,8192

The protocol's evaluation (K = 5,000 samples for each of the 10,000 test images) is dominated by
one decoder pass per sample: 50 million passes. This script builds the registered model
(tfp_vae.likelihood.MODELS; its weights are untrained, the work per sample does not depend on
them), and times `evaluation.importance_sampling_fn` on batches of the protocol's test images
(batch 100, as the runner) for each variant, side by side in one run:

- `jit_compile`: XLA for the whole estimate (fuses the element-wise likelihood), or TensorFlow's
  own kernels (oneDNN on x86: its convolutions can be faster than XLA's on CPU);
- `rows_per_call`: samples x examples per decoder call.

Each variant runs one untimed batch (tracing, compilation), then `--batches` timed ones with
`--num-samples` samples each (fewer than 5,000, so a variant takes seconds, not minutes: a call's
shapes are the same as with K = 5,000, only the number of chunks differs). Printed: samples per
second (decoder passes) and the projected time of the full protocol (5,000 x 10,000 samples).
Figures are meaningless while anything else runs: the load average is printed before and after.
"""
import argparse
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "trainers"))
from _flags import at_least_one, comma_list, yes_no  # noqa: E402  (TF-free flag checks: bad flags fail fast)

PROTOCOL_SAMPLES = 5000 * 10_000  # K x test images


def _load_average() -> str:
    return f"{os.getloadavg()[0]:.2f} (1 min)"


def time_variant(model, images, num_samples: int, batches: int, jit_compile: bool, rows_per_call: int) -> dict:
    import tensorflow as tf
    from tfp_vae import evaluation
    batch_size = int(images.shape[0]) // (batches + 1)
    estimate = evaluation.importance_sampling_fn(model.encoder, model.decoder, model.prior, num_samples,
                                                 batch_size=batch_size, rows_per_call=rows_per_call,
                                                 jit_compile=jit_compile)
    started = time.perf_counter()
    estimate(images[:batch_size], tf.constant([0, 0], tf.int32))["log_likelihood"].numpy()
    first = time.perf_counter() - started
    started = time.perf_counter()
    for index in range(1, batches + 1):
        x = images[index * batch_size:(index + 1) * batch_size]
        estimate(x, tf.constant([0, index], tf.int32))["log_likelihood"].numpy()
    seconds = time.perf_counter() - started
    samples_per_second = batches * batch_size * num_samples / seconds
    return {"jit_compile": jit_compile, "rows_per_call": rows_per_call, "first_call_seconds": first,
            "samples_per_second": samples_per_second, "protocol_seconds": PROTOCOL_SAMPLES / samples_per_second}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a name from benchmarks/likelihood.py --list")
    parser.add_argument("--jit-compile", type=comma_list(yes_no), default=[True, False],
                        help="comma-separated yes/no (default yes,no)")
    parser.add_argument("--rows-per-call", type=comma_list(int), default=[8192],
                        help="comma-separated decoder rows per call (default 8192, the package's)")
    parser.add_argument("--num-samples", type=at_least_one("--num-samples"), default=400,
                        help="importance samples per image in the timed calls (default 400)")
    parser.add_argument("--batches", type=at_least_one("--batches"), default=2,
                        help="timed batches of 100 test images per variant (default 2)")
    args = parser.parse_args(argv)
    if any(rows < 1 for rows in args.rows_per_call):
        parser.error(f"--rows-per-call values must be >= 1, got {args.rows_per_call}.")

    from tfp_vae import likelihood  # after flag parsing: bad flags fail fast, without TensorFlow
    if args.model not in likelihood.MODELS:
        parser.error(f"--model must be one of {', '.join(likelihood.MODELS)}; got {args.model!r}.")
    import numpy as np
    import tensorflow as tf
    from tfp_vae import data as data_lib, training
    config = likelihood.MODELS[args.model].config
    model = training.build_model(config)
    dataset = data_lib.input_pipeline(config.data, "test", likelihood.EVALUATION_BATCH, shuffle=False)
    images = np.concatenate([batch.numpy() for batch in dataset.take(args.batches + 1)])

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}")
    print(f"load average before: {_load_average()}")
    print(f"model {args.model}: {likelihood.MODELS[args.model].description}; "
          f"{args.batches} timed batches of {likelihood.EVALUATION_BATCH} test images, K = {args.num_samples}")
    results = [time_variant(model, images, args.num_samples, args.batches, jit, rows)
               for jit in args.jit_compile for rows in args.rows_per_call]
    print()
    print("| jit_compile | rows per call | first call s | samples/s | K = 5000 on 10,000 images |")
    print("|---|---:|---:|---:|---:|")
    for result in results:
        print(f"| {'yes' if result['jit_compile'] else 'no'} | {result['rows_per_call']} | "
              f"{result['first_call_seconds']:.1f} | {result['samples_per_second']:,.0f} | "
              f"{result['protocol_seconds'] / 60:.0f} min |")
    fastest = max(results, key=lambda result: result["samples_per_second"])
    print()
    for result in results:
        print(f"jit {'yes' if result['jit_compile'] else 'no'}, rows {result['rows_per_call']}: "
              f"{result['samples_per_second'] / fastest['samples_per_second']:.2f} of the fastest")
    print(f"load average after: {_load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
