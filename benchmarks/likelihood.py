"""Test NLL on dynamically binarized Fashion-MNIST under the published protocol, for one model.

    python benchmarks/likelihood.py --model mlp --time-budget 120

trains the named model (tfp_vae.likelihood.MODELS) in runs/likelihood/NAME, keeping the epoch with
the best validation ELBO, then estimates -log p(x) with 5,000 importance samples on all 10,000
test images, and prints the README table row: model, parameters, epochs, training time, test
ELBO, test NLL, and where the KL goes (the aggregate-posterior report, runs/likelihood/NAME/report.md,
next to the reference model's when that has run: mlp for the learnt-prior models). Both phases
resume: run the same command again after a kill or when the time budget (minutes, for this
invocation) ran out. --list shows the models.

    python benchmarks/likelihood.py --model resnet_hvamp --workdir runs/likelihood/resnet_hvamp-400 --epochs 400

trains a finished (or copied) run on to 400 epochs from its last epoch's backup; the cosine
schedule is re-stretched to 400 epochs, so the added epochs restart at that schedule's rate.

    python benchmarks/likelihood.py --model mlp_vamp --reference benchmarks/results/likelihood/mlp_ema

shows the report next to a committed run's numbers (here the mlp network under N(0, I)) when the
registered reference has not run on this machine.

    python benchmarks/likelihood.py --model resnet_hvamp_500_iwae5

fine-tunes: a model registered with a start (--list) begins from the final weights of that
model's finished run in the folder beside its own (or --start-from FOLDER).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "trainers"))
from _flags import at_least_one, one_yes_no  # noqa: E402  (TF-free flag checks: bad flags fail fast)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a name from --list")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--workdir", help="run folder (default runs/likelihood/MODEL)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                        help="stop at an epoch or evaluation-part boundary within this many minutes")
    parser.add_argument("--num-samples", type=at_least_one("--num-samples"), default=5000,
                        help="importance samples per test image (the protocol: 5000)")
    parser.add_argument("--jit-compile", type=one_yes_no("--jit-compile"), default=True, metavar="yes|no",
                        help="XLA for the evaluation (default yes); benchmarks/evaluation_speed.py measures "
                             "which is faster for a model (TensorFlow's own kernels were, for resnet_hvamp)")
    parser.add_argument("--epochs", type=at_least_one("--epochs"), default=None,
                        help="train to this many epochs instead of the registered count; extends a finished run "
                             "from its last epoch, its cosine schedule re-stretched to the new length (a warm "
                             "restart: write it down next to the figure)")
    parser.add_argument("--reference", metavar="FOLDER",
                        help="a run folder with its report (diagnosis.json), e.g. a committed one under "
                             "benchmarks/results/likelihood/, whose aggregate-posterior numbers the report shows "
                             "next to this model's; default: the registered reference model's folder beside this one")
    parser.add_argument("--start-from", metavar="FOLDER",
                        help="for a fine-tuning model: the finished run whose weights it starts from; default: "
                             "the registered start model's folder beside this one")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras progress output")
    args = parser.parse_args(argv)
    if args.time_budget is not None and not args.time_budget > 0:
        parser.error(f"--time-budget must be a number of minutes > 0, got {args.time_budget}.")
    if args.reference is not None and not os.path.exists(os.path.join(args.reference, "diagnosis.json")):
        parser.error(f"--reference {args.reference} has no diagnosis.json: give a finished run folder (its "
                     "report written) or one under benchmarks/results/likelihood/.")

    from tfp_vae import likelihood  # after flag parsing: bad flags fail fast, without TensorFlow
    if args.list:
        width = max(map(len, likelihood.MODELS))
        for name, model in likelihood.MODELS.items():
            print(f"{name:{width}s}  {model.description}")
        return 0
    if args.model not in likelihood.MODELS:
        parser.error(f"--model must be one of {', '.join(likelihood.MODELS)}; got {args.model!r}.")
    workdir = args.workdir or os.path.join("runs", "likelihood", args.model)
    reference = args.reference
    reference_name = likelihood.MODELS[args.model].reference
    if reference is None and reference_name:
        # The reference model's run folder beside this one's, once it has its report.
        folder = os.path.join(os.path.dirname(os.path.normpath(workdir)), reference_name)
        if os.path.exists(os.path.join(folder, "diagnosis.json")):
            reference = folder
        else:
            print(f"note: no finished {reference_name} run in {folder}: the report will not show its numbers "
                  f"next to this model's (run --model {reference_name} first, then this command again).")
    if args.start_from is not None and not likelihood.MODELS[args.model].start_from:
        parser.error(f"--start-from applies to fine-tuning models only; {args.model} trains from scratch.")
    try:
        row = likelihood.run(args.model, workdir, None if args.time_budget is None else 60 * args.time_budget,
                             num_samples=args.num_samples, reference=reference, verbose=args.verbose,
                             jit_compile=args.jit_compile, epochs=args.epochs, start_from=args.start_from)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(row, indent=2))
    print(likelihood.TABLE_HEADER)
    print(likelihood.table_row(row))
    print()
    print(likelihood.AGGREGATE_HEADER)
    print(likelihood.aggregate_row(row))
    if row["status"] != "done":
        print(f"not finished ({row['status']}): run the same command again to continue.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
