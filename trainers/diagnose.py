"""Where does the KL go? The aggregate-posterior report of a trained run ("ELBO surgery").

    python trainers/diagnose.py --workdir runs/default

writes runs/default/diagnosis.json (every number), runs/default/report.md (tables overall and per
class, the identity mean KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)) explained, pictures
linked) and runs/default/diagnosis/*.png. Options: --split test|validation|train, --examples N
(the first N; the cost grows as N^2: all 10,000 test images take well under a minute),
--reference runs/other (a diagnosed run whose KL split the report shows next to this one's).
"""
import argparse
import json
import os
import sys

from _flags import SPLITS, at_least_one


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a finished trainers/train.py run folder")
    parser.add_argument("--split", choices=SPLITS, default="test", help="data split (default test)")
    parser.add_argument("--examples", type=at_least_one("--examples"), default=None,
                        help="use only the first N examples of the split (default: all)")
    parser.add_argument("--batch-size", type=at_least_one("--batch-size"), default=500,
                        help="posteriors per encoder call (memory, not results)")
    parser.add_argument("--samples-per-example", type=at_least_one("--samples-per-example"), default=1,
                        help="z ~ q(z|x) per example for the Monte-Carlo terms (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the (stateless) samples")
    parser.add_argument("--reference", default=None, metavar="DIR",
                        help="a diagnosed run (e.g. the same network with the N(0, I) prior) to show next to this one")
    args = parser.parse_args(argv)
    for flag, folder in (("--workdir", args.workdir), ("--reference", args.reference)):
        if folder is not None and not os.path.isdir(folder):
            parser.error(f"{flag} {folder} does not exist: pass the folder of a trainers/train.py run.")

    from tfp_vae import report  # after flag parsing: bad flags fail fast, without TensorFlow
    try:
        summary = report.diagnose_run(args.workdir, split=args.split, examples=args.examples,
                                      batch_size=args.batch_size, samples_per_example=args.samples_per_example,
                                      seed=args.seed, reference=args.reference)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    keys = ("examples", "mean_kl", "mutual_information", "mutual_information_upper_bound", "marginal_kl",
            "identity", "fitted_gaussian_kl", "active_units", "class_information", "seconds")
    print(json.dumps({key: summary[key] for key in keys if key in summary}, indent=2))
    print(f"wrote {os.path.join(args.workdir, 'report.md')}, diagnosis.json and diagnosis/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
