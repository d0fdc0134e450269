"""Paired test -log p(x) difference between two evaluated runs (same binarized test images).

    python benchmarks/paired_likelihood.py runs/likelihood/resnet_hvamp_500_iwae5 runs/likelihood/resnet_hvamp_500_bf16

prints the first run's -log p(x) and -ELBO minus the second's, image by image, with the standard
error of the mean difference, over the test-set parts both have finished (benchmarks/likelihood.py
writes them to RUN/likelihood_parts/). Each argument is a run folder or one of its parts folders,
or the per-example file of trainers/evaluate.py (RUN/evaluation_per_example.npz; both of one split).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder (or parts folder) whose figures come first")
    parser.add_argument("against", help="run folder (or parts folder) subtracted")
    args = parser.parse_args(argv)
    from tfp_vae import comparison  # after flag parsing: loading tfp_vae loads TensorFlow
    try:
        result = comparison.paired_difference(args.run, args.against)
    except ValueError as error:
        parser.error(str(error))
    parts = "" if args.run.endswith(".npz") else f" (parts {', '.join(map(str, result['parts']))})"
    print(f"{result['examples']} {result['split']} images{parts}:")
    print(f"  -log p(x)  {result['negative_log_likelihood']:.2f} - {result['negative_log_likelihood_against']:.2f} "
          f"= {result['difference']:+.3f} +- {result['difference_stderr']:.3f}")
    print(f"  -ELBO      {result['negative_elbo']:.2f} - {result['negative_elbo_against']:.2f} "
          f"= {result['difference_elbo']:+.3f} +- {result['difference_elbo_stderr']:.3f}")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
