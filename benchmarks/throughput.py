"""Training throughput of the two benchmark models against this machine's matmul roofline.

    python benchmarks/throughput.py                       # both models, the default variants
    python benchmarks/throughput.py --models mlp --steps-per-execution 1,16,64 --jit-compile no,yes
    python benchmarks/throughput.py --precision float32,bfloat16 --steps-per-execution 1 --jit-compile no

Benchmark models, fixed whatever the package defaults are: MLP 784-512-512-(32) and the conv
model with filters (32, 64) and 32 latents; batch 128, Bernoulli likelihood, dynamic
binarization, the real Fashion-MNIST training pipeline (shuffle, per-epoch binarization,
prefetch), Adam, `model.fit`.

Printed per model and variant (precision x steps_per_execution x jit_compile; precision float32,
or a float16 / bfloat16 network body under mixed precision, TrainingConfig.mixed_precision_dtype): the time to the first step
(fit start to the end of the first train-function call: input pipeline start, tracing, graph
optimisation, first execution; the pipeline's own start is printed apart, with the rate of the
input pipeline alone), the steady-state examples/s after the warm-up steps (timed within one
epoch: the pause at each epoch start, while the shuffle buffer refills, is the pipeline's
first-batch time printed above), the
achieved GFLOP/s and its ratio to the roofline: NumPy's float32 2048x2048x2048 matmul, measured
in the same run (best of several, before and after the models).

FLOPs per example are counted from the layer shapes (and the forward count is cross-checked
against the TF profiler's count of the MatMul/Conv2D ops in the traced forward graph):
a Dense or convolution layer with M multiply-adds per example costs 2M FLOPs forward, 2M for
its weight gradient and 2M for its input gradient, except the encoder's first layer, whose
input is the data and gets no gradient. So training ~= 3x forward minus one first-layer
forward. Bias adds, activations, the distribution layers, the loss and the optimizer update
are not counted (they are O(parameters) or O(units), small next to the matmuls).

Figures are meaningless while anything else runs on the machine: the script prints the load
average before and after so a busy run shows itself.
"""
import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "trainers"))
from _flags import PRECISIONS, comma_list, precision_choice, precision_fields, yes_no  # noqa: E402

from tfp_vae import _env  # noqa: E402,F401  (must precede tensorflow)

import numpy as np  # noqa: E402

BATCH_SIZE = 128
MODELS = {
    "mlp": {"architecture": "mlp", "hidden_units": (512, 512), "latent_dim": 32,
            "likelihood": "bernoulli"},
    "conv": {"architecture": "conv", "conv_filters": (32, 64), "latent_dim": 32,
             "likelihood": "bernoulli"},
}
MATMUL_SIZE = 2048
# adam: tf_keras.optimizers.Adam, as training uses (about 20 small ops per variable and step);
# legacy_adam: tf_keras.optimizers.legacy.Adam (one fused ResourceApplyAdam op per variable).
OPTIMIZERS = ("adam", "legacy_adam")
# Full batches in one epoch of the 50,000 training images (60,000 less the 10,000 validation).
FULL_BATCHES = 50_000 // BATCH_SIZE


def numpy_matmul_gflops(repeats: int = 5, size: int = MATMUL_SIZE) -> float:
    """Best-of-`repeats` float32 size^3 matmul rate through NumPy's BLAS, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty((size, size), np.float32)
    np.matmul(a, b, out=out)  # warm-up: threads, pages
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def _multiply_adds(layer) -> int:
    """Multiply-adds per example of a Dense or convolution layer (0 for weightless layers)."""
    import tf_keras
    if isinstance(layer, tf_keras.layers.Dense):
        units_in, units_out = layer.kernel.shape
        return int(units_in) * int(units_out)
    if isinstance(layer, tf_keras.layers.Conv2DTranspose):
        # Every input pixel scatters a kh x kw x out patch: H_in * W_in * C_in * kh * kw * C_out.
        _, height, width, channels = layer.input_shape
        kh, kw, filters, _ = layer.kernel.shape  # (kh, kw, out, in)
        return int(height * width * channels * kh * kw * filters)
    if isinstance(layer, tf_keras.layers.Conv2D):
        _, height, width, filters = layer.output_shape
        kh, kw, channels, _ = layer.kernel.shape  # (kh, kw, in, out)
        return int(height * width * filters * kh * kw * channels)
    if layer.trainable_weights:
        raise ValueError(f"no FLOP rule for layer {layer.name} ({type(layer).__name__})")
    return 0


def counted_flops(model) -> dict:
    """Forward and training FLOPs per example from the layer shapes (rule in the module doc)."""
    layers = [layer for sub in (model.encoder, model.decoder) for layer in sub.layers]
    per_layer = [(layer, _multiply_adds(layer)) for layer in layers]
    forward = sum(2 * macs for _, macs in per_layer)
    first = next(macs for _, macs in per_layer if macs)  # the encoder's first weighted layer
    return {"forward": forward, "train": 3 * forward - 2 * first}


def profiler_forward_flops(model, image_shape) -> int:
    """TF profiler's FLOPs of the MatMul/Conv2D* ops in the traced forward pass, per example."""
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def forward(x):
        return model.decoder(tf.convert_to_tensor(model.encoder(x))).mean()

    graph = tf.function(forward).get_concrete_function(tf.TensorSpec([1, *image_shape])).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    options["account_type_regexes"] = ["MatMul", "Conv2D.*"]
    verbosity = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")  # the v1 profiler API logs a deprecation notice
    try:
        return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)
    finally:
        tf.get_logger().setLevel(verbosity)


def pipeline_rate(dataset, batches: int = 300) -> dict:
    """The input pipeline alone: seconds to its first batch, then examples/s over `batches`."""
    start = time.perf_counter()
    iterator = iter(dataset.repeat())
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return {"first_batch_s": first, "examples_per_second": batches * BATCH_SIZE / (time.perf_counter() - start)}


def _step_timer():
    import tf_keras

    class StepTimer(tf_keras.callbacks.Callback):
        """Wall-clock time at the start of fit and at the end of every train-function call."""

        def __init__(self):
            super().__init__()
            self._supports_tf_logs = True  # never converts the logs: no extra host syncs
            self.begin, self.ends = None, []

        def on_train_begin(self, logs=None):
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append((batch, time.perf_counter()))

    return StepTimer()


def run_variant(name: str, steps_per_execution: int, jit_compile: bool, optimizer: str, steps: int,
                warmup: int, datasets_cache: dict, precision_name: str = "float32") -> dict:
    import tf_keras
    from tfp_vae import data as data_lib
    from tfp_vae import training
    from tfp_vae.config import Config

    config = Config().replace(
        model=MODELS[name], data={"binarization": "dynamic"},
        training={"batch_size": BATCH_SIZE, "steps_per_execution": steps_per_execution,
                  "jit_compile": jit_compile, "seed": 0, **precision_fields(precision_name)})
    config = config.replace(model={"image_shape": data_lib.image_shape(config.data)})
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(0)
    model = training.build_model(config)  # what trainers/train.py trains: tf_keras Adam
    if optimizer == "legacy_adam":  # one fused ResourceApplyAdam op per variable
        model.compile(tf_keras.optimizers.legacy.Adam(config.training.learning_rate),  # loss-scaled if float16
                      steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    model(np.zeros((2, *config.model.image_shape), np.float32))  # builds the variables
    flops = counted_flops(model)
    # Whole executions only, and all inside the first epoch's full batches, so the timed window
    # holds no epoch start (whose shuffle-buffer refill is measured apart) and no short batch.
    warmup = max(1, -(-warmup // steps_per_execution)) * steps_per_execution
    steps = min(steps, FULL_BATCHES - warmup) // steps_per_execution * steps_per_execution
    if steps < steps_per_execution:
        raise ValueError(f"steps_per_execution {steps_per_execution} with {warmup} warm-up steps leaves no "
                         f"timed call inside one epoch ({FULL_BATCHES} full batches)")
    timer = _step_timer()
    model.fit(datasets_cache["train"].repeat(), epochs=1, steps_per_epoch=warmup + steps, verbose=0,
              callbacks=[timer])
    first_batch, first_end = timer.ends[0]
    # Steady state: from the end of the warm-up's last call to the end of the last call.
    start_batch, start = next((b, t) for b, t in timer.ends if b + 1 >= warmup)
    end_batch, end = timer.ends[-1]
    examples = (end_batch - start_batch) * BATCH_SIZE
    examples_per_second = examples / (end - start)
    return {
        "model": name, "steps_per_execution": steps_per_execution, "jit_compile": jit_compile,
        "optimizer": optimizer, "precision": precision_name,
        "parameters": int(model.count_params()),
        "forward_flops_per_example": flops["forward"], "train_flops_per_example": flops["train"],
        "time_to_first_step_s": first_end - timer.begin, "timed_steps": end_batch - start_batch,
        "examples_per_second": examples_per_second,
        "gflops_per_second": examples_per_second * flops["train"] / 1e9,
        "final_loss": float(model.history.history["loss"][-1]),
        "_model": model, "_image_shape": config.model.image_shape,
    }


def cpu_info() -> tuple:
    """(model name, the CPU's bfloat16/float16 units): whether a bfloat16 body can be faster than
    float32 depends on oneDNN's AMX / AVX512_BF16 kernels."""
    cpu, units = platform.processor() or platform.machine(), "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    units = " ".join(sorted(flags & {"amx_bf16", "avx512_bf16", "avx512_fp16"})) or "none"
                    break
    except OSError:
        pass
    return cpu, units


def machine() -> dict:
    cpu, bfloat16_units = cpu_info()
    import tensorflow as tf
    import tensorflow_probability as tfp
    import tf_keras
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "bfloat16_units": bfloat16_units, "python": platform.python_version(), "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__, "tensorflow_probability": tfp.__version__,
            "numpy": np.__version__}


def _model_name(text: str) -> str:
    if text not in MODELS:
        raise ValueError(text)
    return text


def _optimizer_name(text: str) -> str:
    if text not in OPTIMIZERS:
        raise ValueError(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=comma_list(_model_name), default=["mlp", "conv"],
                        help="comma-separated: mlp, conv (default both)")
    parser.add_argument("--steps-per-execution", type=comma_list(int), default=[1, 32],
                        help="comma-separated values to compare (default 1,32)")
    parser.add_argument("--jit-compile", type=comma_list(yes_no), default=[False, True],
                        help="comma-separated no/yes values to compare (default no,yes)")
    parser.add_argument("--optimizer", type=comma_list(_optimizer_name), default=["adam"],
                        help=f"comma-separated: {', '.join(OPTIMIZERS)} (default adam, what training uses)")
    parser.add_argument("--precision", type=comma_list(precision_choice), default=["float32"],
                        help=f"comma-separated: {', '.join(PRECISIONS)} (the network body's dtype; default float32). "
                             "bfloat16 is fast on CPUs with AMX or AVX512_BF16, float16 on GPUs only")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per variant, at most one epoch's 390 batches less the warm-up "
                             "(default 340 for mlp, 160 for conv)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="untimed steps, the first included (default 40 for mlp, 16 for conv)")
    parser.add_argument("--roofline-repeats", type=int, default=5, help="NumPy matmuls per roofline measurement")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if any(value < 1 for value in args.steps_per_execution) or (args.steps is not None and args.steps < 1) \
            or (args.warmup_steps is not None and args.warmup_steps < 0):
        parser.error("--steps and --steps-per-execution must be >= 1, --warmup-steps >= 0")

    load_before = os.getloadavg()
    roofline_start = numpy_matmul_gflops(args.roofline_repeats)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores (bfloat16/float16 units: {info['bfloat16_units']}); Python {info['python']}, TensorFlow "
          f"{info['tensorflow']}, tf_keras {info['tf_keras']}, TFP {info['tensorflow_probability']}, "
          f"NumPy {info['numpy']}")
    print(f"load average before: {load_before[0]:.2f} (1 min)"
          + ("  WARNING: the machine is busy; figures are not comparable" if load_before[0] > 0.5 else ""))
    print(f"batch {BATCH_SIZE}, Bernoulli likelihood, dynamic binarization, Fashion-MNIST training "
          "pipeline, Adam, model.fit")
    print("FLOPs per example: 2 x multiply-adds of every Dense/conv layer forward; training = forward "
          "+ weight gradients + input gradients (none for the encoder's first layer) = 3 x forward "
          "- first layer; the forward count is checked against the TF profiler")

    results, datasets_cache = [], {}
    from tfp_vae import data as data_lib
    from tfp_vae.config import Config
    datasets_cache["train"] = data_lib.make_datasets(Config().replace(
        data={"binarization": "dynamic"}, training={"batch_size": BATCH_SIZE, "seed": 0})).train
    pipeline = pipeline_rate(datasets_cache["train"])
    print(f"input pipeline alone: first batch after {pipeline['first_batch_s']:.2f} s (the shuffle buffer "
          f"fills at the start of every epoch: {FULL_BATCHES + 1} steps), then "
          f"{pipeline['examples_per_second']:,.0f} examples/s")
    for name in args.models:
        steps = args.steps or (340 if name == "mlp" else 160)
        warmup = args.warmup_steps if args.warmup_steps is not None else (40 if name == "mlp" else 16)
        checked = False
        variants = [(precision, optimizer, jit, spe) for precision in args.precision for optimizer in args.optimizer
                    for jit in args.jit_compile for spe in args.steps_per_execution]
        for precision, optimizer, jit, spe in variants:
            result = run_variant(name, spe, jit, optimizer, steps, warmup, datasets_cache, precision)
            model, image_shape = result.pop("_model"), result.pop("_image_shape")
            if not checked:
                profiled = profiler_forward_flops(model, image_shape)
                if abs(profiled - result["forward_flops_per_example"]) > 0.01 * profiled:
                    raise RuntimeError(f"{name}: layer-shape forward FLOPs {result['forward_flops_per_example']} "
                                       f"disagree with the TF profiler's {profiled}")
                print(f"{name}: {result['parameters']:,} parameters; forward "
                      f"{result['forward_flops_per_example'] / 1e6:.3f} MFLOP/example (TF profiler: "
                      f"{profiled / 1e6:.3f}), training {result['train_flops_per_example'] / 1e6:.3f} MFLOP/example")
                checked = True
            results.append(result)
            del model

    roofline_end = numpy_matmul_gflops(args.roofline_repeats)
    roofline = max(roofline_start, roofline_end)
    load_after = os.getloadavg()
    print(f"roofline: NumPy float32 {MATMUL_SIZE}x{MATMUL_SIZE}x{MATMUL_SIZE} matmul, best of "
          f"{args.roofline_repeats}: {roofline_start:.1f} GFLOP/s before the models, {roofline_end:.1f} after; "
          f"using {roofline:.1f}")
    print()
    header = (f"{'model':<6}{'precision':>10}{'optimizer':>12}{'steps/exec':>11}{'jit':>5}{'first step s':>14}{'timed steps':>13}"
              f"{'examples/s':>12}{'GFLOP/s':>10}{'ratio to roofline':>19}")
    print(header)
    print("-" * len(header))
    for result in results:
        result["roofline_gflops_per_second"] = roofline
        result["ratio_to_roofline"] = result["gflops_per_second"] / roofline
        print(f"{result['model']:<6}{result['precision']:>10}{result['optimizer']:>12}{result['steps_per_execution']:>11}"
              f"{'yes' if result['jit_compile'] else 'no':>5}"
              f"{result['time_to_first_step_s']:>14.2f}{result['timed_steps']:>13}"
              f"{result['examples_per_second']:>12,.0f}{result['gflops_per_second']:>10.1f}"
              f"{result['ratio_to_roofline']:>19.3f}")
    print()
    print(f"load average after: {load_after[0]:.2f} (1 min)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "load_average_before": load_before, "load_average_after": load_after,
                       "input_pipeline": pipeline,
                       "roofline_gflops_per_second": {"before": roofline_start, "after": roofline_end,
                                                      "used": roofline},
                       "batch_size": BATCH_SIZE, "results": results}, handle, indent=2)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
