"""Estimate log p(x) of a trained run by importance sampling (the IWAE bound with K samples).

    python trainers/evaluate.py --workdir runs/default --num-samples 5000

writes runs/default/evaluation.json (and the per-example values, evaluation_per_example.npz, for
benchmarks/paired_likelihood.py): mean log-likelihood (nats per example) with its standard
error, the ELBO, the K/2-sample bound (a convergence check) and, for continuous likelihoods,
bits/dim. Options: --split test|validation|train, --examples N (the first N), --batch-size.
"""
import argparse
import json
import os
import sys

from _flags import SPLITS, at_least_one


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a finished trainers/train.py run folder")
    parser.add_argument("--num-samples", type=at_least_one("--num-samples"), default=5000,
                        help="importance samples K per example (default 5000)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="data split (default test)")
    parser.add_argument("--examples", type=at_least_one("--examples"), default=None,
                        help="evaluate only the first N examples of the split (default: all)")
    parser.add_argument("--batch-size", type=at_least_one("--batch-size"), default=100,
                        help="examples per encoder call; each decoder call sees ~8192 rows regardless")
    parser.add_argument("--seed", type=int, default=0, help="seed of the (stateless) importance samples")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1), help="progress bar")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.workdir):
        parser.error(f"--workdir {args.workdir} does not exist: pass the folder of a trainers/train.py run.")

    from tfp_vae import evaluation  # after flag parsing: bad flags fail fast, without TensorFlow
    try:
        summary = evaluation.evaluate_run(
            args.workdir, split=args.split, num_samples=args.num_samples, examples=args.examples,
            batch_size=args.batch_size, seed=args.seed, verbose=args.verbose)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    keys = ("split", "examples", "num_samples", "negative_log_likelihood", "log_likelihood_stderr",
            "elbo", "log_likelihood_half", "bits_per_dim", "seconds")
    print(json.dumps({key: summary[key] for key in keys if key in summary}, indent=2))
    print(f"wrote {os.path.join(args.workdir, 'evaluation.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
