"""Train a VAE and evaluate it on the test split.

    python trainers/train.py --workdir runs/default

writes runs/default/{config.json, metrics.json, samples.png, reconstructions.png, weights/, logs/}.
Run it again with the same --workdir to resume after a kill (or with a larger --epochs to train
longer). TensorBoard: tensorboard --logdir runs/default/logs
"""
import argparse
import json
import sys

from tfp_vae import cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run folder: outputs, checkpoints, logs")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    cli.add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = cli.config_from_flags(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))

    from tfp_vae import training  # after flag parsing: --help stays fast
    from tfp_vae.callbacks import TrainingDivergedError
    try:
        metrics = training.train(config, args.workdir, verbose=args.verbose)
    except (TrainingDivergedError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"test": metrics["test"], "epochs": metrics["epochs"],
                      "examples_per_second": metrics["examples_per_second"]}, indent=2))
    print(f"outputs in {args.workdir}: metrics.json, samples.png, reconstructions.png, weights/, logs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
