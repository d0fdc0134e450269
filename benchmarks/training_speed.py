"""Training step time of a registered likelihood model, per network-body precision, side by side.

    python benchmarks/training_speed.py --model resnet_hvamp
    python benchmarks/training_speed.py --model resnet_hvamp_500_bf16 --precision float32,bfloat16 --steps 60

Builds the registered model (tfp_vae.likelihood.MODELS) with its own config except the precision:
`float32`, or mixed precision with a `float16` / `bfloat16` network body
(TrainingConfig.mixed_precision_dtype). Each variant trains with `model.fit` on the protocol's
training pipeline (dynamic binarization, the registered batch size) for `--warmup-steps` untimed
steps (tracing, the shuffle buffer's first fill), then `--steps` timed ones, all in one epoch.
Printed: ms per step, the projected training time of one epoch and of the registered number of
epochs (training steps only: validation adds about a tenth), and each variant's ratio to the
first. Whether a bfloat16 body is fast depends on the CPU's AMX / AVX512_BF16 units (printed);
float16 on a CPU is emulated and slow (use it on GPUs).

Figures are meaningless while anything else runs: the load average is printed before and after.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "trainers"))
from _flags import PRECISIONS, at_least_one, comma_list, precision_choice, precision_fields  # noqa: E402  (TF-free flag checks: bad flags fail fast)

TRAIN_EXAMPLES = 50_000  # the protocol's training split


def time_variant(config, precision_name: str, warmup_steps: int, steps: int) -> dict:
    import tf_keras
    from tfp_vae import data as data_lib, training
    config = config.replace(training=precision_fields(precision_name))
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(0)
    steps_per_epoch = TRAIN_EXAMPLES // config.training.batch_size
    model = training.build_model(config, steps_per_epoch=steps_per_epoch)
    dataset = data_lib.input_pipeline(config.data, "train", config.training.batch_size, seed=0)
    ends = []

    class StepEnds(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    model.fit(dataset.repeat(), epochs=1, steps_per_epoch=warmup_steps + steps, verbose=0, callbacks=[StepEnds()])
    seconds_per_step = (ends[-1] - ends[warmup_steps - 1]) / steps
    return {"precision": precision_name, "seconds_per_step": seconds_per_step, "steps_per_epoch": steps_per_epoch,
            "epoch_seconds": seconds_per_step * steps_per_epoch,
            "run_hours": seconds_per_step * steps_per_epoch * config.training.epochs / 3600,
            "final_loss": float(model.history.history["loss"][-1])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a name from benchmarks/likelihood.py --list")
    parser.add_argument("--precision", type=comma_list(precision_choice), default=["float32", "bfloat16"],
                        help=f"comma-separated: {', '.join(PRECISIONS)} (default float32,bfloat16)")
    parser.add_argument("--steps", type=at_least_one("--steps"), default=100, help="timed steps per variant (default 100)")
    parser.add_argument("--warmup-steps", type=at_least_one("--warmup-steps"), default=20,
                        help="untimed steps before them, the first included (default 20)")
    args = parser.parse_args(argv)

    from tfp_vae import likelihood  # after flag parsing: bad flags fail fast, without TensorFlow
    if args.model not in likelihood.MODELS:
        parser.error(f"--model must be one of {', '.join(likelihood.MODELS)}; got {args.model!r}.")
    config = likelihood.MODELS[args.model].config
    steps_per_epoch = TRAIN_EXAMPLES // config.training.batch_size
    if args.warmup_steps + args.steps > steps_per_epoch:
        parser.error(f"--warmup-steps + --steps must fit in one epoch ({steps_per_epoch} steps), "
                     f"got {args.warmup_steps + args.steps}.")
    import tensorflow as tf
    from throughput import cpu_info  # this script's folder is on sys.path; imports TensorFlow
    cpu, units = cpu_info()
    print(f"machine: {cpu}, {os.cpu_count()} cores, bfloat16/float16 units: {units}; TensorFlow {tf.__version__}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"model {args.model}: {likelihood.MODELS[args.model].description}; batch {config.training.batch_size}, "
          f"{args.steps} timed steps after {args.warmup_steps}")
    results = [time_variant(config, name, args.warmup_steps, args.steps) for name in args.precision]
    print()
    print(f"| precision | ms/step | epoch (training steps) | {config.training.epochs} epochs | ratio to {results[0]['precision']} |")
    print("|---|---:|---:|---:|---:|")
    for result in results:
        print(f"| {result['precision']} | {1000 * result['seconds_per_step']:.1f} | {result['epoch_seconds']:.0f} s | "
              f"{result['run_hours']:.2f} h | {result['seconds_per_step'] / results[0]['seconds_per_step']:.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
